"""The playback clock: what the user hears, when, shared across processes.

The player's sink writes every block it hands to the output here, stamped
with the wall time its first sample is *audible* (device output latency
included) and the response/sample it belongs to. Readers on the same node
(the mic for echo cancellation and playback-aware VAD gating, the avatar for
lip-sync) attach by name and ask "what is audible at time t" or "give me the
signal heard between t0 and t1", with no Ray round trip.

Layout: one shared-memory segment holding a header, a ring of block records
and a ring of the heard signal at 16 kHz (the mic's rate). One writer; a
reader copies what it needs and re-checks the write counter, so a record
overwritten while it was read is never returned.
"""
from __future__ import annotations

from collections import deque

import time
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from pipeline.audio.convert import rms

REF_RATE = 16000
_BLOCK = np.dtype([("t", "f8"), ("start", "i8"), ("n", "i8"), ("rid", "i8"), ("pos", "i8"), ("rms", "f4")])
# int64 slots: [blocks written, samples written (16 kHz), output rate, n_blocks, n_samples, output open]
_HEADER = 8


def segment_name(run_id: str, session_id: str = "default") -> str:
    return f"kokoro-{run_id}-{session_id}-playback"[:200]


class PlaybackClock:
    """Writer side (``create``) or reader side (``attach``) of one clock."""

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool) -> None:
        self.shm, self.owner = shm, owner
        self.header = np.ndarray((_HEADER,), np.int64, shm.buf, 0)
        nb, ns = int(self.header[3]), int(self.header[4])
        off = _HEADER * 8
        self.blocks = np.ndarray((nb,), _BLOCK, shm.buf, off)
        self.samples = np.ndarray((ns,), np.int16, shm.buf, off + nb * _BLOCK.itemsize)

    @classmethod
    def create(cls, name: str, output_rate: int, seconds: float = 8.0, n_blocks: int = 2048) -> "PlaybackClock":
        ns = int(seconds * REF_RATE)
        size = _HEADER * 8 + n_blocks * _BLOCK.itemsize + ns * 2
        try:  # a segment left by a crashed run of the same name
            old = shared_memory.SharedMemory(name=name)
            old.close()
            old.unlink()
        except FileNotFoundError:
            pass
        shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        header = np.ndarray((_HEADER,), np.int64, shm.buf, 0)
        header[:] = 0
        header[2], header[3], header[4] = output_rate, n_blocks, ns
        return cls(shm, owner=True)

    @classmethod
    def attach(cls, name: str) -> "PlaybackClock | None":
        try:
            shm = shared_memory.SharedMemory(name=name)
        except FileNotFoundError:
            return None
        # Python 3.11 registers attached segments too and would unlink the
        # writer's segment when this process exits: only the owner unlinks.
        try:
            resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        except Exception:
            pass
        if shm.size < _HEADER * 8 or not int(np.ndarray((_HEADER,), np.int64, shm.buf, 0)[3]):
            # made but not yet laid out (the writer sets the header just after creating it): a reader
            # attached now would keep empty rings for good; the caller tries again later
            shm.close()
            return None
        return cls(shm, owner=False)

    def close(self) -> None:
        self.header = self.blocks = self.samples = None  # type: ignore[assignment]
        try:
            self.shm.close()
        except BufferError:  # a numpy view still alive somewhere: leave the mapping to the GC
            pass
        if self.owner:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass

    @property
    def output_rate(self) -> int:
        return int(self.header[2])

    # ------------------------------------------------------------ writer
    def write(self, ref16: np.ndarray, t_heard: float, response_id: int, pos: int) -> None:
        """Record one output block: its 16 kHz signal, when it is heard, whose audio it is.

        ``pos`` is the index (at the output rate) of the block's first sample within
        ``response_id``; ``response_id`` 0 means silence.
        """
        k, w = int(self.header[0]), int(self.header[1])
        ns = len(self.samples)
        n = len(ref16)
        idx = (w + np.arange(n)) % ns
        self.samples[idx] = ref16
        rec = self.blocks[k % len(self.blocks)]
        rec["t"], rec["start"], rec["n"], rec["rid"], rec["pos"], rec["rms"] = t_heard, w, n, response_id, pos, rms(ref16)
        self.header[1] = w + n
        self.header[0] = k + 1  # publish last

    # ------------------------------------------------------------ readers
    def _recent(self, horizon: int) -> np.ndarray:
        """Copies of the last ``horizon`` block records, oldest first (consistent snapshot)."""
        k = int(self.header[0])
        nb = len(self.blocks)
        m = min(k, horizon, nb - 1)
        if m <= 0:
            return self.blocks[:0].copy()
        recs = self.blocks[(np.arange(k - m, k)) % nb].copy()
        if int(self.header[0]) - k > nb - 1 - m:  # overwritten while copying
            return self.blocks[:0].copy()
        return recs

    def position(self, t: float | None = None) -> tuple[int, int, bool]:
        """(response_id, sample within it at the output rate, audible) at wall time ``t``.

        ``audible`` is False when the block playing at ``t`` is silent (a pause
        inside the reply, or past the last block written); (0, 0, False) when no
        response is playing.
        """
        t = time.time() if t is None else t
        recs = self._recent(256)
        rate = self.output_rate
        for rec in recs[::-1]:
            if rec["t"] <= t:
                if rec["rid"] <= 0:
                    return 0, 0, False
                dur = rec["n"] / REF_RATE
                off = min(t - rec["t"], dur)
                return int(rec["rid"]), int(rec["pos"] + round(off * rate)), bool(t < rec["t"] + dur and rec["rms"] > 0)
        return 0, 0, False

    def index_at(self, t: float) -> int | None:
        """Index (16 kHz, since the clock was made) of the sample heard at wall time ``t``;
        None before anything was written."""
        recs = self._recent(512)
        if not len(recs):
            return None
        # the last block heard at or before t anchors the mapping time -> sample index
        before = recs[recs["t"] <= t]
        anchor = before[-1] if len(before) else recs[0]
        return int(anchor["start"] + round((t - anchor["t"]) * REF_RATE))

    def read(self, first: int, n: int) -> np.ndarray:
        """``n`` samples of the heard signal from index ``first`` (zeros where none)."""
        out = np.zeros(n, np.int16)
        w = self.samples_written
        ns = len(self.samples)
        lo, hi = max(first, w - ns + REF_RATE // 10, 0), min(first + n, w)  # keep clear of the writer
        if hi > lo:
            out[lo - first:hi - first] = self.samples[np.arange(lo, hi) % ns]
        return out

    def reference(self, t0: float, n: int) -> np.ndarray:
        """The 16 kHz signal heard from wall time ``t0`` for ``n`` samples (zeros where none)."""
        first = self.index_at(t0)
        return np.zeros(n, np.int16) if first is None else self.read(first, n)

    @property
    def output_open(self) -> bool:
        """Whether an output writes here now (set by the player from its first block to its close):
        a clock with no new blocks while it is open is a stalled output, not a closed one."""
        return bool(self.header[5])

    @output_open.setter
    def output_open(self, value: bool) -> None:
        self.header[5] = int(value)

    @property
    def samples_written(self) -> int:
        """16 kHz samples written since the clock was made (the index after the newest)."""
        return int(self.header[1])

    def written_until(self) -> float:
        """Wall time at which the last block written ends (-inf if none): readers that look a
        little ahead (lip-sync) must not look past it."""
        last = self._recent(1)
        if not len(last):
            return float("-inf")
        return float(last["t"][-1] + last["n"][-1] / REF_RATE)

    def level(self, t0: float, t1: float, tail_s: float = 0.0, decay_db_s: float = 0.0,
              end_index: int | None = None) -> float:
        """Largest 20 ms RMS heard between ``t0`` and ``t1`` (int16 units); with ``tail_s``, the
        ``tail_s`` before ``t0`` count too, less ``decay_db_s`` per second of their age at ``t0``
        (a room's reverberation: what was heard then still rings).

        Read through ``reference``, as the echo canceller's reference is, not from the
        blocks' stamps: a block written late leaves a gap in the stamps, and the two
        mappings then disagree by the stall (which let a cold run's echo past the guard).
        ``end_index``: the sample heard at ``t1``, where the caller knows it better (the
        canceller's cursor): the span is read back from it. Read forward from ``t0`` - ``tail_s``,
        a stall since then shifted the whole span by the stall (0.5 s under load), and the
        guard read the words heard now as a pause.
        """
        start = t0 - tail_s
        n = max(0, int(round((t1 - start) * REF_RATE)))
        if end_index is not None:
            x = self.read(end_index - n, n).astype(np.float32)
        else:
            x = self.reference(start, n).astype(np.float32)
        if not len(x):
            return 0.0
        chunk = REF_RATE // 50
        starts = np.arange(0, len(x), chunk)
        mean_sq = np.add.reduceat(x * x, starts) / np.diff(np.append(starts, len(x)))
        if tail_s > 0:  # a chunk ending before t0 decays from its end on
            age = np.maximum(0.0, tail_s - (starts + chunk) / REF_RATE)
            mean_sq = mean_sq * 10 ** (-decay_db_s * age / 10)
        return float(np.sqrt(mean_sq.max()))


class ReferenceCursor:
    """The echo canceller's reference as one unbroken stream.

    Reading each mic block's reference afresh by its wall time skips or repeats
    a few samples whenever the mic's or the player's stamps move by a fraction
    of a millisecond, and AEC3 reads each skip as a new echo path: +-8 samples
    of such jitter cut its echo reduction from ~55 dB to 20-30 dB (offline), and
    following PulseAudio's stamps as they wandered by 0.5-0.7 ms (one sample a
    block) cut it to 0-8 dB for a second or two on the virtual devices, while the
    true echo delay had not moved at all. So the cursor continues where the last
    block ended and moves only when the clocks disagree with it by more than
    ``tolerance`` samples (a stall, an xrun, a reopened device, two devices'
    clocks drifting apart): one jump, which AEC3 re-finds.
    """

    def __init__(self, clock: PlaybackClock, tolerance: int = REF_RATE * 2 // 1000) -> None:
        self.clock, self.tolerance = clock, tolerance
        self.next: int | None = None
        self.jumps = 0
        self.jump_sizes: deque[int] = deque(maxlen=32)  # samples the last jumps moved the cursor (diagnosis)

    def read(self, t0: float, n: int) -> np.ndarray:
        want = self.clock.index_at(t0)
        if want is None:
            self.next = None
            return np.zeros(n, np.int16)
        if self.next is None or abs(want - self.next) > self.tolerance:
            if self.next is not None:
                self.jumps += 1
                self.jump_sizes.append(want - self.next)
            self.next = want
        out = self.clock.read(self.next, n)
        self.next += n
        return out
