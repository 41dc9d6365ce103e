"""Barge-in: the session's part that pauses, resumes and cuts a reply for the user's voice.

A mixin of ``Session`` (pipeline/conversation/session.py, which explains the two steps):
an onset pauses the reply at its output, a burst or a wordless transcript resumes it, words
after long enough speech cut it, and the cut reply's output says what was heard.
"""
from __future__ import annotations

from pipeline.conversation.heard_text import heard_text
from pipeline.conversation.turn import ONSET, Turn
from pipeline.flow import events as ev
from pipeline.flow.frames import Frame, HoldFrame, InterruptFrame
from pipeline.flow.priorities import Priority


class BargeIn:
    def _speech_s(self, turn: Turn, audio_time: float | None) -> float:
        start = turn.speech_start_audio
        return (audio_time or 0.0) - start if start is not None else 0.0

    def _hold(self, turn: Turn, hold: bool, priority: Priority) -> HoldFrame:
        return HoldFrame(response_id=turn.response_id, hold=hold, priority=priority)

    def _pause(self, reply: Turn, by: Turn) -> list[Frame]:
        if reply.paused_by == by.utterance_id:
            return []
        was, reply.paused_by = reply.paused_by, by.utterance_id
        by.barge_in = reply.response_id
        if was == ONSET:
            return []  # already silent since the onset
        return [self._hold(reply, True, by.priority)]

    def _onset(self, e: ev.Event) -> list[Frame]:
        """The VAD's first speech-like window (or its retraction): pause the reply at once.

        Pausing is cheap to undo, so it does not wait for the VAD to be sure:
        this is what keeps "user starts -> engine silent" short.
        """
        cur = self.current()
        if cur is None:
            return []
        if isinstance(e, ev.SpeechOnset) and not cur.paused_by:
            cur.paused_by = ONSET
            cur.metrics.count("onset_pauses")
            cur.metrics.append("onset_windows", e.windows)  # why it paused, for diagnosis
            return [self._hold(cur, True, Priority.HIGH)]
        if isinstance(e, ev.SpeechOnsetRejected) and cur.paused_by == ONSET:
            cur.paused_by = 0
            self.false_pauses += 1
            cur.metrics.append("false_pause_times", e.t)
            return [self._hold(cur, False, cur.priority)]
        return []

    def _resume(self, reply: Turn, why: str) -> list[Frame]:
        """A false interruption: the reply goes on where it paused."""
        if not reply.paused_by or reply.finished:
            return []
        reply.paused_by = 0
        self.false_interruptions += 1
        reply.metrics.count("false_interruptions")
        reply.metrics.append("false_interruption_reasons", why)
        return [self._hold(reply, False, reply.priority)]

    def _interrupt(self, reply: Turn, by: Turn, reason: str) -> list[Frame]:
        """Confirm: every stage drops ``reply``; its output says what was heard (``_heard``)."""
        reply.state = "interrupted"
        reply.paused_by = 0
        reply.metrics.info["interrupted_by"] = by.response_id
        self.awaiting_heard.add(reply.response_id)
        if self.replying == reply.response_id:
            self.replying = None
        return [InterruptFrame(response_id=by.response_id, reason=reason, priority=by.priority,
                               stopped=(reply.response_id,))]

    def _heard(self, rid: int, chunks: list[dict] | None) -> list[Frame]:
        """A cut reply's output said what was heard (``None``: it never answered)."""
        if rid not in self.awaiting_heard:
            return []
        self.awaiting_heard.discard(rid)
        turn = self._by_rid.get(rid)
        if turn is not None:
            text, complete = heard_text(chunks or [])
            turn.heard = text
            turn.metrics.info["heard_complete"] = complete
            if chunks is None:
                turn.metrics.info["heard_unknown"] = True
            self.history.set_assistant(turn.response_id, text, interrupted=True)
        return self._flush()

    def expire_heard(self, rids: set[int]) -> list[Frame]:
        """The outputs took too long to say what was heard of ``rids``: go on without those words."""
        out: list[Frame] = []
        for rid in sorted(rids & self.awaiting_heard):
            out += self._heard(rid, None)
        return [self._own(f) for f in out]

    def _paused_by(self, turn: Turn) -> Turn | None:
        cur = self.current()
        return cur if cur is not None and cur.paused_by == turn.utterance_id and turn.utterance_id else None
