"""Unit-test fixtures.

Ray is started by ``ray_session`` in tests/conftest.py (once per test
session, always shut down); ``ray_cluster`` just hands the started ``ray``
module to the actor tests. The pure-logic tests never ask for it, so they
run without Ray.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster(ray_session):
    import ray

    assert ray.is_initialized()
    return ray
