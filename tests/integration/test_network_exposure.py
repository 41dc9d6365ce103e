"""A local engine listens on loopback only, and its Ray cluster keeps token auth on.

The engine is started for real (Ray via init_ray, the seven stage actors, a scripted
LLM server over loopback); every LISTEN socket of every process it runs is listed
with psutil and must be on 127.0.0.0/8 or ::1.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import psutil
import pytest

from pipeline.config import CONFIG_DIR, is_loopback, load_config
from pipeline.runtime.engine import Engine
from tests.rigs.fake_llm import FakeLLM

pytestmark = pytest.mark.integration


def tree(root: psutil.Process) -> dict[int, str]:
    """The process and all its descendants, by pid -> name."""
    procs = {root.pid: root.name()}
    for p in root.children(recursive=True):
        try:
            procs[p.pid] = p.name()
        except psutil.NoSuchProcess:
            pass
    return procs


def ray_processes() -> dict[int, str]:
    """This process's tree (it is Ray's driver: GCS, raylet, agents and workers descend from it)
    plus any process that names this Ray session in its command line."""
    import ray

    session = ray._private.worker._global_node.get_session_dir_path()
    procs = tree(psutil.Process())
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        if session in " ".join(p.info["cmdline"] or []):
            procs[p.pid] = p.info["name"]
    return procs


def listeners(procs: dict[int, str]) -> list[tuple[str, int, int, str]]:
    """(address, port, pid, process name) of every socket these processes take connections or
    datagrams on: TCP in LISTEN, UDP bound without a peer."""
    out = []
    for c in psutil.net_connections(kind="inet"):
        udp_server = c.type == socket.SOCK_DGRAM and c.laddr and not c.raddr
        if (c.status == psutil.CONN_LISTEN or udp_server) and c.pid in procs:
            out.append((c.laddr.ip, c.laddr.port, c.pid, procs[c.pid]))
    return sorted(out)


def assert_loopback_only(socks: list[tuple[str, int, int, str]]) -> None:
    exposed = [s for s in socks if not is_loopback(s[0])]
    assert not exposed, "listening beyond loopback: " + ", ".join(f"{n}[{pid}] {ip}:{port}"
                                                                  for ip, port, pid, n in exposed)


@pytest.fixture(scope="module")
def engine(ray_session):
    with FakeLLM("Hello.") as llm:
        cfg = load_config(CONFIG_DIR / "test.toml", [f"llm.base_url={llm.base_url}"])
        with Engine(cfg) as e:
            yield e


def test_engine_listens_on_loopback_only(engine):
    import ray

    procs = ray_processes()
    socks = listeners(procs)
    pids = {pid for _, _, pid, _ in socks}
    # the check sees what it must: the GCS, the raylet and every stage actor's worker listen
    assert {"gcs_server", "raylet"} <= {n for _, _, _, n in socks}, socks
    handles = engine._handles()  # every stage and each member of the model pools
    actor_pids = {ray.get(a.__ray_call__.remote(lambda self: os.getpid())) for a in handles}
    assert len(actor_pids) == len(handles)
    assert actor_pids <= pids, (actor_pids - pids, socks)
    assert_loopback_only(socks)


def test_ray_refuses_clients_without_the_token(engine):
    import ray

    gcs = ray._private.worker._global_node.gcs_address
    probe = ("import sys; from ray._raylet import GcsClient; "
             "print(len(GcsClient(address=sys.argv[1]).internal_kv_keys(b'', None, timeout=10)))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}

    def ask(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", probe, gcs], env={**env, **extra}, capture_output=True,
                              text=True, timeout=120)

    ok = ask(RAY_AUTH_MODE="token")  # the token Ray wrote for this cluster (~/.ray/auth_token)
    assert ok.returncode == 0 and int(ok.stdout.split()[-1]) > 0, ok.stderr[-2000:]
    for extra in ({"RAY_AUTH_MODE": "disabled"}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32}):
        p = ask(**extra)
        assert p.returncode != 0 and "AuthenticationError" in p.stderr, (extra, p.stdout, p.stderr[-2000:])


def test_embedded_llm_server_listens_on_loopback_only(tmp_path):
    from models.llm_server import EmbeddedLLMServer
    from models.registry import ModelNotFound

    cfg = load_config(CONFIG_DIR / "test.toml")
    try:
        server = EmbeddedLLMServer(cfg, tmp_path / "llm-server.log")
        server.start()
    except ModelNotFound as e:
        pytest.skip(f"embedded LLM not installed: {e}")
    try:
        socks = listeners(tree(psutil.Process(server.proc.pid)))
        assert server.port in {port for _, port, _, _ in socks}, socks
        assert_loopback_only(socks)
    finally:
        server.stop()
