"""A conversation's turns and notices as its event stream tells them, collected in the
background: tests wait on what happened, keyed by each turn's stable ``turn_id``."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from pipeline.flow.bus_events import Notice, TurnUpdated


class ConversationWatch:
    def __init__(self, engine, session_id: str | None = None) -> None:
        self.engine = engine
        self.sub = engine.subscribe(session_id or engine.voice_session)
        self.turns: dict[int, dict[str, Any]] = {}
        self.notices: list[Notice] = []
        self._since: set[int] = set()
        self._cond = threading.Condition()
        self._ready = threading.Event()
        threading.Thread(target=self._pump, name="watch", daemon=True).start()
        if not self._ready.wait(30):
            raise RuntimeError("the subscription did not start")

    def _pump(self) -> None:
        try:
            for ev in self.sub:
                self._ready.set()
                with self._cond:
                    if isinstance(ev, TurnUpdated):
                        self.turns[ev.turn["turn_id"]] = ev.turn
                    elif isinstance(ev, Notice):
                        self.notices.append(ev)
                    self._cond.notify_all()
        except Exception:
            pass

    def mark(self) -> None:
        """From now on, ``new_turns`` are the turns first seen after this call."""
        with self._cond:
            self._since = set(self.turns)
            self._notices0 = len(self.notices)

    def new_turns(self) -> list[dict[str, Any]]:
        with self._cond:
            return [t for k, t in sorted(self.turns.items()) if k not in self._since]

    def new_errors(self) -> list[str]:
        with self._cond:
            return [n.message for n in self.notices[getattr(self, "_notices0", 0):] if n.level == "error"]

    def wait(self, cond: Callable[["ConversationWatch"], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._cond:
            while not cond(self):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def settle(self, timeout: float = 60.0) -> bool:
        """Until every turn seen is over."""
        return self.wait(lambda w: all(t["finished"] for t in w.turns.values()), timeout)

    def close(self) -> None:
        self.engine.unsubscribe(self.sub)
