"""What every stage actor shares: two lanes, ordering, conversations, stale-frame dropping.

* ``push(frame)`` is the data lane (default concurrency group, one at a time).
  Frames are released in per-sender sequence order by an ``OrderedInbox`` and
  dropped when their response is no longer live in their conversation.
* ``control(frame)`` is the control lane: its own concurrency group, so an
  interrupt runs at once even while ``push`` is busy in a synthesis.

One stage serves every conversation: what it keeps per conversation is keyed by the
frame's ``session_id`` (each has its own ``ResponseGate``), and it takes frames only of
conversations the engine opened on it (``open_conversation``); ``close_conversation``
releases that state. Frames go where ``pipeline.flow.routes`` says, by fire-and-forget
``.remote()`` calls (no Ray queues: measured 2-4x the CPU and lost frames; no compiled
graphs: they busy-poll).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
import traceback
from typing import Any

import ray

from pipeline.config import Config
from pipeline.flow.events import Event, StageError
from pipeline.flow.frames import ControlFrame, Frame
from pipeline.flow.gate import ResponseGate
from pipeline.flow.ordering import OrderedInbox, SeqCounter
from pipeline.flow.routes import EVERY_STAGE, POOLED, ConversationSpec, destinations

CONTROL_GROUP = {"control": 1}


def stage_actor(cls: type, groups: dict[str, int] | None = None) -> Any:
    """Wrap a Stage subclass as a Ray actor with the control concurrency group."""
    return ray.remote(num_cpus=0, max_restarts=0, concurrency_groups={**CONTROL_GROUP, **(groups or {})})(cls)


class Stage:
    name = "stage"

    def __init__(self, cfg: Config, member: int = 0) -> None:
        self.cfg = cfg
        self.member = member  # index in its pool (STT and TTS may run several)
        self.ident = f"{self.name}#{member}" if self.name in POOLED else self.name
        self.conversations: dict[str, ConversationSpec] = {}
        self._gates: dict[str, ResponseGate] = {}
        self.inbox = OrderedInbox()
        self._seq = SeqCounter()
        self._targets: dict[str, list[Any]] = {}
        self.processed = 0
        self.unknown_conversation = 0  # frames of conversations not open here (closed, or never)
        self.log = logging.getLogger(f"kokoro.{self.name}")
        logging.basicConfig(level=cfg.engine.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    # ------------------------------------------------------------ wiring
    def connect(self, targets: dict[str, Any]) -> bool:
        """``targets``: stage name -> actor handle, or a list of handles for a pool."""
        self._targets = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in targets.items()}
        return True

    def ready(self) -> dict[str, Any]:
        """Called once after construction; subclasses load models in ``setup``."""
        t = time.perf_counter()
        self.setup()
        return {"stage": self.ident, "pid": os.getpid(), "setup_s": time.perf_counter() - t}

    def setup(self) -> None:
        pass

    # ------------------------------------------------------------ conversations
    @ray.method(concurrency_group="control")
    def open_conversation(self, spec: ConversationSpec) -> bool:
        """Take this conversation's frames from now on (again: its spec is updated)."""
        self.conversations[spec.session_id] = spec
        self.on_open(spec)
        return True

    @ray.method(concurrency_group="control")
    def close_conversation(self, session_id: str) -> bool:
        """Forget the conversation: its state, its queued work; its late frames are dropped."""
        if self.conversations.pop(session_id, None) is None:
            return False
        self._gates.pop(session_id, None)
        self.on_close(session_id)
        return True

    def on_open(self, spec: ConversationSpec) -> None:
        pass

    def on_close(self, session_id: str) -> None:
        pass

    def gate(self, session_id: str) -> ResponseGate:
        g = self._gates.get(session_id)
        if g is None:
            g = self._gates[session_id] = ResponseGate()
        return g

    def is_live(self, session_id: str, response_id: int) -> bool:
        return session_id in self.conversations and self.gate(session_id).is_live(response_id)

    # ------------------------------------------------------------ lanes
    def push(self, frame: Frame) -> None:
        for f in self.inbox.accept(frame):
            if f.session_id not in self.conversations:
                self.unknown_conversation += 1
                continue
            if isinstance(f, ControlFrame) and f.urgent:
                self._control(f)  # an urgent frame sent on the data lane still acts
                continue
            if not self.gate(f.session_id).admit(f):
                continue
            try:
                self.process(f)
                self.processed += 1
            except Exception as e:  # a bad frame must not kill the stage
                self.report_error(f"{self.name} failed on {f.kind}: {e}", f.session_id, f.response_id,
                                  traceback.format_exc())

    @ray.method(concurrency_group="control")
    def control(self, frame: ControlFrame) -> float:
        if frame.session_id in self.conversations:
            self._control(frame)
        return time.time()

    def _control(self, frame: ControlFrame) -> None:
        changed = self.gate(frame.session_id).apply(frame)
        try:
            self.on_control(frame, changed)
        except Exception as e:
            self.report_error(f"{self.name} control {frame.kind} failed: {e}", frame.session_id, frame.response_id,
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
        return {"stage": self.ident, "processed": self.processed,
                "dropped_stale": sum(g.dropped for g in list(self._gates.values())),
                "skipped_gap": self.inbox.skipped, "held": self.inbox.held(),
                "conversations": len(self.conversations), "unknown_conversation": self.unknown_conversation,
                **self.extra_stats()}

    def extra_stats(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------ hooks
    def process(self, frame: Frame) -> None:
        raise NotImplementedError

    def on_control(self, frame: ControlFrame, changed: bool) -> None:
        pass

    # ------------------------------------------------------------ sending
    def emit(self, frame: Frame) -> None:
        """Send ``frame`` where the routes take it from this stage, in its own conversation."""
        spec = self.conversations.get(frame.session_id)
        for dest in destinations(self.name, frame, spec):
            if dest == EVERY_STAGE:
                self.broadcast(frame)
            else:
                self.send(dest, frame)

    def send(self, dest: str, frame: Frame) -> None:
        """One frame to one stage (the conversation's member of a pool): data lane, or the
        control lane for urgent frames."""
        handles = self._targets.get(dest)
        if not handles:
            return
        if frame.urgent:
            self._member(dest, handles, frame.session_id).control.remote(frame)
            return
        key = f"{dest}#{self._member_index(dest, frame.session_id)}"
        frame = dataclasses.replace(frame, seq=self._seq.next(key), source=self.ident)
        self._member(dest, handles, frame.session_id).push.remote(frame)

    def broadcast(self, frame: ControlFrame) -> None:
        """An urgent frame to every stage's control lane (this one's too)."""
        for dest, handles in self._targets.items():
            if dest != self.name:
                self._member(dest, handles, frame.session_id).control.remote(frame)
        self._control(frame)

    def _member_index(self, dest: str, session_id: str) -> int:
        spec = self.conversations.get(session_id)
        return spec.members.get(dest, 0) if spec is not None and dest in POOLED else 0

    def _member(self, dest: str, handles: list[Any], session_id: str) -> Any:
        return handles[min(self._member_index(dest, session_id), len(handles) - 1)]

    def event(self, ev: Event) -> None:
        """Tell the session what happened (typed; see pipeline.flow.events)."""
        self.emit(ev)

    def report_error(self, message: str, session_id: str, response_id: int = 0, detail: str = "",
                     fatal: bool = False) -> None:
        self.log.error("%s\n%s", message, detail)
        self.event(StageError(session_id=session_id, response_id=response_id, stage=self.name, message=message,
                              fatal=fatal))
