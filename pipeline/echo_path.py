"""Does the engine's own voice reach the mic at all (open speakers) or not (headphones)?

Echo cancellation costs the user's voice when there is no echo to cancel:
measured with WebRTC AEC3 and no echo path, a user's phrase over the engine's
reply kept Silero >= 0.7 in 3 % of its windows instead of 83 %, so barge-in
failed. This watches the mic level against the playback level while the
engine talks: with an echo path the mic follows the playback (-6 dB at 1 m of
open speakers); without one it stays at the noise floor. The quietest 10 % of
recent blocks decide, so the user talking over the reply does not fool it.
Until there is evidence (half a second of playback), echo is assumed.
"""
from __future__ import annotations

from collections import deque

import numpy as np


def _energy(x: np.ndarray) -> float:
    return float(np.dot(x.astype(np.float64), x.astype(np.float64)))


class EchoPath:
    """Compares mic and playback energy over half-second windows of playback.

    Windows, not blocks: the echo arrives 30-80 ms after the playback, so a
    block-by-block ratio reads every word onset and gap as "no echo". A block
    counts while the playback is loud *or was within* ``tail_blocks``: the echo
    of a word's end lands after it, and leaving those blocks out read a -6 dB
    echo as -7.5 to -8 dB (and the VAD's guard, built on it, too low).
    """

    def __init__(self, window_blocks: int = 16, windows: int = 12, threshold_db: float = -35.0,
                 far_floor_db: float = 30.0, tail_blocks: int = 6) -> None:
        self.window_blocks = window_blocks
        self.windows: deque[tuple[float, float]] = deque(maxlen=windows)  # (mic, playback) energy per window
        self.threshold_db = threshold_db
        self.far_floor = 10 ** (far_floor_db / 10)  # mean-square playback below this tells nothing
        self._near = self._far = 0.0
        self._blocks = 0
        self.tail_blocks = tail_blocks
        self._since_loud = tail_blocks + 1

    def update(self, near: np.ndarray, far: np.ndarray) -> bool:
        """Feed one block (mic, playback at the same time); True while an echo path is likely."""
        far_e = _energy(far)
        loud = bool(len(far)) and far_e / len(far) > self.far_floor
        self._since_loud = 0 if loud else self._since_loud + 1
        if self._since_loud <= self.tail_blocks:
            self._near += _energy(near)
            self._far += far_e
            self._blocks += 1
            if self._blocks >= self.window_blocks:
                self.windows.append((self._near, self._far))
                self._near = self._far = 0.0
                self._blocks = 0
        return self.present

    @property
    def ratios(self) -> list[float]:
        """Mic dB - playback dB per window."""
        return [10 * np.log10((n + 1.0) / f) for n, f in self.windows]

    @property
    def present(self) -> bool:
        # the quietest window is the best echo-only estimate: the user talking only raises it
        return bool(not self.windows or min(self.ratios) > self.threshold_db)

    @property
    def coupling_db(self) -> float | None:
        """The estimated echo level relative to the playback (None before any evidence).

        The quietest pair of adjacent windows: an echo delay moves a little of each window's
        echo into the next, and one window alone read a -6 dB echo 150 ms late as -7.4 dB."""
        w = list(self.windows)
        if len(w) < 2:
            return float(min(self.ratios)) if w else None
        return float(min(10 * np.log10((a[0] + b[0] + 1.0) / (a[1] + b[1])) for a, b in zip(w, w[1:])))
