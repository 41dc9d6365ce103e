"""The ASGI app of kokoro-engine serve: the route table behind its guards.

Request path, outermost first: Host check (DNS rebinding) -> CORS (only with configured
origins) -> token on HTTP -> the routes (WebSockets authenticate in their endpoint, since the
first-message way needs an accepted socket). CORS sits outside the token check so that a
preflight, which never carries the token, is answered, and a 401 carries CORS headers.
"""
from __future__ import annotations

from typing import Any, Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Route, WebSocketRoute

from pipeline.api import errors
from pipeline.api.auth import HTTPAuthMiddleware
from pipeline.api.exposure import HostCheckMiddleware, HostPolicy
from pipeline.api.routes import RouteSpec, WsHandler, authenticated, route_table
from pipeline.api.state import ShellState


def starlette_routes(table: list[RouteSpec]) -> list[BaseRoute]:
    return [Route(r.path, r.endpoint, methods=list(r.methods)) if r.kind == "http"
            else WebSocketRoute(r.path, authenticated(r.endpoint)) for r in table]


def create_app(shell: ShellState, host_policy: HostPolicy, cors_origins: list[str] = (),
               ws_handlers: Mapping[str, WsHandler] | None = None) -> Starlette:
    table = route_table(ws_handlers)
    public = [r.path for r in table if r.kind == "http" and r.public]
    middleware = [Middleware(HostCheckMiddleware, policy=host_policy)]
    if cors_origins:
        assert "*" not in cors_origins  # pipeline/config.py refuses it; never a wildcard here
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(cors_origins),
                                     allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                                     allow_headers=["Authorization", "Content-Type"], allow_credentials=False))
    middleware.append(Middleware(HTTPAuthMiddleware, token=shell.token, public_paths=public))
    handlers: dict[Any, Any] = {HTTPException: errors.http_exception, Exception: errors.server_error}
    app = Starlette(routes=starlette_routes(table), middleware=middleware, exception_handlers=handlers)
    app.state.shell = shell
    return app
