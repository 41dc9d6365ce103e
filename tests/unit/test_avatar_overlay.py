"""Overlay plumbing that needs no display: visual choice, click vs drag, remembered placement,
and that ``import avatar`` pulls in neither pygame nor live2d."""
from __future__ import annotations

import subprocess
import sys

from avatar.overlay import DragTracker, Placement, argb_visual_id, compositor_running

GLXINFO = """\
    visual  x   bf lv rg d st  colorbuffer  sr ax dp st accumbuffer  ms  cav
  id dep cl sp  sz l  ci b ro  r  g  b  a F gb bf th cl  r  g  b  a ns b eat
----------------------------------------------------------------------------
0x021 24 tc  0  32  0 r  y .   8  8  8  8 .  .  0 24  8  0  0  0  0  0 0 None
0x4ef 32 tc  0  32  0 r  . .   8  8  8  8 .  .  0  0  0  0  0  0  0  0 0 None
0x4f0 32 tc  0  32  0 r  y .   8  8  8  8 .  .  0 24  8  0  0  0  0  0 0 None
"""


def test_argb_visual_is_the_first_double_buffered_depth32_with_alpha():
    assert argb_visual_id(GLXINFO) == "0x4f0"
    single = "\n".join(ln for ln in GLXINFO.splitlines() if not ln.startswith("0x4f0"))
    assert argb_visual_id(single) == "0x4ef"  # single-buffered beats none
    assert argb_visual_id(GLXINFO.replace(" 32 tc", " 24 tc")) is None


def test_no_display_means_no_compositor():
    assert compositor_running(display=":9999") is False


def test_small_moves_are_a_click_and_large_ones_drag_the_window():
    d = DragTracker(threshold_px=4)
    d.down((500, 300), (40, 60))
    assert d.move((502, 301)) is None
    assert d.up() is True
    d.down((500, 300), (40, 60))
    assert d.move((520, 330)) == (480, 270)  # the grabbed point stays under the mouse
    assert d.move((521, 330)) == (481, 270)
    assert d.up() is False
    assert d.up() is False  # no press, no click


def test_placement_round_trip_and_corrupt_file(tmp_path):
    f = tmp_path / "sub" / "avatar.json"
    assert Placement.load(f, default_scale=1.5) == Placement(None, None, 1.5)
    Placement(120, 40, 1.25).save(f)
    assert Placement.load(f) == Placement(120, 40, 1.25)
    f.write_text("{corrupt")
    assert Placement.load(f, 2.0) == Placement(None, None, 2.0)
    f.write_text('{"x": 1, "y": 2, "scale": 99}')
    assert Placement.load(f, 1.0) == Placement(1, 2, 1.0)  # out-of-range scale ignored


def test_import_avatar_is_light():
    code = ("import sys, avatar, avatar.library, avatar.params, avatar.settings, avatar.process; "
            "heavy = [m for m in ('pygame', 'live2d', 'OpenGL') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
