"""`kokoro-engine serve` end to end: the real CLI with the real engine (Ray, Whisper, Kokoro) and
the scripted LLM server, real HTTP and WebSocket clients over loopback, SIGTERM at the end."""
from __future__ import annotations

import json
import signal
import time

import psutil
import pytest

from pipeline.api.routes import route_table
from tests.rigs.fake_llm import FakeLLM
from tests.rigs.served import AUTH, DECOY, START_S, TOKEN, alive, launch, sample_path, serving, stop

pytestmark = pytest.mark.integration

WRONG = "f" * 64


# ------------------------------------------------------------------ first, alone: SIGTERM while starting
def test_sigterm_while_the_engine_starts_leaves_nothing_behind(tmp_path):
    """Ray half up when the signal comes: the start completes, then everything stops (a SIGTERM
    raised inside ray.init once left Ray's agents running, orphaned)."""
    seen: dict[int, psutil.Process] = {}
    with FakeLLM() as llm:
        proc, stdout, stderr, _ = launch(llm, tmp_path)
        try:
            deadline = time.monotonic() + START_S
            while time.monotonic() < deadline and proc.poll() is None:
                kids = psutil.Process(proc.pid).children(recursive=True)
                seen.update({p.pid: p for p in kids})
                if any(p.name() == "raylet" for p in kids):  # Ray is starting: now
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"Ray did not start within {START_S} s; stderr: {''.join(stderr)[-3000:]}")
            proc.send_signal(signal.SIGTERM)
            while proc.poll() is None and time.monotonic() < deadline + 90:  # every process it starts
                try:
                    seen.update({p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)})
                except psutil.NoSuchProcess:
                    break
                time.sleep(0.1)
            assert proc.wait(10) == 0, "".join(stderr)[-3000:]
        finally:
            stop(proc)
    time.sleep(1.0)
    assert len(seen) >= 3  # gcs_server, raylet, workers...: the check below has something to check
    assert not alive(seen), alive(seen)
    assert stdout == []  # never ready, so no ready line


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with FakeLLM("Hello from the scripted model.") as llm, serving(llm, tmp_path_factory.mktemp("serve-data")) as s:
        yield s


# ------------------------------------------------------------------ once it is ready
def test_ready_line(served):
    assert served.ready["event"] == "ready"
    assert served.ready["host"] == "127.0.0.1" and isinstance(served.port, int) and served.port > 0
    assert served.ready["pid"] == served.proc.pid and served.ready["token_source"] == "stdin"
    assert len(served.stdout) == 1 and TOKEN not in served.stdout[0]


def test_health_routes_need_no_token(served):
    assert served.http("GET", "/healthz").json() == {"status": "ok"}
    assert served.http("GET", "/health").json()["status"] == "healthy"


def test_every_other_route_needs_the_token(served):
    table = route_table()
    http = [r for r in table if r.kind == "http" and not r.public]
    ws = [r for r in table if r.kind == "ws"]
    assert http and ws
    for r in http:
        path = sample_path(r.path)
        for method in r.methods:
            for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": f"Bearer {DECOY}"}):
                resp = served.http(method, path, headers=headers)
                assert resp.status_code == 401, (method, path, headers)
                assert resp.json()["error"]["code"] == "UNAUTHORIZED"
            assert served.http(method, path, params={"token": TOKEN}).status_code == 401
            assert served.http(method, path, headers=AUTH).status_code != 401  # (a route may want a body)
    for r in ws:
        path = sample_path(r.path)
        assert served.denied(path, additional_headers={"Authorization": f"Bearer {WRONG}"}) == 401
        assert served.denied(path, subprotocols=["bearer", DECOY]) == 401
        assert served.denied(path, subprotocols=[TOKEN]) == 401  # the token alone is never echoed
        with served.ws(path) as conn:  # no credentials: the first message must authenticate
            conn.send(json.dumps({"type": "ping"}))
            assert served.closed_with(conn) == 4401
        with served.ws(path) as conn:
            conn.send(json.dumps({"type": "auth", "token": WRONG}))
            assert served.closed_with(conn) == 4401


def test_websocket_three_ways(served):
    ways = [dict(additional_headers=AUTH), dict(subprotocols=["bearer", TOKEN]), {}]
    for kw in ways:
        with served.ws(**kw) as conn:
            if not kw:
                conn.send(json.dumps({"type": "auth", "token": TOKEN}))
                assert served.recv(conn) == {"type": "auth_ok"}
            assert conn.subprotocol == ("bearer" if "subprotocols" in kw else None)
            # in: the companion protocol answers with its commands, then takes messages
            assert served.recv(conn)["type"] == "commands_register"
            conn.send(json.dumps({"type": "ping"}))
            assert served.recv(conn)["data"]["code"] == "unknown_type"


def test_foreign_host_is_refused(served):
    for path, headers in (("/healthz", {}), ("/status", AUTH)):
        r = served.http("GET", path, headers={**headers, "Host": "evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Host": f"evil.example:{served.port}"}
    assert served.http("GET", "/ws", headers={**upgrade, **AUTH}).status_code == 403


def test_no_cors_headers_by_default(served):
    for r in (served.http("GET", "/status", headers={**AUTH, "Origin": "http://localhost:5173"}),
              served.http("OPTIONS", "/status", headers={"Origin": "http://localhost:5173",
                                                          "Access-Control-Request-Method": "GET"})):
        assert not any(k.lower().startswith("access-control-") for k in r.headers)


def test_no_process_inherits_the_token_variable(served):
    kids = served.processes()
    assert any("raylet" in p.name() for p in kids)  # the engine's Ray is up, under the server
    assert {p.pid for p in served.ray_processes()} & {p.pid for p in kids}  # (what the last test checks)
    checked = 0
    for p in kids:
        try:
            env = p.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        assert "KOKORO_ENGINE_TOKEN" not in env and DECOY not in str(env), p.name()
        checked += 1
    assert checked >= 3


# ------------------------------------------------------------------ last: SIGTERM
def test_sigterm_tells_sessions_stops_everything_and_exits_0(served):
    kids = {p.pid: p for p in served.processes()}
    with served.ws(additional_headers=AUTH) as conn:
        assert served.recv(conn)["type"] == "commands_register"  # a companion session is open
        served.proc.send_signal(signal.SIGTERM)
        msg = served.recv(conn)
        assert msg["type"] == "system" and msg["data"]["code"] == "shutting_down"
        assert served.closed_with(conn) == 1001
    assert served.proc.wait(90) == 0
    time.sleep(0.5)
    assert len(kids) >= 3 and not alive(kids), alive(kids)
    assert not served.ray_processes()
    time.sleep(0.5)  # the pump threads read to the end
    assert len(served.stdout) == 1  # stdout held the ready line, and nothing else, to the end
    out = "".join(served.stdout + served.stderr)
    assert "stopped" in out
    for secret in (TOKEN, DECOY):
        assert secret not in out
        assert not [s for s in served.seen if secret in s]
