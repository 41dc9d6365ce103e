"""A scripted timeline around one ``Session``: typed events in, the frames it sends out,
each with where the routes take it.

The conversation's output is played by a fake: when the session cuts a reply
(``InterruptFrame.stopped``), the fake answers as the player does, with a
``ReplyStopped`` carrying what it says was heard of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pipeline.conversation.session import Session
from pipeline.flow import events as ev
from pipeline.flow.frames import Frame, InterruptFrame, PublishFrame, TranscriptFrame
from pipeline.flow.routes import ConversationSpec, destinations

SYSTEM = "You are a test companion."


@dataclass
class Sent:
    dest: str  # the first stage the routes send it to ("*": every stage)
    frame: Frame


class Timeline:
    """Feeds frames to a Session with increasing timestamps; keeps every frame it sends."""

    def __init__(self, heard: Callable[[int], list[dict]] | None = None, audio_out: str = "player",
                 **kw: Any) -> None:
        self.s = Session("t", kw.pop("system_prompt", SYSTEM), **kw)
        self.spec = ConversationSpec("t", audio_out)
        self.heard = heard or (lambda rid: [])
        self.t = 1000.0
        self.sent: list[Sent] = []
        self.published: list[Any] = []  # bus events (turn updates, reply started, notices)

    def _route(self, frames: list[Frame]) -> list[Sent]:
        out = []
        for f in frames:
            if isinstance(f, PublishFrame):
                self.published.append(f.event)
                continue
            out.append(Sent(destinations("session", f, self.spec)[0], f))
        return out

    def _feed(self, frame: Frame) -> list[Sent]:
        out = self._route(self.s.handle(frame))
        for s in list(out):  # the output answers a cut at once with what was heard
            if isinstance(s.frame, InterruptFrame):
                for rid in s.frame.stopped:
                    self.t += 0.001
                    out += self._route(self.s.handle(ev.ReplyStopped(session_id="t", response_id=rid, t=self.t,
                                                                     heard=self.heard(rid))))
        self.sent += out
        return out

    def event(self, kind: type, rid: int = 0, **data: Any) -> list[Sent]:
        self.t += 0.1
        return self._feed(kind(session_id="t", response_id=rid, t=self.t, **data))

    def transcript(self, text: str, utterance: int) -> list[Sent]:
        self.t += 0.1
        return self._feed(TranscriptFrame(session_id="t", text=text, utterance_id=utterance, created=self.t))

    def user_says(self, text: str, utterance: int) -> list[Sent]:
        out = self.event(ev.SpeechStarted, utterance=utterance, audio_time=0.5)
        out += self.event(ev.SpeechStopped, utterance=utterance, audio_time=1.5)
        return out + self.transcript(text, utterance)

    def reply(self, rid: int, text: str) -> list[Sent]:
        out = self.event(ev.LLMFirstToken, rid, ttft_s=0.2)
        out += self.event(ev.LLMDone, rid, text=text, llm_s=0.5)
        out += self.event(ev.ReplyAudible, rid)
        return out + self.event(ev.ReplyDone, rid, chunks=[{"chunk": 0}])

    @property
    def history(self) -> list[dict[str, Any]]:
        """The conversation as the next request sends it, without the system message."""
        return [m for m in self.s.messages() if m["role"] != "system"]


def only_llm_request(sends: list[Sent]):
    from pipeline.flow.frames import LLMRequestFrame

    assert len(sends) == 1, sends
    assert sends[0].dest == "llm"
    assert isinstance(sends[0].frame, LLMRequestFrame)
    return sends[0].frame


def prelim(tl: Timeline, text: str, utterance: int) -> list[Sent]:
    tl.t += 0.1
    return tl._feed(TranscriptFrame(session_id="t", text=text, utterance_id=utterance, final=False, created=tl.t))
