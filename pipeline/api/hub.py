"""The engine as the server's handlers use it: async, and conversations that live as long
as a client holds them.

Every call awaits Ray object refs on the server's event loop (no thread waits on Ray).
A conversation a client opened closes when its last client leaves (``release``), which
frees what every stage kept of it and its queued synthesis; the voice conversation
(``--mic``) stays.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

from pipeline.flow.routes import POOLED, ConversationSpec
from pipeline.runtime.engine import Engine, Subscription


class Hub:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._holders: dict[str, int] = {}  # conversation -> clients holding it
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------ conversations
    async def hold(self, session_id: str | None = None, audio_out: str = "client") -> str:
        """Open (or join, when it exists) a conversation for one client; returns its id."""
        async with self._lock:
            e = self.engine
            sid = session_id or uuid.uuid4().hex[:16]
            if sid not in e.conversations:
                members = {name: e._least_loaded(name) for name in POOLED}
                spec = e.conversations[sid] = ConversationSpec(sid, audio_out, members)
                await asyncio.gather(*(h.open_conversation.remote(spec) for h in e._handles()))
            self._holders[sid] = self._holders.get(sid, 0) + 1
            return sid

    async def release(self, session_id: str) -> bool:
        """A client left; the conversation closes with its last client (not the voice one)."""
        async with self._lock:
            n = self._holders.get(session_id, 0) - 1
            if n > 0:
                self._holders[session_id] = n
                return False
            self._holders.pop(session_id, None)
            if session_id == self.engine.voice_session or session_id not in self.engine.conversations:
                return False
            del self.engine.conversations[session_id]
            await asyncio.gather(*(h.close_conversation.remote(session_id) for h in self.engine._handles()),
                                 return_exceptions=True)
            return True

    def exists(self, session_id: str) -> bool:
        return session_id in self.engine.conversations

    def audio_out(self, session_id: str) -> str:
        spec = self.engine.conversations.get(session_id)
        return spec.audio_out if spec is not None else ""

    # ------------------------------------------------------------ traffic
    async def send(self, session_id: str, message: dict[str, Any]) -> dict[str, Any]:
        return await self.engine.actors["session"].send_input.remote(session_id, message)

    def subscribe(self, session_id: str) -> Subscription:
        return self.engine.subscribe(session_id)

    def unsubscribe(self, sub: Subscription) -> None:
        self.engine.unsubscribe(sub)

    def played(self, session_id: str, response_id: int, samples: int) -> None:
        self.engine.played(session_id, response_id, samples)

    async def metrics_text(self) -> str:
        return await self.engine.actors["client"].metrics_text.remote()

    async def commands(self) -> list[dict[str, Any]]:
        return await self.engine.actors["session"].commands.remote()

    def info(self) -> dict[str, Any]:
        return self.engine.info()

    @property
    def data_dir(self):
        from pipeline.config import data_dir

        return data_dir(self.engine.cfg)
