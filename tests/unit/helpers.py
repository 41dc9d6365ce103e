"""Small helpers shared by the unit tests."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import pytest

T = TypeVar("T")


def wait_until(probe: Callable[[], T], timeout: float = 15.0, interval: float = 0.01) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` s.

    Only used to wait for asynchronous work to *finish*; tests never assert on
    how long it took.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s (last value: {value!r})")
        time.sleep(interval)
