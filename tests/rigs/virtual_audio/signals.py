"""Level and timing helpers on recorded audio: dBFS per block, the first loud sample, the
start of a silence, and where a clip lies in a recording (for the probe and its users)."""
from __future__ import annotations

import numpy as np


def to_float(x: np.ndarray) -> np.ndarray:
    """Mono float32 audio, int16 scaled to [-1, 1)."""
    x = np.asarray(x).reshape(-1)
    return x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)


def block_db(x: np.ndarray, rate: int, block_ms: float = 10.0) -> np.ndarray:
    """dBFS of each ``block_ms`` block of mono audio (int16 or float)."""
    x = to_float(x)
    hop = max(1, int(rate * block_ms / 1000))
    n = len(x) // hop
    return 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)


def first_loud(x: np.ndarray, rate: int, start: int, thresh_db: float = -45.0,
               block_ms: float = 10.0, relative: bool = False) -> int | None:
    """First sample >= start of the first block above ``thresh_db`` (dBFS, or dB below the
    loudest block if ``relative``), refined to the first sample above that amplitude."""
    x = to_float(x)[start:]
    db = block_db(x, rate, block_ms)
    if not len(db):
        return None
    thr = thresh_db + (db.max() if relative else 0.0)
    idx = np.where(db > thr)[0]
    if not len(idx):
        return None
    hop = max(1, int(rate * block_ms / 1000))
    b = idx[0] * hop
    amp = 10 ** (thr / 20)
    k = np.where(np.abs(x[max(0, b - hop): b + hop]) > amp)[0]
    return start + (max(0, b - hop) + int(k[0]) if len(k) else b)


def first_silence(x: np.ndarray, rate: int, start: int, thresh_db: float = -45.0,
                  hold_ms: float = 200.0, block_ms: float = 10.0) -> int | None:
    """First sample >= start after which ``x`` stays below ``thresh_db`` for ``hold_ms``
    (blocks of ``block_ms``; the end refined to just after the last sample above that level)."""
    x = to_float(x)
    db = block_db(x[start:], rate, block_ms)
    hop = max(1, int(rate * block_ms / 1000))
    need = max(1, int(round(hold_ms / block_ms)))
    run = 0
    for i, quiet in enumerate(db <= thresh_db):
        run = run + 1 if quiet else 0
        if run >= need:
            q = start + (i - need + 1) * hop
            k = np.where(np.abs(x[max(start, q - hop): q]) > 10 ** (thresh_db / 20))[0]
            return max(start, q - hop) + int(k[-1]) + 1 if len(k) else q
    return None


def find_clip(signal: np.ndarray, clip: np.ndarray, start: int, rate: int, window_s: float = 0.5,
              head_s: float = 0.2) -> int | None:
    """Sample of ``signal`` where ``clip``'s sample 0 lies, searched in [start, start+window_s].

    Matches the clip's first ``head_s`` of sound (after its leading silence), not the whole
    clip: a playback glitch later in the clip (PulseAudio inserts silence when a client is
    late, and the clip then continues a few samples later) must not move the answer.
    Periodic clips (pure tones) are ambiguous by their period: use speech or noise."""
    clip = to_float(clip)
    k0 = first_loud(clip, rate, 0, -40.0, relative=True) or 0
    head = clip[k0: k0 + int(head_s * rate)]
    seg = to_float(signal[start + k0: start + k0 + int(window_s * rate) + len(head)])
    if len(head) == 0 or len(seg) < len(head) or not np.any(seg):
        return None
    n = 1 << int(np.ceil(np.log2(len(seg) + len(head))))
    c = np.fft.irfft(np.fft.rfft(seg, n) * np.conj(np.fft.rfft(head, n)), n)[: len(seg) - len(head) + 1]
    energy = np.concatenate([[0.0], np.cumsum(seg.astype(np.float64) ** 2)])
    local = np.sqrt(energy[len(head):] - energy[: len(seg) - len(head) + 1]) * np.linalg.norm(head)
    lag = int(np.argmax(np.abs(c)))
    if np.abs(c[lag]) < 0.5 * (local[lag] + 1e-9):  # normalised correlation: is the clip there?
        return None
    return start + lag
