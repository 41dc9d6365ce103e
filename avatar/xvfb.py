"""A private Xvfb X server, for headless rendering where no display exists (talk --video,
benchmarks/lipsync.py). The tests have their own fixture (tests/conftest.py)."""
from __future__ import annotations

import os
import select
import shutil
import subprocess

from avatar.settings import AvatarError


class Xvfb:
    """``with Xvfb() as display:`` -- ``display`` is ":N"; DISPLAY is set while it runs
    (and restored after) when ``set_env``."""

    def __init__(self, screen: str = "1280x1024x24", set_env: bool = True) -> None:
        self.screen, self.set_env = screen, set_env
        self.proc: subprocess.Popen | None = None
        self.display = ""
        self._old: str | None = None

    def start(self, timeout: float = 15.0) -> str:
        exe = shutil.which("Xvfb")
        if not exe:
            raise AvatarError("no display and Xvfb is not installed (apt-get install xvfb libgl1-mesa-dri, "
                              "or set DISPLAY)")
        r, w = os.pipe()
        self.proc = subprocess.Popen([exe, "-displayfd", str(w), "-screen", "0", self.screen, "+extension", "GLX",
                                      "-nolisten", "tcp"], pass_fds=(w,), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        os.close(w)
        try:  # Xvfb writes its display number once it listens
            ready, _, _ = select.select([r], [], [], timeout)
            number = os.read(r, 64).decode().strip() if ready else ""
        finally:
            os.close(r)
        if not number.isdigit():
            self.proc.kill()
            err = self.proc.communicate(timeout=5)[1].decode(errors="replace").strip().splitlines()
            self.proc = None
            raise AvatarError(f"Xvfb did not start: {err[-1] if err else f'no display number within {timeout:.0f} s'}")
        self.display = f":{number}"
        if self.set_env:
            self._old = os.environ.get("DISPLAY")
            os.environ["DISPLAY"] = self.display
        return self.display

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None
        if self.set_env and os.environ.get("DISPLAY") == self.display:
            if self._old is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = self._old

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
