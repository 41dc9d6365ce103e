"""uvicorn, run by kokoro-engine serve: our socket, our ready hook, our shutdown order.

- The socket is bound by us before the engine starts (a port in use fails in a second, not
  after the models load), and handed to uvicorn, which listens on it.
- ``on_ready`` runs once uvicorn accepts connections: the ready line goes out then.
- Shutdown (SIGTERM, SIGINT): stop accepting, tell every open WebSocket and close it with
  1001 (``SessionRegistry.close_all``), and only then uvicorn's own shutdown, which would
  close the rest with 1012 and no word. The process then exits 0: uvicorn's stock signal
  capture re-raises the signal after serving, which would kill us before the engine stops.
"""
from __future__ import annotations

import contextlib
import signal
import socket
import threading
from typing import Awaitable, Callable, Iterator

import uvicorn
from uvicorn.server import HANDLED_SIGNALS

GRACEFUL_S = 5.0  # after the sessions were told: how long uvicorn waits for handlers to end


def bind_socket(host: str, port: int) -> socket.socket:
    """Bound, not listening yet (uvicorn's asyncio server calls listen)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and host == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" means every address
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def uvicorn_config(app, ws_max_message_mb: int) -> uvicorn.Config:
    return uvicorn.Config(
        app, lifespan="off",  # the engine starts before and stops after uvicorn runs
        log_config=None,  # pipeline/api/logs.py configured logging: stderr, redacted
        ws="websockets-sansio", ws_max_size=ws_max_message_mb * 1024 * 1024,
        proxy_headers=False,  # no proxy in front: never trust X-Forwarded-*
        server_header=False, timeout_graceful_shutdown=GRACEFUL_S)


class ShellServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None],
                 before_shutdown: Callable[[], Awaitable[object]]) -> None:
        super().__init__(config)
        self.on_ready, self.before_shutdown = on_ready, before_shutdown

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self.on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # no new client while the open ones are told
            server.close()
        await self.before_shutdown()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
