"""What ``kokoro-engine run`` prints: one line per change of a turn's state.

    [listening]   you: what is the wea…
    [thinking]    you: What is the weather tomorrow?
    [speaking]    kokoro: It will be sunny.   (answered 1.21 s after you stopped: stt 0.06, llm 0.21, tts 0.62)
    [interrupted] kokoro, heard: It will be…
"""
from __future__ import annotations

from typing import Any

LABEL = {"listening": "listening", "thinking": "thinking", "speaking": "speaking", "done": "done",
         "interrupted": "interrupted", "empty": "no words", "ignored": "ignored", "failed": "failed"}


def latency(turn: dict[str, Any]) -> str:
    ev, info = turn["events"], turn["info"]
    if "first_reply_sample_out" not in ev or "user_speech_stopped" not in ev:
        return ""
    parts = [f"{k} {info[v]:.2f}" for k, v in (("stt", "stt_s"), ("llm", "ttft_s"), ("tts", "synth_s"))
             if isinstance(info.get(v), (int, float))]
    waited = ev["first_reply_sample_out"] - ev["user_speech_stopped"]
    return f"   (answered {waited:.2f} s after you stopped{': ' + ', '.join(parts) if parts else ''})"


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
        return f"{tag}kokoro, heard: {turn.get('heard') or '(nothing)'}…"
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
