"""Mouth opening from what is audible, read off the shared playback clock.

For a frame displayed at wall time ``t`` the mouth follows the level of the
signal the user hears around ``t`` (``PlaybackClock.reference``), not what
was synthesized: a pause closes it, a cut closes it at once. The level (RMS
over a short centred window, in dB, mapped floor..ceil -> 0..1) is smoothed
with attack/release time constants applied over the real time elapsed since
the previous frame, so the motion is the same at 30 or 60 fps.

The smoother lags its input; that lag is cancelled by reading the envelope
``lead_ms`` ahead of ``t``, which the clock can answer because the player
stamps each block when it *will* be heard (a block, or the device latency,
ahead). The lead never reaches past the last block written: unknown audio
would read as silence. ``lag_and_correlation`` measures the result.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from pipeline.audio.playback_clock import REF_RATE

if TYPE_CHECKING:
    from pipeline.audio.playback_clock import PlaybackClock

_FULL_SCALE = 32768.0


def level_db(rms: np.ndarray | float) -> np.ndarray | float:
    """RMS in int16 units -> dBFS (silence: -120)."""
    return 20.0 * np.log10(np.maximum(rms, 1e-6 * _FULL_SCALE) / _FULL_SCALE)


def envelope(signal: np.ndarray, times: np.ndarray, window_ms: float = 30.0, rate: int = REF_RATE) -> np.ndarray:
    """RMS (int16 units) of ``signal`` over windows centred on ``times`` (seconds from its
    first sample); the signal counts as zeros outside its span."""
    x = np.asarray(signal, np.float64).ravel()
    csum = np.concatenate(([0.0], np.cumsum(x * x)))
    half = max(1, int(round(window_ms * rate / 2000)))
    centre = np.round(np.asarray(times, np.float64) * rate).astype(np.int64)
    lo = np.clip(centre - half, 0, len(x))
    hi = np.clip(centre + half, 0, len(x))
    return np.sqrt((csum[hi] - csum[lo]) / (2 * half))


def lag_and_correlation(track: list[tuple[float, float]] | np.ndarray, audio: np.ndarray, rate: int, t0: float,
                        max_lag_s: float = 0.2, window_ms: float = 30.0, range_db: float = 40.0,
                        step_s: float = 0.001) -> tuple[float, float]:
    """How well a mouth track follows an audio signal: (best lag in seconds, Pearson r there).

    ``track``: ``[(t, mouth_open), ...]`` at display times (wall clock); ``audio``: the
    signal heard from wall time ``t0`` (its first sample) at ``rate``. The reference is the
    audio's envelope (RMS over ``window_ms``, in dB, the top ``range_db`` of it), so the
    figure does not depend on a lip-sync's own level mapping. A positive lag means the mouth
    is late: ``mouth(t)`` best matches the envelope at ``t - lag``. Lags are tried every
    ``step_s`` within ±``max_lag_s``, so the lag resolves well below a frame.
    """
    tr = np.asarray(track, np.float64).reshape(-1, 2)
    t, m = tr[:, 0] - t0, tr[:, 1]
    lags = np.arange(-max_lag_s, max_lag_s + step_s / 2, step_s)
    # the envelope once on a fine grid, then read at t - lag by interpolation
    grid = np.arange(t.min() - max_lag_s - step_s, t.max() + max_lag_s + 2 * step_s, step_s)
    db = level_db(envelope(audio, grid, window_ms, rate))
    env = np.maximum(db, db.max() - range_db)
    best = (0.0, -2.0)
    for lag in lags:
        e = np.interp(t - lag, grid, env)
        if e.std() == 0 or m.std() == 0:
            continue
        r = float(np.corrcoef(m, e)[0, 1])
        if r > best[1]:
            best = (float(lag), r)
    return best if best[1] > -2.0 else (0.0, 0.0)


class LipSync:
    """Mouth opening (0..1) for frames displayed at wall times ``t`` (one instance per face)."""

    def __init__(self, attack_ms: float = 40.0, release_ms: float = 80.0, window_ms: float = 30.0,
                 floor_db: float = -50.0, ceil_db: float = -18.0, lead_ms: float = 20.0) -> None:
        # floor/ceil: Kokoro's and espeak-ng's voiced frames sit at -25..-13 dBFS (30 ms RMS),
        # consonants and breaths at -50..-35, pauses below -60
        if not ceil_db > floor_db:
            raise ValueError("ceil_db must be above floor_db")
        self.attack_s, self.release_s = attack_ms / 1000, release_ms / 1000
        self.window_s = window_ms / 1000
        self.floor_db, self.ceil_db = floor_db, ceil_db
        # lead: at 30 fps the 40/80 ms smoother alone leaves the mouth 9-17 ms late; reading
        # 20 ms ahead brings it to -5..+6 ms (docs/engineering-notes.md)
        self.lead_s = lead_ms / 1000
        self.value = 0.0
        self._t: float | None = None

    def reset(self) -> None:
        self.value, self._t = 0.0, None

    def open_level(self, clock: "PlaybackClock", t: float) -> float:
        """The unsmoothed target: the envelope at ``t`` mapped to 0..1."""
        n = max(1, int(round(self.window_s * REF_RATE)))
        ref = clock.reference(t - self.window_s / 2, n).astype(np.float64)
        db = level_db(float(np.sqrt(np.mean(ref * ref))))
        return float(min(1.0, max(0.0, (db - self.floor_db) / (self.ceil_db - self.floor_db))))

    def mouth(self, clock: "PlaybackClock | None", t: float) -> float:
        """Mouth opening 0..1 for the frame shown at wall time ``t`` (calls in display order)."""
        if clock is None:
            self.reset()
            return 0.0
        prev, self._t = self._t, t
        rid, _, audible = clock.position(t)
        if rid <= 0 or not audible:
            # nothing audible at t (a cut: the player writes silent / response-0 blocks, a pause,
            # the end): closed now, not after a release tail
            self.value = 0.0
            return 0.0
        at = max(t, min(t + self.lead_s, clock.written_until() - self.window_s / 2))
        target = self.open_level(clock, at)
        dt = math.inf if prev is None or t < prev else t - prev  # first frame, or a new clock: no history
        tau = self.attack_s if target > self.value else self.release_s
        k = 1.0 - math.exp(-dt / tau) if tau > 0 else 1.0
        self.value += (target - self.value) * k
        return self.value

