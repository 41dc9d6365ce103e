"""What ``kokoro-engine run`` prints: one line per change of a turn's state.

    [listening]   you: what is the wea…
    [thinking]    you: What is the weather tomorrow?
    [done]        kokoro: It will be sunny.   (voice-to-voice 1.77 s: endpoint 0.56, stt 0.06, llm 0.21,
                  tts 0.62; longest stall 0.12)
    [interrupted] kokoro, heard: It will be…   (stopped 0.09 s after you spoke up)

The figures are those serve's /metrics exports (pipeline/conversation/latency_export.py).
"""
from __future__ import annotations

from typing import Any

from pipeline.conversation.latency_export import turn_latencies

LABEL = {"listening": "listening", "thinking": "thinking", "speaking": "speaking", "done": "done",
         "interrupted": "interrupted", "empty": "no words", "ignored": "ignored", "failed": "failed"}


def latency(turn: dict[str, Any]) -> str:
    got = turn_latencies(turn)
    if "barge_in_stop" in got:
        return f"   (stopped {got['barge_in_stop']:.2f} s after you spoke up)"
    if "voice_to_voice" not in got:
        return ""
    parts = [f"{label} {got[k]:.2f}" for label, k in (("endpoint", "endpoint"), ("stt", "stt"), ("llm", "ttft"),
                                                      ("tts", "first_audio_synth")) if k in got]
    stall = f"; longest stall {got['longest_stall']:.2f}" if "longest_stall" in got else ""
    return f"   (voice-to-voice {got['voice_to_voice']:.2f} s: {', '.join(parts)}{stall})"


def render(turn: dict[str, Any]) -> str:
    """One line for a turn as it stands now."""
    state = turn["state"]
    tag = f"[{LABEL.get(state, state)}]".ljust(14)
    if turn.get("paused") and state in ("thinking", "speaking"):
        tag = "[paused]".ljust(14)
    if state == "listening":
        partial = turn["info"].get("partial", "")
        return f"{tag}you: {partial}…" if partial else f"{tag}…"
    you = turn["transcript"] if turn.get("source", "user_speech") == "user_speech" else \
        f"({turn.get('source')}) {turn['transcript']}"
    if state in ("thinking", "empty", "ignored", "failed"):
        err = f"   error: {turn['errors'][-1]}" if turn.get("errors") else ""
        return f"{tag}you: {you}{err}"
    if state == "interrupted":
        return f"{tag}kokoro, heard: {turn.get('heard') or '(nothing)'}…{latency(turn)}"
    return f"{tag}kokoro: {turn['reply']}{latency(turn) if state == 'done' else ''}"


class RunDisplay:
    """Prints a line whenever a turn's line changes (fed the conversation's events as they come)."""

    def __init__(self, out) -> None:
        self.out = out
        self._shown: dict[int, str] = {}

    def turn(self, t: dict[str, Any]) -> None:
        key = t.get("turn_id") or t["response_id"]  # (a turn's response id changes with its attempts)
        line = render(t)
        if self._shown.get(key) != line:
            self._shown[key] = line
            print(line, file=self.out, flush=True)

    def notice(self, level: str, message: str) -> None:
        print(f"[{level}]".ljust(14) + message, file=self.out, flush=True)
