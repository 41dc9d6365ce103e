"""Receive-side ordering for frames sent by fire-and-forget actor calls.

Ray starts calls to a threaded or async actor in no guaranteed order (our
actors are threaded: the control lane runs in its own concurrency group), so
each sender numbers its frames per channel and the receiver releases them in
sequence. A gap that stays open longer than ``gap_timeout`` is skipped (and
counted) rather than stalling the stream forever.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from pipeline.flow.frames import Frame


@dataclass
class _Channel:
    next_seq: int = 1
    pending: dict[int, Frame] = field(default_factory=dict)
    gap_since: float | None = None


class OrderedInbox:
    def __init__(self, gap_timeout: float = 0.25) -> None:
        self.gap_timeout = gap_timeout
        self._channels: dict[str, _Channel] = {}
        self._lock = threading.Lock()
        self.skipped = 0  # frames given up on after a gap timeout
        self.duplicates = 0

    def accept(self, frame: Frame, now: float | None = None) -> list[Frame]:
        """Take one frame; return the frames now releasable, in order.

        Frames with ``seq == 0`` are unnumbered and released at once.
        """
        if frame.seq <= 0:
            return [frame]
        now = time.monotonic() if now is None else now
        with self._lock:
            ch = self._channels.setdefault(frame.source, _Channel())
            if frame.seq < ch.next_seq or frame.seq in ch.pending:
                self.duplicates += 1
                return []
            ch.pending[frame.seq] = frame
            out = self._drain(ch)
            if ch.pending:
                if ch.gap_since is None:
                    ch.gap_since = now
                elif now - ch.gap_since >= self.gap_timeout:
                    # give up on the missing frame(s): jump to the oldest held
                    first = min(ch.pending)
                    self.skipped += first - ch.next_seq
                    ch.next_seq = first
                    out += self._drain(ch)
                    ch.gap_since = now if ch.pending else None
            else:
                ch.gap_since = None
            return out

    @staticmethod
    def _drain(ch: _Channel) -> list[Frame]:
        out = []
        while ch.next_seq in ch.pending:
            out.append(ch.pending.pop(ch.next_seq))
            ch.next_seq += 1
        return out

    def held(self) -> int:
        with self._lock:
            return sum(len(c.pending) for c in self._channels.values())


class SeqCounter:
    """Per-destination sequence numbers for a sender."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def next(self, dest: str) -> int:
        with self._lock:
            n = self._next.get(dest, 0) + 1
            self._next[dest] = n
            return n
