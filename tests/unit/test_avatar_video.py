"""avatar/video.py on synthetic captures: the frame on screen at each output frame, the MP4
on the WAV's clock (ffmpeg), PNGs without ffmpeg, and talk --video's fallback message."""
from __future__ import annotations

import json
import shutil
import subprocess
import wave
from types import SimpleNamespace

import numpy as np
import pytest

from avatar import video

W, H = 32, 24
needs_ffmpeg = pytest.mark.usefixtures("ffmpeg")  # tests/conftest.py: skips, or fails under CI=true


def capture(directory, times: list[float], levels: list[int]) -> None:
    """Raw frames as AvatarWindow.start_capture(raw=True) writes them: solid grey ``levels``."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "frames.rgba", "wb") as raw, open(directory / "frames.jsonl", "w") as log:
        for i, (t, v) in enumerate(zip(times, levels)):
            log.write(json.dumps({"i": i, "t": t, "mouth": v / 255, "w": W, "h": H, "offset": raw.tell()}) + "\n")
            raw.write(np.full((H, W, 4), (v, v, v, 255), np.uint8).tobytes())


def wav(path, seconds: float, rate: int = 24000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.zeros(int(seconds * rate), np.int16).tobytes())


def test_each_output_frame_shows_what_was_on_screen_at_its_middle():
    times = [0.95, 1.00, 1.05, 1.20]
    idx = video.pick_frames(times, 1.0, 8, 20.0)  # output frames at 1.00, 1.05, ... (middles 1.025 ...)
    assert idx.tolist() == [1, 2, 2, 2, 3, 3, 3, 3]
    assert video.pick_frames(times, 0.0, 2, 20.0).tolist() == [0, 0]  # before the first: the first


@needs_ffmpeg
def test_mp4_is_on_the_wavs_clock_and_as_long(tmp_path):
    t_wav0 = 1000.0
    # frames displayed every 0.1 s from 0.03 s before the first sample; each a different grey
    times = [t_wav0 - 0.03 + 0.1 * k for k in range(12)]
    levels = [20 * k for k in range(12)]
    capture(tmp_path / "cap", times, levels)
    wav(tmp_path / "a.wav", 1.0)
    info = video.write_mp4(tmp_path / "cap", tmp_path / "a.wav", t_wav0, tmp_path / "a.mp4", fps=10.0)
    assert info["frames"] == 10 and abs(video.probe_duration(tmp_path / "a.mp4") - 1.0) < 0.08
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "a.mp4"), "-f", "rawvideo", "-pix_fmt",
                          "gray", "-"], capture_output=True, check=True).stdout
    got = np.frombuffer(raw, np.uint8).reshape(-1, H, W)[:, H // 2, W // 2].astype(int)
    # output frame k (k/10 .. (k+1)/10 s) shows the frame displayed at t_wav0 - 0.03 + 0.1 k
    want = [levels[k] for k in range(10)]
    assert len(got) == 10 and np.abs(got - want).max() <= 12, (got.tolist(), want)


def test_without_ffmpeg_the_reply_frames_become_pngs(tmp_path):
    times = [10.0 + 0.1 * k for k in range(10)]
    capture(tmp_path / "cap", times, [25 * k for k in range(10)])
    n = video.write_pngs(tmp_path / "cap", 10.25, 10.55)
    assert n == 4  # on screen at 10.25 (shown at 10.2), then 10.3, 10.4, 10.5
    assert sorted(p.name for p in (tmp_path / "cap").glob("*.png")) == [f"{k:06d}.png" for k in range(4)]
    rows = video.read_capture(tmp_path / "cap")
    assert [r["t"] for r in rows] == pytest.approx([10.2, 10.3, 10.4, 10.5])
    assert not (tmp_path / "cap" / "frames.rgba").exists()
    from PIL import Image

    assert Image.open(tmp_path / "cap" / "000001.png").getpixel((0, 0)) == (75, 75, 75)


def test_talk_video_without_ffmpeg_says_so_and_keeps_pngs(tmp_path, monkeypatch):
    from pipeline.cli.talk import _make_video

    wav(tmp_path / "r.wav", 0.5)
    capture(tmp_path / "r_frames", [99.95 + 0.1 * k for k in range(10)], [10 * k for k in range(10)])
    # the talk's result: chunk times relative to t0; the WAV's first sample heard at 100.0
    res = SimpleNamespace(t0=90.0, info={"chunks": [{"t_start": 10.0, "sample_start": 0}]})
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = _make_video(res, str(tmp_path / "r.wav"), tmp_path / "r_frames", str(tmp_path / "r.mp4"))
    assert out["no_ffmpeg"] and "ffmpeg is not installed" in out["error"] and str(tmp_path / "r_frames") in out["error"]
    assert not (tmp_path / "r.mp4").exists()
    assert len(list((tmp_path / "r_frames").glob("*.png"))) == 6  # 99.95 (on screen at 100.0) .. 100.45


def test_talk_video_without_a_reply_leaves_nothing(tmp_path):
    from pipeline.cli.talk import _make_video

    capture(tmp_path / "r_frames", [1.0, 1.1], [0, 0])
    out = _make_video(SimpleNamespace(t0=0.0, info={"chunks": []}), str(tmp_path / "r.wav"), tmp_path / "r_frames",
                      str(tmp_path / "r.mp4"))
    assert out == {"error": "no reply was heard: no video"} and not (tmp_path / "r_frames").exists()
