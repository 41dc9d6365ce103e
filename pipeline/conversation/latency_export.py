"""Each finished turn's latencies as Prometheus histograms (serve's ``/metrics``).

The bus (actors/client.py) sees every conversation's ``TurnUpdated``; a turn is counted once,
when it finishes. What is exported, from the turn's own timeline and figures:

- ``endpoint``: the VAD's wait from the end of speech to its decision (audio time);
- ``stt``, ``ttft`` (the LLM's first token), ``first_audio_synth`` (the first chunk's synthesis);
- ``voice_to_voice``: end of speech (the decision less the endpoint wait) to the first reply
  sample out;
- ``barge_in_stop``: a cut reply, from the engine hearing the user (its pause) to its audio
  silent;
- ``longest_stall``: the longest silence the pipeline left between a reply's chunks as played.
"""
from __future__ import annotations

from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
HELP = {
    "endpoint": "VAD endpoint: end of speech to the end-of-turn decision",
    "stt": "final transcription",
    "ttft": "LLM time to first token",
    "first_audio_synth": "synthesis of the reply's first chunk",
    "voice_to_voice": "end of the user's speech to the first reply sample out",
    "barge_in_stop": "user heard during a reply to that reply's audio silent",
    "longest_stall": "longest silence between a reply's chunks as played",
}
FIGURES = {"endpoint": "endpoint_s", "stt": "stt_s", "ttft": "ttft_s", "first_audio_synth": "synth_s",
           "longest_stall": "longest_stall_s"}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def turn_latencies(turn: dict[str, Any]) -> dict[str, float]:
    """The figures of one finished turn (``Turn.to_dict()``) that it has."""
    info, ev = turn.get("info", {}), turn.get("events", {})
    out = {name: float(info[key]) for name, key in FIGURES.items() if isinstance(info.get(key), (int, float))}
    if "first_reply_sample_out" in ev and "user_speech_stopped" in ev and "endpoint" in out:
        out["voice_to_voice"] = ev["first_reply_sample_out"] - ev["user_speech_stopped"] + out["endpoint"]
    if turn.get("state") == "interrupted" and "reply_audio_stopped" in ev and "reply_paused" in ev:
        out["barge_in_stop"] = max(0.0, ev["reply_audio_stopped"] - ev["reply_paused"])
    if not ev.get("first_reply_sample_out"):
        out.pop("longest_stall", None)  # nothing was heard: no silence inside it either
    return out


class LatencyExport:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._hist = {name: Histogram(f"kokoro_turn_{name}_seconds", HELP[name], buckets=BUCKETS,
                                      registry=self.registry) for name in HELP}
        self._turns = Counter("kokoro_turns", "finished turns, by how they ended", ["state"], registry=self.registry)
        self._seen: deque = deque(maxlen=4096)  # (session, turn) counted: a turn is updated many times

    def observe(self, session_id: str, turn: dict[str, Any]) -> bool:
        key = (session_id, turn.get("turn_id"))
        if not turn.get("finished") or key in self._seen:
            return False
        self._seen.append(key)
        self._turns.labels(state=turn.get("state", "")).inc()
        for name, value in turn_latencies(turn).items():
            self._hist[name].observe(value)
        return True

    def text(self) -> str:
        return generate_latest(self.registry).decode()
