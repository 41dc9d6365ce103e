"""Every route of kokoro-engine serve, in one table (``route_table``).

HTTP routes need the token unless marked public; WebSocket routes are authenticated before
their handler runs (pipeline/api/auth.py), so a handler gets an accepted, authenticated
socket and the engine: ``async def handler(ws: WebSocket, hub) -> None``. The companion
protocol (seed 001) is at /ws and /; other faces add theirs to ``WS_HANDLERS``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from pipeline.api.auth import authenticate
from pipeline.api.companion.client import companion_ws
from pipeline.api.errors import deny_websocket, error_response
from pipeline.api.state import ShellState
from pipeline.conversation.latency_export import CONTENT_TYPE

log = logging.getLogger("kokoro.serve")

WsHandler = Callable[[WebSocket, Any], Awaitable[None]]


@dataclass(frozen=True)
class RouteSpec:
    path: str
    kind: str  # "http" or "ws"
    endpoint: Callable[..., Any]  # HTTP: async (Request) -> Response; ws: a WsHandler
    methods: tuple[str, ...] = ("GET",)
    public: bool = False  # HTTP only: served without the token (reveals nothing secret)


def shell_of(conn: Request | WebSocket) -> ShellState:
    return conn.app.state.shell


# ------------------------------------------------------------------ HTTP
async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "healthy", "version": shell_of(request).version})


async def status(request: Request) -> JSONResponse:
    shell = shell_of(request)
    conversations = getattr(getattr(shell.hub, "engine", None), "conversations", {})
    return JSONResponse({"status": "shutting_down" if shell.sessions.closing else "ready",
                         "version": shell.version, "sessions": len(shell.sessions),
                         "conversations": len(conversations),
                         "voice": {"requested": shell.mic_requested, "active": shell.voice_active}})


async def metrics(request: Request) -> Response:
    """Per-turn latencies of every conversation, Prometheus text (behind the token, as every
    route but health: a scraper sends ``Authorization: Bearer``)."""
    return Response(await shell_of(request).hub.metrics_text(), media_type=CONTENT_TYPE)


# ------------------------------------------------------------------ WebSocket
# the companion protocol (seed 001) at /ws, and at / too: NyaDeskPet's default URL has no path
WS_HANDLERS: dict[str, WsHandler] = {"/ws": companion_ws, "/": companion_ws}


def authenticated(handler: WsHandler) -> Callable[[WebSocket], Awaitable[None]]:
    """The Starlette endpoint that authenticates, registers the session for shutdown, runs
    ``handler(ws, hub)`` and closes the socket if the handler left it open."""

    async def endpoint(ws: WebSocket) -> None:
        shell = shell_of(ws)
        if shell.sessions.closing:
            return await deny_websocket(ws, error_response(503, "the server is shutting down"), 1001)
        if not await authenticate(ws, shell.token, shell.ws_auth_timeout_s):
            return
        if shell.sessions.closing:  # authenticated while the shutdown told the others
            return await shell.sessions.tell_and_close(ws)
        async with shell.sessions.track(ws):
            try:
                await handler(ws, shell.hub)
            except WebSocketDisconnect:
                pass
            except Exception:
                if not shell.sessions.closing:  # after shutdown closed it, a send fails: expected
                    log.exception("WebSocket handler %s failed", getattr(handler, "__name__", handler))
                    await _close_quietly(ws, 1011)
            await _close_quietly(ws, 1000)

    endpoint.__name__ = f"authenticated_{getattr(handler, '__name__', 'handler')}"
    return endpoint


async def _close_quietly(ws: WebSocket, code: int) -> None:
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:
            await ws.close(code)
        except Exception:
            pass


# ------------------------------------------------------------------ the table
def route_table(ws_handlers: Mapping[str, WsHandler] | None = None) -> list[RouteSpec]:
    ws = {**WS_HANDLERS, **(ws_handlers or {})}
    return [
        RouteSpec("/healthz", "http", healthz, public=True),
        RouteSpec("/health", "http", health, public=True),
        RouteSpec("/status", "http", status),
        RouteSpec("/metrics", "http", metrics),
        *(RouteSpec(path, "ws", handler) for path, handler in ws.items()),
    ]
