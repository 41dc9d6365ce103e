"""What the echo benchmark measures: the canceller run block by block (``cancel``), ERLE
and its convergence, and Silero's scores of the result (false starts, detection lags)."""
from __future__ import annotations

import math
import time

import numpy as np

from benchmarks.lib.echo_scene import dbfs
from pipeline.audio.echo_cancel import BLOCK, RATE, EchoCanceller

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)


def cancel(near: np.ndarray, far: np.ndarray, base_threshold: float = 0.5, **kw) -> dict:
    """Both streams through one EchoCanceller in 512-sample blocks. Returns the output
    re-aligned with the input (its latency removed), per-call seconds, and per block the
    gating threshold ``vad_threshold(base_threshold)`` and the seconds of reference seen."""
    aec = EchoCanceller(**kw)
    n = len(near) // BLOCK * BLOCK
    out, cost, thr, ref = [], [], [], []
    for i in range(0, n, BLOCK):
        t = time.perf_counter()
        out.append(aec.process(near[i:i + BLOCK], far[i:i + BLOCK]))
        cost.append(time.perf_counter() - t)
        thr.append(aec.vad_threshold(base_threshold))
        ref.append(aec.reference_samples / RATE)
    y = np.concatenate(out)
    lat = aec.latency_samples
    y = np.concatenate([y[lat:], np.zeros(lat, np.int16)])
    # the threshold of block i was decided on output that lags by ``lat``: shift it the same way
    shift = lat // BLOCK
    thr = thr[shift:] + [thr[-1]] * shift
    return {"out": y, "aec": aec, "cost": np.array(cost), "thr": np.array(thr), "ref_s": np.array(ref)}


def echo_blocks(echo: np.ndarray, hop: int, min_echo_dbfs: float = -45.0) -> list[int]:
    return [i for i in range(0, len(echo) - hop + 1, hop) if dbfs(echo[i:i + hop]) >= min_echo_dbfs]


def erle_energy(near: np.ndarray, out: np.ndarray, echo: np.ndarray) -> float:
    """ERLE over the 32 ms blocks where the echo is at least -45 dBFS: input / output energy."""
    idx = echo_blocks(echo, BLOCK)
    m = np.zeros(len(near), bool)
    for i in idx:
        m[i:i + BLOCK] = True
    return round(dbfs(near[m]) - dbfs(out[m]), 1)


def erle_trace(near: np.ndarray, out: np.ndarray, echo: np.ndarray, hop: int = 4000) -> tuple[list, list]:
    """ERLE per 250 ms window holding echo: (window end times, dB)."""
    idx = echo_blocks(echo, hop)
    return [(i + hop) / RATE for i in idx], [round(dbfs(near[i:i + hop]) - dbfs(out[i:i + hop]), 1) for i in idx]


def convergence(near: np.ndarray, out: np.ndarray, echo: np.ndarray, onset_s: float,
                floor_db: float = 20.0) -> dict:
    """Time from the reply's start until every later 250 ms echo window keeps ERLE >= ``floor_db``."""
    ts, es = erle_trace(near, out, echo)
    low = [t for t, e in zip(ts, es) if e < floor_db]
    return {"convergence_s": round(max(low) - onset_s, 2) if low else 0.0,
            "windows_below_20db": len(low), "windows": len(es),
            "erle_first_3s_db": [e for t, e in zip(ts, es) if t - onset_s <= 3.0]}


# ------------------------------------------------------------------ Silero
class Silero:
    def __init__(self) -> None:
        from models.registry import load_silero

        self.model = load_silero()

    def probs(self, pcm: np.ndarray) -> np.ndarray:
        """One probability per 512-sample window, fresh recurrent state (a new mic stream)."""
        self.model.reset_states()
        x = pcm.astype(np.float32) / 32768.0
        return np.array([float(self.model(x[i:i + BLOCK], RATE)[0][0])
                         for i in range(0, len(x) - BLOCK + 1, BLOCK)])


def starts(p: np.ndarray, threshold, min_windows: int = 3) -> int:
    """Speech starts an Endpointer would declare (min_speech_ms 96 = 3 windows in a row at or
    over the threshold; ``threshold`` a number or one per window)."""
    thr = np.broadcast_to(np.asarray(threshold, float), p.shape)
    n = run = 0
    for v, t in zip(p, thr):
        run = run + 1 if v >= t else 0
        if run == min_windows:
            n += 1
    return n


def residual_stats(p: np.ndarray, onset_s: float) -> dict:
    win = BLOCK / RATE
    return {"max": round(float(p.max()), 3), "max_at_s": round(float(p.argmax()) * win - onset_s, 2),
            "windows_ge": {str(t): int(np.sum(p >= t)) for t in THRESHOLDS},
            "false_starts": {str(t): starts(p, t) for t in THRESHOLDS}}


def detection(p: np.ndarray, onset_s: float, end_s: float, threshold) -> dict:
    """The phrase at ``onset_s``..``end_s``: lag from its onset to the end of the first window
    at/over the threshold (when a VAD can know), to an Endpointer start (3 windows in a row),
    and the fraction of its windows over the threshold."""
    win = BLOCK / RATE
    thr = np.broadcast_to(np.asarray(threshold, float), p.shape)
    i0, i1 = int(onset_s / win), min(len(p), int(math.ceil(end_s / win)))
    hit = np.flatnonzero(p[i0:i1] >= thr[i0:i1])
    first = None if len(hit) == 0 else round((i0 + hit[0] + 1) * win - onset_s, 3)
    start, run = None, 0
    for j in range(i0, i1):
        run = run + 1 if p[j] >= thr[j] else 0
        if run == 3:
            start = round((j + 1) * win - onset_s, 3)
            break
    return {"first": first, "start": start, "frac": round(float(np.mean(p[i0:i1] >= thr[i0:i1])), 3)}


def summarize_detection(rows: list[dict]) -> dict:
    miss = 9.0
    first = np.array([r["first"] if r["first"] is not None else miss for r in rows])
    start = np.array([r["start"] if r["start"] is not None else miss for r in rows])
    frac = np.array([r["frac"] for r in rows])
    return {"runs": len(rows), "missed": int(np.sum(start >= miss)),
            "first_window_lag_s": {"median": round(float(np.median(first)), 3),
                                   "p90": round(float(np.percentile(first, 90)), 3)},
            "endpointer_start_lag_s": {"median": round(float(np.median(start)), 3),
                                       "p90": round(float(np.percentile(start, 90)), 3)},
            "frac_first_window_within_100ms": round(float(np.mean(first <= 0.1)), 2),
            "frac_first_window_within_160ms": round(float(np.mean(first <= 0.16)), 2),
            "phrase_windows_over_threshold": {"median": round(float(np.median(frac)), 3),
                                              "min": round(float(frac.min()), 3)}}


def speech_onset_end(pcm: np.ndarray, thresh_db: float = -40.0) -> tuple[float, float]:
    x = pcm.astype(np.float64) / 32768
    hop = RATE // 100
    n = len(x) // hop
    rms = np.sqrt(np.mean(x[:n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    idx = np.flatnonzero(20 * np.log10(rms / rms.max()) > thresh_db)
    return idx[0] * hop / RATE, (idx[-1] + 1) * hop / RATE
