"""A simulated room around a mic source: what open speakers and a second speaker add.

``SimulatedRoom`` wraps a source (a WAV file) and, block by block, mixes in:
* the engine's own output, read from the shared playback clock for the same wall-clock
  span, delayed and attenuated (``echo_gain_db`` / ``echo_delay_ms``), as open speakers
  leak back into a mic;
* a barge-in: a second file, mixed in ``barge_in_at`` seconds after the first reply
  sample is heard. Its start and speech onset are reported as ``SourceMark`` events
  (``barge_in_scheduled``, ``barge_in_started``), on the same clock as everything else.

It runs inside the mic actor (Ray imports it from the repo root), so it holds nothing
that cannot be pickled until it runs.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from pipeline.audio.convert import load_audio
from pipeline.audio.sources import RATE, AudioSource, MicContext
from pipeline.flow.events import Event, SourceMark


class SimulatedRoom(AudioSource):
    kind = "room"

    def __init__(self, inner: AudioSource, echo: bool = False, echo_gain_db: float = -6.0,
                 echo_delay_ms: float = 50.0, barge_in: str | None = None, barge_in_at: float = 1.5) -> None:
        self.inner = inner
        self.realtime = inner.realtime
        self.ref_tolerance = inner.ref_tolerance
        self.echo, self.echo_gain_db, self.echo_delay_ms = echo, echo_gain_db, echo_delay_ms
        self.barge: dict[str, Any] | None = None
        if barge_in:
            b = load_audio(barge_in, RATE)
            loud = np.flatnonzero(np.abs(b.astype(np.int32)) > 500)
            self.barge = {"audio": b.astype(np.int32), "at": barge_in_at, "t": None, "started": False,
                          "onset": (loud[0] / RATE) if len(loud) else 0.0}

    def echo_path_key(self) -> tuple:
        # talks through the same simulated room keep the canceller converged, as a device would
        if self.echo:
            return ("simulated", self.echo_gain_db, self.echo_delay_ms)
        return self.inner.echo_path_key()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def start_time(self) -> float:
        return self.inner.start_time() if hasattr(self.inner, "start_time") else time.time()

    def run(self, ctx: MicContext, stop: threading.Event) -> None:
        self.inner.run(_RoomContext(self, ctx), stop)

    # ------------------------------------------------------------ mixing
    def mix(self, ctx: MicContext, pcm: np.ndarray, t_cap: float) -> np.ndarray:
        clock = ctx.playback()
        if clock is None:  # nothing plays yet: the room adds nothing
            return pcm
        if self.echo:  # the output leaks back into the mic, as from open speakers
            leak = clock.reference(t_cap - self.echo_delay_ms / 1000, len(pcm)).astype(np.float32)
            pcm = np.clip(pcm + leak * 10 ** (self.echo_gain_db / 20), -32768, 32767).astype(np.int16)
        if self.barge is not None:
            pcm = self._mix_barge_in(ctx, pcm, t_cap, clock)
        return pcm

    def _mix_barge_in(self, ctx: MicContext, pcm: np.ndarray, t_cap: float, clock) -> np.ndarray:
        b = self.barge
        if b["t"] is None:  # wait for the first reply sample to be heard
            _rid, _, audible = clock.position(t_cap + len(pcm) / RATE)
            if not audible:
                return pcm
            b["t"] = t_cap + len(pcm) / RATE + b["at"]
            ctx.event(SourceMark(name="barge_in_scheduled", t=b["t"], data={"first_heard": t_cap + len(pcm) / RATE}))
        start = int(round((t_cap - b["t"]) * RATE))  # index into the barge-in audio of this block's first sample
        lo, hi = max(0, start), min(len(b["audio"]), start + len(pcm))
        if hi <= lo:
            return pcm
        if not b["started"]:
            b["started"] = True
            ctx.event(SourceMark(name="barge_in_started", t=b["t"], data={"speech_onset": b["t"] + b["onset"]}))
        mixed = pcm.astype(np.int32)
        mixed[lo - start:hi - start] += b["audio"][lo:hi]
        return np.clip(mixed, -32768, 32767).astype(np.int16)


class _RoomContext:
    """The mic's context as the wrapped source sees it: each block passes through the room."""

    def __init__(self, room: SimulatedRoom, ctx: MicContext) -> None:
        self.room, self.ctx = room, ctx
        self.block_size = ctx.block_size

    def block(self, pcm: np.ndarray, capture_time: float) -> None:
        self.ctx.block(self.room.mix(self.ctx, pcm, capture_time), capture_time)

    def event(self, ev: Event) -> None:
        self.ctx.event(ev)

    def error(self, message: str) -> None:
        self.ctx.error(message)

    def new_echo_path(self) -> None:
        self.ctx.new_echo_path()

    def playback(self) -> Any:
        return self.ctx.playback()


def room_talk(engine, question: str, output: str, barge_in: str | None = None, barge_in_at: float = 1.5,
              echo: bool = False, **kw: Any):
    """``engine.talk`` with ``question`` heard through a simulated room (see SimulatedRoom)."""
    from pipeline.audio.sources import FileSource

    source = FileSource(str(question), kw.pop("realtime", True), engine.cfg.audio.trailing_silence_ms)
    room = SimulatedRoom(source, echo=echo, barge_in=str(barge_in) if barge_in else None, barge_in_at=barge_in_at)
    return engine.talk(room, str(output), waits_for_barge_in=bool(barge_in), **kw)
