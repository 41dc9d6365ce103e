"""Who may talk to the server: the session token, checked in constant time.

HTTP: ``Authorization: Bearer <token>`` on every request but the public health routes.

WebSocket, any one of three ways:
1. the same ``Authorization: Bearer <token>`` header (clients that can set headers);
2. ``Sec-WebSocket-Protocol: bearer, <token>`` (browsers, seed 002 §4.1): the server selects
   ``bearer``, so the token is never echoed back. A token offered alone is refused (401): the
   server would have to echo it, or select nothing, which browsers treat as a failed handshake;
3. no credentials in the handshake: the server accepts, and the first message must be
   ``{"type": "auth", "token": "..."}`` within the auth timeout (seed 003 Part 4), answered by
   ``{"type": "auth_ok"}``. A wrong token or another message closes with 4401, silence with 4408.

A wrong token in the handshake (header or subprotocol) is refused there with a 401 and the
error envelope. Tokens in the query string are never read.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from pipeline.api.errors import deny_websocket, unauthorized

BEARER_MARKER = "bearer"  # the subprotocol a client offers before its token, and the one selected
CLOSE_UNAUTHORIZED = 4401  # first-message auth: wrong token, or not an auth message
CLOSE_AUTH_TIMEOUT = 4408  # first-message auth: nothing within the timeout


def tokens_match(given: str | None, token: str) -> bool:
    """Constant time in the content (and, through the hashes, in the length) of ``given``."""
    if given is None:
        return False
    digest = lambda s: hashlib.sha256(s.encode("utf-8", "surrogateescape")).digest()  # noqa: E731
    return hmac.compare_digest(digest(given), digest(token))


def bearer_of(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value; None for another scheme."""
    scheme, _, value = authorization.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


# ------------------------------------------------------------------ HTTP
class HTTPAuthMiddleware:
    """401 for any HTTP request without the token, whatever its path (an unknown path too:
    no route list for strangers), but GET/HEAD of the public routes."""

    def __init__(self, app: ASGIApp, token: str, public_paths: Iterable[str]) -> None:
        self.app, self.token, self.public = app, token, frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["path"] in self.public and scope["method"] in ("GET", "HEAD")):
            return await self.app(scope, receive, send)
        authorization = header(scope, b"authorization")
        if authorization is None:
            response = unauthorized("this route needs the session token: Authorization: Bearer <token>")
        elif not tokens_match(bearer_of(authorization), self.token):
            response = unauthorized("the Authorization header does not hold the session token")
        else:
            return await self.app(scope, receive, send)
        await response(scope, receive, send)


# ------------------------------------------------------------------ WebSocket
@dataclass(frozen=True)
class Handshake:
    """What the handshake's credentials decide: ``ok`` (accept, select ``subprotocol``),
    ``deny`` (401 with ``reason``) or ``first_message`` (accept, then wait for auth)."""
    outcome: str
    subprotocol: str | None = None
    reason: str = ""


def parse_subprotocols(values: Iterable[str]) -> list[str]:
    """Sec-WebSocket-Protocol header values (repeated and/or comma-separated) -> the offers."""
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def decide_handshake(authorization: str | None, offers: list[str], token: str) -> Handshake:
    """Every credential the handshake carries must be right; none at all means first-message auth."""
    selected = None
    if BEARER_MARKER in offers:
        i = offers.index(BEARER_MARKER)
        if not tokens_match(offers[i + 1] if i + 1 < len(offers) else None, token):
            return Handshake("deny", reason=f"Sec-WebSocket-Protocol: the entry after {BEARER_MARKER!r} must be "
                                            "the session token")
        selected = BEARER_MARKER
    elif any(tokens_match(o, token) for o in offers):
        return Handshake("deny", reason=f"Sec-WebSocket-Protocol: offer the token after the {BEARER_MARKER!r} "
                                        f"marker ({BEARER_MARKER}, <token>): the server selects the marker, "
                                        "never the token")
    if authorization is not None:
        if not tokens_match(bearer_of(authorization), token):
            return Handshake("deny", reason="the Authorization header does not hold the session token")
        return Handshake("ok", selected)
    return Handshake("ok", selected) if selected else Handshake("first_message")


async def authenticate(ws: WebSocket, token: str, timeout_s: float) -> bool:
    """Run the handshake's or the first message's auth on ``ws``; True: accepted and
    authenticated; False: refused (a 401, or a close with 4401/4408) or gone."""
    offers = parse_subprotocols(ws.scope.get("subprotocols") or [])  # split again: servers differ
    hs = decide_handshake(ws.headers.get("authorization"), offers, token)
    if hs.outcome == "deny":
        await deny_websocket(ws, unauthorized(hs.reason), CLOSE_UNAUTHORIZED)
        return False
    await ws.accept(subprotocol=hs.subprotocol)
    if hs.outcome == "ok":
        return True
    try:
        msg = await asyncio.wait_for(ws.receive(), timeout_s)
    except TimeoutError:
        await ws.close(CLOSE_AUTH_TIMEOUT, f"auth timeout: send {{\"type\": \"auth\", \"token\": ...}} "
                                           f"within {timeout_s:g} s")
        return False
    if msg["type"] == "websocket.disconnect":
        return False
    try:
        obj = json.loads(msg.get("text") or msg.get("bytes") or b"")
    except ValueError:
        obj = None
    if isinstance(obj, dict) and obj.get("type") == "auth" and isinstance(obj.get("token"), str) \
            and tokens_match(obj["token"], token):
        await ws.send_json({"type": "auth_ok"})
        return True
    await ws.close(CLOSE_UNAUTHORIZED, "unauthorized: the first message must be "
                                       "{\"type\": \"auth\", \"token\": <the session token>}")
    return False
