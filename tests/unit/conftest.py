"""Shared fixtures for the unit tests.

``ray_cluster`` starts one private local Ray cluster for the whole test
session, and only when a test asks for it (the pure-logic tests never do).
"""
from __future__ import annotations

import pytest

from pipeline.config import CONFIG_DIR, Config, load_config


@pytest.fixture(scope="session")
def test_cfg() -> Config:
    return load_config(CONFIG_DIR / "test.toml")


@pytest.fixture(scope="session")
def ray_cluster(request, test_cfg):
    """One Ray cluster for the session (reused if something already started one)."""
    import ray

    from pipeline.ray_runtime import init_ray, shutdown_ray

    info = init_ray(test_cfg)
    if not info["reused"]:
        request.addfinalizer(shutdown_ray)
    return ray
