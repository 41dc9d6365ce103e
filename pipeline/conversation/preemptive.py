"""Preemptive replies: the session's part that asks the LLM at a pause, before the endpoint.

A mixin of ``Session``: the speculative transcript's words get a reply at once, its audio
held at the output; the endpoint's words release it when they are the same, or cancel it.
"""
from __future__ import annotations

from pipeline.conversation.turn import Turn
from pipeline.flow.frames import CancelFrame, Frame


def same_words(a: str, b: str) -> bool:
    norm = lambda s: " ".join("".join(c for c in s.lower() if c.isalnum() or c.isspace()).split())  # noqa: E731
    return norm(a) == norm(b)


class Preemptive:
    def _preempt(self, turn: Turn, text: str) -> list[Frame]:
        if not self.preemptive or turn.committed or turn.finished or not text.strip():
            return []
        if turn.preemptive is not None and same_words(turn.preemptive, text):
            return []  # this attempt already covers these words
        if turn.barge_in and self._paused_by(turn) is None and self.current() is not None:
            return []  # a burst too short to interrupt: the reply it paused is playing again
        out = self._cancel_preemptive(turn)
        if self._paused_by(turn) is not None:
            out += self._take_floor(turn, "user_speech")  # words, after long enough speech: a real barge-in
        self._new_id(turn)
        turn.preemptive = text
        turn.metrics.count("preemptive_attempts")
        return out + [self._hold(turn, True, turn.priority)] + self._ask(turn, text)

    def _commit(self, turn: Turn, text: str) -> list[Frame]:
        self.history.remember("user", text)
        turn.committed, turn.preemptive = True, None
        turn.metrics.info["preemptive"] = True
        self.replying = turn.response_id
        self.history.reserve(turn.response_id)
        if turn.reply:  # the LLM finished before the endpoint
            self.history.set_assistant(turn.response_id, turn.reply)
        return [self._hold(turn, False, turn.priority)]

    def _cancel_preemptive(self, turn: Turn) -> list[Frame]:
        if turn.preemptive is None:
            return []
        turn.preemptive = None
        turn.reply = ""
        self._cancelled.add(turn.response_id)
        turn.metrics.forget_attempt()
        return [CancelFrame(response_id=turn.response_id, reason="preemptive attempt superseded")]
