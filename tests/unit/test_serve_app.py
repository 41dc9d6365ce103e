"""The server shell of kokoro-engine serve on a real uvicorn over loopback, with a stand-in
engine (the full CLI with the real engine: tests/integration/test_serve_shell.py)."""
from __future__ import annotations

import contextlib
import json
import re
import threading

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from pipeline.api.app import create_app
from pipeline.api.exposure import HostPolicy
from pipeline.api.routes import route_table
from pipeline.api.server import ShellServer, bind_socket, uvicorn_config
from pipeline.api.state import ShellState

TOKEN = "0123456789abcdef" * 4
WRONG = "f" * 64
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT_S = 10.0  # for what should come at once: generous for a slow, shared CPU


class Hub:
    name = "the stand-in engine"

    def __init__(self) -> None:
        from pipeline.conversation.latency_export import LatencyExport

        self.latency = LatencyExport()

    async def metrics_text(self) -> str:
        return self.latency.text()


async def echo_ws(ws, hub) -> None:
    """Stands in for the companion protocol (which needs an engine): ping -> pong, anything
    else -> a system message."""
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        try:
            obj = json.loads(msg.get("text") or msg.get("bytes") or b"")
        except ValueError:
            obj = None
        if isinstance(obj, dict) and obj.get("type") == "ping":
            await ws.send_json({"type": "pong"})
        else:
            await ws.send_json({"type": "system", "data": {"code": "not_implemented", "message": "echo only"}})


@contextlib.contextmanager
def running(ws_auth_timeout_s: float = 5.0, **app_kw):
    shell = ShellState(TOKEN, Hub(), ws_auth_timeout_s)
    app_kw["ws_handlers"] = {"/ws": echo_ws, "/": echo_ws, **app_kw.get("ws_handlers", {})}
    app = create_app(shell, HostPolicy.for_bind("127.0.0.1", False), **app_kw)
    sock = bind_socket("127.0.0.1", 0)
    ready = threading.Event()
    server = ShellServer(uvicorn_config(app, 1), ready.set, shell.sessions.close_all)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert ready.wait(WAIT_S), "the server did not start"
        yield server, shell, sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        sock.close()
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def srv():
    with running() as (server, shell, port):
        yield shell, port


def ws_url(port, path="/ws"):
    return f"ws://127.0.0.1:{port}{path}"


def denied(port, **kw) -> httpx.Response:
    """The HTTP response of a refused WebSocket handshake."""
    with pytest.raises(InvalidStatus) as e:
        with connect(ws_url(port, kw.pop("path", "/ws")), open_timeout=WAIT_S, **kw):
            pass
    r = e.value.response
    return httpx.Response(r.status_code, headers=list(r.headers.raw_items()), content=bytes(r.body or b""))


def raw_handshake(port, headers: dict, path: str = "/ws") -> httpx.Response:
    """A WebSocket opening handshake sent as plain HTTP: for headers the websockets client sets
    itself (Host), and for checking a refusal byte for byte."""
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers={**upgrade, **headers}, timeout=WAIT_S)


def closed_with(ws) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as e:
        while True:
            ws.recv(timeout=WAIT_S)
    return e.value.rcvd.code, e.value.rcvd.reason


# ------------------------------------------------------------------ HTTP
def test_health_routes_are_public(srv):
    _, port = srv
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"http://127.0.0.1:{port}/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy"


@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": TOKEN}])
def test_every_other_http_route_needs_the_token(srv, headers):
    _, port = srv
    paths = [re.sub(r"\{[^}]+\}", "x", r.path) for r in route_table() if r.kind == "http" and not r.public]
    paths.append("/no-such-route")
    for path in paths:
        for method in ("GET", "POST", "DELETE"):
            r = httpx.request(method, f"http://127.0.0.1:{port}{path}", headers=headers)
            assert r.status_code == 401, (method, path)
            assert r.json()["error"]["code"] == "UNAUTHORIZED" and r.json()["error"]["details"] == {}
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in r.text
    # the public routes are public for GET only
    assert httpx.post(f"http://127.0.0.1:{port}/healthz").status_code == 401


def test_metrics_are_prometheus_text_behind_the_token(srv):
    shell, port = srv
    shell.hub.latency.observe("a", {"turn_id": 1, "finished": True, "state": "done", "info": {"ttft_s": 0.25}})
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "kokoro_turn_ttft_seconds_count 1.0" in r.text and 'kokoro_turns_total{state="done"} 1.0' in r.text
    assert TOKEN not in r.text
    assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 401


def test_query_string_token_is_never_read(srv):
    _, port = srv
    for q in (f"token={TOKEN}", f"access_token={TOKEN}", f"auth={TOKEN}"):
        assert httpx.get(f"http://127.0.0.1:{port}/status?{q}").status_code == 401
    # nor for a WebSocket: without credentials in its headers, the first message must authenticate
    with connect(f"{ws_url(port)}?token={TOKEN}", open_timeout=WAIT_S) as ws:
        ws.send(json.dumps({"type": "ping"}))
        assert closed_with(ws)[0] == 4401


def test_with_the_token(srv):
    shell, port = srv
    r = httpx.get(f"http://127.0.0.1:{port}/status", headers=AUTH)
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "version": shell.version, "sessions": 0, "conversations": 0,
                        "voice": {"requested": False, "active": False}}
    r = httpx.get(f"http://127.0.0.1:{port}/no-such-route", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    r = httpx.post(f"http://127.0.0.1:{port}/status", headers=AUTH)
    assert r.status_code == 405 and r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_foreign_host_header_is_refused(srv):
    _, port = srv
    for host in ("evil.example", f"evil.example:{port}", "localhost.evil.example"):
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Host": host})
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
        r = httpx.get(f"http://127.0.0.1:{port}/status", headers={**AUTH, "Host": host})
        assert r.status_code == 403
        r = raw_handshake(port, {**AUTH, "Host": host})
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    for host in ("localhost", f"localhost:{port}", f"[::1]:{port}", "127.0.0.1"):
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Host": host}).status_code == 200


def test_no_cors_by_default(srv):
    _, port = srv
    origin = {"Origin": "http://localhost:5173"}
    r = httpx.get(f"http://127.0.0.1:{port}/status", headers={**AUTH, **origin})
    assert r.status_code == 200 and not any(k.startswith("access-control-") for k in r.headers)
    r = httpx.options(f"http://127.0.0.1:{port}/status",
                      headers={**origin, "Access-Control-Request-Method": "GET"})
    assert r.status_code == 401 and not any(k.startswith("access-control-") for k in r.headers)


def test_cors_admits_exactly_the_configured_origins():
    with running(cors_origins=["http://localhost:5173"]) as (_, _, port):
        pre = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
        r = httpx.options(f"http://127.0.0.1:{port}/status", headers={"Origin": "http://localhost:5173", **pre})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = httpx.get(f"http://127.0.0.1:{port}/status", headers={**AUTH, "Origin": "http://localhost:5173"})
        assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
        r = httpx.get(f"http://127.0.0.1:{port}/status", headers={"Origin": "http://localhost:5173"})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "http://localhost:5173"
        r = httpx.options(f"http://127.0.0.1:{port}/status", headers={"Origin": "https://evil.example", **pre})
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        r = httpx.get(f"http://127.0.0.1:{port}/status", headers={**AUTH, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


# ------------------------------------------------------------------ WebSocket: the three ways
def ping(ws) -> dict:
    ws.send(json.dumps({"type": "ping"}))
    return json.loads(ws.recv(timeout=WAIT_S))


def test_ws_header_auth(srv):
    _, port = srv
    with connect(ws_url(port), additional_headers=AUTH, open_timeout=WAIT_S) as ws:
        assert ws.subprotocol is None
        assert ping(ws) == {"type": "pong"}


def test_ws_subprotocol_auth_selects_the_marker_never_the_token(srv):
    _, port = srv
    with connect(ws_url(port), subprotocols=["bearer", TOKEN], open_timeout=WAIT_S) as ws:
        assert ws.subprotocol == "bearer"
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "bearer"
        assert TOKEN not in str(list(ws.response.headers.raw_items()))
        assert ping(ws) == {"type": "pong"}


def test_ws_first_message_auth(srv):
    _, port = srv
    with connect(ws_url(port), open_timeout=WAIT_S) as ws:
        ws.send(json.dumps({"type": "auth", "token": TOKEN}))
        assert json.loads(ws.recv(timeout=WAIT_S)) == {"type": "auth_ok"}
        assert ping(ws) == {"type": "pong"}
        ws.send(json.dumps({"type": "user_input", "text": "hi"}))
        reply = json.loads(ws.recv(timeout=WAIT_S))
        assert reply["type"] == "system" and reply["data"]["code"] == "not_implemented"


@pytest.mark.parametrize("kw", [
    {"additional_headers": {"Authorization": f"Bearer {WRONG}"}},
    {"additional_headers": {"Authorization": f"Basic {TOKEN}"}},
    {"subprotocols": ["bearer", WRONG]},
    {"subprotocols": ["bearer"]},
    {"subprotocols": [TOKEN]},  # the token alone: refused, never echoed
    {"subprotocols": ["bearer", TOKEN], "additional_headers": {"Authorization": f"Bearer {WRONG}"}},
])
def test_ws_wrong_handshake_credentials_get_401(srv, kw):
    _, port = srv
    r = denied(port, **kw)
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
    assert TOKEN not in r.text and TOKEN not in str(r.headers)
    assert "sec-websocket-protocol" not in r.headers


@pytest.mark.parametrize("first", [
    json.dumps({"type": "auth", "token": WRONG}),
    json.dumps({"type": "auth"}),
    json.dumps({"type": "auth", "token": 1}),
    json.dumps({"type": "ping"}),
    json.dumps({"token": TOKEN}),  # no type
    "not json",
    TOKEN,  # the bare token is not the auth message
])
def test_ws_wrong_first_message_closes_4401(srv, first):
    _, port = srv
    with connect(ws_url(port), open_timeout=WAIT_S) as ws:
        ws.send(first)
        code, reason = closed_with(ws)
    assert code == 4401 and "auth" in reason and TOKEN not in reason


def test_ws_silence_closes_4408():
    with running(ws_auth_timeout_s=0.3) as (_, _, port):
        with connect(ws_url(port), open_timeout=WAIT_S) as ws:
            code, reason = closed_with(ws)
    assert code == 4408 and "timeout" in reason


def test_ws_unknown_path_is_refused(srv):
    _, port = srv
    assert denied(port, path="/nope", additional_headers=AUTH).status_code == 403


# ------------------------------------------------------------------ handlers and shutdown
def test_mounted_handler_gets_an_authenticated_socket_and_the_hub():
    seen = []

    async def hello(ws, hub):
        seen.append(hub.name)
        await ws.send_json({"type": "hello", "hub": hub.name})

    with running(ws_handlers={"/hello": hello}) as (_, shell, port):
        with connect(ws_url(port, "/hello"), additional_headers=AUTH, open_timeout=WAIT_S) as ws:
            assert json.loads(ws.recv(timeout=WAIT_S)) == {"type": "hello", "hub": Hub.name}
            code, _ = closed_with(ws)  # the handler returned: the shell closes normally
        assert code == 1000
        with connect(ws_url(port, "/hello"), open_timeout=WAIT_S) as ws:  # unauthenticated: never reaches it
            ws.send(json.dumps({"type": "hello"}))
            assert closed_with(ws)[0] == 4401
    assert seen == [Hub.name]


def test_shutdown_tells_every_session_and_closes_1001():
    with running() as (server, shell, port), contextlib.ExitStack() as stack:
        a = stack.enter_context(connect(ws_url(port), additional_headers=AUTH, open_timeout=WAIT_S))
        b = stack.enter_context(connect(ws_url(port), subprotocols=["bearer", TOKEN], open_timeout=WAIT_S))
        # not authenticated yet: closed, not told
        pending = stack.enter_context(connect(ws_url(port), open_timeout=WAIT_S))
        for ws in (a, b):
            assert ping(ws) == {"type": "pong"}
        assert httpx.get(f"http://127.0.0.1:{port}/status", headers=AUTH).json()["sessions"] == 2
        server.should_exit = True
        for ws in (a, b):
            msg = json.loads(ws.recv(timeout=WAIT_S))
            assert msg == {"type": "system", "data": {"code": "shutting_down", "message": msg["data"]["message"]}}
            assert closed_with(ws)[0] == 1001
        with pytest.raises(ConnectionClosed):
            pending.recv(timeout=WAIT_S)
    assert len(shell.sessions) == 0 and shell.sessions.closing


def test_a_failing_handler_closes_1011_and_the_server_serves_on(caplog):
    async def broken(ws, hub):
        raise RuntimeError(f"boom with {TOKEN} in it")

    with running(ws_handlers={"/broken": broken}) as (_, _, port):
        with connect(ws_url(port, "/broken"), additional_headers=AUTH, open_timeout=WAIT_S) as ws:
            assert closed_with(ws)[0] == 1011
        with connect(ws_url(port), additional_headers=AUTH, open_timeout=WAIT_S) as ws:
            assert ping(ws) == {"type": "pong"}
    assert any("broken" in r.getMessage() for r in caplog.records)
