"""What a turn measured: its timeline and its per-stage figures, kept apart from the
control state the session decides on (``pipeline.conversation.turn``).

``TURN_EVENTS`` is the one list of a turn's timeline points, in pipeline order; the CLI,
the benchmarks and the run display read it from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TURN_EVENTS = ("user_speech_started", "user_speech_stopped", "transcript_final", "llm_first_token",
               "tts_first_audio", "first_reply_sample_out", "reply_paused", "reply_resumed", "reply_stopped",
               "reply_done")
# the points a turn's talk report prints, in order (the rest are barge-in details)
REPORTED_EVENTS = ("user_speech_started", "user_speech_stopped", "transcript_final", "llm_first_token",
                   "tts_first_audio", "first_reply_sample_out", "reply_done")
# points (and figures) of one reply attempt: an attempt that is cancelled does not leave them behind
ATTEMPT_EVENTS = ("llm_first_token", "tts_first_audio")
ATTEMPT_FIGURES = ("ttft_s", "synth_s", "llm_s")


@dataclass
class TurnMetrics:
    events: dict[str, float] = field(default_factory=dict)  # timeline point -> wall time
    info: dict[str, Any] = field(default_factory=dict)  # figures: stt_s, ttft_s, chunks, ...

    def mark(self, name: str, t: float, first: bool = True) -> None:
        if first:
            self.events.setdefault(name, t)
        else:
            self.events[name] = t

    def count(self, name: str) -> None:
        self.info[name] = self.info.get(name, 0) + 1

    def append(self, name: str, value: Any) -> None:
        self.info.setdefault(name, []).append(value)

    def forget_attempt(self) -> None:
        for k in ATTEMPT_EVENTS:
            self.events.pop(k, None)
        for k in ATTEMPT_FIGURES:
            self.info.pop(k, None)


def chunk_gaps(chunks: list[dict[str, Any]]) -> dict[str, float]:
    """The silences the pipeline put between a reply's chunks as heard (the player's times of
    each chunk's first and last sample): the longest and their total, in seconds. Silence a
    chunk's own audio holds (Kokoro's pause at a sentence end) is not counted; a barge-in's
    pause is."""
    heard = sorted((c for c in chunks if c.get("t_start") is not None and c.get("t_end") is not None),
                   key=lambda c: c["t_start"])
    gaps = [max(0.0, b["t_start"] - a["t_end"]) for a, b in zip(heard, heard[1:])]
    return {"longest_stall_s": round(max(gaps, default=0.0), 3), "stall_total_s": round(sum(gaps), 3)}
