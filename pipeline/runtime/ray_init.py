"""Starting and stopping Ray for the engine.

A private local cluster (``ray.address = ""``) listens on loopback only and
keeps Ray's token auth on. Ray's servers take their listen address from the
node IP (measured, Ray 2.60.0): GCS, raylet (two ports) and each worker's
core-worker gRPC server listen on 127.0.0.1 when the node IP is loopback and
on every interface (``*``) otherwise; the runtime env agent listens on the
node IP itself. (By Ray's source the dashboard agent's gRPC, HTTP and metrics
servers follow the same rule; they do not start here because the dashboard's
packages, aiohttp among them, are not installed.)

So the node IP is the one setting, and ``_node_ip_address=127.0.0.1`` alone
does not set it: ``ray.init`` replaces a loopback address with the address
other machines reach this one by (eth0's) unless Ray's cluster support is
off, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``. Ray reads that variable once,
when ``ray`` is first imported, and the engine imports ``ray`` long before it
calls ``init_ray``: setting only the variable here changed nothing (node IP
192.0.2.2; ``ss -ltnp`` showed ``*:PORT`` for gcs_server, raylet, the driver
and every ``ray::...Stage`` worker, ``192.0.2.2:PORT`` for the runtime env
agent). ``init_ray`` also sets the value Ray has already read, and after the
start checks the node IP and the auth mode Ray ended up with (fail closed).

The dashboard UI is off (it costs ~1.1 GB and 11 processes); Ray still runs
its API server and node agent without the UI modules (~175 MB RSS together).

Ray starts its workers at nice 15 (``RAY_worker_niceness``); we start them at
0 so the actors' Ray threads (the audio path, the control lane) outrank the
inference threads, which models/runtime.py lowers to nice 10.
"""
from __future__ import annotations

import atexit
import os
import time
from typing import Any, Mapping

from pipeline.config import REPO_ROOT, Config, ConfigError, is_loopback

AUTH_MODE_ENV = "RAY_AUTH_MODE"


def init_ray(cfg: Config) -> dict[str, Any]:
    import ray

    if ray.is_initialized():
        return {"reused": True, "start_s": 0.0}
    # actor processes import our packages: make sure they can find them
    paths = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    t = time.perf_counter()
    if cfg.ray.address:
        # Joining a cluster started elsewhere (`ray start`): its processes already listen where
        # that cluster was told to, and nothing here changes it. Such a cluster is reachable from
        # other machines by design, so its configuration must open exactly the ports it documents
        # (`ray start` pins them with --port, --ray-client-server-port, --node-manager-port,
        # --object-manager-port, --min/max-worker-port, --runtime-env-agent-port,
        # --dashboard-agent-grpc-port, --dashboard-agent-listen-port, --metrics-export-port,
        # --dashboard-port; those left unset take a default or a random port) and keep token auth on
        # (RAY_AUTH_MODE=token and the same token on every node).
        ray.init(address=cfg.ray.address, namespace=cfg.ray.namespace, log_to_driver=False)
    else:
        _start_private_cluster(cfg)
    atexit.register(shutdown_ray)
    return {"reused": False, "start_s": time.perf_counter() - t}


def _start_private_cluster(cfg: Config) -> None:
    import ray
    from ray._private import ray_constants

    check_private_settings(cfg)
    # For the processes Ray starts (they import ray afresh) and for this one, which has already
    # read the variable if anything imported ray before us (see the module docstring).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ.setdefault("RAY_worker_niceness", "0")
    # RAY_AUTH_MODE unset: a new local cluster turns token auth on by itself (and writes
    # ~/.ray/auth_token if missing); checked below rather than set, because Ray caches its
    # config in this process and only refreshes it when it turns auth on itself.
    ray.init(include_dashboard=False, _node_ip_address=cfg.ray.node_ip, namespace=cfg.ray.namespace,
             object_store_memory=cfg.ray.object_store_mb * 1024 * 1024, log_to_driver=False,
             configure_logging=True, logging_level="WARNING")
    try:
        _check_private(ray)
    except Exception:
        ray.shutdown()
        raise


def check_private_settings(cfg: Config, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse, before anything starts, settings that would open the private cluster up."""
    if not is_loopback(cfg.ray.node_ip):  # Config.check says the same for a loaded profile
        raise ConfigError(f"ray.node_ip = {cfg.ray.node_ip!r}: the engine's own Ray cluster listens on loopback "
                          "only; to serve other machines start a cluster with `ray start` and set ray.address")
    mode = environ.get(AUTH_MODE_ENV)
    if mode is not None and mode.lower() != "token":
        raise ConfigError(f"{AUTH_MODE_ENV}={mode}: the engine's Ray cluster keeps token auth on (without it "
                          f"any local user can run code in it through its loopback ports); unset {AUTH_MODE_ENV}")


def _check_private(ray: Any) -> None:
    """Fail closed: a cluster that is not on loopback with token auth does not run the engine."""
    from ray._raylet import AuthenticationMode, get_authentication_mode

    node_ip = ray.util.get_node_ip_address()
    if not is_loopback(node_ip):
        raise RuntimeError(f"Ray started on node IP {node_ip}, not loopback: its servers would listen on "
                           "every interface (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 did not take effect)")
    if get_authentication_mode() != AuthenticationMode.TOKEN:
        raise RuntimeError(f"Ray started without token auth ({AUTH_MODE_ENV}={os.environ.get(AUTH_MODE_ENV)!r})")


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
