"""Captured avatar frames + the reply WAV -> an MP4 (ffmpeg), or PNG frames without ffmpeg.

The window process captures raw RGBA frames with their display times (wall clock,
``AvatarWindow.start_capture(raw=True)``). The WAV's first sample is heard at a known wall
time ``t_wav0`` (the player's chunk ``t_start`` minus ``sample_start / rate``), so both
are on one clock: output frame ``k`` covers ``t_wav0 + k/fps .. + 1/fps`` and shows the
frame that was on screen at the middle of that span (the last one displayed before it).
The video is constant-rate; its length is the WAV's, rounded up to a whole frame.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

BACKGROUND = (41, 41, 51)  # the window's solid background (0.16, 0.16, 0.2)


def read_capture(directory: str | Path) -> list[dict]:
    """The rows of frames.jsonl (``i``, ``t``, ``mouth``, and for raw frames ``w``, ``h``, ``offset``)."""
    path = Path(directory) / "frames.jsonl"
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def pick_frames(times: list[float] | np.ndarray, t_start: float, n: int, fps: float) -> np.ndarray:
    """For output frames ``0..n-1`` from ``t_start`` at ``fps``: the index of the captured
    frame on screen at the middle of each (the last displayed at or before it; the first
    captured one where none was yet)."""
    times = np.asarray(times, np.float64)
    mids = t_start + (np.arange(n) + 0.5) / fps
    return np.clip(np.searchsorted(times, mids, side="right") - 1, 0, len(times) - 1)


def wav_duration(wav: str | Path) -> tuple[float, int]:
    with wave.open(str(wav), "rb") as w:
        return w.getnframes() / w.getframerate(), w.getframerate()


def _rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite over the background (the FBO keeps a transparent one)."""
    a = rgba[..., 3:4].astype(np.uint16)
    bg = np.array(BACKGROUND, np.uint16)
    # live2d draws with premultiplied alpha into the cleared (0,0,0,0) buffer
    return (rgba[..., :3].astype(np.uint16) + bg * (255 - a) // 255).clip(0, 255).astype(np.uint8)


def _frame(raw, row: dict) -> np.ndarray:
    w, h = row["w"], row["h"]
    raw.seek(row["offset"])
    return np.frombuffer(raw.read(w * h * 4), np.uint8).reshape(h, w, 4)


def write_mp4(directory: str | Path, wav: str | Path, t_wav0: float, out: str | Path, fps: float = 30.0,
              ffmpeg: str | None = None, timeout: float = 600.0) -> dict:
    """Mux the raw frames captured in ``directory`` with ``wav`` (first sample heard at wall
    time ``t_wav0``) into ``out``. RuntimeError when ffmpeg is missing or fails."""
    ffmpeg = ffmpeg or shutil.which("ffmpeg")
    if not ffmpeg:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    rows = [r for r in read_capture(directory) if "offset" in r]
    if not rows:
        raise RuntimeError(f"no raw frames captured in {directory}")
    duration, _ = wav_duration(wav)
    n = max(1, math.ceil(duration * fps - 1e-6))
    idx = pick_frames([r["t"] for r in rows], t_wav0, n, fps)
    w, h = rows[0]["w"], rows[0]["h"]
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", f"{fps:g}", "-i", "pipe:0", "-i", str(wav), "-map", "0:v", "-map", "1:a",
           "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(out)]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    cache: tuple[int, bytes] | None = None
    try:
        with open(Path(directory) / "frames.rgba", "rb") as raw:
            for i in idx:
                row = rows[i]
                if (row["w"], row["h"]) != (w, h):  # the window was rescaled: keep the first size
                    continue
                if cache is None or cache[0] != i:  # a frame held over several output frames
                    cache = (int(i), _rgb(_frame(raw, row)).tobytes())
                proc.stdin.write(cache[1])
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        code = proc.wait(timeout)
    except BrokenPipeError:
        err = proc.stderr.read().decode(errors="replace")
        code = proc.wait(timeout)
    if code != 0:
        raise RuntimeError(f"ffmpeg failed (exit {code}): {err.strip()[-500:]}")
    shown = rows[idx[0]]["t"], rows[idx[-1]]["t"]
    return {"output": str(out), "frames": n, "fps": fps, "duration_s": n / fps, "wav_duration_s": duration,
            "captured": len(rows), "distinct_frames": len(set(idx.tolist())),
            "first_frame_offset_s": round(shown[0] - t_wav0, 4), "last_frame_offset_s": round(shown[1] - t_wav0, 4)}


def write_pngs(directory: str | Path, t_start: float | None = None, t_end: float | None = None) -> int:
    """Raw frames -> NNNNNN.png (the frames shown from ``t_start`` to ``t_end``, wall clock),
    frames.jsonl rewritten for them (``t`` still wall time); frames.rgba removed. The count."""
    from PIL import Image

    d = Path(directory)
    rows = [r for r in read_capture(d) if "offset" in r]
    if not rows:
        return 0
    times = [r["t"] for r in rows]
    lo = 0 if t_start is None else max(0, int(np.searchsorted(times, t_start, side="right")) - 1)
    hi = len(rows) if t_end is None else int(np.searchsorted(times, t_end, side="right"))
    keep = []
    with open(d / "frames.rgba", "rb") as raw:
        for k, row in enumerate(rows[lo:hi]):
            Image.fromarray(_rgb(_frame(raw, row)), "RGB").save(d / f"{k:06d}.png", compress_level=1)
            keep.append({"i": k, "t": row["t"], "mouth": row["mouth"]})
    (d / "frames.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    (d / "frames.rgba").unlink()
    return len(keep)


def probe_duration(path: str | Path) -> float | None:
    """A media file's duration (ffprobe), None without ffprobe or on failure."""
    ffprobe = shutil.which("ffprobe")
    if not ffprobe:
        return None
    r = subprocess.run([ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                       capture_output=True, text=True, timeout=60)
    try:
        return float(r.stdout.strip())
    except ValueError:
        return None
