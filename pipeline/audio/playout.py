"""The player's buffer: what is queued to be heard, and what has been heard.

Sinks (a sound device callback, or a WAV file clocked in real time) pull fixed
blocks with ``read``; it returns the samples and the events inside the block
(response start, chunk start/end, response done) with their sample offsets,
so the sink can stamp each event with the time it is actually heard.
Holding (pausing) or dropping a response takes effect at the next block:
audio stops within one, after a 5 ms fade so the cut does not click.
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


LOUD = 300  # int16: above this a sample counts as sound (about -40 dBFS)


@dataclass
class Segment:
    response_id: int
    pcm: np.ndarray
    text: str = ""
    text_start: int = 0
    text_end: int = 0
    chunk_index: int = 0
    pos: int = 0  # samples already played
    # where the voice is inside the chunk (Kokoro pads each with silence): the
    # words are spread over this span when mapping played samples to text
    speech_start: int = 0
    speech_end: int = 0

    def __post_init__(self) -> None:
        loud = np.flatnonzero(np.abs(self.pcm.astype(np.int32)) > LOUD)
        if len(loud) and not self.speech_end:
            self.speech_start, self.speech_end = int(loud[0]), int(loud[-1]) + 1

    def heard(self) -> dict:
        return {"text": self.text, "text_start": self.text_start, "text_end": self.text_end,
                "samples": len(self.pcm), "played": self.pos, "speech_start": self.speech_start,
                "speech_end": self.speech_end, "chunk": self.chunk_index}


@dataclass
class PlayEvent:
    kind: str  # "response_start" | "chunk_start" | "chunk_end" | "response_done"
    response_id: int
    offset: int  # sample offset inside the block just read
    segment: Segment | None = None


@dataclass
class _Response:
    started: bool = False
    ended: bool = False  # the producer sent its end marker
    played: int = 0  # samples of this response played so far
    segments: list[Segment] = field(default_factory=list)  # in order: what was and will be heard


class PlayoutBuffer:
    FADE = 120  # samples of fade-out when a response is cut mid-sound (5 ms at 24 kHz)

    def __init__(self, live: Callable[[int], bool] = lambda rid: True) -> None:
        # ``live`` is consulted under the lock by add/end: a segment that lost the
        # race with an interrupt is refused instead of re-creating its response
        self.live = live
        self._q: deque[Segment | tuple[str, int]] = deque()
        self._resp: dict[int, _Response] = {}
        self.held: set[int] = set()  # responses whose audio waits (preemptive replies)
        self._lock = threading.Lock()
        self.cond = threading.Condition(self._lock)
        self.now_playing: tuple[int, int] = (0, 0)  # (response_id, sample index within it)
        self._gone: OrderedDict[int, _Response] = OrderedDict()  # finished or dropped, for heard()
        self._tail = np.zeros(0, np.int16)  # the fade-out of a response just cut, played next
        self.block_start: tuple[int, int] = (0, 0)  # (response, its sample) at the last block's first sample

    def add(self, seg: Segment) -> bool:
        with self.cond:
            if not self.live(seg.response_id):
                return False
            self._resp.setdefault(seg.response_id, _Response()).segments.append(seg)
            self._q.append(seg)
            self.cond.notify_all()
            return True

    def end(self, response_id: int) -> None:
        with self.cond:
            if not self.live(response_id):
                return
            self._resp.setdefault(response_id, _Response()).ended = True
            self._q.append(("end", response_id))
            self.cond.notify_all()

    def hold(self, response_id: int, hold: bool) -> None:
        with self.cond:
            if hold and response_id not in self.held:
                self._fade_head(response_id, advance=True)
            (self.held.add if hold else self.held.discard)(response_id)
            self.cond.notify_all()

    def _fade_head(self, response_id: int, advance: bool) -> None:
        """If ``response_id`` is mid-segment at the head, queue its next 5 ms faded out."""
        if not self._q or not isinstance(self._q[0], Segment) or self._q[0].response_id != response_id:
            return
        head = self._q[0]
        if head.pos == 0 or head.pos >= len(head.pcm):
            return
        tail = head.pcm[head.pos:head.pos + self.FADE].astype(np.float32)
        self._tail = (tail * np.linspace(1.0, 0.0, len(tail), dtype=np.float32)).astype(np.int16)
        if advance:  # paused: those samples are heard, resume after them
            head.pos += len(tail)
            r = self._resp.get(response_id)
            if r is not None:
                r.played += len(tail)

    def drop(self, keep: Callable[[int], bool] | None = None) -> list[int]:
        """Drop queued audio of responses no longer live (or not ``keep``); returns their ids."""
        keep = keep or self.live
        with self.cond:
            gone = sorted(r for r in self._resp if not keep(r))
            if self._q and not keep(self._head_id()) and self._head_id() not in self.held:
                self._fade_head(self._head_id(), advance=False)
            self._q = deque(x for x in self._q if keep(x.response_id if isinstance(x, Segment) else x[1]))
            for r in gone:
                self._retire(r)
            self.held = {r for r in self.held if keep(r)}
            return gone

    def _playable(self) -> bool:
        return bool(self._q) and self._head_id() not in self.held

    def _head_id(self) -> int:
        head = self._q[0]
        return head.response_id if isinstance(head, Segment) else head[1]

    def wait(self, timeout: float) -> bool:
        """Block until something playable is queued (or ``timeout``); True if it is."""
        with self.cond:
            return self.cond.wait_for(self._playable, timeout=timeout)

    def pending(self) -> bool:
        with self._lock:
            return self._playable()

    def played(self, response_id: int) -> int:
        with self._lock:
            r = self._resp.get(response_id)
            return r.played if r else 0

    def _retire(self, rid: int) -> None:
        r = self._resp.pop(rid, None)
        if r is not None:
            self._gone[rid] = r
            while len(self._gone) > 32:
                self._gone.popitem(last=False)

    def heard(self, response_id: int) -> list[dict]:
        """Each chunk of ``response_id`` with how many of its samples were played."""
        with self._lock:
            r = self._resp.get(response_id) or self._gone.get(response_id)
            return [s.heard() for s in r.segments] if r else []

    def playing(self) -> int:
        """The response whose audio is at the head of the queue (0 if none)."""
        with self._lock:
            return self._head_id() if self._q else 0

    def read(self, n: int) -> tuple[np.ndarray, list[PlayEvent]]:
        out = np.zeros(n, np.int16)
        events: list[PlayEvent] = []
        filled = 0
        with self._lock:
            self.block_start = (0, 0)
            if len(self._tail):
                take = min(n, len(self._tail))
                out[:take], self._tail = self._tail[:take], self._tail[take:]
                filled = take
            while self._q and filled < n and self._head_id() not in self.held:
                head = self._q[0]
                if isinstance(head, tuple):  # end marker: everything before it has played
                    self._q.popleft()
                    events.append(PlayEvent("response_done", head[1], filled))
                    self._retire(head[1])
                    continue
                resp = self._resp.setdefault(head.response_id, _Response())
                if not resp.started:
                    resp.started = True
                    events.append(PlayEvent("response_start", head.response_id, filled))
                if head.pos == 0:
                    events.append(PlayEvent("chunk_start", head.response_id, filled, head))
                take = min(n - filled, len(head.pcm) - head.pos)
                if self.block_start == (0, 0):
                    self.block_start = (head.response_id, resp.played - filled)
                out[filled:filled + take] = head.pcm[head.pos:head.pos + take]
                head.pos += take
                filled += take
                resp.played += take
                self.now_playing = (head.response_id, resp.played)
                if head.pos >= len(head.pcm):
                    self._q.popleft()
                    events.append(PlayEvent("chunk_end", head.response_id, filled, head))
        return out, events
