"""The open, authenticated WebSockets, so that shutdown can tell each one and close it."""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from starlette.websockets import WebSocket, WebSocketState

log = logging.getLogger("kokoro.serve")

CLOSE_GOING_AWAY = 1001
SEND_TIMEOUT_S = 2.0  # a client that reads nothing must not hold the shutdown up


def system_message(code: str, message: str) -> dict:
    """seed 001's ``system`` message, with a machine-readable code beside its text."""
    return {"type": "system", "data": {"code": code, "message": message}}


class SessionRegistry:
    def __init__(self) -> None:
        self._open: set[WebSocket] = set()
        self.closing = False  # set once shutdown began: new sessions are refused

    def __len__(self) -> int:
        return len(self._open)

    @asynccontextmanager
    async def track(self, ws: WebSocket) -> AsyncIterator[None]:
        self._open.add(ws)
        try:
            yield
        finally:
            self._open.discard(ws)

    async def close_all(self, message: str = "the server is shutting down") -> int:
        """Tell every open session (a ``system`` message, code ``shutting_down``), then close it
        with 1001 (going away). Returns how many were open."""
        self.closing = True
        sessions = list(self._open)
        await asyncio.gather(*(self.tell_and_close(ws, message) for ws in sessions))
        return len(sessions)

    @staticmethod
    async def tell_and_close(ws: WebSocket, message: str = "the server is shutting down") -> None:
        async def tell_and_close() -> None:
            if ws.application_state == WebSocketState.CONNECTED:
                await ws.send_json(system_message("shutting_down", message))
                await ws.close(CLOSE_GOING_AWAY, "server shutting down")

        try:
            await asyncio.wait_for(tell_and_close(), SEND_TIMEOUT_S)
        except Exception as e:  # gone already, or not reading: uvicorn's own shutdown closes it
            log.debug("closing a session: %r", e)
