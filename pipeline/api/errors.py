"""The error envelope of every refusal the server gives (seed 002 §2.3, §2.5).

    {"error": {"code": "UNAUTHORIZED", "message": "...", "details": {}}}

Messages say what to do; none carries a token or a request's own credentials.
"""
from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

# HTTP status -> the envelope's code, for the statuses the shell itself gives
CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
         405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 413: "TOO_LARGE", 500: "INTERNAL_ERROR",
         503: "UNAVAILABLE"}


def error_response(status: int, message: str, code: str | None = None, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code or CODES.get(status, "ERROR"), "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status, headers=headers)


def unauthorized(message: str) -> JSONResponse:
    # RFC 6750: a 401 names the scheme it wants
    return error_response(401, message, headers={"WWW-Authenticate": 'Bearer realm="kokoro-engine"'})


async def http_exception(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404/405 (no such route, wrong method) in the envelope."""
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    # the exception itself goes to the log (redacted there), never to the client
    return error_response(500, "internal error; see the server's log")


async def deny_websocket(ws: WebSocket, response: JSONResponse, close_code: int) -> None:
    """Refuse a WebSocket handshake with an HTTP ``response`` (status and envelope), or where
    the server cannot send one, with a bare refusal (``close_code``; uvicorn answers 403)."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(response)
    else:
        await ws.close(close_code)
