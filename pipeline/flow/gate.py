"""Which responses are still live, as seen by one stage.

Response ids grow with every turn. An ``InterruptFrame(response_id=N)`` makes
every response older than N stale; a ``CancelFrame(response_id=N)`` kills N
alone. Every stage consults the same gate before doing work on a frame, and
long-running work (a synthesis, an LLM stream) polls ``is_live`` between steps.
"""
from __future__ import annotations

import threading

from pipeline.flow.frames import CancelFrame, ControlFrame, Frame, InterruptFrame


class ResponseGate:
    def __init__(self) -> None:
        self._floor = 0
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()
        self.dropped = 0

    @property
    def floor(self) -> int:
        return self._floor

    def apply(self, frame: ControlFrame) -> bool:
        """Apply an urgent control frame; True if it changed anything."""
        with self._lock:
            if isinstance(frame, InterruptFrame):
                if frame.response_id > self._floor:
                    self._floor = frame.response_id
                    self._cancelled = {r for r in self._cancelled if r >= self._floor}
                    return True
                return False
            if isinstance(frame, CancelFrame):
                if frame.response_id >= self._floor and frame.response_id not in self._cancelled:
                    self._cancelled.add(frame.response_id)
                    return True
            return False

    def is_live(self, response_id: int) -> bool:
        return response_id >= self._floor and response_id not in self._cancelled

    def admit(self, frame: Frame) -> bool:
        """True if the frame should be processed; counts the ones dropped."""
        if frame.input_side or self.is_live(frame.response_id):
            return True
        self.dropped += 1
        return False
