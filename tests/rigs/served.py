"""``kokoro-engine serve`` run for real as a subprocess, for tests and benchmarks: its ready
line, its output read as it comes, HTTP and WebSocket clients, its processes."""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from pipeline.config import CONFIG_DIR, REPO_ROOT

TOKEN = "0123456789abcdef" * 4
DECOY = "decoy0123456789" * 4  # in the environment beside --token-stdin: removed, never used
AUTH = {"Authorization": f"Bearer {TOKEN}"}
START_S = 240.0  # Ray + Whisper + Kokoro: ~20 s here, sized for a slower, busier machine
WAIT_S = 10.0


def sample_path(path: str) -> str:
    """A route's path with its parameters filled in ("/voices/{id}" -> "/voices/x")."""
    return re.sub(r"\{[^}]+\}", "x", path)


def _pump(stream, sink: list, lines: queue.Queue | None = None) -> None:
    for line in stream:
        sink.append(line)
        if lines is not None:
            lines.put(line)


class Served:
    def __init__(self, proc: subprocess.Popen, ready: dict, stdout: list, stderr: list) -> None:
        self.proc, self.ready, self.stdout, self.stderr = proc, ready, stdout, stderr
        self.port = ready["port"]
        self.base = f"http://127.0.0.1:{self.port}"
        self.seen: list[str] = []  # every response's status line, headers and body, and every WS message

    def http(self, method: str, path: str, **kw) -> httpx.Response:
        r = httpx.request(method, self.base + path, timeout=WAIT_S, **kw)
        self.seen.append(f"{r.status_code} {dict(r.headers)} {r.text}")
        return r

    def ws(self, path: str = "/ws", **kw):
        return connect(f"ws://127.0.0.1:{self.port}{path}", open_timeout=WAIT_S, **kw)

    def recv(self, ws) -> dict:
        text = ws.recv(timeout=WAIT_S)
        self.seen.append(str(text))
        return json.loads(text)

    def denied(self, path: str = "/ws", **kw) -> int:
        with pytest.raises(InvalidStatus) as e:
            with self.ws(path, **kw):
                pass
        r = e.value.response
        self.seen.append(f"{r.status_code} {list(r.headers.raw_items())} {bytes(r.body or b'')!r}")
        return r.status_code

    def closed_with(self, ws) -> int:
        with pytest.raises(ConnectionClosed) as e:
            while True:
                self.seen.append(str(ws.recv(timeout=WAIT_S)))
        return e.value.rcvd.code

    def processes(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def ray_processes(self) -> list[psutil.Process]:
        """Every process of this server's Ray cluster, child or not: Ray names its session
        session_<date>_<driver pid>, and its processes carry that in their command lines."""
        mark = re.compile(rf"session_[0-9_-]+_{self.proc.pid}\b")
        return [p for p in psutil.process_iter(["cmdline"]) if mark.search(" ".join(p.info["cmdline"] or []))]


def launch(llm, data, extra: list[str] = ()) -> tuple[subprocess.Popen, list[str], list[str], queue.Queue]:
    """`serve --port 0 --token-stdin`, with a decoy token in its environment; its stdout and
    stderr are read into lists as they come (and stdout's lines into a queue)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KOKORO_ENGINE_TOKEN": DECOY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.main", "serve", "--port", "0", "--token-stdin",
         "--config", str(CONFIG_DIR / "test.toml"), "--set", f"llm.base_url={llm.base_url}",
         "--set", f"server.data_dir={data}", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)
    stdout: list[str] = []
    stderr: list[str] = []
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, stdout, lines), daemon=True).start()
    threading.Thread(target=_pump, args=(proc.stderr, stderr), daemon=True).start()
    proc.stdin.write(json.dumps({"token": TOKEN}) + "\n")
    proc.stdin.close()
    return proc, stdout, stderr, lines


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def alive(procs: dict[int, psutil.Process]) -> list[tuple[int, str]]:
    out = []
    for p in procs.values():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append((p.pid, p.name()))
        except psutil.NoSuchProcess:
            pass
    return out


@contextmanager
def serving(llm, data: Path, extra: list[str] = ()) -> Iterator[Served]:
    """A ready server (or a test failure saying why it is not)."""
    proc, stdout, stderr, lines = launch(llm, data, extra)
    try:
        try:
            first = lines.get(timeout=START_S)
        except queue.Empty:
            pytest.fail(f"no ready line within {START_S} s; stderr: {''.join(stderr)[-3000:]}")
        yield Served(proc, json.loads(first), stdout, stderr)
    finally:
        stop(proc)
