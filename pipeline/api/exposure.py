"""Network exposure: which address the server binds, and which Host headers it answers.

Loopback (127.0.0.1) unless ``--host`` names another address *and* remote access is allowed
(``--allow-remote`` or ``server.allow_remote``). The Host check defends against DNS
rebinding: a page on evil.example whose name is made to resolve to 127.0.0.1 sends
``Host: evil.example``, which is refused. Allowed: 127.0.0.1, localhost and [::1], any port (an
SSH tunnel may change it), plus the bound address when remote access is allowed; with a
wildcard bind (0.0.0.0, ::) any IP-address Host, since a rebinding attack always carries a
name and the machine's own addresses are not known in advance.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from pipeline.api.auth import header
from pipeline.api.errors import deny_websocket, error_response

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ExposureError(ValueError):
    pass


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host == "localhost" or (ip is not None and ip.is_loopback)


def bind_address(host: str) -> str:
    """The address to bind: "localhost" is 127.0.0.1 (not whatever the resolver says)."""
    return "127.0.0.1" if host == "localhost" else host


def check_bind(host: str, allow_remote: bool) -> None:
    if _ip(host) is None and host != "localhost":
        raise ExposureError(f"--host {host!r}: give an IP address (127.0.0.1, ::1, or with --allow-remote "
                            "another address of this machine, 0.0.0.0 or ::)")
    if not is_loopback(host) and not allow_remote:
        raise ExposureError(f"--host {host}: not a loopback address; the server would be reachable from the "
                            "network. Add --allow-remote to mean it (anyone who can reach the port then needs "
                            "only the token; there is no TLS)")


def split_host(value: str) -> str | None:
    """The name of a Host header value ("[::1]:8765" -> "::1"); None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = value[1:end], value[end + 1:]
        if end < 0 or _ip(name) is None:
            return None
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    name = name[:-1] if name.endswith(".") else name  # "localhost." is localhost
    return name or None


@dataclass(frozen=True)
class HostPolicy:
    names: frozenset[str]
    any_ip: bool = False

    @classmethod
    def for_bind(cls, host: str, allow_remote: bool) -> "HostPolicy":
        if not allow_remote or is_loopback(host):
            return cls(LOOPBACK_HOSTS)
        ip = _ip(host)
        return cls(LOOPBACK_HOSTS | {str(ip) if ip else host}, any_ip=bool(ip and ip.is_unspecified))

    def allows(self, value: str | None) -> bool:
        name = split_host(value) if value is not None else None
        if name is None:
            return False
        ip = _ip(name)
        return (str(ip) if ip else name) in self.names or (self.any_ip and ip is not None)


class HostCheckMiddleware:
    """403 (the error envelope) for an HTTP request or WebSocket handshake whose Host is not allowed."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.policy.allows(header(scope, b"host")):
            return await self.app(scope, receive, send)
        response = error_response(403, "Host header not allowed (DNS rebinding guard): connect to "
                                       "127.0.0.1, localhost or [::1]")
        if scope["type"] == "http":
            return await response(scope, receive, send)
        await deny_websocket(WebSocket(scope, receive, send), response, 1008)
