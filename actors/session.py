"""Session actor: hosts ``pipeline.conversation.session.Session`` and fans control out to every stage."""
from __future__ import annotations

import threading
from typing import Any

import ray

from actors.base import Stage, stage_actor
from pipeline.flow.frames import Frame, FrameError
from pipeline.conversation.inputs import parse_input
from pipeline.conversation.session import Session


class SessionStage(Stage):
    name = "session"

    def setup(self) -> None:
        # snapshot() runs on the control lane's thread, process() on the data lane's
        self._lock = threading.Lock()
        c = self.cfg
        self.session = Session(c.llm.system_prompt, c.llm.history_turns, c.llm.preemptive,
                               c.interrupt.min_speech_ms / 1000, c.interrupt.history_marker, heard=self._heard)

    def _heard(self, response_id: int) -> list[dict]:
        """The player's record of what was played of a reply (only asked when one is cut)."""
        player = self._targets.get("player")
        if player is None:
            return []
        try:
            return ray.get(player.heard.remote(response_id), timeout=1.0)
        except Exception as e:  # the reply is cut either way; the history then keeps nothing of it
            self.log.warning("could not ask the player what was heard of %d: %s", response_id, e)
            return []

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

    def send_input(self, message: dict[str, Any]) -> dict[str, Any]:
        """A typed input (NyaDeskPet message) from a front end; says why when it is refused."""
        try:
            frame = parse_input(message)
        except FrameError as e:
            return {"accepted": False, "error": str(e)}
        self.process(frame)
        with self._lock:
            queued = any(f is frame for _, _, f in self.session._queue)
        return {"accepted": True, "type": frame.message_type, "priority": int(frame.priority), "queued": queued}

    @ray.method(concurrency_group="control")
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.session.snapshot()


SessionActor = stage_actor(SessionStage)
