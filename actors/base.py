"""What every stage actor shares: two lanes, ordering, stale-frame dropping.

* ``push(frame)`` is the data lane (default concurrency group, one at a time).
  Frames are released in per-sender sequence order by an ``OrderedInbox`` and
  dropped when their response is no longer live.
* ``control(frame)`` is the control lane: its own concurrency group, so an
  interrupt runs at once even while ``push`` is busy in a synthesis.

Frames go downstream by fire-and-forget ``.remote()`` calls (no Ray queues:
measured 2-4x the CPU and lost frames; no compiled graphs: they busy-poll).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
import traceback
from typing import Any

import ray

from pipeline.flow.gate import ResponseGate
from pipeline.config import Config
from pipeline.flow.frames import ControlFrame, EventFrame, Frame
from pipeline.flow.ordering import OrderedInbox, SeqCounter

CONTROL_GROUP = {"control": 1}


def stage_actor(cls: type) -> Any:
    """Wrap a Stage subclass as a Ray actor with the control concurrency group."""
    return ray.remote(num_cpus=0, max_restarts=0, concurrency_groups=CONTROL_GROUP)(cls)


class Stage:
    name = "stage"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.session_id = cfg.engine.session_id
        self.gate = ResponseGate()
        self.inbox = OrderedInbox()
        self._seq = SeqCounter()
        self._targets: dict[str, Any] = {}
        self.processed = 0
        self.log = logging.getLogger(f"kokoro.{self.name}")
        logging.basicConfig(level=cfg.engine.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    # ------------------------------------------------------------ wiring
    def connect(self, targets: dict[str, Any]) -> bool:
        self._targets = dict(targets)
        return True

    def ready(self) -> dict[str, Any]:
        """Called once after construction; subclasses load models in ``setup``."""
        t = time.perf_counter()
        self.setup()
        return {"stage": self.name, "pid": os.getpid(), "setup_s": time.perf_counter() - t}

    def setup(self) -> None:
        pass

    # ------------------------------------------------------------ lanes
    def push(self, frame: Frame) -> None:
        for f in self.inbox.accept(frame):
            if isinstance(f, ControlFrame) and f.urgent:
                self._control(f)  # an urgent frame sent on the data lane still acts
                continue
            if not self.gate.admit(f):
                continue
            try:
                self.process(f)
                self.processed += 1
            except Exception as e:  # a bad frame must not kill the stage
                self.report_error(f"{self.name} failed on {f.kind}: {e}", f.response_id, traceback.format_exc())

    @ray.method(concurrency_group="control")
    def control(self, frame: ControlFrame) -> float:
        self._control(frame)
        return time.time()

    def _control(self, frame: ControlFrame) -> None:
        changed = self.gate.apply(frame)
        try:
            self.on_control(frame, changed)
        except Exception as e:
            self.report_error(f"{self.name} control {frame.kind} failed: {e}", frame.response_id,
                              traceback.format_exc())

    @ray.method(concurrency_group="control")
    def ping(self, sent: float) -> tuple[float, float]:
        """Control-lane round trip probe: returns (sent, received)."""
        return sent, time.time()

    def ping_data(self, sent: float) -> tuple[float, float]:
        """Data-lane probe: waits behind queued data, like a frame would."""
        return sent, time.time()

    @ray.method(concurrency_group="control")
    def stats(self) -> dict[str, Any]:
        return {"stage": self.name, "processed": self.processed, "dropped_stale": self.gate.dropped,
                "skipped_gap": self.inbox.skipped, "held": self.inbox.held(), **self.extra_stats()}

    def extra_stats(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------ hooks
    def process(self, frame: Frame) -> None:
        raise NotImplementedError

    def on_control(self, frame: ControlFrame, changed: bool) -> None:
        pass

    # ------------------------------------------------------------ sending
    def emit(self, dest: str, frame: Frame) -> None:
        target = self._targets.get(dest)
        if target is None:
            return
        frame = dataclasses.replace(frame, seq=self._seq.next(dest), source=self.name, session_id=self.session_id)
        target.push.remote(frame)

    def event(self, name: str, response_id: int = 0, t: float | None = None, **data: Any) -> None:
        self.emit("session", EventFrame(name=name, response_id=response_id,
                                        t=time.time() if t is None else t, data=data))

    def report_error(self, message: str, response_id: int = 0, detail: str = "") -> None:
        self.log.error("%s\n%s", message, detail)
        self.event("error", response_id, stage=self.name, message=message)
