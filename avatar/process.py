"""The avatar window in its own process, driven over a Pipe.

Windowing systems want a window's events on the main thread of the process that
owns it, and the engine's main thread (or a Ray actor's) is busy elsewhere, so
``AvatarProcess`` spawns a child whose main thread runs ``AvatarWindow`` at a steady
frame rate. The child also computes the mouth: each frame asks
``LipSync.mouth(clock, t)`` for the time ``t`` the frame will be *shown*, from the
shared playback clock, with no round trip to the parent.

Parent -> child: ("expression", name|None), ("motion", group, index, priority),
("mouth_source", clock_name|None), ("mouth", value|None) (a fixed opening, None: back
to the clock), ("capture", directory|None, raw), ("click", x, y), ("state",), ("quit",).
Child -> parent: ("ready", info), ("frame", t_display, mouth_open) for every frame,
("tap", area, x_norm, y_norm), ("state", dict), ("info", message), ("error", message).

Display-time prediction: the mouth of a frame is computed for now + the time the
recent frames took from the start of drawing to the buffer swap (an average), since
that is when it will be seen; the ("frame", ...) message then carries the measured
swap time. With vsync the swap waits for the screen, which the average includes.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from avatar.settings import AvatarError

log = logging.getLogger("kokoro.avatar")

MouthFn = Callable[[float], float]  # test hook: wall time -> opening 0..1 (module-level, picklable)


class AvatarProcess:
    """Parent side. Every wait has a timeout; a dead child is reported, never waited on.

    A reader thread drains the pipe into ``frames`` / ``taps`` / ``errors`` / ``infos``
    (``on_tap`` runs on that thread); ``take_frames()`` hands over and forgets the frames.
    """

    def __init__(self, model_path: str | Path, *, width: int = 400, height: int = 600, scale: float = 1.0,
                 overlay: bool = True, headless: bool = False, position_file: str | Path | None = None,
                 fps: float = 30.0, clock_name: str | None = None, attack_ms: float = 40.0,
                 release_ms: float = 80.0, mouth_fn: MouthFn | None = None,
                 on_tap: Callable[[str, float, float], None] | None = None) -> None:
        self.spec = {"model_path": str(model_path), "width": width, "height": height, "scale": scale,
                     "overlay": overlay, "headless": headless,
                     "position_file": str(position_file) if position_file else None,
                     "fps": float(fps), "clock_name": clock_name, "attack_ms": attack_ms, "release_ms": release_ms}
        self.mouth_fn = mouth_fn
        self.on_tap = on_tap
        self.frames: list[tuple[float, float]] = []  # (t_display, mouth_open): the mouth track
        self.taps: list[tuple[str, float, float]] = []
        self.errors: list[str] = []
        self.infos: list[str] = []
        self.ready_info: dict[str, Any] | None = None
        self._replies: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._proc: mp.process.BaseProcess | None = None
        self._conn = None
        self._reader: threading.Thread | None = None
        self._ended = threading.Event()
        self._got_ready = False

    # ------------------------------------------------------------ life cycle
    def start(self, timeout: float = 60.0) -> dict[str, Any]:
        """Spawn the child and wait until its window shows the model; returns its info
        (expressions, motion_groups, hit_areas, cubism, size, transparent, messages)."""
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_main, args=(child, self.spec, self.mouth_fn),
                                 name="kokoro-avatar", daemon=True)
        with _main_not_rerun(keep=getattr(self.mouth_fn, "__module__", None) == "__main__"):
            self._proc.start()
        child.close()
        self._conn = parent
        self._reader = threading.Thread(target=self._read, name="avatar-reader", daemon=True)
        self._reader.start()
        try:
            kind, payload = self._wait_reply(("ready",), timeout)
        except AvatarError:
            self.quit(timeout=2.0)
            raise
        self.ready_info = payload
        return payload

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive() and not self._ended.is_set()

    def quit(self, timeout: float = 10.0) -> int | None:
        """Ask the child to close its window and exit; kill it if it does not. Its exit code."""
        if self._proc is None:
            return None
        if self._proc.is_alive():
            try:
                self._conn.send(("quit",))
            except (OSError, ValueError):
                pass
            self._proc.join(timeout)
            if self._proc.is_alive():
                log.warning("avatar process did not quit in %.0f s: terminating it", timeout)
                self._proc.terminate()
                self._proc.join(2.0)
                if self._proc.is_alive():
                    self._proc.kill()
                    self._proc.join(2.0)
        self._ended.wait(2.0)  # the reader has taken the last messages
        try:
            self._conn.close()
        except OSError:
            pass
        return self._proc.exitcode

    # ------------------------------------------------------------ commands
    def _send(self, *msg: Any) -> None:
        if not self.alive:
            raise AvatarError(f"avatar process is not running{self._death_note()}")
        try:
            self._conn.send(msg)
        except (OSError, ValueError) as e:
            raise AvatarError(f"avatar process unreachable: {e}") from None

    def set_expression(self, name: str | None) -> None:
        self._send("expression", name)

    def start_motion(self, group: str, index: int = 0, priority: int = 2) -> None:
        self._send("motion", group, int(index), int(priority))

    def set_mouth_source(self, clock_name: str | None) -> None:
        """Lip-sync to the playback clock of this name (None: mouth closed)."""
        self._send("mouth_source", clock_name)

    def set_mouth(self, value: float | None) -> None:
        """Hold the mouth at ``value`` (0..1); None returns it to the mouth source."""
        self._send("mouth", None if value is None else float(value))

    def capture(self, directory: str | Path | None, raw: bool = False) -> None:
        """Write every frame as PNG (``raw``: RGBA into frames.rgba) + frames.jsonl into
        ``directory``; None stops. Commands run in order: a ``state()`` after a stop
        returns once the last frame is written."""
        self._send("capture", None if directory is None else str(directory), bool(raw))

    def click(self, x: int, y: int) -> None:
        """A synthetic left click at window pixel (x, y), as if the user clicked there."""
        self._send("click", int(x), int(y))

    def state(self, timeout: float = 5.0) -> dict[str, Any]:
        self._send("state")
        return self._wait_reply(("state",), timeout)[1]

    def take_frames(self) -> list[tuple[float, float]]:
        """The frames received since the last call (and forget them)."""
        with self._lock:
            out, self.frames = self.frames, []
        return out

    # ------------------------------------------------------------ receiving
    def _read(self) -> None:
        """Drain the pipe continuously, so the child never blocks on a full pipe."""
        try:
            while True:
                if not self._conn.poll(0.2):
                    if self._proc is not None and not self._proc.is_alive() and not self._conn.poll(0):
                        break
                    continue
                msg = self._conn.recv()
                self._dispatch(msg)
        except (EOFError, OSError):
            pass
        finally:
            self._ended.set()
            self._replies.put(("ended", None))

    def _dispatch(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "frame":
            with self._lock:
                self.frames.append((msg[1], msg[2]))
        elif kind == "tap":
            self.taps.append((msg[1], msg[2], msg[3]))
            if self.on_tap:
                try:
                    self.on_tap(msg[1], msg[2], msg[3])
                except Exception:
                    log.exception("avatar on_tap callback failed")
        elif kind == "error":
            self.errors.append(msg[1])
            log.error("avatar: %s", msg[1])
            if not self._got_ready:  # fails start(); later errors (a bad command) are only kept
                self._replies.put(msg)
        elif kind == "info":
            self.infos.append(msg[1])
            log.info("avatar: %s", msg[1])
        else:  # ready, state
            self._got_ready = self._got_ready or kind == "ready"
            self._replies.put(msg)

    def _wait_reply(self, kinds: tuple[str, ...], timeout: float) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AvatarError(f"avatar process: no {'/'.join(kinds)} reply in {timeout:.0f} s")
            try:
                msg = self._replies.get(timeout=left)
            except queue.Empty:
                continue
            if msg[0] in kinds:
                return msg
            if msg[0] == "error":
                raise AvatarError(msg[1])
            if msg[0] == "ended":
                self._replies.put(msg)  # later waits see it too
                raise AvatarError(f"avatar process ended{self._death_note()}")

    def _death_note(self) -> str:
        if self._proc is None:
            return ""
        self._proc.join(0.5)
        code = self._proc.exitcode
        if code is None:
            return ""
        last = f": {self.errors[-1]}" if self.errors else ""
        return f" (exit code {code}{last})"


@contextlib.contextmanager
def _main_not_rerun(keep: bool = False):
    """Spawn runs the parent's ``__main__`` file again in the child (as ``__mp_main__``). In a
    Ray worker that is Ray's default_worker.py, which imports ray, and live2d loaded after
    ray aborts on its first model load (std::bad_alloc, measured): the child would die with
    SIGABRT. The window process needs nothing from ``__main__``, so its file is hidden
    while the child is spawned (``keep``: a test's mouth function defined there needs it)."""
    main = sys.modules.get("__main__")
    path = None if keep else getattr(main, "__file__", None)
    if path is not None:
        del main.__file__
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path


# ---------------------------------------------------------------- child side
class _MouthSource:
    """Where the child's mouth comes from: a test function, a held value, or lip-sync."""

    RETRY_ATTACH_S = 1.0

    def __init__(self, spec: dict, mouth_fn: MouthFn | None, say: Callable[[str, str], None]) -> None:
        self.fn, self.say = mouth_fn, say
        self.fixed: float | None = None
        self.clock = None
        self.clock_name: str | None = None
        self._next_attach = 0.0
        self._lip = None
        try:  # imported here: the child only, and the parent works without it
            from avatar.lipsync import LipSync

            self._lip = LipSync(attack_ms=spec["attack_ms"], release_ms=spec["release_ms"])
        except Exception as e:  # noqa: BLE001 - any failure only costs the lip-sync
            say("info", f"lip-sync unavailable ({type(e).__name__}: {e}); the mouth stays closed")
        self.set_clock(spec.get("clock_name"))

    def set_clock(self, name: str | None) -> None:
        if self.clock is not None:
            self.clock.close()
        self.clock, self.clock_name, self._next_attach = None, name, 0.0

    def _attach(self) -> None:
        # the player may create the clock after the avatar starts: retry now and then
        now = time.monotonic()
        if self.clock is None and self.clock_name and now >= self._next_attach:
            from pipeline.audio.playback_clock import PlaybackClock

            self.clock = PlaybackClock.attach(self.clock_name)
            self._next_attach = now + self.RETRY_ATTACH_S

    def mouth(self, t: float) -> float:
        if self.fixed is not None:
            return self.fixed
        if self.fn is not None:
            return float(self.fn(t))
        if self._lip is None:
            return 0.0
        self._attach()
        return float(self._lip.mouth(self.clock, t))

    def close(self) -> None:
        self.set_clock(None)


def _main(conn, spec: dict, mouth_fn: MouthFn | None = None) -> None:
    """Child process entry: runs on its main thread until ("quit",), window close or parent loss."""
    def send(*msg: Any) -> bool:
        try:
            conn.send(msg)
            return True
        except (OSError, ValueError):
            return False

    from avatar.window import AvatarWindow

    try:
        window = AvatarWindow(spec["model_path"], spec["width"], spec["height"], spec["scale"],
                              overlay=spec["overlay"], headless=spec["headless"],
                              position_file=spec["position_file"],
                              on_tap=lambda area, x, y: send("tap", area, x, y))
    except AvatarError as e:
        send("error", str(e))
        conn.close()
        return
    except Exception as e:  # noqa: BLE001 - reported, then a clean exit
        send("error", f"avatar window failed: {type(e).__name__}: {e}")
        conn.close()
        return
    source = _MouthSource(spec, mouth_fn, send)
    for msg in window.info:
        send("info", msg)
    m = window.model
    send("ready", {"expressions": m.expressions(), "motion_groups": m.motion_groups(),
                   "hit_areas": m.hit_areas(), "cubism": m.cubism, "size": list(window.size),
                   "transparent": window.transparent, "messages": list(window.info)})
    try:
        _loop(conn, window, source, spec, send)
    finally:
        source.close()
        window.close()
        conn.close()


def _handle(msg: tuple, window, source: _MouthSource, send) -> bool:
    """One command; False to stop."""
    kind = msg[0]
    try:
        if kind == "quit":
            return False
        if kind == "expression":
            window.model.set_expression(msg[1])
        elif kind == "motion":
            window.model.start_motion(msg[1], msg[2], msg[3])
        elif kind == "mouth_source":
            source.set_clock(msg[1])
        elif kind == "mouth":
            source.fixed = msg[1]
        elif kind == "capture":
            if msg[1]:
                window.start_capture(msg[1], raw=bool(msg[2]) if len(msg) > 2 else False)
            else:
                window.stop_capture()
        elif kind == "click":
            window.click(msg[1], msg[2])
        elif kind == "state":
            m = window.model
            send("state", {"current_expression": m.current_expression, "size": list(window.size),
                           "scale": window.placement.scale, "position": window.position(),
                           "motion_finished": m.is_motion_finished(), "clock_name": source.clock_name,
                           "clock_attached": source.clock is not None, "mouth_fixed": source.fixed})
        else:
            send("error", f"unknown command {kind!r}")
    except AvatarError as e:
        send("error", str(e))
    return True


def _loop(conn, window, source: _MouthSource, spec: dict, send) -> None:
    period = 1.0 / spec["fps"]
    lead = period / 2  # start -> swap time, averaged; first guess until measured
    next_t = time.perf_counter()
    while True:
        # idle until the next frame, but answer commands at once; also when the frames run late
        # (slower than the period: PNG capture on a busy CPU), else no command, quit included,
        # was read until a frame came in under the period (measured: 8 s, and >30 s with two
        # CPU hogs on 2 cores, for a reply to a command sent while capturing)
        if conn.poll(max(0.0, next_t - time.perf_counter())):
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if not _handle(msg, window, source, send):
                return
            continue
        start = time.perf_counter()
        mouth = source.mouth(time.time() + lead)  # for when this frame will be seen
        try:
            t_shown = window.frame(mouth)
        except AvatarError as e:
            send("error", str(e))
            return
        lead += 0.2 * ((time.perf_counter() - start) - lead)
        if not send("frame", t_shown, mouth):
            return
        if window.closed:
            send("info", "the avatar window was closed")
            return
        next_t += period
        if next_t < time.perf_counter() - period:  # fell more than a frame behind: re-phase, no burst
            next_t = time.perf_counter()
