"""Avatar stage: the Live2D character in the engine.

Owns one ``AvatarProcess`` (avatar/process.py: the window on the main thread of its own
process) started on ``avatar.model``, lip-synced to this engine's playback clock, so the
mouth follows what is audible (the child reads the clock itself, no Ray hop per frame).
It never takes the engine down: a missing or broken model, or no display, is one error
event ("avatar disabled: ...") and the engine runs on without a face; a window process
that dies later is reported once the same way.

Expression cues. The player is the one place that knows when a chunk's first sample is
*heard* (it stamps every block it hands to the output, a block or the device latency
ahead), so when it writes a chunk's first block it sends a ``ChunkAudibleFrame`` (the
chunk's raw text, tags included, its audible time and duration) here. Each emotion tag
in it is scheduled at ``t_audible + duration * (its place in the spoken text)`` and then
sets the mapped expression/motion and moves the mood, unless the reply was cut by then
(the stage's ``ResponseGate``: the session fans interrupts out to it). The alternative,
taking TTS chunk metadata and scheduling by the clock's (response, sample) records, would
redo what the player already knows (holds, queued replies, preemptive audio released
late).

Taps: a click on a hit area becomes a NyaDeskPet ``tap_event`` sent to the session's
``send_input`` (medium priority: interrupts a medium/low reply, queues behind a high one).
"""
from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

import ray

from actors.base import Stage, stage_actor
from avatar.emotion import CharacterState, ExpressionMap, Mood, split_emotions
from avatar.settings import AvatarError
from pipeline.config import Config
from pipeline.flow.events import StageError
from pipeline.flow.frames import ChunkAudibleFrame, Frame, FrameError
from pipeline.audio.playback_clock import PlaybackClock, segment_name

START_TIMEOUT_S = 60.0
TRACK_S = 600.0  # seconds of mouth track kept for mouth_track() (30 fps: 18000 pairs)
MOTION_PRIORITY = 2  # normal: above the idle motions (1), which the model restarts by itself


class AvatarStage(Stage):
    name = "avatar"

    def __init__(self, cfg: Config, display: str = "") -> None:
        super().__init__(cfg)
        self.display = display  # the driver's DISPLAY: Ray workers inherit the raylet's environment

    def setup(self) -> None:
        a = self.cfg.avatar
        self._lock = threading.Condition()  # cues, track, character
        self._proc_lock = threading.Lock()  # one command at a time on the pipe
        self.character = CharacterState(name=a.name)
        self.mood = Mood(value=self.character.mood)
        self._mood_at = time.monotonic()
        self.proc = None
        self.model_path: Path | None = None
        self.info: dict[str, Any] = {}
        self.expression_map = ExpressionMap()
        self.error = ""
        self._reported = False
        self.taps: list[dict[str, Any]] = []
        self.cues_applied: list[dict[str, Any]] = []
        self._cues: list[tuple[float, int, int, str]] = []  # heap: (t, seq, response_id, emotion)
        self._order = itertools.count()
        self._track: deque[tuple[float, float]] = deque(maxlen=int(TRACK_S * a.fps))
        self.session_id = self.cfg.engine.session_id  # the voice conversation: the face's taps go there
        self.clock_name = segment_name(self.cfg.engine.run_id, "player") if self.cfg.engine.run_id else None
        self._clock: PlaybackClock | None = None
        self._started = threading.Event()
        self._stop = threading.Event()
        # cues keep the character's state (expression, mood) even with no window to show it
        threading.Thread(target=self._run, name="avatar-cues", daemon=True).start()
        # the window starts while the other stages load their models; started() waits for it
        threading.Thread(target=self._start, name="avatar-start", daemon=True).start()

    # ------------------------------------------------------------ life cycle
    def _start(self) -> None:
        a = self.cfg.avatar
        proc = None
        try:
            if self.display:
                os.environ["DISPLAY"] = self.display
            from avatar.library import default_models_dir, resolve
            from avatar.process import AvatarProcess

            self.model_path = resolve(a.model, a.models_dir or None)
            placement = None if a.headless else default_models_dir().parent / "avatar-placement.json"
            proc = AvatarProcess(self.model_path, width=a.width, height=a.height, scale=a.scale,
                                 overlay=a.overlay and not a.headless, headless=a.headless, position_file=placement,
                                 fps=a.fps, clock_name=self.clock_name, attack_ms=a.attack_ms,
                                 release_ms=a.release_ms, on_tap=self._on_tap)
            info = proc.start(timeout=START_TIMEOUT_S)  # spawned without Ray's __main__ (see there)
            self._attach(proc, info, self._expression_map(info))
        except AvatarError as e:
            self.error = f"avatar disabled: {e}"
        except Exception as e:  # noqa: BLE001 - the engine runs on without a face
            self.error = f"avatar disabled: {type(e).__name__}: {e}"
            self.log.error("%s\n%s", self.error, traceback.format_exc())
        finally:
            if self.error and proc is not None:
                proc.quit(timeout=2.0)
            self._started.set()

    def _attach(self, proc, info: dict[str, Any], expression_map: ExpressionMap) -> None:
        """A started window process (or a test's stand-in) becomes the face."""
        self.info, self.expression_map, self.proc = info, expression_map, proc
        self.error, self._reported = "", False

    def _expression_map(self, info: dict[str, Any]) -> ExpressionMap:
        from avatar.params import load_overrides

        over = load_overrides(self.model_path)  # kokoro.json beside the model (already valid: it loaded)
        m = ExpressionMap.build(info.get("expressions", []), info.get("motion_groups", {}),
                                model_name=f"{self.model_path.parent.name} {self.model_path.name}",
                                overrides={"expressions": over.expressions,
                                           "motions": {k: list(v) for k, v in over.motions.items()}})
        for w in m.warnings:
            self.log.warning("%s: kokoro.json %s", self.model_path, w)
        return m

    def started(self, timeout: float = START_TIMEOUT_S + 10) -> dict[str, Any]:
        """Wait for the window (the Engine calls this once every stage is set up, so an
        error event lands in a session that exists); the status."""
        self._started.wait(timeout)
        if not self._started.is_set():
            self.error = self.error or f"avatar disabled: the window did not start in {timeout:.0f} s"
        if self.error:
            self._report()
        return self.status()

    def _report(self) -> None:
        if not self._reported:
            self._reported = True
            self.log.error("%s", self.error)
            self.event(StageError(session_id=self.session_id, stage=self.name, message=self.error))

    @ray.method(concurrency_group="control")
    def release(self) -> None:
        """Before the actor is killed: close the window process."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        proc, self.proc = self.proc, None
        if proc is not None:
            with self._proc_lock:
                proc.quit(timeout=5.0)
        if self._clock is not None:
            self._clock.close()
            self._clock = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.alive

    # ------------------------------------------------------------ cues
    def process(self, frame: Frame) -> None:
        if not isinstance(frame, ChunkAudibleFrame):
            raise FrameError(f"avatar does not take {frame.kind}")
        self.session_id = frame.session_id
        clean, cues = split_emotions(frame.text)
        if not cues:
            return
        with self._lock:
            for pos, emotion in cues:
                t = frame.t_audible + frame.duration * pos / max(1, len(clean))
                heapq.heappush(self._cues, (t, next(self._order), frame.response_id, emotion))
            self._lock.notify_all()

    def _run(self) -> None:
        """Cues at their time; the mouth track drained; a window process that died reported once."""
        while not self._stop.is_set():
            due: list[tuple[float, int, int, str]] = []
            with self._lock:
                now = time.time()
                while self._cues and self._cues[0][0] <= now:
                    due.append(heapq.heappop(self._cues))
                if not due:
                    wait = min(0.25, self._cues[0][0] - now) if self._cues else 0.25
                    self._lock.wait(max(0.0, wait))
            for t, _, rid, emotion in due:
                self._apply(rid, emotion, t)
            self._drain()
            proc = self.proc
            if proc is not None and not proc.alive and not self._stop.is_set():
                why = proc.errors[-1] if proc.errors else (proc.infos[-1] if proc.infos else "exited")
                self.error = f"avatar window process ended: {why}"
                self.proc = None  # the character's state goes on without the face
                self._report()
                with self._proc_lock:
                    proc.quit(timeout=1.0)  # already gone: closes the pipe

    def _apply(self, rid: int, emotion: str, t: float) -> None:
        if not self.is_live(self.session_id, rid):
            return  # the reply was cut before this cue was heard
        expression, motion = self.expression_map.lookup(emotion)
        try:
            with self._proc_lock:
                if self.proc is not None and expression is not None:
                    self.proc.set_expression(expression)
                if self.proc is not None and motion is not None:
                    self.proc.start_motion(motion[0], motion[1], MOTION_PRIORITY)
        except AvatarError as e:
            self.log.warning("avatar cue %s: %s", emotion, e)
        with self._lock:
            self._relax()
            self.mood.cue(emotion)
            self.character.current_expression = emotion
            self.cues_applied.append({"t": t, "applied": time.time(), "response_id": rid, "emotion": emotion,
                                      "expression": expression, "motion": list(motion) if motion else None})
            del self.cues_applied[:-100]

    def _relax(self) -> None:
        now = time.monotonic()
        self.mood.relax(now - self._mood_at)
        self._mood_at = now

    # ------------------------------------------------------------ taps
    def _on_tap(self, area: str, x: float, y: float) -> None:
        """On the AvatarProcess reader thread: to the session as a NyaDeskPet tap_event."""
        msg = {"type": "tap_event", "hitArea": area, "position": {"x": round(x, 4), "y": round(y, 4)}}
        self.taps.append({**msg, "t": time.time()})
        del self.taps[:-100]
        for session in self._targets.get("session", []):
            session.send_input.remote(self.session_id, msg)

    # ------------------------------------------------------------ mouth track
    def _drain(self) -> None:
        proc = self.proc
        if proc is not None:
            frames = proc.take_frames()
            if frames:
                with self._lock:
                    self._track.extend(frames)

    def mouth_track(self, t_from: float, t_to: float | None = None, wait_s: float = 1.0) -> list[list[float]]:
        """``[[t_display, mouth_open], ...]`` shown from ``t_from`` to ``t_to`` (wall clock);
        waits up to ``wait_s`` for the frames up to ``t_to`` to come in."""
        end = time.monotonic() + wait_s
        while True:
            self._drain()
            with self._lock:
                last = self._track[-1][0] if self._track else -1.0
                if t_to is None or last >= t_to or time.monotonic() >= end or not self.running:
                    return [[t, m] for t, m in self._track if t >= t_from and (t_to is None or t <= t_to)]
            time.sleep(0.02)

    def capture(self, directory: str | None, raw: bool = True) -> bool:
        """Capture every frame into ``directory`` (raw RGBA + frames.jsonl; avatar/video.py);
        None stops, and returns once the last frame is on disk. False without a window."""
        if not self.running:
            return False
        try:
            with self._proc_lock:
                self.proc.capture(directory, raw=raw)
                if directory is None:
                    self.proc.state()  # commands run in order: the capture is closed by now
            return True
        except AvatarError as e:
            self.log.warning("avatar capture: %s", e)
            return False

    # ------------------------------------------------------------ queries and commands
    def _speaking(self) -> bool:
        if self._clock is None and self.clock_name:
            self._clock = PlaybackClock.attach(self.clock_name)  # the player makes it on its first output
        return bool(self._clock is not None and self._clock.position()[2])

    @ray.method(concurrency_group="control")
    def state(self) -> dict[str, Any]:
        """The character: name, current_expression (an emotion), mood (0..1), is_speaking."""
        speaking = self._speaking()
        with self._lock:
            self._relax()
            self.character.mood = round(self.mood.value, 4)
            self.character.is_speaking = speaking
            return self.character.to_dict()

    @ray.method(concurrency_group="control")
    def status(self) -> dict[str, Any]:
        with self._lock:
            proc = getattr(self.proc, "_proc", None)
            return {"running": self.running, "error": self.error, "model": str(self.model_path or ""),
                    "window_pid": proc.pid if proc is not None else None,
                    "clock": self.clock_name, "clock_attached": self._clock is not None, "info": self.info,
                    "expression_map": {"expressions": dict(self.expression_map.expressions),
                                       "motions": {k: list(v) for k, v in self.expression_map.motions.items()}},
                    "taps": list(self.taps), "cues": list(self.cues_applied), "frames": len(self._track)}

    def window_state(self) -> dict[str, Any]:
        """The window process's own view (the model's expression name, size, clock attached...)."""
        if not self.running:
            return {}
        with self._proc_lock:
            return self.proc.state()

    def click(self, x: int, y: int) -> bool:
        """A left click at window pixel (x, y), as if the user clicked there."""
        if not self.running:
            return False
        with self._proc_lock:
            self.proc.click(x, y)
        return True

    def extra_stats(self) -> dict[str, Any]:
        return {"running": self.running, "error": self.error, "taps": len(self.taps), "cues": len(self.cues_applied)}


AvatarActor = stage_actor(AvatarStage)
