"""Does the engine's own voice reach the mic at all (open speakers) or not (headphones)?

Echo cancellation costs the user's voice when there is no echo to cancel:
measured with WebRTC AEC3 and no echo path, a user's phrase over the engine's
reply kept Silero >= 0.7 in 3 % of its windows instead of 83 %, so barge-in
failed. And with an echo path that is not known, the engine interrupts itself.

The test is the waveform: over half a second of playback, the mic's
normalised cross-correlation with the playback, at the best lag within
300 ms. Measured on the virtual devices (a -6 dB / 50 ms loopback, Kokoro's
voice, espeak-ng's for the user): echo alone 0.70-1.2 (p5-max), the user alone
over the reply (headphones) 0.04-0.26, the user over the echo 0.19-0.97.
An energy test (the mic follows the playback level) cannot tell the user
talking over the reply from an echo, so it had to trust the quietest of the
last 12 windows: a path that appeared (headphones unplugged mid-session) went
unseen for ~6 s, with no guard and no canceller, and the engine cut in on
itself ten times. Now one correlated window turns the path on and two
uncorrelated ones turn it off. Until there is evidence, echo is assumed.
"""
from __future__ import annotations

from collections import deque

import numpy as np

REACH = 4800  # samples (300 ms at 16 kHz): the longest echo delay looked for


def _energy(x: np.ndarray) -> float:
    return float(np.dot(x.astype(np.float64), x.astype(np.float64)))


def correlation(near: np.ndarray, far: np.ndarray, reach: int = REACH) -> float:
    """Peak normalised cross-correlation of ``near`` with ``far`` delayed by 0..``reach`` samples.

    ``far`` holds ``reach`` samples before ``near``'s first one, then as many as ``near``; a
    shorter one (the start of a stream) is padded with silence before."""
    return correlation_and_delay(near, far, reach)[0]


def correlation_and_delay(near: np.ndarray, far: np.ndarray, reach: int = REACH) -> tuple[float, int]:
    """``correlation`` and the delay (samples) at its peak."""
    if len(far) < len(near) + reach:
        far = np.concatenate([np.zeros(len(near) + reach - len(far), far.dtype), far])
    near, far = near.astype(np.float64), far.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(far) + len(near))))
    xc = np.fft.irfft(np.fft.rfft(near, n) * np.conj(np.fft.rfft(far, n)), n)
    lags = xc[n - reach:]  # near[t] against far[t + reach - d], d = 1..reach samples of delay
    e_far = _energy(far) * len(near) / len(far)
    denom = np.sqrt(_energy(near) * e_far)
    k = int(np.argmax(np.abs(lags)))
    return (float(abs(lags[k]) / denom) if denom > 0 else 0.0), k


class EchoPath:
    """Watches mic and playback over half-second windows of playback.

    A block counts while the playback is loud *or was within* ``tail_blocks``:
    the echo of a word's end lands after it. Each window keeps its mic and
    playback energy (for the coupling estimate) and the correlation (for the
    decision).
    """

    def __init__(self, window_blocks: int = 16, windows: int = 12, threshold_db: float = -35.0,
                 far_floor_db: float = 30.0, tail_blocks: int = 6, min_correlation: float = 0.3,
                 release_windows: int = 2) -> None:
        self.window_blocks = window_blocks
        self.windows: deque[tuple[float, float, float]] = deque(maxlen=windows)  # (mic, playback energy, corr)
        self.threshold_db = threshold_db  # a mic this far below the playback carries no echo worth cancelling
        self.far_floor = 10 ** (far_floor_db / 10)  # mean-square playback below this tells nothing
        self.min_correlation, self.release_windows = min_correlation, release_windows
        self._near = self._far = 0.0
        self._blocks = 0
        self.tail_blocks = tail_blocks
        self._since_loud = tail_blocks + 1
        self._hist_near: deque[np.ndarray] = deque()  # the last window's blocks, contiguous
        self._hist_far: deque[np.ndarray] = deque()  # ... and REACH samples more of the playback
        self.present = True
        self.releases = 0  # times the path was judged gone
        self._untrusted = False  # the window being summed has a block whose playback was in doubt
        self._trusted: deque[bool] = deque(maxlen=windows)  # per window
        self.delays: deque[int] = deque(maxlen=windows)  # samples: where the echo sat, per correlated window

    def _remember(self, near: np.ndarray, far: np.ndarray) -> None:
        self._hist_near.append(near.copy())
        self._hist_far.append(far.copy())
        while len(self._hist_near) > self.window_blocks:
            self._hist_near.popleft()
        while sum(len(b) for b in self._hist_far) - len(self._hist_far[0]) >= len(far) * self.window_blocks + REACH:
            self._hist_far.popleft()

    def update(self, near: np.ndarray, far: np.ndarray, trusted: bool = True) -> bool:
        """Feed one block (mic, playback at the same time); True while an echo path is likely.
        ``trusted=False``: ``far`` may not be what played then (the playback's stamps just jumped):
        a window with such a block can show the path, never its absence (once it was seen)."""
        self._remember(near, far)
        self._untrusted = self._untrusted or not trusted
        far_e = _energy(far)
        loud = bool(len(far)) and far_e / len(far) > self.far_floor
        self._since_loud = 0 if loud else self._since_loud + 1
        if self._since_loud <= self.tail_blocks:
            self._near += _energy(near)
            self._far += far_e
            self._blocks += 1
            if self._blocks >= self.window_blocks:
                self._close_window()
        return self.present

    def _close_window(self) -> None:
        near_w = np.concatenate(self._hist_near)
        far_w = np.concatenate(self._hist_far)[-(len(near_w) + REACH):]  # (the first window: shorter)
        quiet = 10 * np.log10((self._near + 1.0) / self._far) <= self.threshold_db
        corr, delay = (0.0, 0) if quiet else correlation_and_delay(near_w, far_w)
        self.windows.append((self._near, self._far, corr))
        self._trusted.append(not self._untrusted)
        if corr >= self.min_correlation:
            self.delays.append(delay)
        self._near = self._far = 0.0
        self._blocks = 0
        self._untrusted = False
        last = list(zip(self.windows, self._trusted))[-self.release_windows:]
        if corr >= self.min_correlation:
            self.present = True
        elif len(last) >= self.release_windows and all(
                c < self.min_correlation and (ok or not self.delays) for (_, _, c), ok in last):
            # (a path only assumed, never seen, goes on the usual evidence: headphones from the start)
            self.releases += self.present
            self.present = False

    @property
    def ratios(self) -> list[float]:
        """Mic dB - playback dB per window."""
        return [10 * np.log10((n + 1.0) / f) for n, f, _ in self.windows]

    @property
    def coupling_db(self) -> float | None:
        """The estimated echo level relative to the playback (None before any echo was seen).

        Over the windows where the mic followed the playback (correlated), the quietest pair of
        adjacent ones: the user talking only raises a window, and an echo delay moves a little of
        each window's echo into the next (one window alone read a -6 dB echo 150 ms late as -7.4 dB)."""
        w = [(n, f) for n, f, c in self.windows if c >= self.min_correlation]
        if not w:
            return None
        if len(w) < 2:
            return float(10 * np.log10((w[0][0] + 1.0) / w[0][1]))
        return float(min(10 * np.log10((a[0] + b[0] + 1.0) / (a[1] + b[1])) for a, b in zip(w, w[1:])))
