"""Client stage: the bus. Streams each conversation's text, audio and events to its
subscribers (WebSocket clients, ``talk`` and ``run``, later the store), in one ordered
stream per conversation.

For a conversation whose audio plays on its clients (``audio_out = "client"``) or that
has no audio, it is also the conversation's output as the player is for the device:
it tells the session when a reply is audible and done, and what of it was delivered
when it is cut (``ReplyStopped``): the words up to what the client reported played
(``played``, from a client's ``audio_played``), else the text of the audio chunks sent,
else (no audio) the text streamed.

Subscribing is a Ray streaming generator (``subscribe``), one thread each in the
"subscribers" concurrency group: nothing polls.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import ray

from actors.base import Stage, stage_actor
from pipeline.audio.playout import LOUD
from pipeline.conversation.heard_text import heard_text
from pipeline.flow.bus_events import (BusEvent, Closed, ReplyAudio, ReplyDelta, ReplyFinished, ReplyTextDone)
from pipeline.flow.events import ReplyAudible, ReplyDone, ReplyStopped
from pipeline.flow.frames import (CancelFrame, ControlFrame, EndOfTurnFrame, Frame, FrameError, InterruptFrame,
                                  LLMTokenFrame, PublishFrame, TTSAudioFrame)
from pipeline.flow.routes import ConversationSpec

MAX_SUBSCRIBERS = 256  # threads of the "subscribers" concurrency group


@dataclass
class _Delivery:
    """What a reply has delivered so far."""

    priority: int
    text: str = ""  # streamed
    chunks: list[dict[str, Any]] = field(default_factory=list)  # audio sent, as the player's heard() gives it
    samples: int = 0  # audio samples sent
    reported: int | None = None  # samples the client says it played
    audible: bool = False

    def heard(self) -> list[dict[str, Any]]:
        if not self.chunks:  # text only: what was streamed
            return [{"text": self.text, "samples": 1, "played": 1, "chunk": 0}] if self.text else []
        out = []
        for c in self.chunks:
            played = c["samples"] if self.reported is None else max(0, min(c["samples"],
                                                                          self.reported - c["offset"]))
            out.append({**c, "played": played})
        return out


class ClientStage(Stage):
    name = "client"

    def setup(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, tuple[str, queue.Queue]] = {}  # subscription id -> (conversation, queue)
        self._seq: dict[str, int] = {}  # per conversation
        self._replies: dict[tuple[str, int], _Delivery] = {}
        self._rlock = threading.RLock()  # _replies: the data lane and the control lane

    # ------------------------------------------------------------ subscribers
    @ray.method(num_returns="streaming", concurrency_group="subscribers")
    def subscribe(self, session_id: str, sub_id: str) -> Iterator[BusEvent]:
        """Every event of ``session_id`` from now on, until ``unsubscribe(sub_id)`` or the
        conversation closes (its last event is then ``Closed``)."""
        q: queue.Queue = queue.Queue()
        with self._lock:
            if len(self._subs) >= MAX_SUBSCRIBERS:
                raise RuntimeError(f"too many subscribers ({MAX_SUBSCRIBERS})")
            self._subs[sub_id] = (session_id, q)
        yield BusEvent(session_id=session_id)  # the first item: the subscription is in place
        if session_id not in self.conversations:
            yield Closed(session_id=session_id, reason=f"no conversation {session_id!r}")
            self.unsubscribe(sub_id)
            return
        while True:
            ev = q.get()
            if ev is None:
                return
            yield ev
            if isinstance(ev, Closed):
                return

    @ray.method(concurrency_group="control")
    def unsubscribe(self, sub_id: str) -> bool:
        with self._lock:
            sub = self._subs.pop(sub_id, None)
        if sub is not None:
            sub[1].put(None)
        return sub is not None

    @ray.method(concurrency_group="control")
    def subscribers(self, session_id: str) -> int:
        with self._lock:
            return sum(1 for sid, _ in self._subs.values() if sid == session_id)

    def publish(self, ev: BusEvent) -> None:
        with self._lock:
            n = self._seq.get(ev.session_id, 0) + 1
            self._seq[ev.session_id] = n
            ev.seq = n
            for sid, q in self._subs.values():
                if sid == ev.session_id:
                    q.put(ev)

    def on_close(self, session_id: str) -> None:
        self.publish(Closed(session_id=session_id, reason="conversation closed"))
        with self._lock:
            for sub_id in [k for k, (sid, _) in self._subs.items() if sid == session_id]:
                del self._subs[sub_id]
            self._seq.pop(session_id, None)
            for key in [k for k in self._replies if k[0] == session_id]:
                del self._replies[key]

    # ------------------------------------------------------------ replies
    def _delivers_audio(self, spec: ConversationSpec | None) -> bool:
        return spec is not None and spec.audio_out == "client"

    def _is_output(self, spec: ConversationSpec | None) -> bool:
        """This stage is the conversation's output (the player is not)."""
        return spec is not None and spec.audio_out != "player"

    def process(self, frame: Frame) -> None:
        with self._rlock:
            self._process(frame)

    def _process(self, frame: Frame) -> None:
        sid, rid = frame.session_id, frame.response_id
        spec = self.conversations.get(sid)
        if isinstance(frame, PublishFrame):
            self.publish(frame.event)
            return
        d = self._replies.setdefault((sid, rid), _Delivery(int(frame.priority)))
        own = dict(session_id=sid, response_id=rid, priority=int(frame.priority))
        from_tts = frame.source.startswith("tts")
        if isinstance(frame, LLMTokenFrame):
            d.text += frame.text
            self.publish(ReplyDelta(text=frame.text, **own))
            if self._is_output(spec) and not self._delivers_audio(spec):
                self._audible(d, sid, rid)
        elif isinstance(frame, TTSAudioFrame):
            d.chunks.append({"text": frame.text, "text_start": frame.text_start, "text_end": frame.text_end,
                             "samples": len(frame.pcm), "chunk": frame.chunk_index, "offset": d.samples,
                             **_speech_span(frame.pcm)})
            self.publish(ReplyAudio(chunk_index=frame.chunk_index, pcm=frame.pcm, sample_rate=frame.sample_rate,
                                    text=frame.text, text_start=frame.text_start, text_end=frame.text_end,
                                    sample_offset=d.samples, **own))
            d.samples += len(frame.pcm)
            self._audible(d, sid, rid)
        elif isinstance(frame, EndOfTurnFrame) and not from_tts:
            self.publish(ReplyTextDone(text=frame.text or d.text, **own))
            if self._is_output(spec) and not self._delivers_audio(spec):
                self._done(d, sid, rid)
            elif not self._is_output(spec):
                self._replies.pop((sid, rid), None)  # the player reports this reply
        elif isinstance(frame, EndOfTurnFrame):
            self._done(d, sid, rid)
        else:
            raise FrameError(f"client does not take {frame.kind}")

    def _audible(self, d: _Delivery, sid: str, rid: int) -> None:
        if not d.audible:
            d.audible = True
            self.event(ReplyAudible(session_id=sid, response_id=rid))

    def _done(self, d: _Delivery, sid: str, rid: int) -> None:
        self._replies.pop((sid, rid), None)
        self.publish(ReplyFinished(session_id=sid, response_id=rid, priority=d.priority, text=d.text,
                                   audio=bool(d.chunks)))
        self.event(ReplyDone(session_id=sid, response_id=rid, heard=d.heard(), chunks=[]))

    def on_control(self, frame: ControlFrame, changed: bool) -> None:
        if not isinstance(frame, (InterruptFrame, CancelFrame)):
            return
        with self._rlock:
            self._cut(frame)

    def _cut(self, frame: InterruptFrame | CancelFrame) -> None:
        sid = frame.session_id
        spec = self.conversations.get(sid)
        stopped = set(frame.stopped) if isinstance(frame, InterruptFrame) else set()
        for (s, rid) in [k for k in self._replies if k[0] == sid and not self.is_live(sid, k[1])]:
            d = self._replies.pop((s, rid))
            heard = d.heard()
            self.publish(ReplyFinished(session_id=sid, response_id=rid, priority=d.priority,
                                       text=heard_text(heard)[0], interrupted=True, audio=bool(d.chunks)))
            if rid in stopped and self._is_output(spec):
                self.event(ReplyStopped(session_id=sid, response_id=rid, heard=heard))
                stopped.discard(rid)
        if self._is_output(spec):
            for rid in stopped:  # nothing of it reached this output
                self.event(ReplyStopped(session_id=sid, response_id=rid, heard=[]))

    @ray.method(concurrency_group="control")
    def played(self, session_id: str, response_id: int, samples: int) -> bool:
        """A client played ``samples`` of the reply's audio (from its first sample)."""
        with self._rlock:
            d = self._replies.get((session_id, response_id))
            if d is None:
                return False
            d.reported = max(int(samples), d.reported or 0)
            return True


def _speech_span(pcm: np.ndarray) -> dict[str, int]:
    """Where the voice is in a chunk (Kokoro pads with silence): the words spread over it."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > LOUD)
    return {"speech_start": int(loud[0]), "speech_end": int(loud[-1]) + 1} if len(loud) else {}


ClientActor = stage_actor(ClientStage, {"subscribers": MAX_SUBSCRIBERS})
