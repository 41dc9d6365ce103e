"""The lines `kokoro-engine run` prints as turns change state."""
from __future__ import annotations

import io

from pipeline.cli.run_display import RunDisplay, render


def turn(state, **kw):
    t = {"response_id": 1, "utterance_id": 1, "source": "user_speech", "state": state, "transcript": "",
         "reply": "", "heard": None, "paused": False, "events": {}, "info": {}, "errors": []}
    t.update(kw)
    return t


def test_each_state_has_its_line():
    assert render(turn("listening", info={"partial": "what is the"})) == "[listening]   you: what is the…"
    assert render(turn("thinking", transcript="What time is it?")).startswith("[thinking]    you: What time")
    assert render(turn("speaking", reply="It is noon.")) == "[speaking]    kokoro: It is noon."
    assert render(turn("speaking", reply="It is", paused=True)).startswith("[paused]")
    assert render(turn("interrupted", heard="It is")) == "[interrupted] kokoro, heard: It is…"
    cut = turn("interrupted", heard="It is", events={"reply_paused": 5.0, "reply_audio_stopped": 5.09})
    assert render(cut) == "[interrupted] kokoro, heard: It is…   (stopped 0.09 s after you spoke up)"
    line = render(turn("done", reply="It is noon.",
                       events={"user_speech_stopped": 10.0, "first_reply_sample_out": 11.25},
                       info={"endpoint_s": 0.5, "stt_s": 0.06, "ttft_s": 0.2, "synth_s": 0.6, "longest_stall_s": 0.1}))
    assert line.endswith("(voice-to-voice 1.75 s: endpoint 0.50, stt 0.06, llm 0.20, tts 0.60; longest stall 0.10)")
    assert "(tap_event)" in render(turn("thinking", source="tap_event", transcript="(touched)"))


def test_display_prints_only_changes_and_notices():
    out = io.StringIO()
    d = RunDisplay(out)
    d.turn(turn("listening"))
    d.turn(turn("listening"))
    d.turn(turn("thinking", transcript="Hi"))
    d.notice("error", "LLM endpoint down")
    d.turn(turn("thinking", transcript="Hi"))
    assert out.getvalue().splitlines() == ["[listening]   …", "[thinking]    you: Hi", "[error]       LLM endpoint down"]
