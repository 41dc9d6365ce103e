"""The embedded default LLM end to end: ``talk`` with no ``llm.base_url`` starts the llama.cpp
server with SmolLM2 (models/llm_server.py), as the README's demo does (scripts/demo.sh),
answers a spoken question through it, and leaves no server process behind.

The tiny model's answer is not checked, only that one was made and spoken."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from pipeline.audio.convert import read_wav
from pipeline.config import CONFIG_DIR, REPO_ROOT, load_config

pytestmark = pytest.mark.integration

# the whole talk: Ray, the models, the server (up to llm.embedded_start_timeout_s = 60 s) and the
# reply, ~35 s here; sized for a CPU 3x slower with room to spare
TALK_DEADLINE_S = 400


def _servers_under(pid: int) -> dict[int, float]:
    """The llama_cpp.server processes below ``pid``: {pid: create_time} (create_time tells a
    reused pid apart)."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    found = {}
    for k in kids:
        try:
            if "llama_cpp.server" in k.cmdline():
                found[k.pid] = k.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _running(pid: int, created: float) -> bool:
    try:
        p = psutil.Process(pid)
        return p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_talk_on_the_embedded_llm_speaks_a_reply_and_stops_the_server(speech, tmp_path):
    config = CONFIG_DIR / "test.toml"
    assert load_config(config).llm.base_url == ""  # the profile names no endpoint: the embedded server
    question = speech("What is the capital of France?", pad_s=(0.5, 0.2))
    out = tmp_path / "reply.wav"
    stdout, stderr = tmp_path / "talk.json", tmp_path / "talk.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    with open(stdout, "w") as o, open(stderr, "w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "talk", "--json", "--config", str(config),
                                 "--input", str(question), "--output", str(out)],
                                stdout=o, stderr=e, cwd=REPO_ROOT, env={**env, "PYTHONUNBUFFERED": "1"})
    servers: dict[int, float] = {}
    deadline = time.monotonic() + TALK_DEADLINE_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            servers.update(_servers_under(proc.pid))  # the server lives for the whole talk
            time.sleep(0.2)
    finally:
        if proc.poll() is None:  # past the deadline: stop the talk and its server
            proc.kill()
            proc.wait(10)
            for pid, created in servers.items():
                if _running(pid, created):
                    psutil.Process(pid).kill()
    assert proc.returncode == 0, f"talk exited {proc.returncode}: {stderr.read_text()[-3000:]}"
    res = json.loads(stdout.read_text())
    # the engine started the embedded server, as a child of the talk
    assert res["startup"].get("llm_server_start_s", 0) > 0, res["startup"]
    assert servers, "no llama_cpp.server process was seen under the talk"
    # a reply was made and spoken to its end
    assert res["errors"] == [] and res["state"] == "done", (res["errors"], res["state"])
    assert res["transcript"].strip() and res["reply"].strip(), (res["transcript"], res["reply"])
    assert res["chunks"] and res["turns"] and res["turns"][0]["state"] == "done"
    assert {"llm_first_token", "first_reply_sample_out", "reply_done"} <= set(res["events"]), res["events"]
    pcm, rate = read_wav(out)
    x = pcm.astype(np.float64) / 32768
    assert len(x) / rate > 0.3 and np.sqrt(np.mean(x ** 2)) > 10 ** (-40 / 20), "the reply WAV is silent"
    # and the server went with the talk: no orphan left running (one that is, this test ends)
    left = [pid for pid, created in servers.items() if _running(pid, created)]
    for pid in left:
        psutil.Process(pid).kill()
    assert not left, f"llama_cpp.server still running after the talk: pids {left}"
