"""The probe, parent side: ``Clip`` (what to play and when), ``Probe`` (the running
subprocess and its events) and ``ProbeResult`` (both recorded sides on one clock)."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tests.rigs.virtual_audio.pulse import BUS_MONITOR, MOUTH, SPEAKER, VirtualAudioError, client_env
from tests.rigs.virtual_audio.signals import find_clip, first_loud, first_silence, to_float

if TYPE_CHECKING:
    from tests.rigs.virtual_audio.devices import VirtualAudio


@dataclass
class Clip:
    """A clip the probe plays. Start rule (one of):

    at=S          reaches the mic S seconds after the probe's first sample
    on="speaker_on",  delay=D   D s after the speaker becomes non-silent (or at arming if it
                                already is)
    on="speaker_off", delay=D   D s after the speaker goes silent (an on->off change)
    on="manual"                 when ``Probe.play(i)`` is called
    after=j       arm the ``on`` rule only once clip j has been played to its end.
    Targets are recording times. The probe subtracts its output->recording offset: PortAudio's
    estimate until a clip's arrival has been measured (0.04-0.2 ms off here), then the measured
    one; clips landed within 0.2 ms of their targets. ``ProbeResult.clip_onsets`` has where
    each clip really landed, found in the recording."""

    audio: np.ndarray | str | Path
    rate: int | None = None
    at: float | None = None
    on: str | None = None
    delay: float = 0.0
    after: int | None = None


@dataclass
class ProbeResult:
    """Everything on the probe's recording clock (sample indexes at ``rate``)."""

    rate: int
    speaker: np.ndarray  # int16: what kokoro_spk played
    mic: np.ndarray  # int16: what user_mouth carried (the engine's mic: clips + echo)
    clips: list[np.ndarray]  # float32 clips as played (at ``rate``)
    clip_out_starts: list[int | None]  # output-stream sample where each clip was written
    clip_onsets: list[int | None]  # recording sample where each clip's sample 0 reached its sink
    #                                (the mic channel; the speaker channel for play_into=kokoro_spk)
    events: list[dict[str, Any]]
    reported_output_latency_ms: float  # median outputBufferDacTime - currentTime
    reported_input_latency_ms: float  # median currentTime - inputBufferAdcTime
    stream_latency_ms: tuple[float, float]  # PortAudio's (input, output) stream.latency
    status: list[tuple[int, str]] = field(default_factory=list)  # (sample, flags) of xruns
    placed_by_offset: list[int] = field(default_factory=list)  # clips not found, placed by another's offset

    def clip_rtt_ms(self, i: int) -> float | None:
        """Output write -> arrival in the recording for clip i: the duplex stream's offset
        (60.0 or 65.0 ms here, constant within a stream on the norewinds bus)."""
        if self.clip_onsets[i] is None or self.clip_out_starts[i] is None:
            return None
        return (self.clip_onsets[i] - self.clip_out_starts[i]) / self.rate * 1000

    def clip_onsets_in(self, i: int, signal: np.ndarray, window_s: float = 0.5) -> int | None:
        """Where clip i's first sample shows in ``signal`` (searched after its write)."""
        w = self.clip_out_starts[i]
        return None if w is None else find_clip(signal, self.clips[i], w, self.rate, window_s)

    def speech_onset(self, i: int, thresh_db: float = -40.0) -> int | None:
        """Recording sample where clip i's first sound (not its leading silence) hit the mic."""
        if self.clip_onsets[i] is None:
            return None
        k = first_loud(self.clips[i], self.rate, 0, thresh_db, relative=True)
        return None if k is None else self.clip_onsets[i] + k

    def speaker_on_after(self, sample: int, thresh_db: float = -45.0) -> int | None:
        return first_loud(self.speaker, self.rate, sample, thresh_db)

    def speaker_silent_after(self, sample: int, thresh_db: float = -45.0, hold_ms: float = 200.0) -> int | None:
        return first_silence(self.speaker, self.rate, sample, thresh_db, hold_ms)

    def seconds(self, sample: int) -> float:
        return sample / self.rate


def _clip_array(c: Clip, rate: int) -> np.ndarray:
    if isinstance(c.audio, (str, Path)):
        from pipeline.audio.convert import read_wav

        audio, src = read_wav(c.audio)
    else:
        audio, src = np.asarray(c.audio), c.rate or rate
    x = to_float(audio)
    if src != rate:
        from pipeline.audio.convert import Resampler, to_int16

        rs = Resampler(src, rate)
        pad = np.zeros(int(src * 0.05), np.int16)  # flush the resampler's tail
        x = to_float(np.concatenate([rs(to_int16(x)), rs(pad)]))[: int(round(len(x) * rate / src))]
    return x


class Probe:
    """A running probe subprocess: plays clips into ``play_into`` (user_mouth) and records
    kokoro_bus.monitor; ``events()``/``wait_event`` stream what it detects while it runs."""

    def __init__(self, va: VirtualAudio, clips: list[Clip], duration: float, play_into: str = MOUTH,
                 block_ms: int = 20, threshold_db: float = -45.0, silence_hold_ms: float = 150.0,
                 end_after_clips: float | None = None) -> None:
        self.va, self.duration, self.play_into = va, duration, play_into
        self.rate = va.rate
        self.block = self.rate * block_ms // 1000
        self.threshold_db, self.silence_hold_ms = threshold_db, silence_hold_ms
        self.end_after_clips = end_after_clips
        self.clip_specs = clips
        self.clips = [_clip_array(c, self.rate) for c in clips]
        self._events: queue.Queue = queue.Queue()
        self.all_events: list[dict[str, Any]] = []
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> "Probe":
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, timeout: float = 15.0) -> "Probe":
        if self._proc is not None:
            raise VirtualAudioError("probe already started")
        self._tmp = tempfile.TemporaryDirectory(prefix="kokoro-probe-")
        d = Path(self._tmp.name)
        specs = []
        for i, (c, x) in enumerate(zip(self.clip_specs, self.clips)):
            np.save(d / f"clip{i}.npy", x)
            if c.on not in (None, "speaker_on", "speaker_off", "manual"):
                raise ValueError(f"clip {i}: unknown rule on={c.on!r}")
            if c.at is None and c.on is None:
                raise ValueError(f"clip {i}: give at= or on=")
            specs.append({"path": str(d / f"clip{i}.npy"), "at": c.at, "on": c.on, "delay": c.delay,
                          "after": c.after})
        plan = {"rate": self.rate, "block": self.block, "duration": self.duration, "clips": specs,
                "threshold_db": self.threshold_db, "silence_hold_ms": self.silence_hold_ms,
                "end_after_clips": self.end_after_clips, "out": str(d / "result.npz"),
                "channel": {SPEAKER: 0, MOUTH: 1}.get(self.play_into)}
        (d / "plan.json").write_text(json.dumps(plan))
        self._stderr = open(d / "stderr.txt", "w+")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.rigs.virtual_audio", "probe", str(d / "plan.json")],
            env=client_env(sink=self.play_into, source=BUS_MONITOR, tag="probe"), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        ev = self.wait_event("ready", timeout=timeout)
        if ev is None:
            self.close()
            raise VirtualAudioError(f"probe did not start: {self._stderr_tail()}")
        return self

    def _read(self) -> None:
        assert self._proc and self._proc.stdout
        for line in self._proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            self.all_events.append(ev)
            self._events.put(ev)
        self._events.put({"event": "exit"})

    def _stderr_tail(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        lines = [ln for ln in self._stderr.read().splitlines() if not ln.startswith(("Expression", "ALSA lib"))]
        return "\n".join(lines[-15:]) or "no message"

    def events(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        """Events since the last call: ready, clip (written at out_sample), clip_end,
        speaker_on / speaker_off (recording sample), status (xruns), done."""
        out = []
        try:
            out.append(self._events.get(timeout=timeout) if timeout else self._events.get_nowait())
            while True:
                out.append(self._events.get_nowait())
        except queue.Empty:
            pass
        return out

    def wait_event(self, name: str, timeout: float = 10.0, **match) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                ev = self._events.get(timeout=left)
            except queue.Empty:
                return None
            if ev.get("event") == name and all(ev.get(k) == v for k, v in match.items()):
                return ev
            if ev.get("event") == "exit":
                self._events.put(ev)
                return None
        return None

    def play(self, i: int) -> None:
        """Start clip i now (its rule must be on="manual")."""
        self._send(f"play {i}")

    def stop(self) -> None:
        self._send("stop")

    def _send(self, cmd: str) -> None:
        if self._proc and self._proc.poll() is None and self._proc.stdin:
            try:
                self._proc.stdin.write(cmd + "\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass

    def wait(self, timeout: float | None = None) -> ProbeResult:
        assert self._proc is not None and self._tmp is not None
        try:
            rc = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            rc = self._proc.wait(timeout=10)
        out = Path(self._tmp.name) / "result.npz"
        if rc != 0 or not out.exists():
            raise VirtualAudioError(f"probe failed ({rc}): {self._stderr_tail()}")
        z = np.load(out, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        rec = z["rec"]
        starts = [None if s < 0 else int(s) for s in z["clip_out_starts"]]
        res = ProbeResult(rate=self.rate, speaker=rec[:, 0].copy(), mic=rec[:, 1].copy(), clips=self.clips,
                          clip_out_starts=starts, clip_onsets=[None] * len(starts), events=list(self.all_events),
                          reported_output_latency_ms=meta["out_latency_ms"],
                          reported_input_latency_ms=meta["in_latency_ms"],
                          stream_latency_ms=tuple(meta["stream_latency_ms"]),
                          status=[tuple(s) for s in meta["status"]])
        played = res.speaker if self.play_into == SPEAKER else res.mic
        res.clip_onsets = [res.clip_onsets_in(i, played) for i in range(len(starts))]
        # a clip played over the engine's loud echo can fail find_clip's correlation test (the
        # user cutting in on an open-speaker reply: a correct barge-in whose clip was "never
        # played"). The output -> recording offset is constant within a stream (clip_rtt_ms):
        # such a clip is placed by another clip's offset, and said to be
        offsets = [o - w for o, w in zip(res.clip_onsets, starts) if o is not None and w is not None]
        if offsets:
            for i, (o, w) in enumerate(zip(res.clip_onsets, starts)):
                if o is None and w is not None:
                    res.clip_onsets[i] = w + offsets[0]
                    res.placed_by_offset.append(i)
        return res

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self.stop()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None:
            for f in (self._proc.stdin, self._proc.stdout):
                if f:
                    f.close()
            self._stderr.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
