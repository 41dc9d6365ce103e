"""How much text the TTS may take next so that a reply's audio never runs dry.

Kokoro on a CPU costs a fixed part per call plus a part per second of audio: on the 2-core
machine ~0.2-0.3 s + 0.5 s per second of audio (int8, 2 threads; a float copy of the model was
slower: docs/engineering-notes.md). A reply's first chunk is short, for first audio. While it
plays, the next chunk is synthesized; it must be ready before the audio queued ahead of it runs
out, so it may be up to (ahead - fixed) / rate seconds long. Each chunk then buys a longer
next one: the chunks grow as the reply goes on, with no silence between them. The rate and the
fixed part are measured on the running model (a slower machine, or a busy one, gets smaller
chunks), not assumed.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

SAFETY_S = 0.25  # the hops from the TTS to the device, and the estimate's own error (+-0.3 s a call)
URGENT_S = 0.5  # less slack than this: cut at a clause or phrase now rather than wait for a sentence
FLOOR_S = 0.8  # a chunk shorter than this costs more in the fixed part than it buys
CEILING_S = 6.0  # the longest a floor gets (a machine too slow to keep up: long chunks, fewer calls)
FIRST_MAX_CHARS = 24  # the first chunk stays short whatever the speed: first audio is what users wait on
SEAM_ALLOWANCE_S = 0.35  # the silence a listener takes for a pause after the first clause


@dataclass
class SynthesisCost:
    """synth_s ~ fixed_s + rate * audio_s, fitted to the last calls; and audio seconds a character."""

    fixed_s: float = 0.3
    rate: float = 0.6
    s_per_char: float = 0.065
    _calls: deque = field(default_factory=lambda: deque(maxlen=24))

    def observe(self, synth_s: float, audio_s: float, chars: int) -> None:
        if audio_s <= 0 or chars <= 0:
            return
        self._calls.append((audio_s, synth_s))
        self.s_per_char += 0.2 * (audio_s / chars - self.s_per_char)
        x = np.array(self._calls)
        fixed, rate = self.fixed_s, max(0.05, (synth_s - self.fixed_s) / audio_s)
        if len(x) >= 4 and np.ptp(x[:, 0]) > 0.5:  # lengths spread enough for a line
            fit_rate, fit_fixed = np.polyfit(x[:, 0], x[:, 1], 1)
            if 0.1 <= fit_rate <= 2.0:  # one odd call (a lane beside it, a busy CPU) can tilt it
                fixed, rate = float(min(max(fit_fixed, 0.0), 0.8)), float(fit_rate)
        # smoothed: a chunk's budget should not swing with each call
        self.fixed_s += 0.3 * (fixed - self.fixed_s)
        self.rate += 0.3 * (rate - self.rate)

    def synth_s(self, chars: int) -> float:
        return self.fixed_s + self.rate * chars * self.s_per_char

    def floor_s(self) -> float:
        """The shortest later chunk that still lets the next one be longer (d > fixed / (1 - rate)),
        with a margin; at a rate near 1 no chunking keeps up, so chunks are as long as allowed."""
        if self.rate >= 0.9:
            return CEILING_S
        return float(min(max(FLOOR_S, 1.3 * self.fixed_s / (1.0 - self.rate)), CEILING_S))

    def first_min_chars(self) -> int:
        """The shortest first chunk whose audio covers the making of the next (at the floor), but
        for a pause a listener takes as natural: shorter, and the voice stops after it."""
        need_s = self.fixed_s + self.rate * self.floor_s() + SAFETY_S - SEAM_ALLOWANCE_S
        return max(0, min(int(need_s / self.s_per_char), FIRST_MAX_CHARS))

    def budget_chars(self, ahead_s: float) -> int:
        """How many characters the next chunk may have with ``ahead_s`` of audio still to play."""
        budget_s = max((ahead_s - self.fixed_s - SAFETY_S) / self.rate, self.floor_s())
        return int(budget_s / self.s_per_char)


@dataclass
class ReplyPace:
    """A reply's audio handed to the output, and when its first chunk was: what is still ahead."""

    audio_s: float = 0.0
    t_first: float | None = None

    def sent(self, audio_s: float, now: float | None = None) -> None:
        if self.t_first is None:
            self.t_first = time.monotonic() if now is None else now
        self.audio_s += audio_s

    def ahead_s(self, now: float | None = None) -> float:
        """Audio queued and not yet played, if playback began when the first chunk left (a pause
        or a late start only makes it larger than this: the estimate errs towards smaller chunks)."""
        if self.t_first is None:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, self.audio_s - (now - self.t_first))

    def urgent(self, cost: SynthesisCost, pending_chars: int, now: float | None = None) -> bool:
        return self.ahead_s(now) - cost.synth_s(pending_chars) < URGENT_S
