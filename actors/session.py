"""Session actor: hosts ``pipeline.session.Session`` and fans control out to every stage."""
from __future__ import annotations

import threading
from typing import Any

import ray

from actors.base import Stage, stage_actor
from pipeline.frames import Frame
from pipeline.session import Session


class SessionStage(Stage):
    name = "session"

    def setup(self) -> None:
        # snapshot() runs on the control lane's thread, process() on the data lane's
        self._lock = threading.Lock()
        self.session = Session(self.cfg.llm.system_prompt, self.cfg.llm.history_turns, self.cfg.llm.preemptive)

    def process(self, frame: Frame) -> None:
        with self._lock:
            sends = self.session.handle(frame)
        for send in sends:
            if send.dest == "*":  # the control lane of every stage, this one included
                for name, target in self._targets.items():
                    if name != self.name:
                        target.control.remote(send.frame)
                self._control(send.frame)
            elif send.frame.urgent:
                self._targets[send.dest].control.remote(send.frame)
            else:
                self.emit(send.dest, send.frame)

    @ray.method(concurrency_group="control")
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.session.snapshot()


SessionActor = stage_actor(SessionStage)
