"""A finished turn's latencies, as serve's /metrics exports them (pipeline/conversation/latency_export.py)."""
from __future__ import annotations

import pytest

from pipeline.conversation.latency_export import LatencyExport, turn_latencies

DONE = {"turn_id": 3, "finished": True, "state": "done",
        "events": {"user_speech_stopped": 100.0, "first_reply_sample_out": 101.5},
        "info": {"endpoint_s": 0.56, "stt_s": 0.05, "ttft_s": 0.2, "synth_s": 0.9, "longest_stall_s": 0.12}}
CUT = {"turn_id": 4, "finished": True, "state": "interrupted",
       "events": {"user_speech_stopped": 200.0, "first_reply_sample_out": 201.2, "reply_paused": 205.0,
                  "reply_audio_stopped": 205.09},
       "info": {"endpoint_s": 0.5}}


def test_the_figures_of_a_turn():
    got = turn_latencies(DONE)
    assert got["voice_to_voice"] == pytest.approx(1.5 + 0.56)  # from the end of speech, not the decision
    assert {k: got[k] for k in ("endpoint", "stt", "ttft", "first_audio_synth", "longest_stall")} == {
        "endpoint": 0.56, "stt": 0.05, "ttft": 0.2, "first_audio_synth": 0.9, "longest_stall": 0.12}
    assert "barge_in_stop" not in got
    assert turn_latencies(CUT)["barge_in_stop"] == pytest.approx(0.09)
    # a turn with no reply heard has no voice-to-voice and no stall
    silent = {**DONE, "events": {"user_speech_stopped": 1.0}}
    assert "voice_to_voice" not in turn_latencies(silent) and "longest_stall" not in turn_latencies(silent)


def test_each_turn_counts_once_when_it_finishes():
    x = LatencyExport()
    assert not x.observe("a", {**DONE, "finished": False, "state": "speaking"})
    assert x.observe("a", DONE) and not x.observe("a", DONE)  # updated again after it finished
    assert x.observe("b", DONE)  # the same turn id in another conversation is another turn
    assert x.observe("a", CUT)
    text = x.text()
    assert "kokoro_turn_voice_to_voice_seconds_count 3.0" in text
    assert "kokoro_turn_barge_in_stop_seconds_count 1.0" in text
    assert 'kokoro_turns_total{state="done"} 2.0' in text and 'kokoro_turns_total{state="interrupted"} 1.0' in text
    assert 'kokoro_turn_voice_to_voice_seconds_bucket{le="2.0"} 1.0' in text  # 1.7 s (cut turn), not 2.06 s
