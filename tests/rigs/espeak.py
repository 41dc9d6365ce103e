"""Speech made with espeak-ng (and sox): the user's voice in tests and benchmarks."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def espeak_wav(text: str, path: Path, rate: int | None = 16000, pad_s: tuple[float, float] = (0.0, 0.0),
               voice: str = "en-us", speed: int = 150) -> Path:
    """Speak ``text`` into a mono 16-bit WAV at ``rate`` (None: espeak-ng's own 22050 Hz, no sox),
    with ``pad_s`` seconds of silence before and after. RuntimeError names a missing tool."""
    path = Path(path)
    tools = ("espeak-ng",) if rate is None and pad_s == (0.0, 0.0) else ("espeak-ng", "sox")
    for tool in tools:
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is missing: run ./scripts/setup.sh (it installs espeak-ng and sox)")
    if len(tools) == 1:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                       capture_output=True)
        return path
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True,
                   capture_output=True)
    cmd = ["sox", str(raw)] + (["-r", str(rate)] if rate else []) + ["-c", "1", "-b", "16", str(path)]
    subprocess.run(cmd + ["pad", str(pad_s[0]), str(pad_s[1])], check=True)
    raw.unlink()
    return path
