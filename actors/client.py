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
from pipeline.conversation.latency_export import LatencyExport
from pipeline.flow.bus_events import (BusEvent, Closed, ReplyAudio, ReplyDelta, ReplyFinished, ReplyTextDone,
                                      TurnUpdated)
from pipeline.flow.events import ReplyAudible, ReplyDone, ReplyStopped
from pipeline.flow.frames import (CancelFrame, ControlFrame, EndOfTurnFrame, Frame, FrameError, HoldFrame,
                                  InterruptFrame, LLMTokenFrame, PublishFrame, TTSAudioFrame)
from pipeline.flow.routes import ConversationSpec

MAX_SUBSCRIBERS = 256  # threads of the "subscribers" concurrency group


@dataclass
class _Delivery:
    """A reply as this output delivers it. While ``held`` (a preemptive reply not yet confirmed,
    a reply paused by the user's voice) what it produces waits in ``pending``."""

    priority: int
    text: str = ""  # delivered
    chunks: list[dict[str, Any]] = field(default_factory=list)  # audio delivered, as the player's heard() gives it
    produced: int = 0  # audio samples produced: each chunk's offset in the reply
    reported: int | None = None  # samples the client says it played
    audible: bool = False
    held: bool = False
    pending: list[tuple[Any, dict | None, str]] = field(default_factory=list)  # (event, chunk, text)
    finished: bool = False  # its producer is done; it ends once released
    text_done: bool = False
    published: bool = False

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
        self._bus_seq: dict[str, int] = {}  # per conversation
        self._replies: dict[tuple[str, int], _Delivery] = {}
        self._rlock = threading.RLock()  # _replies: the data lane and the control lane
        self.latency = LatencyExport()  # every conversation's finished turns, for serve's /metrics

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

    @ray.method(concurrency_group="control")
    def metrics_text(self) -> str:
        """Every conversation's finished turns' latencies, Prometheus text (serve's /metrics)."""
        with self._lock:
            return self.latency.text()

    def publish(self, ev: BusEvent) -> None:
        with self._lock:
            if isinstance(ev, TurnUpdated):
                self.latency.observe(ev.session_id, ev.turn)
            n = self._bus_seq.get(ev.session_id, 0) + 1
            self._bus_seq[ev.session_id] = n
            ev.seq = n
            for sid, q in self._subs.values():
                if sid == ev.session_id:
                    q.put(ev)

    def on_close(self, session_id: str) -> None:
        self.publish(Closed(session_id=session_id, reason="conversation closed"))
        with self._lock:
            for sub_id in [k for k, (sid, _) in self._subs.items() if sid == session_id]:
                del self._subs[sub_id]
            self._bus_seq.pop(session_id, None)
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
        if isinstance(frame, LLMTokenFrame):
            self._out(d, sid, rid, ReplyDelta(text=frame.text, **own), text=frame.text)
        elif isinstance(frame, TTSAudioFrame):
            chunk = {"text": frame.text, "text_start": frame.text_start, "text_end": frame.text_end,
                     "samples": len(frame.pcm), "chunk": frame.chunk_index, "offset": d.produced,
                     **_speech_span(frame.pcm)}
            self._out(d, sid, rid, ReplyAudio(chunk_index=frame.chunk_index, pcm=frame.pcm,
                                              sample_rate=frame.sample_rate, text=frame.text,
                                              text_start=frame.text_start, text_end=frame.text_end,
                                              sample_offset=d.produced, **own), chunk=chunk)
            d.produced += len(frame.pcm)
        elif isinstance(frame, EndOfTurnFrame) and not frame.source.startswith("tts"):
            self._out(d, sid, rid, ReplyTextDone(text=frame.text or d.text, **own))
            d.text_done = True
            if self._is_output(spec) and not self._delivers_audio(spec):
                self._done(d, sid, rid)
            elif not self._is_output(spec) and not d.held:
                self._replies.pop((sid, rid), None)  # the player reports this reply
        elif isinstance(frame, EndOfTurnFrame):
            self._done(d, sid, rid)
        else:
            raise FrameError(f"client does not take {frame.kind}")

    def _out(self, d: _Delivery, sid: str, rid: int, ev: BusEvent, chunk: dict | None = None, text: str = "") -> None:
        if d.held:
            d.pending.append((ev, chunk, text))
            return
        self.publish(ev)
        d.published = True
        d.text += text
        if chunk is not None:
            d.chunks.append(chunk)
        spec = self.conversations.get(sid)
        if self._is_output(spec) and not d.audible and (chunk is not None or
                                                        (text and not self._delivers_audio(spec))):
            d.audible = True
            self.event(ReplyAudible(session_id=sid, response_id=rid))

    def _done(self, d: _Delivery, sid: str, rid: int) -> None:
        if d.held:
            d.finished = True  # it ends once released
            return
        self._replies.pop((sid, rid), None)
        self.publish(ReplyFinished(session_id=sid, response_id=rid, priority=d.priority, text=d.text,
                                   audio=bool(d.chunks)))
        self.event(ReplyDone(session_id=sid, response_id=rid, heard=d.heard(), chunks=[]))

    def on_control(self, frame: ControlFrame, changed: bool) -> None:
        with self._rlock:
            if isinstance(frame, HoldFrame):
                self._hold(frame)
            elif isinstance(frame, (InterruptFrame, CancelFrame)):
                self._cut(frame)

    def _hold(self, frame: HoldFrame) -> None:
        sid, rid = frame.session_id, frame.response_id
        if not self.is_live(sid, rid):
            return
        d = self._replies.setdefault((sid, rid), _Delivery(int(frame.priority)))
        if frame.hold:
            d.held = True
            return
        d.held = False
        pending, d.pending = d.pending, []
        for ev, chunk, text in pending:
            self._out(d, sid, rid, ev, chunk, text)
        if d.finished:
            self._done(d, sid, rid)
        elif d.text_done and not self._is_output(self.conversations.get(sid)):
            self._replies.pop((sid, rid), None)

    def _cut(self, frame: InterruptFrame | CancelFrame) -> None:
        sid = frame.session_id
        spec = self.conversations.get(sid)
        stopped = set(frame.stopped) if isinstance(frame, InterruptFrame) else set()
        for (s, rid) in [k for k in self._replies if k[0] == sid and not self.is_live(sid, k[1])]:
            d = self._replies.pop((s, rid))
            heard = d.heard()
            if d.published:  # (an attempt never released was never seen: nothing to end)
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
