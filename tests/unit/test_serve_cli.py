"""`kokoro-engine serve` refusals, which come before the engine starts: a real subprocess each."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from pipeline.config import CONFIG_DIR, REPO_ROOT

TOKEN = "0123456789abcdef" * 4


def serve(*args: str, stdin: str = "", env: dict | None = None, data_dir=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    extra = ["--set", f"server.data_dir={data_dir}"] if data_dir else []
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", "serve", "--config",
                           str(CONFIG_DIR / "test.toml"), *extra, *args], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=REPO_ROOT, env=env)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5"])
def test_non_loopback_host_needs_allow_remote(host):
    p = serve("--host", host, "--token-stdin", stdin=json.dumps({"token": TOKEN}) + "\n")
    assert p.returncode == 2
    assert "--allow-remote" in p.stderr and p.stdout == ""


def test_host_from_the_config_obeys_the_same_rule():
    p = serve("--set", "server.host=0.0.0.0", "--token-stdin", stdin=json.dumps({"token": TOKEN}) + "\n")
    assert p.returncode == 2 and "--allow-remote" in p.stderr


@pytest.mark.parametrize("args,why", [(["--host", "evil.example"], "IP address"), (["--port", "70000"], "0..65535")])
def test_bad_address(args, why):
    p = serve(*args, "--token-stdin", stdin=json.dumps({"token": TOKEN}) + "\n")
    assert p.returncode == 2 and why in p.stderr and p.stdout == ""


@pytest.mark.parametrize("stdin,why", [
    ("", "got nothing"), (TOKEN + "\n", "not JSON"), ('{"token": ""}\n', "non-empty string"),
    ('{"token": "abc"}\n', "too short"),
])
def test_bad_stdin_token_exits_2(stdin, why):
    p = serve("--token-stdin", stdin=stdin)
    assert p.returncode == 2 and why in p.stderr and p.stdout == ""


def test_bad_env_token_exits_2():
    p = serve(env={"KOKORO_ENGINE_TOKEN": "short"})
    assert p.returncode == 2 and "KOKORO_ENGINE_TOKEN" in p.stderr and p.stdout == ""


def test_star_cors_origin_is_a_config_error():
    p = serve("--set", "server.cors_origins=*", "--token-stdin", stdin=json.dumps({"token": TOKEN}) + "\n")
    assert p.returncode == 2 and "server.cors_origins" in p.stderr


def test_generated_token_says_where_not_what_and_a_busy_port_exits_2(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = serve("--port", str(port), data_dir=tmp_path, env={"KOKORO_ENGINE_TOKEN": None})
    assert p.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in p.stderr
    assert str(tmp_path / "token") in p.stderr and "0600" in p.stderr
    assert not re.search(r"[0-9a-f]{64}", p.stderr + p.stdout)  # the token itself: nowhere
    assert p.stdout == ""
    assert not (tmp_path / "token").exists()  # a token that served nothing is invalidated at once


# ------------------------------------------------------------------ signals while the engine starts
class StartingEngine:
    """Signals itself ``n`` times in the middle of its start, then finishes it."""

    def __init__(self, n: int) -> None:
        self.n, self.finished = n, False

    def start(self) -> None:
        import signal

        for _ in range(self.n):
            os.kill(os.getpid(), signal.SIGTERM)
        self.finished = True


def test_a_signal_during_the_start_waits_for_the_start():
    import signal

    from pipeline.cli.serve import start_engine

    before = signal.getsignal(signal.SIGTERM)
    engine = StartingEngine(1)
    assert start_engine(engine) is False  # asked to stop ...
    assert engine.finished  # ... once the start was complete: nothing half up
    assert signal.getsignal(signal.SIGTERM) is before
    quiet = StartingEngine(0)
    assert start_engine(quiet) is True and quiet.finished


def test_a_second_signal_stops_at_once():
    from pipeline.cli.serve import start_engine

    engine = StartingEngine(2)
    with pytest.raises(KeyboardInterrupt):
        start_engine(engine)
    assert not engine.finished


def test_mic_starts_the_voice_conversation_or_says_there_is_no_device(capsys):
    from pipeline.audio.devices import AudioDeviceError
    from pipeline.cli.serve import start_voice

    class Voiced:
        started = 0

        def start_voice(self):
            self.started += 1
            return {"session_id": "default", "input": "mic", "output": "speaker", "delivering": True}

    class Deaf:
        def start_voice(self):
            raise AudioDeviceError("no input device (try: talk --input)")

    engine = Voiced()
    assert start_voice(engine) is True and engine.started == 1
    assert "/ws?session=default" in capsys.readouterr().err  # how a front end joins it
    assert start_voice(Deaf()) is False
    err = capsys.readouterr().err
    assert "--mic" in err and "no input device" in err and "text only" in err
