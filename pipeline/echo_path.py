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
    block-by-block ratio reads every word onset and gap as "no echo".
    """

    def __init__(self, window_blocks: int = 16, windows: int = 12, threshold_db: float = -35.0,
                 far_floor_db: float = 30.0) -> None:
        self.window_blocks = window_blocks
        self.ratios: deque[float] = deque(maxlen=windows)  # mic dB - playback dB per window
        self.threshold_db = threshold_db
        self.far_floor = 10 ** (far_floor_db / 10)  # mean-square playback below this tells nothing
        self._near = self._far = 0.0
        self._blocks = 0

    def update(self, near: np.ndarray, far: np.ndarray) -> bool:
        """Feed one block (mic, playback at the same time); True while an echo path is likely."""
        far_e = _energy(far)
        if len(far) and far_e / len(far) > self.far_floor:
            self._near += _energy(near)
            self._far += far_e
            self._blocks += 1
            if self._blocks >= self.window_blocks:
                self.ratios.append(10 * np.log10((self._near + 1.0) / self._far))
                self._near = self._far = 0.0
                self._blocks = 0
        return self.present

    @property
    def present(self) -> bool:
        # the quietest window is the best echo-only estimate: the user talking only raises it
        return bool(not self.ratios or min(self.ratios) > self.threshold_db)

    @property
    def coupling_db(self) -> float | None:
        """The estimated echo level relative to the playback (None before any evidence)."""
        return float(min(self.ratios)) if self.ratios else None
