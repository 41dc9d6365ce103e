"""The virtual devices (``VirtualAudio``): set up and torn down, an echo path, hot-plug, and
plain play/record with pacat/parec; the layout is in the package docstring."""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
import time

import numpy as np

from tests.rigs.virtual_audio.probe import Clip, Probe, ProbeResult
from tests.rigs.virtual_audio.pulse import (BUS, BUS_MONITOR, MIC_SOURCE, MOUTH, SPEAKER, SPEAKER_MONITOR, TAG,
                                            TOOLS, VOID, VirtualAudioError, VirtualAudioUnavailable,
                                            acquire_lock, db_to_pa_volume, kill_client_streams, loaded_modules,
                                            owns_server, pactl_json, release_lock, run_tool, server_running,
                                            start_server, stop_server)
from tests.rigs.virtual_audio.signals import find_clip

_SETTLE_S = 2.1


class VirtualAudio:
    """The virtual devices as a context manager; see the package docstring for the layout."""

    def __init__(self, rate: int = 48000, keepalive_ms: int = 20, set_defaults: bool = True,
                 wait_s: float = 600.0) -> None:
        self.rate = rate
        self.wait_s = wait_s  # how long start() waits for another process's devices to go
        self.keepalive_ms = keepalive_ms
        self.set_defaults = set_defaults
        self.started = False
        self.started_server = False
        self._modules: dict[str, int] = {}
        self._keepalive: dict[str, subprocess.Popen] = {}
        self._saved_defaults: tuple[str | None, str | None] = (None, None)
        self._echo: tuple[float, float] | None = None  # requested (delay_ms, gain_db)
        self._unplugged: dict[str, tuple[bool, bool]] = {}  # name -> (was default sink, was default source)
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> "VirtualAudio":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "VirtualAudio":
        if self.started:
            return self
        missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
        if missing:
            raise VirtualAudioUnavailable(
                f"PulseAudio tools missing: apt-get install {' '.join(missing)} libasound2-plugins")
        self._lock_fd = acquire_lock(self.wait_s)
        try:
            if not server_running():
                start_server()
                self.started_server = True
            else:
                self.started_server = owns_server()  # a server a crashed run of ours left
        except Exception:
            self._unlock()
            raise
        try:
            self._remove_leftovers()
            ds, dsrc = self.default_sink(), self.default_source()
            ours = (SPEAKER, MOUTH, BUS, VOID, SPEAKER_MONITOR, MIC_SOURCE, BUS_MONITOR, VOID + ".monitor")
            self._saved_defaults = (None if ds in ours else ds, None if dsrc in ours else dsrc)
            t0 = time.monotonic()
            self._load_sink(BUS)
            self._load_sink(VOID)
            self._load_sink(SPEAKER)
            self._load_sink(MOUTH)
            # A new null sink sleeps on its idle 2 s timer before the keep-alive's latency
            # takes effect: a recording opened before that gets its first audio after ~1-2 s.
            time.sleep(max(0.0, _SETTLE_S - (time.monotonic() - t0)))
            if self.set_defaults:
                run_tool(["pactl", "set-default-sink", SPEAKER])
                run_tool(["pactl", "set-default-source", MIC_SOURCE])
        except Exception:
            self.stop()
            raise
        self.started = True
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Unload what we loaded, end our pacat processes, stop the server if we started it."""
        atexit.unregister(self.stop)
        if self._lock_fd is None:  # never started (or stopped): the devices are not ours
            return
        if server_running():
            if self._echo is not None or "echo" in self._modules:
                self.remove_echo()
            for name in (SPEAKER, MOUTH, VOID, BUS):
                self._stop_keepalive(name)
                idx = self._modules.pop(name, None)
                if idx is not None:
                    run_tool(["pactl", "unload-module", str(idx)], check=False)
            sink, source = self._saved_defaults
            if sink and not self.started_server:
                run_tool(["pactl", "set-default-sink", sink], check=False)
            if source and not self.started_server:
                run_tool(["pactl", "set-default-source", source], check=False)
        for name in list(self._keepalive):
            self._stop_keepalive(name)
        self._modules.clear()
        self._unplugged.clear()
        if self.started_server:
            stop_server()
            self.started_server = False
        self.started = False
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            release_lock(self._lock_fd)
            self._lock_fd = None

    def _remove_leftovers(self) -> None:
        """Unload sinks/loopbacks a crashed earlier run left (tagged, or by our names)."""
        names = (SPEAKER, MOUTH, BUS, VOID)
        stale = [(i, arg) for i, name, arg in loaded_modules()
                 if TAG in arg or any(f"sink_name={n}" in arg.split() for n in names)]
        for name in names:
            if any(f"sink_name={name}" in arg.split() for _, arg in stale):
                kill_client_streams(name)
        for i, _ in sorted(stale, reverse=True):  # loopbacks and remaps before the bus
            run_tool(["pactl", "unload-module", str(i)], check=False)

    # ------------------------------------------------------------------ sinks
    def _load_sink(self, name: str) -> None:
        props = f"sink_properties='device.description={name} {TAG}=1'"
        if name == BUS:
            args = ["module-null-sink", f"sink_name={BUS}", f"rate={self.rate}", "channels=2",
                    "channel_map=front-left,front-right", "norewinds=1", props]
        elif name == VOID:
            args = ["module-null-sink", f"sink_name={VOID}", f"rate={self.rate}", "channels=1",
                    "channel_map=mono", props]
        else:
            side = "front-left" if name == SPEAKER else "front-right"
            args = ["module-remap-sink", f"sink_name={name}", f"master={BUS}", "channels=1",
                    "channel_map=mono", f"master_channel_map={side}", "remix=no", props]
        self._modules[name] = int(run_tool(["pactl", "load-module", *args]).strip())
        if name != BUS:  # the bus is driven by the remap sinks' keep-alives
            self._start_keepalive(name)

    def _start_keepalive(self, name: str) -> None:
        # Its stdin is a pipe we never write: the stream runs in underrun (silence) at its low
        # latency, and pacat exits by itself when this process dies (EOF), so a crash leaves
        # no keep-alive behind.
        p = subprocess.Popen(
            ["pacat", "--playback", f"--device={name}", f"--latency-msec={self.keepalive_ms}",
             f"--rate={self.rate}", "--channels=1", "--format=s16le", "--raw",
             f"--client-name=kokoro-keepalive-{name}", f"--property={TAG}=keepalive"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._keepalive[name] = p
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait until its stream plays
            if p.poll() is not None:
                raise VirtualAudioError(f"keep-alive pacat on {name} exited: {p.stderr.read().decode().strip()}")
            mine = [x for x in pactl_json("sink-inputs")
                    if x["properties"].get("application.process.id") == str(p.pid)]
            if mine:
                # Pin it: PulseAudio 16 moves the streams on the old default sink to the new
                # default whenever the default changes, even streams opened with --device.
                # A user move makes the sink the stream's preferred one; a move to the sink
                # it is on is a no-op, hence away to the bus and back.
                run_tool(["pactl", "move-sink-input", str(mine[0]["index"]), BUS])
                run_tool(["pactl", "move-sink-input", str(mine[0]["index"]), name])
                return
            time.sleep(0.02)
        raise VirtualAudioError(f"keep-alive pacat on {name} did not connect in 5 s")

    def _stop_keepalive(self, name: str) -> None:
        p = self._keepalive.pop(name, None)
        if p is not None:
            p.terminate()
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stderr):
                if f:
                    f.close()

    @staticmethod
    def default_sink() -> str | None:
        s = run_tool(["pactl", "get-default-sink"], check=False).strip()
        return None if s in ("", "(null)") else s

    @staticmethod
    def default_source() -> str | None:
        s = run_tool(["pactl", "get-default-source"], check=False).strip()
        return None if s in ("", "(null)") else s

    # ------------------------------------------------------------------ echo
    def add_echo(self, delay_ms: float = 50.0, gain_db: float = -6.0) -> None:
        """The engine's output leaks into its mic: ``kokoro_spk`` -> ``user_mouth`` after
        ``delay_ms`` at ``gain_db`` (module-loopback; on one clock it holds the delay to the
        sample, measured 30/50/80 ms -> 30.00/50.00-50.02/80.00-80.02 ms)."""
        self.remove_echo()
        self._echo = (delay_ms, gain_db)
        if SPEAKER in self._unplugged or MOUTH in self._unplugged:
            return  # comes back with replug
        tag = f"'media.name=kokoro-echo {TAG}=echo module-stream-restore.id=kokoro-echo'"
        idx = int(run_tool(["pactl", "load-module", "module-loopback", f"source={SPEAKER_MONITOR}",
                            f"sink={MOUTH}", f"latency_msec={int(round(delay_ms))}", "source_dont_move=true",
                            "sink_dont_move=true", "remix=no", "channels=1", f"rate={self.rate}",
                            f"sink_input_properties={tag}", f"source_output_properties={tag}"]).strip())
        self._modules["echo"] = idx
        for _ in range(100):
            ins = [x for x in pactl_json("sink-inputs") if str(x.get("owner_module")) == str(idx)]
            if ins:
                run_tool(["pactl", "set-sink-input-volume", str(ins[0]["index"]), str(db_to_pa_volume(gain_db))])
                return
            time.sleep(0.02)
        raise VirtualAudioError("echo loopback has no sink input")

    def remove_echo(self) -> None:
        self._echo = None
        idx = self._modules.pop("echo", None)
        if idx is not None and any(i == idx for i, _, _ in loaded_modules()):
            run_tool(["pactl", "unload-module", str(idx)], check=False)

    def measure_echo(self, seconds: float = 1.6) -> tuple[float, float]:
        """(delay ms, gain dB) of the echo path, from noise bursts played into ``kokoro_spk``
        and found on both sides of the bus (one clock)."""
        rng = np.random.default_rng(1)
        n = int(self.rate * 0.02)
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / self.rate)
        spec[(f < 100) | (f > 6000)] = 0  # band-limited: no resampler roll-off in the gain
        burst = np.fft.irfft(spec, n) * np.hanning(n)
        burst = (burst / np.abs(burst).max() * 0.5).astype(np.float32)
        clips = [Clip(burst, self.rate, at=0.3 + 0.4 * k) for k in range(int((seconds - 0.4) / 0.4))]
        res = self.probe(clips, duration=seconds, play_into=SPEAKER)
        delays, gains = [], []
        for k in range(len(clips)):
            a = res.clip_onsets_in(k, res.speaker)
            if a is None:
                continue
            b = find_clip(res.mic, burst, a, self.rate, window_s=0.3)
            if b is None:
                continue
            e = res.mic[b: b + n].astype(np.float32)
            d = res.speaker[a: a + n].astype(np.float32)
            delays.append((b - a) / self.rate * 1000)
            gains.append(20 * np.log10(np.sqrt(np.mean(e ** 2)) / np.sqrt(np.mean(d ** 2)) + 1e-12))
        if not delays:
            raise VirtualAudioError("echo measurement: no echo of the bursts found in the mic")
        return float(np.median(delays)), float(np.median(gains))

    # ------------------------------------------------------------------ hot-plug
    def unplug(self, name: str, kill_streams: bool = True) -> None:
        """The device ``name`` (kokoro_spk or user_mouth) vanishes.

        kill_streams=True: streams on it fail (PortAudio: callbacks stop, finished_callback
        runs, ``stream.active`` turns False) as on a real ALSA device. False: PulseAudio's own
        behaviour, it silently moves them to the new default (kokoro_void here).
        The defaults point at kokoro_void meanwhile, so an engine that reopens "default" gets
        silence instead of its own mic/speaker."""
        if name not in (SPEAKER, MOUTH):
            raise ValueError(f"unplug: {name!r} is not {SPEAKER!r} or {MOUTH!r}")
        if name in self._unplugged or name not in self._modules:
            return
        echo = self._echo
        if echo is not None:  # module-loopback with *_dont_move would unload itself anyway
            self.remove_echo()
            self._echo = echo
        self._stop_keepalive(name)
        if kill_streams:  # before the defaults change: that would move the streams away
            kill_client_streams(name, tries=1)
        was_sink = self.default_sink() == name
        was_source = self.default_source() == name + ".monitor"
        if was_sink:  # moves the streams still on it (kill_streams=False) to kokoro_void
            run_tool(["pactl", "set-default-sink", VOID])
        if was_source:
            run_tool(["pactl", "set-default-source", VOID + ".monitor"])
        if kill_streams:
            # a client that reopened "default" at once (the engine's player does, within 0.1 s)
            # got this device again before the defaults moved: it vanishes for it too, and its
            # next reopen lands on kokoro_void, as on a machine whose device was pulled
            kill_client_streams(name)
        self._unplugged[name] = (was_sink, was_source)
        run_tool(["pactl", "unload-module", str(self._modules.pop(name))])

    def replug(self, name: str) -> None:
        """The device comes back under the same name (and becomes the default again if it was)."""
        if name not in self._unplugged:
            return
        was_sink, was_source = self._unplugged.pop(name)
        self._load_sink(name)
        if was_sink:
            run_tool(["pactl", "set-default-sink", name])
        if was_source:
            run_tool(["pactl", "set-default-source", name + ".monitor"])
        if self._echo is not None and not self._unplugged:
            self.add_echo(*self._echo)

    # ------------------------------------------------------------------ play / record
    def play(self, audio: np.ndarray, rate: int, sink: str = MOUTH, wait: bool = True) -> subprocess.Popen:
        """Play mono audio (int16 or float) into ``sink`` with pacat."""
        from pipeline.audio.convert import to_int16

        f = tempfile.NamedTemporaryFile(prefix="kokoro-play-", suffix=".raw", delete=False)
        f.write(to_int16(np.asarray(audio).reshape(-1)).tobytes())
        f.close()
        p = subprocess.Popen(["pacat", "--playback", "--raw", f"--device={sink}", f"--rate={rate}",
                              "--channels=1", "--format=s16le", "--latency-msec=20", f.name],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        threading.Thread(target=lambda: (p.wait(), os.unlink(f.name)), daemon=True).start()
        if wait:
            p.wait()
        return p

    def record(self, source: str, seconds: float, rate: int | None = None) -> np.ndarray:
        """``seconds`` of mono int16 from ``source`` (e.g. kokoro_spk.monitor) with parec."""
        rate = rate or self.rate
        n = int(seconds * rate) * 2
        p = subprocess.Popen(["parec", "--raw", f"--device={source}", f"--rate={rate}", "--channels=1",
                              "--format=s16le", "--latency-msec=20"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            data = b""
            while len(data) < n:
                chunk = p.stdout.read(n - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            p.terminate()
            p.wait()
            p.stdout.close()
        return np.frombuffer(data[: len(data) // 2 * 2], dtype=np.int16).copy()

    # ------------------------------------------------------------------ probe
    def open_probe(self, clips: list["Clip"], duration: float, **kw) -> "Probe":
        return Probe(self, clips, duration, **kw).start()

    def probe(self, clips: list["Clip"], duration: float, **kw) -> "ProbeResult":
        """Run a probe to its end (``duration``, or ``end_after_clips`` s after the last clip)."""
        with Probe(self, clips, duration, **kw) as p:
            return p.wait(timeout=duration + 20)
