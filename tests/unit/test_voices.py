"""Kokoro's full voice set from npm (models/voices.py) and which voice an unset tts.voice means."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from models.voices import SHAPE, install_voices, voices_from_tgz
from pipeline.config import load_config, voices_cache_path


def make_tgz(path, voices: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in {**voices, "README.md": b"hi"}.items():
            info = tarfile.TarInfo(f"package/voices/{name}.bin" if name != "README.md" else "package/README.md")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def voice(seed: int) -> bytes:
    return np.random.default_rng(seed).normal(0, 0.2, SHAPE).astype("<f4").tobytes()


def test_the_voices_of_the_npm_tarball_become_the_npz_kokoro_onnx_loads(tmp_path):
    tgz = tmp_path / "cache" / "kokoro-js-1.2.1.tgz"
    tgz.parent.mkdir()
    make_tgz(tgz, {"af_heart": voice(1), "jf_alpha": voice(2)})
    dest = install_voices(tmp_path / "v.npz", cache=tgz.parent)  # the tarball is there: no npm call
    with np.load(dest) as z:
        assert sorted(z.files) == ["af_heart", "jf_alpha"]
        assert z["af_heart"].shape == SHAPE and z["af_heart"].dtype == np.float32
        assert np.array_equal(z["af_heart"].ravel(), np.frombuffer(voice(1), "<f4"))


def test_a_broken_tarball_is_refused(tmp_path):
    tgz = tmp_path / "bad.tgz"
    make_tgz(tgz, {"af_heart": voice(1)[:-4]})
    with pytest.raises(ValueError, match="not a"):
        voices_from_tgz(tgz)
    make_tgz(tgz, {"jf_alpha": voice(1)})
    with pytest.raises(ValueError, match="no English voices"):
        voices_from_tgz(tgz)


def test_an_unset_voice_is_english_only_where_the_full_set_is_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert load_config(None).tts.voice == "jf_alpha"  # only PyPI's Japanese voice set here
    voices_cache_path().parent.mkdir(parents=True)
    voices_cache_path().write_bytes(b"x")
    assert load_config(None).tts.voice == "af_heart"
    assert load_config(None, ["tts.voice=bf_emma"]).tts.voice == "bf_emma"  # asked for: kept
