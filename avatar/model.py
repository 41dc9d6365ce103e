"""One Live2D model drawn with live2d-py: load, lip-sync parameter, expressions, motions, hits.

live2d-py >= 1.0 loads both generations through ``live2d.Model`` (it dispatches on the
settings file). Its native code aborts the process on a bad file, so loading goes:
settings read and every referenced file checked in Python (avatar/settings.py), then a
throwaway child process loads the model without a renderer (``probe_load``): a crash
there becomes an AvatarError here. Drawing needs a current OpenGL context (avatar/window.py).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from avatar.params import ModelOverrides, ParamMap, load_overrides
from avatar.settings import AvatarError, ModelSettings, check_files, read_settings

__all__ = ["AvatarError", "AvatarModel", "probe_load", "live2d_module"]

PRIORITY_IDLE, PRIORITY_NORMAL, PRIORITY_FORCE = 1, 2, 3
_state: dict[str, Any] = {"mod": None}


def live2d_module():
    """``live2d`` imported once per process: banner and native log silenced, init() done."""
    if _state["mod"] is None:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner on import
                import live2d
        except ImportError as e:
            raise AvatarError(f"live2d-py is not installed ({e}); run scripts/setup.sh") from None
        live2d.enableLog(False)  # otherwise every load prints [v2][I] lines to stdout
        live2d.init()
        _state["mod"] = live2d
    return _state["mod"]


def gl_init() -> None:
    """Bind live2d's OpenGL functions to the current GL context (once per new context)."""
    live2d_module().glInit()


def probe_load(settings_path: str | Path, timeout: float = 60.0) -> dict:
    """Load the model in a child process without a renderer (no display needed).

    Returns what the runtime saw (version, parameter ids, expressions, motion groups);
    AvatarError when it fails or crashes there, so it never crashes this process.
    """
    cmd = [sys.executable, "-m", "avatar.model", "--probe", str(Path(settings_path).resolve())]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                      env.get("PYTHONPATH", "")]))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise AvatarError(f"{settings_path}: the Live2D runtime did not finish loading it in {timeout:.0f} s") from None
    if r.returncode != 0:
        if r.returncode < 0:
            why = f"the Live2D runtime crashed loading it ({signal.Signals(-r.returncode).name}); " \
                  "the .moc/.moc3 or one of its files is broken or of an unsupported version"
        else:
            lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()]
            why = lines[-1] if lines else f"exit status {r.returncode}"
        raise AvatarError(f"{settings_path}: {why}")
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise AvatarError(f"{settings_path}: unexpected probe output {r.stdout[-200:]!r}") from None


def _probe_main(path: str) -> int:
    """Child side of probe_load: load, report, exit. Runs with no GL context."""
    live2d = live2d_module()
    m = live2d.Model()
    m.LoadModelJson(path, create_renderer=False)
    ids = list(m.GetParamIds())
    print(json.dumps({"version": m.Version(), "params": ids,
                      "param_max": {i: m.GetParamMaxById(i) for i in ids},
                      "expressions": sorted(m.GetExpressions()), "motion_groups": dict(m.GetMotionGroups())}))
    return 0


class AvatarModel:
    """A loaded model. ``renderer=True`` needs a current GL context (made by AvatarWindow)."""

    def __init__(self, settings_path: str | Path, *, renderer: bool = True, probe: bool = True,
                 auto_blink: bool = True, auto_breath: bool = True, idle_motion: bool = True) -> None:
        self.settings: ModelSettings = read_settings(settings_path)
        check_files(self.settings)
        self.overrides: ModelOverrides = load_overrides(self.settings.path)
        if probe:
            probe_load(self.settings.path)
        live2d = live2d_module()
        if renderer:
            gl_init()
        self._m = live2d.Model()
        try:
            self._m.LoadModelJson(str(self.settings.path), create_renderer=renderer)
        except Exception as e:  # what live2d-py raises (not its aborts: the probe caught those)
            raise AvatarError(f"{self.settings.path}: Live2D could not load it: {e}") from None
        version = self._m.Version()
        if version != self.settings.cubism:
            raise AvatarError(f"{self.settings.path}: the runtime loaded it as Cubism {version}, "
                              f"the file name says Cubism {self.settings.cubism}")
        self._m.SetAutoBlink(auto_blink)
        self._m.SetAutoBreath(auto_breath)
        self.idle_motion = idle_motion
        self.cubism = version
        ids = list(self._m.GetParamIds())
        self.params = ParamMap(version, ids, self.overrides, self.settings.lipsync_ids)
        self.mouth_id = self.params.name("mouth_open")
        self.mouth_max = self.overrides.mouth_max
        if self.mouth_max is None:  # Shizuku's mouth opens 0..2, Haru's 0..1
            self.mouth_max = self._m.GetParamMaxById(self.mouth_id) if self.mouth_id else 1.0
        self._expressions = sorted(self._m.GetExpressions())
        self._groups = dict(self._m.GetMotionGroups())
        self._idle_group = next((g for g in self._groups if g.lower() == "idle"), None)
        areas = dict(self.settings.hit_areas)
        areas.update(self.overrides.hit_areas)
        self._hit_areas = list(areas.items())  # settings order: the first listed wins an overlap
        self.current_expression: str | None = None
        self.size = (0, 0)

    # ------------------------------------------------------------ queries
    def expressions(self) -> list[str]:
        return list(self._expressions)

    def motion_groups(self) -> dict[str, int]:
        return dict(self._groups)

    def hit_areas(self) -> list[str]:
        return [name for name, _ in self._hit_areas]

    # ------------------------------------------------------------ drawing
    def resize(self, width: int, height: int) -> None:
        self.size = (int(width), int(height))
        self._m.Resize(int(width), int(height))

    def update_and_draw(self, mouth_open: float, extra_params: dict[str, float] | None = None,
                        dt: float | None = None) -> None:
        """Advance motions/blink/physics by ``dt`` s (None: wall clock), apply the mouth
        (0..1, scaled to the model's range) and ``extra_params`` (logical or real names),
        then draw into the current framebuffer."""
        m = self._m
        if self.idle_motion and self._idle_group and m.IsMotionFinished():
            m.StartRandomMotion(self._idle_group, PRIORITY_IDLE)
        m.Update(-1.0 if dt is None else float(dt))
        # after Update (which reloads the saved parameters) and before Draw
        if self.mouth_id:
            m.SetParamById(self.mouth_id, max(0.0, min(1.0, float(mouth_open))) * self.mouth_max)
        for real, value in self.params.resolve(extra_params or {}).items():
            m.SetParamById(real, value)
        m.Draw()

    # ------------------------------------------------------------ behaviour
    def set_expression(self, name: str | None) -> None:
        """Fade to expression ``name``; None or "" returns to the neutral face."""
        if not name:
            self._m.ResetExpression()
            self.current_expression = None
            return
        if name not in self._expressions:
            raise AvatarError(f"{self.settings.name}: no expression {name!r} (has: {', '.join(self._expressions)})")
        self._m.SetExpression(name)
        self.current_expression = name

    def start_motion(self, group: str, index: int = 0, priority: int = PRIORITY_NORMAL) -> None:
        n = self._groups.get(group)
        if n is None:
            raise AvatarError(f"{self.settings.name}: no motion group {group!r} (has: {', '.join(self._groups)})")
        if not 0 <= index < n:
            raise AvatarError(f"{self.settings.name}: motion group {group!r} has {n} motions, not index {index}")
        self._m.StartMotion(group, int(index), int(priority))

    def is_motion_finished(self) -> bool:
        return bool(self._m.IsMotionFinished())

    def hit_test(self, x: float, y: float) -> str | None:
        """Name of the hit area at window pixel (x, y), top-left origin, as last drawn.

        A hit area names a drawable (its bounding box counts). HitDrawable lines up with
        the picture; IsAreaHit (live2d-py 1.0, Cubism 2) was measured ~64 px too high on
        Haru at 400x600, so it is only the fallback for runtimes without HitDrawable.
        """
        if hasattr(self._m, "HitDrawable"):
            under = set(self._m.HitDrawable(float(x), float(y), False))
            for name, drawable in self._hit_areas:  # settings order: the first listed wins an overlap
                if drawable in under:
                    return name
            return None
        for name, drawable in self._hit_areas:
            if self._m.IsAreaHit(drawable, float(x), float(y)) or self._m.IsAreaHit(name, float(x), float(y)):
                return name
        return None

    def release(self) -> None:
        m, self._m = self._m, None
        if m is not None and hasattr(m, "DestroyRenderer"):
            try:
                m.DestroyRenderer()
            except Exception:
                pass


if __name__ == "__main__":  # python -m avatar.model --probe SETTINGS (used by probe_load)
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        sys.exit(_probe_main(sys.argv[2]))
    print("usage: python -m avatar.model --probe SETTINGS_FILE", file=sys.stderr)
    sys.exit(2)
