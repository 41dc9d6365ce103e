"""Sound-device time on the wall clock, which the playback clock and the mic share.

The echo canceller lines the mic up with the player's reference by wall time;
a few ms of error in either is a few ms of misaligned echo. Two traps:

- **When the callback runs is not when the audio was.** A callback stamped
  with ``time.time()`` inside Python is late by however long it waited for the
  GIL (tens of ms in a busy actor), and the echo delay then jumped between 49
  and 81 ms on a 50 ms loopback. PortAudio's own times (``currentTime``,
  ``outputBufferDacTime``, ``inputBufferAdcTime``) are taken before the callback
  runs; ``StreamTime`` maps them to wall time with the smallest
  ``time.time() - currentTime`` seen lately (a late callback only adds).
- **Counting samples drifts; raw stamps jitter.** A sound card's clock is off
  the system's by a few hundred ppm (PulseAudio's null sinks: -210 ppm,
  measured); a mic stamped by counting from its first callback drifts ~0.2 ms
  a second against the player. Stamping each callback on its own jitters by
  up to a few ms instead, and the canceller's reference, read by those stamps,
  then skips or repeats samples: +-8 samples of jitter took AEC3 from 55 dB of
  echo return loss enhancement to 20-30 dB (offline, same speech). ``StreamClock``
  takes every callback's stamp and smooths the offset between stamps and the
  sample count: it follows the drift and averages out the jitter.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np


class StreamTime:
    """PortAudio stream time -> wall time, whatever the host's time base."""

    def __init__(self, window: int = 256) -> None:
        self._offsets: deque[float] = deque(maxlen=window)  # time.time() - currentTime per callback

    def wall(self, stream_time: float, current_time: float) -> float:
        """Wall time of ``stream_time`` (a DAC or ADC time of the callback that reports ``current_time``).

        Hosts that give no times (zeros) fall back to the time the callback runs."""
        now = time.time()
        if current_time <= 0.0 or stream_time <= 0.0 or abs(stream_time - current_time) > 2.0:
            return now
        self._offsets.append(now - current_time)
        return stream_time + min(self._offsets)

    def callback_late_ms(self) -> dict:
        """How late the callbacks ran after PortAudio's time (p50/p99/max ms): the error a stamp
        taken inside the callback would have had."""
        if not self._offsets:
            return {}
        d = (np.array(self._offsets) - min(self._offsets)) * 1000
        return {"p50": round(float(np.percentile(d, 50)), 2), "p99": round(float(np.percentile(d, 99)), 2),
                "max": round(float(d.max()), 2)}


class StreamClock:
    """Maps a position in a device stream (seconds of audio since it opened) to wall time.

    Three kinds of stamp are told apart. Close ones (within ``band_s``) are
    averaged: they follow the device clock's drift. Outliers are ignored:
    PulseAudio stamps one capture callback in twelve ~2 ms early, and averaging
    them in moved the mic's time by a fraction of a ms whenever their rate
    changed, which AEC3 reads as a new echo path (its echo reduction fell from
    55 dB to 0-8 dB for a second). A step (the server moved its latency:
    +6.7 ms measured on the output at a reply's start; an xrun) is taken at
    once when ``step_s`` of stamps in a row agree on it.
    """

    def __init__(self, rate: int, tau_s: float = 0.64, step_s: float = 0.19, band_s: float = 0.001) -> None:
        # in seconds of audio, not callbacks: a device opened with smaller blocks (the mic's
        # 10 ms) would otherwise follow the jitter 3x faster and take a step on 60 ms of stamps
        self.rate = rate
        self.tau_s = tau_s  # time constant of the smoothing
        self.step_s = step_s  # how long stamps must agree on a step
        self.band_s = band_s
        self.samples = 0  # device samples received
        self.offset: float | None = None  # wall time of stream position 0
        self._off: list[float] = []  # the run of estimates outside the band, all on one side
        self._off_samples = 0
        self.steps = 0
        self.outliers = 0

    def update(self, t_first: float, frames: int) -> None:
        """A callback brought ``frames`` samples, the first of them at the ADC/DAC at wall time ``t_first``."""
        est = t_first - self.samples / self.rate
        self.samples += frames
        if self.offset is None or abs(est - self.offset) > 0.5:  # the first, or a stall
            self.offset, self._off, self._off_samples = est, [], 0
            return
        d = est - self.offset
        if abs(d) <= self.band_s:
            self._off, self._off_samples = [], 0
            self.offset += min(1.0, frames / self.rate / self.tau_s) * d
            return
        if self._off and (self._off[-1] - self.offset) * d < 0:
            self._off, self._off_samples = [], 0  # off to the other side: jitter, not a step
        self._off.append(est)
        self._off_samples += frames
        self.outliers += 1
        if self._off_samples >= self.step_s * self.rate and len(self._off) >= 3:
            self.offset = float(sorted(self._off)[len(self._off) // 2])
            self._off, self._off_samples = [], 0
            self.steps += 1

    def time_of(self, position_s: float) -> float:
        """Wall time at which the sample ``position_s`` into the stream is at the ADC/DAC."""
        if self.offset is None:
            raise RuntimeError("StreamClock.time_of before any update")
        return self.offset + position_s
