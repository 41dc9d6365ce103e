"""Acoustic echo cancellation: WebRTC AEC3 (the audio processing module in the ``livekit`` wheel).

The engine hears itself when its voice leaks from open speakers into the mic.
``EchoCanceller.process(near, far)`` takes one captured mic block and the same
number of samples of what the speaker was playing at the same wall-clock time
(the reference, resampled to 16 kHz; zeros when nothing plays) and returns the
mic block with the echo removed. AEC3 finds the acoustic delay itself (30-80 ms
of extra delay measured, no hint needed); ``delay_hint_ms`` is passed on to
WebRTC but AEC3 mostly ignores it.

Latency: AEC3 works on exact 10 ms frames (160 samples). The mic sends 512-sample
blocks, so the remainder is carried to the next call: the framing delays the
output by ``160 - gcd(block, 160)`` samples, 128 (8 ms) for 512-sample blocks, 0
for blocks that are a multiple of 160. A block of another length than ``block``
is accepted; if it would leave the output short, the framing delay grows by
inserting that many zero samples (in all never past 159 samples, < 10 ms; make
the canceller with ``block=1`` to start at 159 and never insert any). AEC3
itself delays its output by another 128 samples (8 ms, measured). ``latency_samples`` is the sum: the
block returned now holds the input from ``latency_samples`` earlier (16 ms for
512-sample blocks).

Playback-aware VAD gating: each call fills ``stats`` (an ``EchoStats``): the
reference level, whether echo can be present now (reference active within
``echo_hold_ms``), whether AEC3 is still converging (less than ``warmup_s`` of
active reference since start; its cold start leaks echo bursts that Silero can
take for speech), and the block's echo return loss enhancement.
``vad_threshold(base)`` turns that into the Silero threshold for the block, from
the thresholds measured by ``benchmarks/echo_cancel.py``: 0.7 while the engine
plays, and no speech start at all while echo is possible during AEC3's first 4 s
of reference (its cold start leaks bursts no threshold rejects).

Gotchas (measured by benchmarks/echo_cancel.py):
- The native library aborts the whole process (a Rust panic, not an exception)
  on a frame that is not a multiple of 10 ms; this wrapper only hands it exact
  160-sample frames.
- While the reference plays, AEC3 suppresses the first ~100 ms of a user's
  speech (double-talk onset), and with no echo at all (headphones) it suppresses
  the user by ~10 dB for the first ~8 s of reference, until it learns there is
  no echo path.
- AEC3 always high-passes the mic (below ~80 Hz): ``high_pass_filter=False`` gives
  the same output sample for sample.
- When the echo's delay moves without the reference moving (an output that resyncs, a
  PulseAudio loopback adapting its latency, a Bluetooth link), AEC3 lets the echo
  through at full level for up to a second before it re-finds it, while its warm-up is
  long over. ``leak()`` tells this from the user talking: the output then still follows
  the reference (see ``LEAK_CORRELATION``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.audio.echo_path import REACH, correlation

RATE = 16000
FRAME = RATE // 100  # AEC3 takes exactly 10 ms frames
AEC3_DELAY = 128  # samples AEC3 delays its output (measured: 8 ms at 16 kHz)
BLOCK = 512  # the mic stage's block (32 ms, one Silero window)

# Silero thresholds while echo is possible (benchmarks/results/echo_cancel.json).
# Converged AEC3: the residual echo never reached 0.5 (max 0.21 over 144 simulated
# paths); 0.7 leaves margin for real speakers and costs ~20 ms of detection.
PLAYBACK_VAD_THRESHOLD = 0.7
# Cold AEC3 (its first ~2.6 s of reference) leaks echo bursts Silero scores up to
# 0.99, 3+ windows in a row even at 0.95: no threshold is safe, so no speech start.
WARMUP_VAD_THRESHOLD = math.inf
WARMUP_S = 4.0  # seconds of active reference until AEC3 counts as converged

# leak(): over the last 256 ms of output, the peak normalised correlation with the reference
# (any delay up to 300 ms) at or above which the output is the engine's voice, not the user's.
# Measured on the room model of benchmarks/echo_cancel.py (espeak-ng far end; the worst case for
# a spurious match is a user of the same synthesiser): after the echo's delay moved by 30-70 ms,
# the first loud output blocks scored 0.24-0.64 and one of the first three reached 0.5 in 6 of 6
# moves; a user at or under the echo's level, over a converged canceller, scored at most 0.46
# over the first half second of speech (a louder user scores up to 0.53, which is why the mic
# asks only about blocks no louder than the echo can be)
LEAK_WINDOW = 8 * BLOCK
LEAK_CORRELATION = 0.5

_SILENCE_DBFS = -100.0


def _dbfs(x: np.ndarray) -> float:
    """RMS level in dB relative to int16 full scale (-100 for silence); ``x`` float64."""
    if len(x) == 0:
        return _SILENCE_DBFS
    ms = float(np.dot(x, x)) / len(x)
    return 10.0 * math.log10(ms / (32768.0 * 32768.0)) if ms > 1e-3 else _SILENCE_DBFS


@dataclass
class EchoStats:
    """Figures for the block just processed (cheap: three dot products)."""

    far_dbfs: float = _SILENCE_DBFS  # reference (what the speaker played) level
    near_dbfs: float = _SILENCE_DBFS  # mic level before cancellation
    out_dbfs: float = _SILENCE_DBFS  # level after cancellation (the residual, while only echo is there)
    far_active: bool = False  # reference above the floor within ``echo_hold_ms``: echo possible now
    converging: bool = True  # AEC3 has seen less than ``warmup_s`` of active reference (cold: it leaks)
    erle_db: float = 0.0  # near_dbfs - out_dbfs while echo is possible, else 0


class EchoCanceller:
    """16 kHz mono int16 echo canceller (WebRTC AEC3), one instance per mic stream.

    Keep one instance for the whole session: AEC3 keeps its echo path estimate
    across turns, so only the first seconds of the first reply pay the convergence.
    Not thread-safe: call ``process`` from one thread.
    """

    def __init__(self, block: int = BLOCK, *, delay_hint_ms: int | None = None,
                 noise_suppression: bool = False, high_pass_filter: bool = True,
                 far_floor_dbfs: float = -55.0, echo_hold_ms: int = 400, warmup_s: float = WARMUP_S) -> None:
        if block <= 0:
            raise ValueError(f"block must be a positive number of samples, got {block}")
        if delay_hint_ms is not None and not 0 <= delay_hint_ms <= 500:
            raise ValueError(f"delay_hint_ms must be 0..500 (WebRTC's range), got {delay_hint_ms}")
        from livekit import rtc  # ~0.15 s, ~27 MB RSS and a few native threads, once per process

        self._rtc = rtc
        self._apm = rtc.AudioProcessingModule(echo_cancellation=True, noise_suppression=noise_suppression,
                                              high_pass_filter=high_pass_filter, auto_gain_control=False)
        self.delay_hint_ms = delay_hint_ms
        self.block = block
        self.framing_samples = FRAME - math.gcd(block, FRAME) if block % FRAME else 0
        self.far_floor_dbfs = far_floor_dbfs
        self.echo_hold_samples = echo_hold_ms * RATE // 1000
        self.warmup_samples = int(warmup_s * RATE)
        self._near = np.zeros(0, np.int16)  # input not yet processed (< 10 ms)
        self._far = np.zeros(0, np.int16)
        self._out = np.zeros(self.framing_samples, np.int16)  # processed, not yet returned
        self._since_far = self.echo_hold_samples  # samples since the reference was last above the floor
        self.reference_samples = 0  # samples of active reference seen so far
        self.stats = EchoStats()
        self.blocks = 0
        self._out_hist = np.zeros(0, np.int16)  # the last LEAK_WINDOW output samples
        self._far_hist = np.zeros(0, np.int16)  # ... and the reference over them, REACH samples further back

    @property
    def latency_samples(self) -> int:
        """How far the output lags the input: framing + AEC3's own 8 ms."""
        return self.framing_samples + AEC3_DELAY

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / RATE

    @staticmethod
    def _check(name: str, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise ValueError(f"{name} must be a numpy int16 array, got {type(x).__name__}")
        if x.dtype != np.int16:
            raise ValueError(f"{name} must be int16 PCM at {RATE} Hz, got dtype {x.dtype} "
                             f"(convert with pipeline.audio.convert.to_int16)")
        if x.ndim != 1:
            raise ValueError(f"{name} must be mono (1-D), got shape {x.shape}")
        return x

    def process(self, near: np.ndarray, far: np.ndarray, sample_rate: int = RATE) -> np.ndarray:
        """Cancel the echo of ``far`` in ``near``; returns a block as long as ``near``.

        ``near``: captured mic samples; ``far``: as many samples of the speaker's
        signal at the same wall-clock time (zeros when silent). Both int16 mono at
        16 kHz (``sample_rate`` is checked). The output lags by ``latency_samples``.
        """
        if sample_rate != RATE:
            raise ValueError(f"the echo canceller runs at {RATE} Hz, got {sample_rate} Hz (resample first)")
        near, far = self._check("near", near), self._check("far", far)
        if len(near) != len(far):
            raise ValueError(f"near ({len(near)} samples) and far ({len(far)} samples) must cover the same time")
        n = len(near)
        if n == 0:
            return near.copy()
        self._near = np.concatenate([self._near, near])
        self._far = np.concatenate([self._far, far])
        k = (len(self._near) // FRAME) * FRAME
        if k:
            done = []
            for i in range(0, k, FRAME):
                # render then capture, one 10 ms frame at a time (the order WebRTC expects), so the
                # output does not depend on how the caller cuts its blocks
                self._apm.process_reverse_stream(self._rtc.AudioFrame(self._far[i:i + FRAME].tobytes(), RATE, 1, FRAME))
                if self.delay_hint_ms is not None:
                    self._apm.set_stream_delay_ms(self.delay_hint_ms)
                frame = self._rtc.AudioFrame(bytearray(self._near[i:i + FRAME].tobytes()), RATE, 1, FRAME)
                self._apm.process_stream(frame)  # in place
                done.append(np.frombuffer(frame.data, np.int16))
            self._near, self._far = self._near[k:], self._far[k:]
            self._out = np.concatenate([self._out, *done])
        if len(self._out) < n:  # an odd block length: grow the framing delay (in all < 10 ms)
            short = n - len(self._out)
            self.framing_samples += short
            self._out = np.concatenate([np.zeros(short, np.int16), self._out])
        out, self._out = self._out[:n].copy(), self._out[n:]
        self._out_hist = np.concatenate([self._out_hist, out])[-LEAK_WINDOW:]
        self._far_hist = np.concatenate([self._far_hist, far])[-(LEAK_WINDOW + REACH):]
        self._update_stats(near, far, out)
        self.blocks += 1
        return out

    def _update_stats(self, near: np.ndarray, far: np.ndarray, out: np.ndarray) -> None:
        s = self.stats
        s.far_dbfs = _dbfs(far.astype(np.float64))
        s.near_dbfs = _dbfs(near.astype(np.float64))
        s.out_dbfs = _dbfs(out.astype(np.float64))
        if s.far_dbfs > self.far_floor_dbfs:
            self._since_far = 0
            self.reference_samples += len(far)
        else:
            self._since_far = min(self._since_far + len(far), self.echo_hold_samples)
        s.far_active = self._since_far < self.echo_hold_samples
        s.converging = self.reference_samples < self.warmup_samples
        s.erle_db = max(0.0, s.near_dbfs - s.out_dbfs) if s.far_active else 0.0

    def leak(self) -> float:
        """How much the recent output still follows the reference: the peak normalised
        correlation of the last ``LEAK_WINDOW`` output samples with the reference at any
        delay up to 300 ms (0: nothing of it). ``LEAK_CORRELATION`` and above: the
        canceller lets the engine's voice through (it lost the echo path). An FFT of
        16384 points: call it for a block whose output is loud, not for every block."""
        if len(self._out_hist) < LEAK_WINDOW:
            return 0.0
        return correlation(self._out_hist, self._far_hist)

    def vad_threshold(self, base: float, playing: float = PLAYBACK_VAD_THRESHOLD,
                      warmup: float = WARMUP_VAD_THRESHOLD) -> float:
        """Silero threshold for the block just processed: ``base`` with no echo possible,
        ``playing`` while echo is possible, ``warmup`` (default: infinite, i.e. no barge-in)
        while echo is possible and AEC3 is still converging (the first ``warmup_s`` of
        reference after this canceller was made)."""
        if not self.stats.far_active:
            return base
        return max(base, warmup if self.stats.converging else playing)
