"""Desktop plumbing for the overlay window: compositor check, 32-bit visual, SDL calls.

pygame exposes no always-on-top, window position or global mouse state for an OpenGL
window, so those go through ctypes to the SDL2 library pygame itself loaded (the same
copy, found in /proc/self/maps; a second SDL would know nothing of pygame's window).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


def compositor_running(display: str | None = None) -> bool:
    """True when a compositing manager owns the ``_NET_WM_CM_S<screen>`` selection (X11).

    Transparency needs one; without it a 32-bit window shows black where alpha is 0.
    """
    name = ctypes.util.find_library("X11")
    if not name:
        return False
    try:
        x = ctypes.CDLL(name)
    except OSError:
        return False
    x.XOpenDisplay.restype = ctypes.c_void_p
    x.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x.XDefaultScreen.argtypes = [ctypes.c_void_p]
    x.XInternAtom.restype = ctypes.c_ulong
    x.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x.XGetSelectionOwner.restype = ctypes.c_ulong
    x.XGetSelectionOwner.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x.XOpenDisplay((display or os.environ.get("DISPLAY", "")).encode() or None)
    if not dpy:
        return False
    try:
        atom = x.XInternAtom(dpy, f"_NET_WM_CM_S{x.XDefaultScreen(dpy)}".encode(), 0)
        return bool(x.XGetSelectionOwner(dpy, atom))
    finally:
        x.XCloseDisplay(dpy)


def argb_visual_id(glxinfo_text: str | None = None) -> str | None:
    """A depth-32 TrueColor, double-buffered GLX visual with 8 alpha bits (hex id), or None.

    Rows of ``glxinfo``'s visual table: id, depth, class, transparent, buffer size, level,
    render type, double buffer, stereo, r, g, b, a, ...
    """
    if glxinfo_text is None:
        if not shutil.which("glxinfo"):
            return None
        try:
            glxinfo_text = subprocess.run(["glxinfo"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
    fallback = None
    for line in glxinfo_text.splitlines():
        f = line.split()
        if len(f) < 13 or not f[0].startswith("0x") or f[1] != "32" or f[2] != "tc":
            continue
        if f[7] == "y" and f[12] == "8":
            return f[0]
        fallback = fallback or (f[0] if f[12] == "8" else None)
    return fallback


class SDL:
    """The few SDL2 calls pygame does not expose, on pygame's own SDL library."""

    def __init__(self) -> None:
        path = _loaded_sdl_path() or ctypes.util.find_library("SDL2")
        if not path:
            raise OSError("pygame's SDL2 library not found")
        lib = ctypes.CDLL(path)
        lib.SDL_GL_GetCurrentWindow.restype = ctypes.c_void_p
        lib.SDL_SetWindowAlwaysOnTop.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.SDL_SetWindowPosition.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.SDL_GetWindowPosition.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                                              ctypes.POINTER(ctypes.c_int)]
        lib.SDL_SetWindowSize.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.SDL_GetGlobalMouseState.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
        self.lib = lib
        self.window = lib.SDL_GL_GetCurrentWindow()
        if not self.window:
            raise OSError("no current SDL OpenGL window")

    def always_on_top(self, on: bool = True) -> None:
        self.lib.SDL_SetWindowAlwaysOnTop(self.window, 1 if on else 0)

    def position(self) -> tuple[int, int]:
        x, y = ctypes.c_int(), ctypes.c_int()
        self.lib.SDL_GetWindowPosition(self.window, ctypes.byref(x), ctypes.byref(y))
        return x.value, y.value

    def move(self, x: int, y: int) -> None:
        self.lib.SDL_SetWindowPosition(self.window, int(x), int(y))

    def resize(self, w: int, h: int) -> None:
        self.lib.SDL_SetWindowSize(self.window, int(w), int(h))

    def global_mouse(self) -> tuple[int, int]:
        x, y = ctypes.c_int(), ctypes.c_int()
        self.lib.SDL_GetGlobalMouseState(ctypes.byref(x), ctypes.byref(y))
        return x.value, y.value


def _loaded_sdl_path() -> str | None:
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1]
                if "libSDL2-2" in os.path.basename(p) and p.startswith("/"):
                    return p
    except OSError:
        pass
    return None


class DragTracker:
    """Left-button press -> click or window drag, decided by how far the mouse moved."""

    def __init__(self, threshold_px: int = 4) -> None:
        self.threshold = threshold_px
        self.press: tuple[int, int] | None = None  # global mouse at press
        self.grab: tuple[int, int] = (0, 0)  # mouse position inside the window at press
        self.dragging = False

    def down(self, global_pos: tuple[int, int], local_pos: tuple[int, int]) -> None:
        self.press, self.grab, self.dragging = global_pos, local_pos, False

    def move(self, global_pos: tuple[int, int]) -> tuple[int, int] | None:
        """New window position while dragging, else None."""
        if self.press is None:
            return None
        if not self.dragging and max(abs(global_pos[0] - self.press[0]),
                                     abs(global_pos[1] - self.press[1])) > self.threshold:
            self.dragging = True
        if self.dragging:
            return global_pos[0] - self.grab[0], global_pos[1] - self.grab[1]
        return None

    def up(self) -> bool:
        """True when the press was a click (not a drag)."""
        was_click = self.press is not None and not self.dragging
        self.press, self.dragging = None, False
        return was_click


@dataclass
class Placement:
    """Window position and scale remembered between runs."""
    x: int | None = None
    y: int | None = None
    scale: float = 1.0

    @classmethod
    def load(cls, path: str | Path | None, default_scale: float = 1.0) -> "Placement":
        if not path or not Path(path).is_file():
            return cls(scale=default_scale)
        try:
            d = json.loads(Path(path).read_text())
            x, y, s = d.get("x"), d.get("y"), float(d.get("scale", default_scale))
            return cls(int(x) if x is not None else None, int(y) if y is not None else None,
                       s if 0.1 <= s <= 5.0 else default_scale)
        except (OSError, ValueError, TypeError, AttributeError):  # a corrupt file: start fresh
            return cls(scale=default_scale)

    def save(self, path: str | Path | None) -> None:
        if not path:
            return
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps({"x": self.x, "y": self.y, "scale": round(self.scale, 4)}))
        os.replace(tmp, p)
