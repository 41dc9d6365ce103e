"""Audio helpers: int16/float conversion, streaming resampling, WAV in and out."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


class AudioFormatError(ValueError):
    pass


def to_int16(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.int16:
        return x
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def to_float32(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.float32:
        return x
    return x.astype(np.float32) / 32768.0


def rms(pcm: np.ndarray) -> float:
    """RMS level of int16 audio, in int16 units (0 for no samples)."""
    return float(np.sqrt(np.mean(pcm.astype(np.float32) ** 2))) if len(pcm) else 0.0


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Any file PyAV (ffmpeg) can read -> mono int16 at ``sample_rate``."""
    p = Path(path)
    if not p.exists():
        raise AudioFormatError(f"audio file not found: {p}")
    from faster_whisper.audio import decode_audio  # PyAV: any rate, any channel count

    try:
        audio = decode_audio(str(p), sampling_rate=sample_rate)
    except Exception as e:  # PyAV raises many types for bad files
        raise AudioFormatError(f"cannot decode {p}: {e}") from None
    return to_int16(audio)


def write_wav(path: str | Path, pcm: np.ndarray, sample_rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(to_int16(pcm).tobytes())


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV -> (mono int16, rate). Multi-channel input is averaged."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise AudioFormatError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        ch, rate = w.getnchannels(), w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    if ch > 1:
        data = data.reshape(-1, ch).mean(axis=1).astype(np.int16)
    return data, rate


class Resampler:
    """Streaming mono int16 resampler (libswresample through PyAV); keeps filter state."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._rs = None
        if in_rate != out_rate:
            import av

            self._av = av
            self._rs = av.AudioResampler(format="s16", layout="mono", rate=out_rate)

    def __call__(self, pcm: np.ndarray) -> np.ndarray:
        if self._rs is None or len(pcm) == 0:
            return pcm
        frame = self._av.AudioFrame.from_ndarray(to_int16(pcm).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.in_rate
        out = [f.to_ndarray().reshape(-1) for f in self._rs.resample(frame)]
        return np.concatenate(out).astype(np.int16) if out else np.zeros(0, np.int16)

