"""Starting and stopping Ray for the engine.

A private local cluster keeps all its traffic on loopback: ``_node_ip_address``
alone is not enough (Ray then still binds the eth0 address); with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` a single node binds 127.0.0.1.
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
from typing import Any

from pipeline.config import REPO_ROOT, Config


def init_ray(cfg: Config) -> dict[str, Any]:
    import ray

    if ray.is_initialized():
        return {"reused": True, "start_s": 0.0}
    # actor processes import our packages: make sure they can find them
    paths = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    t = time.perf_counter()
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, namespace=cfg.ray.namespace, log_to_driver=False)
    else:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(include_dashboard=False, _node_ip_address=cfg.ray.node_ip, namespace=cfg.ray.namespace,
                 object_store_memory=cfg.ray.object_store_mb * 1024 * 1024, log_to_driver=False,
                 configure_logging=True, logging_level="WARNING")
    atexit.register(shutdown_ray)
    return {"reused": False, "start_s": time.perf_counter() - t}


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
