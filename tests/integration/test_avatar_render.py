"""The avatar under Xvfb: the default model (haru, npm) renders, its mouth and expressions
change pixels, a click on a hit area taps, the overlay remembers its place, and the
window process round-trips commands, frames and errors without hanging."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

import avatar.lipsync  # noqa: F401 - the child's lip-sync: an import error here, not a closed mouth there
from avatar.settings import AvatarError

pytestmark = pytest.mark.integration

W, H = 400, 600
STILL = {"auto_blink": False, "auto_breath": False, "idle_motion": False}  # deterministic frames


def _changed(a: np.ndarray, b: np.ndarray, tol: int = 8) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1) > tol


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())


@pytest.fixture
def window(xvfb, avatar_model_path):
    from avatar.window import AvatarWindow

    w = AvatarWindow(avatar_model_path, W, H, headless=True, model_options=STILL)
    yield w
    w.close()


def _settle(w, n: int = 20, mouth: float = 0.0) -> np.ndarray:
    for _ in range(n):
        w.frame(mouth, dt=0.1)
    return w.read_rgba()


def _mouth_centre(w) -> tuple[int, int]:
    closed = _settle(w)
    w.frame(1.0, dt=0.0)
    x0, x1, y0, y1 = _bbox(_changed(closed, w.read_rgba()))
    return (x0 + x1) // 2, (y0 + y1) // 2


def test_model_renders_nonempty_pixels(window):
    rgba = _settle(window)
    assert rgba.shape == (H, W, 4) and rgba.dtype == np.uint8
    drawn = rgba[..., 3] > 0
    assert 0.05 < drawn.mean() < 0.9  # a figure on a transparent background
    assert rgba[..., :3][drawn].std() > 10  # textured, not a flat fill
    assert window.model.cubism == 2 and window.model.mouth_id == "PARAM_MOUTH_OPEN_Y"


def test_open_mouth_changes_only_the_mouth(window):
    closed = _settle(window)
    window.frame(0.0, dt=0.0)
    assert not _changed(closed, window.read_rgba()).any()  # same state, same pixels
    window.frame(1.0, dt=0.0)
    diff = _changed(closed, window.read_rgba())
    assert diff.sum() > 100
    x0, x1, y0, y1 = _bbox(diff)
    assert (x1 - x0) * (y1 - y0) < 0.02 * W * H  # a small region ...
    assert y1 < H / 2  # ... in the face
    assert window.model.hit_test((x0 + x1) // 2, (y0 + y1) // 2) == "head"
    window.frame(0.5, dt=0.0)
    half = _changed(closed, window.read_rgba()).sum()
    assert 0 < half  # partly open differs from closed too


def test_expression_changes_the_face(window):
    neutral = _settle(window, 30)
    assert not _changed(neutral, _settle(window, 10)).any()  # settled: nothing moves by itself
    window.model.set_expression("f05")  # haru: eyes closed in a smile
    smiling = _settle(window, 20)  # past the 0.5 s fade-in
    diff = _changed(neutral, smiling)
    assert diff.sum() > 200 and _bbox(diff)[3] < H / 2
    assert window.model.current_expression == "f05"
    window.model.set_expression(None)
    assert not _changed(neutral, _settle(window, 20)).any()
    with pytest.raises(AvatarError, match="no expression 'nope'"):
        window.model.set_expression("nope")
    with pytest.raises(AvatarError, match="no motion group"):
        window.model.start_motion("nope")
    window.model.start_motion("tap_body", 0)
    assert not window.model.is_motion_finished()


def test_click_on_a_hit_area_taps_with_its_name(window):
    taps = []
    window.on_tap = lambda area, x, y: taps.append((area, x, y))
    x, y = _mouth_centre(window)
    window.click(x, y)
    window.frame(0.0, dt=0.0)
    assert taps == [("head", x / W, y / H)]
    body = next((px, py) for py in range(y + 100, H, 10) for px in range(150, 250, 10)
                if window.model.hit_test(px, py) == "body")
    window.click(*body)
    window.frame(0.0, dt=0.0)
    assert taps[-1][0] == "body"
    window.click(2, 2)  # the empty corner
    window.frame(0.0, dt=0.0)
    assert len(taps) == 2


def test_idle_motion_and_blink_run_by_themselves(xvfb, avatar_model_path):
    from avatar.window import AvatarWindow

    with AvatarWindow(avatar_model_path, W, H, headless=True) as w:
        m = w.model
        first = _settle(w, 1)
        assert not m.is_motion_finished()  # an idle motion started on its own
        eyes = []
        for _ in range(150):  # 15 s of model time
            w.frame(0.0, dt=0.1)
            eyes.append(m._m.GetParamValueById("PARAM_EYE_L_OPEN"))
        assert min(eyes) < 0.3 < max(eyes)  # it blinked
        assert _changed(first, w.read_rgba()).any()


def test_capture_writes_png_frames_with_display_times(window, tmp_path):
    window.start_capture(tmp_path / "cap")
    times = [window.frame(m, dt=0.0) for m in (0.0, 0.5, 1.0)]
    window.stop_capture()
    window.frame(0.0, dt=0.0)  # not captured
    assert sorted(p.name for p in (tmp_path / "cap").glob("*.png")) == ["000000.png", "000001.png", "000002.png"]
    rows = [json.loads(ln) for ln in (tmp_path / "cap" / "frames.jsonl").read_text().splitlines()]
    assert [r["t"] for r in rows] == times and [r["mouth"] for r in rows] == [0.0, 0.5, 1.0]
    import pygame

    img = pygame.image.load(str(tmp_path / "cap" / "000002.png"))
    assert img.get_size() == (W, H)


def test_overlay_without_compositor_says_so_and_remembers_place_and_scale(xvfb, avatar_model_path, tmp_path):
    import pygame

    from avatar.window import NO_COMPOSITOR, AvatarWindow

    pos_file = tmp_path / "placement.json"
    w = AvatarWindow(avatar_model_path, W, H, overlay=True, position_file=pos_file)
    try:
        assert w.info == [NO_COMPOSITOR] and not w.transparent  # Xvfb runs no compositor
        w.frame(0.0)
        w.move(123, 45)
        pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=1, flipped=False))
        w.frame(0.0)
        assert w.size == (round(W * 1.1), round(H * 1.1))
        assert w.read_rgba().shape == (round(H * 1.1), round(W * 1.1), 4)
    finally:
        w.close()
    saved = json.loads(pos_file.read_text())
    assert (saved["x"], saved["y"], saved["scale"]) == (123, 45, 1.1)
    w = AvatarWindow(avatar_model_path, W, H, overlay=True, position_file=pos_file)
    try:
        assert w.position() == (123, 45) and w.size == (round(W * 1.1), round(H * 1.1))
    finally:
        w.close()


def test_broken_model_in_a_window_is_a_clear_error(xvfb, avatar_model_path, tmp_path):
    import shutil

    from avatar.window import AvatarWindow

    broken = tmp_path / "broken"
    shutil.copytree(avatar_model_path.parent, broken)
    moc = next(broken.rglob("*.moc"))
    moc.write_bytes(moc.read_bytes()[:4000])  # header intact: only the runtime can tell
    with pytest.raises(AvatarError, match="crashed loading it"):
        AvatarWindow(broken / avatar_model_path.name, W, H, headless=True)
    # and a window can still be opened afterwards in this process
    with AvatarWindow(avatar_model_path, W, H, headless=True) as w:
        w.frame(0.0)


# ---------------------------------------------------------------- the window process
def square_mouth(t: float) -> float:
    """Test mouth source (module level: the spawned child unpickles it): 4 Hz open/closed."""
    return 1.0 if int(t * 8) % 2 else 0.0


def _wait(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_avatar_process_round_trip(xvfb, avatar_model_path, tmp_path):
    from avatar.process import AvatarProcess
    from avatar.window import AvatarWindow

    with AvatarWindow(avatar_model_path, W, H, headless=True, model_options=STILL) as w:
        head = _mouth_centre(w)
    taps = []
    p = AvatarProcess(avatar_model_path, width=W, height=H, headless=True, mouth_fn=square_mouth,
                      on_tap=lambda *a: taps.append(a))
    try:
        info = p.start(timeout=60)
        assert info["expressions"][:2] == ["f01", "f02"] and "idle" in info["motion_groups"]
        assert info["hit_areas"] == ["head", "body"] and info["size"] == [W, H]
        assert _wait(lambda: len(p.frames) >= 20)
        p.set_expression("f05")
        p.start_motion("tap_body", 1)
        st = p.state()
        assert st["current_expression"] == "f05" and st["size"] == [W, H]
        p.click(*head)
        assert _wait(lambda: taps)
        assert p.taps[0] == ("head", head[0] / W, head[1] / H) and taps == p.taps
        p.capture(tmp_path / "cap")
        assert _wait(lambda: len(list((tmp_path / "cap").glob("*.png"))) >= 3)
        p.capture(None)
        p.set_expression("nope")  # a bad command: reported, the process lives on
        assert _wait(lambda: p.errors) and "no expression 'nope'" in p.errors[0]
        assert p.alive and p.state()["current_expression"] == "f05"
        frames = p.take_frames()
        ts = np.array([t for t, _ in frames])
        mouths = {m for _, m in frames}
        assert len(frames) >= 20 and np.all(np.diff(ts) > 0)  # every frame, in display order
        assert mouths == {0.0, 1.0}  # the injected mouth source drove them
        assert abs(ts[-1] - time.time()) < 5.0  # wall-clock display times
    finally:
        code = p.quit(timeout=10)
    assert code == 0 and not p.alive
    with pytest.raises(AvatarError, match="not running"):
        p.set_expression("f01")


def test_broken_model_in_the_process_is_an_error_not_a_hang(xvfb, tmp_path):
    import psutil

    from tests.unit.avatar_fixtures import make_v2

    from avatar.process import AvatarProcess

    bad = make_v2(tmp_path / "bad", moc=b"not a moc")
    p = AvatarProcess(bad, headless=True)
    # the child reports the bad file within ~1.5 s here (spawn + imports + the header check);
    # 30 s leaves a 3x slower CPU ample room and is half of start()'s default 60 s: a child that
    # hung would end start() with its own "no ready reply in 30 s" instead of the file's error
    deadline_s = 30.0
    t0 = time.monotonic()
    with pytest.raises(AvatarError) as raised:
        p.start(timeout=deadline_s)
    took = time.monotonic() - t0
    msg = str(raised.value)
    # the error names the problem and the file, and came from the child, not from the wait
    assert "not a Cubism 2 .moc" in msg and str(bad.parent / "moc" / "tiny.moc") in msg, msg
    assert took < deadline_s and p.errors == [msg], (took, msg, p.errors)
    # the child exited on its own (exit code 0: not terminated by start()'s clean-up) and is gone
    pid = p._proc.pid
    assert not p.alive and p._proc.exitcode == 0, p._proc.exitcode
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert p.quit(timeout=5) == 0
    with pytest.raises(AvatarError, match="not running"):
        p.set_expression("f01")


def test_process_lip_syncs_to_a_playback_clock(xvfb, avatar_model_path):
    import uuid

    from pipeline.audio.playback_clock import PlaybackClock

    name = f"kokoro-test-{uuid.uuid4().hex[:8]}-playback"
    clock = PlaybackClock.create(name, 24000)
    from avatar.process import AvatarProcess

    p = AvatarProcess(avatar_model_path, width=W, height=H, headless=True, clock_name=name)
    try:
        p.start(timeout=60)
        # 1 s of a loud tone heard from 0.3 s from now, in 20 ms blocks, then silence
        t0 = time.time() + 0.3
        tone = (8000 * np.sin(2 * np.pi * 220 * np.arange(320) / 16000)).astype(np.int16)
        for i in range(50):
            clock.write(tone, t0 + i * 0.02, response_id=1, pos=i * 480)
        clock.write(np.zeros(320, np.int16), t0 + 1.0, response_id=0, pos=0)
        # 0.7 s of silence after the tone: a few frames to judge even at a third of the 30 fps
        # (a 3x slower CPU; 0.2 s here before left a 10 fps renderer one frame or none)
        time.sleep(max(0.0, t0 + 1.8 - time.time()))
        frames = p.take_frames()
        assert p.state()["clock_attached"]
        assert not [m for m in p.infos if "lip-sync unavailable" in m], p.infos
    finally:
        p.quit()
        clock.close()
    during = [m for t, m in frames if t0 + 0.1 < t < t0 + 0.9]
    after = [m for t, m in frames if t > t0 + 1.1]
    before = [m for t, m in frames if t < t0 - 0.05]
    assert during and min(during) > 0.3
    assert after and max(after) == 0.0 and before and max(before) == 0.0
