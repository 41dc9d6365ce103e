"""The avatar's window: an OpenGL pygame window showing one AvatarModel.

Every frame is drawn into an RGBA framebuffer object, so the pixels (with a real alpha
channel) can be read back in every mode; a visible window then gets it blitted and
swapped. Modes:

- headless: a hidden window (needs an X server: Xvfb in tests), nothing on screen.
- overlay: borderless, always on top, draggable (left button), scaled by the mouse
  wheel; transparent where a compositor runs, else a solid background (said once).
- plain: a normal framed window.

pygame and live2d are imported here, not by ``import avatar``.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from avatar.model import AvatarModel, gl_init, live2d_module
from avatar.overlay import SDL, DragTracker, Placement, argb_visual_id, compositor_running
from avatar.settings import AvatarError

log = logging.getLogger("kokoro.avatar")

NO_COMPOSITOR = ("no compositor running: the overlay has a solid background "
                 "(start one, e.g. xcompmgr or picom, for transparency)")
SCALE_MIN, SCALE_MAX, WHEEL_STEP = 0.25, 4.0, 1.1

TapCallback = Callable[[str, float, float], None]


class AvatarWindow:
    def __init__(self, model_path: str | Path, width: int = 400, height: int = 600, scale: float = 1.0,
                 overlay: bool = True, headless: bool = False, position_file: str | Path | None = None,
                 on_tap: TapCallback | None = None, background: tuple[float, float, float] = (0.16, 0.16, 0.2),
                 title: str = "Kokoro", model_options: dict | None = None) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise AvatarError("no display: set DISPLAY (an X server, or Xvfb for headless rendering)")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        # live2d must be imported before the first GL context of the process: imported
        # after it, its first model load dies in std::bad_alloc (measured, Mesa llvmpipe)
        live2d_module()
        import pygame
        from OpenGL import GL

        self._pg, self._gl = pygame, GL
        self.base_size = (int(width), int(height))
        self.headless, self.overlay = headless, overlay and not headless
        self.on_tap = on_tap
        self.position_file = None if headless else position_file
        self.placement = Placement.load(self.position_file, default_scale=scale)
        self.info: list[str] = []  # what the user should know about this window, said once
        self.closed = False
        self.transparent = headless  # the FBO keeps alpha; only a compositor shows it on screen
        if self.overlay:
            self.transparent = self._prepare_transparency()
        self.background = (0.0, 0.0, 0.0, 0.0) if self.transparent else (*background, 1.0)

        pygame.display.init()
        if self.transparent and not headless:
            pygame.display.gl_set_attribute(pygame.GL_ALPHA_SIZE, 8)
        flags = pygame.OPENGL | pygame.DOUBLEBUF
        if headless:
            flags |= pygame.HIDDEN
        elif self.overlay:
            flags |= pygame.NOFRAME
        self.size = self._scaled(self.placement.scale)
        try:
            pygame.display.set_mode(self.size, flags)
        except pygame.error as e:
            pygame.display.quit()
            raise AvatarError(f"cannot open an OpenGL window: {e}") from None
        pygame.display.set_caption(title)
        self._sdl: SDL | None = None
        try:
            self._sdl = SDL()
        except OSError as e:
            log.warning("SDL window calls unavailable (%s): no always-on-top, drag or resize", e)
        if self._sdl and not headless and self.placement.x is not None:
            self._sdl.move(self.placement.x, self.placement.y)
        if self._sdl and self.overlay:
            self._sdl.always_on_top(True)
        self._fbo = self._rbo = None
        try:
            gl_init()
            self._make_fbo(*self.size)
            self.model = AvatarModel(model_path, renderer=True, **(model_options or {}))
        except Exception:
            self._teardown_gl()
            pygame.display.quit()
            raise
        self.model.resize(*self.size)
        self._drag = DragTracker()
        self._capture_dir: Path | None = None
        self._capture_index = 0
        self._capture_log = None
        self._capture_raw = None

    # ------------------------------------------------------------ set-up
    def _prepare_transparency(self) -> bool:
        if not compositor_running():
            self._say(NO_COMPOSITOR)
            return False
        visual = argb_visual_id()
        if not visual:
            self._say("no 32-bit GLX visual found: the overlay has a solid background")
            return False
        # SDL reads this when it creates the window: a visual with an alpha channel
        os.environ["SDL_VIDEO_X11_VISUALID"] = visual
        return True

    def _say(self, msg: str) -> None:
        if msg not in self.info:
            self.info.append(msg)
            log.warning(msg)

    def _scaled(self, scale: float) -> tuple[int, int]:
        return max(16, round(self.base_size[0] * scale)), max(16, round(self.base_size[1] * scale))

    def _make_fbo(self, w: int, h: int) -> None:
        GL = self._gl
        if self._fbo is None:
            self._fbo = GL.glGenFramebuffers(1)
            self._rbo = GL.glGenRenderbuffers(1)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, self._rbo)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_RGBA8, w, h)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._fbo)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, self._rbo)
        status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
        if status != GL.GL_FRAMEBUFFER_COMPLETE:
            raise AvatarError(f"OpenGL framebuffer incomplete (status {status:#x})")

    def _teardown_gl(self) -> None:
        GL = self._gl
        try:
            if self._fbo is not None:
                GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
                GL.glDeleteFramebuffers(1, [self._fbo])
                GL.glDeleteRenderbuffers(1, [self._rbo])
        except Exception:  # the context may already be gone
            pass
        self._fbo = self._rbo = None

    # ------------------------------------------------------------ per frame
    def frame(self, mouth_open: float, extra_params: dict[str, float] | None = None,
              dt: float | None = None) -> float:
        """Handle input, draw one frame, show it; returns time.time() when it was shown
        (right after the buffer swap, or after glFinish when headless)."""
        GL = self._gl
        self.handle_events()
        w, h = self.size
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._fbo)
        GL.glViewport(0, 0, w, h)
        GL.glClearColor(*self.background)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT)
        self.model.update_and_draw(mouth_open, extra_params, dt)
        if self.headless:
            GL.glFinish()
            t = time.time()
        else:
            GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._fbo)
            GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, 0)
            GL.glBlitFramebuffer(0, 0, w, h, 0, 0, w, h, GL.GL_COLOR_BUFFER_BIT, GL.GL_NEAREST)
            self._pg.display.flip()
            t = time.time()
        if self._capture_dir is not None:
            self._capture(t, mouth_open)
        return t

    def read_rgba(self) -> np.ndarray:
        """The last frame as an (h, w, 4) uint8 array, top row first."""
        GL = self._gl
        w, h = self.size
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._fbo)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        data = GL.glReadPixels(0, 0, w, h, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE)
        return np.frombuffer(data, np.uint8).reshape(h, w, 4)[::-1].copy()

    # ------------------------------------------------------------ capture
    def start_capture(self, directory: str | Path, raw: bool = False) -> None:
        """Write every following frame as NNNNNN.png plus a line in frames.jsonl
        ({"i", "t" (display time), "mouth"}).

        ``raw``: append the RGBA pixels to frames.rgba instead (the line adds "w", "h" and
        "offset"). A PNG costs ~33 ms a frame here (llvmpipe, 400x600: more than a 30 fps
        frame; in a thread it still halved the frame rate), raw ~2 ms; avatar/video.py
        turns raw frames into an MP4 or PNGs afterwards."""
        self.stop_capture()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self._capture_dir, self._capture_index = d, 0
        self._capture_log = open(d / "frames.jsonl", "a")
        self._capture_raw = open(d / "frames.rgba", "ab") if raw else None

    def stop_capture(self) -> None:
        if self._capture_log:
            self._capture_log.close()
        if getattr(self, "_capture_raw", None):
            self._capture_raw.close()
        self._capture_dir = self._capture_log = self._capture_raw = None

    def _capture(self, t: float, mouth: float) -> None:
        rgba = self.read_rgba()
        row = {"i": self._capture_index, "t": t, "mouth": round(float(mouth), 4)}
        if self._capture_raw is not None:
            row.update(w=rgba.shape[1], h=rgba.shape[0], offset=self._capture_raw.tell())
            self._capture_raw.write(rgba.tobytes())
        else:
            surf = self._pg.image.frombuffer(rgba.tobytes(), (rgba.shape[1], rgba.shape[0]), "RGBA")
            self._pg.image.save(surf, str(self._capture_dir / f"{self._capture_index:06d}.png"))
        self._capture_log.write(json.dumps(row) + "\n")
        self._capture_log.flush()
        self._capture_index += 1

    # ------------------------------------------------------------ input
    def handle_events(self) -> None:
        pg = self._pg
        for ev in pg.event.get():
            if ev.type == pg.QUIT:
                self.closed = True
            elif ev.type == pg.MOUSEBUTTONDOWN and ev.button == 1:
                self._drag.down(self._global_mouse(ev.pos), ev.pos)
            elif ev.type == pg.MOUSEMOTION and self._drag.press is not None:
                pos = self._drag.move(self._global_mouse(ev.pos))
                if pos is not None and self._sdl and not self.headless:
                    self._sdl.move(*pos)
            elif ev.type == pg.MOUSEBUTTONUP and ev.button == 1:
                dragged = self._drag.dragging
                if self._drag.up():
                    self._tap(*ev.pos)
                elif dragged:
                    self._remember()
            elif ev.type == pg.MOUSEWHEEL and ev.y:
                self.set_scale(self.placement.scale * WHEEL_STEP ** ev.y)

    def _global_mouse(self, local: tuple[int, int]) -> tuple[int, int]:
        if self._sdl and not self.headless:
            return self._sdl.global_mouse()
        return local  # hidden window: no desktop to drag on

    def _tap(self, x: int, y: int) -> None:
        area = self.model.hit_test(x, y)
        if area and self.on_tap:
            self.on_tap(area, x / self.size[0], y / self.size[1])

    def click(self, x: int, y: int) -> None:
        """Queue a synthetic left click at window pixel (x, y); handled by the next frame."""
        pg = self._pg
        pg.event.post(pg.event.Event(pg.MOUSEBUTTONDOWN, button=1, pos=(int(x), int(y))))
        pg.event.post(pg.event.Event(pg.MOUSEBUTTONUP, button=1, pos=(int(x), int(y))))

    # ------------------------------------------------------------ placement
    def set_scale(self, scale: float) -> None:
        scale = min(SCALE_MAX, max(SCALE_MIN, float(scale)))
        size = self._scaled(scale)
        self.placement.scale = scale
        if size != self.size:
            self.size = size
            if self._sdl:
                self._sdl.resize(*size)
            self._make_fbo(*size)
            self.model.resize(*size)
        self._remember()

    def position(self) -> tuple[int, int] | None:
        return self._sdl.position() if self._sdl and not self.headless else None

    def move(self, x: int, y: int) -> None:
        if self._sdl and not self.headless:
            self._sdl.move(x, y)
            self._remember()

    def _remember(self) -> None:
        pos = self.position()
        if pos is not None:
            self.placement.x, self.placement.y = pos
        self.placement.save(self.position_file)

    def close(self) -> None:
        if self.closed and getattr(self, "model", None) is None:
            return
        self.stop_capture()
        self._remember()
        if getattr(self, "model", None) is not None:
            self.model.release()
            self.model = None
        self._teardown_gl()
        self._pg.display.quit()
        self.closed = True

    def __enter__(self) -> "AvatarWindow":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
