"""Fake stages for the actor tests.

Imported by Ray workers as ``tests.unit.fake_stages`` (init_ray puts the repo
root on PYTHONPATH), so keep it free of pytest imports.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import ray

from actors.base import Stage, stage_actor
from pipeline.flow.frames import ControlFrame, Frame, SentenceFrame


class SlowStage(Stage):
    """Each frame takes ``delay`` seconds of (simulated) synthesis."""

    name = "slow"

    def __init__(self, cfg, delay: float = 0.3) -> None:
        super().__init__(cfg)
        self.delay = delay
        self._lock = threading.Lock()
        self.started: list[dict[str, Any]] = []
        self.finished: list[dict[str, Any]] = []
        self.controls: list[dict[str, Any]] = []

    def process(self, frame: Frame) -> None:
        rec = {"rid": frame.response_id, "index": getattr(frame, "index", None), "seq": frame.seq,
               "start": time.time()}
        with self._lock:
            self.started.append(dict(rec))
        time.sleep(self.delay)
        rec["end"] = time.time()
        with self._lock:
            self.finished.append(rec)

    def on_control(self, frame: ControlFrame, changed: bool) -> None:
        with self._lock:
            self.controls.append({"kind": frame.kind, "rid": frame.response_id, "changed": changed,
                                  "t": time.time()})

    @ray.method(concurrency_group="control")
    def log(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {"started": list(self.started), "finished": list(self.finished),
                    "controls": list(self.controls)}


class RecorderStage(Stage):
    """Records every frame its data lane lets through, in the order processed."""

    name = "recorder"

    def setup(self) -> None:
        self._lock = threading.Lock()
        self.frames: list[Frame] = []

    def process(self, frame: Frame) -> None:
        with self._lock:
            self.frames.append(frame)

    @ray.method(concurrency_group="control")
    def received(self) -> list[Frame]:
        with self._lock:
            return list(self.frames)

    @ray.method(concurrency_group="control")
    def count(self) -> int:
        with self._lock:
            return len(self.frames)


class SenderStage(Stage):
    """Emits numbered sentences to a connected stage with Stage.emit."""

    name = "sender"

    def send_many(self, dest: str, n: int, response_id: int = 1) -> int:
        for i in range(1, n + 1):
            self.send(dest, SentenceFrame(text=f"sentence {i}.", index=i, response_id=response_id))
        return n


class FailingStage(RecorderStage):
    """Fails on frames whose text says so; records the rest."""

    name = "failing"

    def process(self, frame: Frame) -> None:
        if getattr(frame, "text", "") == "boom":
            raise RuntimeError("boom")
        super().process(frame)


SlowActor = stage_actor(SlowStage)
RecorderActor = stage_actor(RecorderStage)
SenderActor = stage_actor(SenderStage)
FailingActor = stage_actor(FailingStage)
