"""Virtual audio devices on PulseAudio, for tests and benchmarks without a sound card.

Layout (all at one rate, 48 kHz by default, all on one PulseAudio clock)::

    kokoro_bus   null sink, 2 channels: front-left = speaker, front-right = mouth
    kokoro_spk   mono remap sink -> kokoro_bus front-left   (the engine's speaker, default sink)
    user_mouth   mono remap sink -> kokoro_bus front-right  (the user's mouth; its monitor
                                                            is the engine's mic, default source)
    kokoro_void  mono null sink: where the defaults point while a device is unplugged

Why a bus: ``kokoro_bus.monitor`` holds what the engine played (left) and what its mic
heard (right) rendered by the same PulseAudio render call, so one stereo recording relates
the two exactly, whatever any stream's latency. The bus has ``norewinds=1``: with rewinds
(PulseAudio's default) every stream start may rewind the sink, and a PortAudio duplex
stream's output->recording offset then differed per stream (56-76 ms measured) and shifted
within one; without, it was a constant 60.0 ms (65.0 ms in some streams) and the module-loopback
echo stays exact while the engine opens and closes streams.

Every sink gets a keep-alive ``pacat --latency-msec=20`` (a stream that never gets data,
so silence): an idle null sink runs at a ~2 s latency, and a recording of its monitor then
gets its first audio only after ~1.6-2 s. Even with the keep-alive a new null sink needs
~2 s to settle (its idle timer), so ``start()`` takes ~2.2 s.

The probe (``Probe``, ``VirtualAudio.probe``) is a subprocess (``python -m
tests.rigs.virtual_audio probe PLAN``) with one duplex sounddevice stream: it plays clips into
``user_mouth`` and records ``kokoro_bus.monitor``. Clips start at a time, on a command, or on a
rule about the recorded speaker ("1.5 s after the speaker becomes non-silent"). Its
PULSE_SINK / PULSE_SOURCE live only in the subprocess environment.

``python -m tests.rigs.virtual_audio up`` starts the devices and holds them until Ctrl-C.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPEAKER = "kokoro_spk"
MOUTH = "user_mouth"
BUS = "kokoro_bus"
VOID = "kokoro_void"
SPEAKER_MONITOR = SPEAKER + ".monitor"
MIC_SOURCE = MOUTH + ".monitor"
BUS_MONITOR = BUS + ".monitor"
_TAG = "kokoro.virtual"  # property on everything we load: finds leftovers of a crashed run
_TOOLS = {"pulseaudio": "pulseaudio", "pactl": "pulseaudio-utils", "pacat": "pulseaudio-utils",
          "parec": "pulseaudio-utils", "pacmd": "pulseaudio-utils"}
_MARKER = Path(tempfile.gettempdir()) / f"kokoro-virtual-audio-{os.getuid()}.json"
_LOCK = Path(tempfile.gettempdir()) / f"kokoro-virtual-audio-{os.getuid()}.lock"
_REPO_ROOT = Path(__file__).resolve().parents[2]  # tests/rigs/virtual_audio.py -> the repo
_SETTLE_S = 2.1


class VirtualAudioUnavailable(Exception):
    """PulseAudio (or one of its tools) is missing or the server cannot start."""


class VirtualAudioError(RuntimeError):
    """A PulseAudio command failed after the devices were up, or another process holds them."""


def _run(args: list[str], timeout: float = 10.0, check: bool = True) -> str:
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise VirtualAudioError(f"{' '.join(args)}: no answer in {timeout} s") from None
    if check and p.returncode != 0:
        raise VirtualAudioError(f"{' '.join(args)} failed ({p.returncode}): {(p.stderr or p.stdout).strip()}")
    return p.stdout


def _pactl_json(kind: str) -> list[dict]:
    return json.loads(_run(["pactl", "-f", "json", "list", kind]) or "[]")


def _modules() -> list[tuple[int, str, str]]:
    """(index, name, argument) of every loaded module (pactl's JSON leaves out the index)."""
    out = []
    for line in _run(["pactl", "list", "short", "modules"]).splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isdigit():
            out.append((int(parts[0]), parts[1], parts[2] if len(parts) > 2 else ""))
    return out


def server_running() -> bool:
    try:
        return subprocess.run(["pactl", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _server_pid() -> int | None:
    """PID of the server we talk to, from the pid file next to its socket (None if unknown)."""
    for line in _run(["pactl", "info"], check=False).splitlines():
        if line.startswith("Server String:"):
            sock = line.split(":", 1)[1].strip()
            try:
                return int((Path(sock).parent / "pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return None
    return None


def db_to_pa_volume(gain_db: float) -> int:
    """PulseAudio software volume for a gain in dB (cubic mapping, PA_VOLUME_NORM = 65536).

    Set it as a number: pactl reads "-6dB" as *relative* ("6 dB quieter than now")."""
    return int(round(65536 * (10.0 ** (gain_db / 20.0)) ** (1.0 / 3.0)))


def refresh_portaudio() -> None:
    """Make this process's PortAudio see devices that appeared after sounddevice was imported.

    PortAudio lists devices once, at initialisation (sounddevice import): a process that
    imported it before the PulseAudio server started sees no devices at all. Only safe while
    this process has no stream open."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


def client_env(sink: str | None = None, source: str | None = None,
               base: dict[str, str] | None = None, tag: str | None = None) -> dict[str, str]:
    """A copy of the environment whose PulseAudio clients (PortAudio "pulse"/"default") use
    ``sink``/``source``. For a subprocess's ``env=``; never set these in os.environ (Ray
    workers started later inherit the driver's environment)."""
    env = dict(os.environ if base is None else base)
    env.pop("PULSE_SINK", None)
    env.pop("PULSE_SOURCE", None)
    if sink:
        env["PULSE_SINK"] = sink
    if source:
        env["PULSE_SOURCE"] = source
    if tag:  # a property on the client's streams (libpulse reads PULSE_PROP)
        env["PULSE_PROP"] = f"{_TAG}={tag}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


class VirtualAudio:
    """The virtual devices as a context manager; see the module docstring for the layout."""

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
        missing = sorted({pkg for tool, pkg in _TOOLS.items() if shutil.which(tool) is None})
        if missing:
            raise VirtualAudioUnavailable(
                f"PulseAudio tools missing: apt-get install {' '.join(missing)} libasound2-plugins")
        self._lock()
        try:
            if not server_running():
                self._start_server()
            else:
                self.started_server = self._owns_server()  # a server a crashed run of ours left
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
                _run(["pactl", "set-default-sink", SPEAKER])
                _run(["pactl", "set-default-source", MIC_SOURCE])
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
                    _run(["pactl", "unload-module", str(idx)], check=False)
            sink, source = self._saved_defaults
            if sink and not self.started_server:
                _run(["pactl", "set-default-sink", sink], check=False)
            if source and not self.started_server:
                _run(["pactl", "set-default-source", source], check=False)
        for name in list(self._keepalive):
            self._stop_keepalive(name)
        self._modules.clear()
        self._unplugged.clear()
        if self.started_server:
            subprocess.run(["pulseaudio", "-k"], capture_output=True, timeout=10)
            for _ in range(50):
                if not server_running():
                    break
                time.sleep(0.1)
            _MARKER.unlink(missing_ok=True)
            self.started_server = False
        self.started = False
        self._unlock()

    def _lock(self) -> None:
        """One VirtualAudio per user at a time (same sink names, one server): wait for the
        lock of another process (a test session, a benchmark). The kernel drops the lock when
        its holder dies, so a crash leaves nothing to wait for."""
        fd = os.open(_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise VirtualAudioError(f"the virtual audio devices are in use by pid {holder} "
                                            f"(waited {self.wait_s:.0f} s for {_LOCK})") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _start_server(self) -> None:
        # -n: none of default.pa's modules. module-stream-restore would remember a stream's
        # device and volume per application name ("ALSA plug-in [python3.11]" for every
        # PortAudio client) and module-suspend-on-idle would suspend idle sinks.
        args = ["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--log-level=error",
                "--load=module-native-protocol-unix", "--load=module-cli-protocol-unix"]
        try:
            p = subprocess.run(args, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise VirtualAudioUnavailable(f"cannot start PulseAudio ({' '.join(args)}): {e}") from None
        for _ in range(50):
            if server_running():
                break
            time.sleep(0.1)
        else:
            err = "\n".join(ln for ln in (p.stderr or "").splitlines() if "as root" not in ln).strip()
            raise VirtualAudioUnavailable(
                f"PulseAudio did not start (exit {p.returncode}): {err or 'no message'}")
        self.started_server = True
        _MARKER.write_text(json.dumps({"pid": _server_pid()}))

    @staticmethod
    def _owns_server() -> bool:
        try:
            pid = json.loads(_MARKER.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return False
        return pid is not None and pid == _server_pid()

    def _remove_leftovers(self) -> None:
        """Unload sinks/loopbacks a crashed earlier run left (tagged, or by our names)."""
        names = (SPEAKER, MOUTH, BUS, VOID)
        stale = [(i, arg) for i, name, arg in _modules()
                 if _TAG in arg or any(f"sink_name={n}" in arg.split() for n in names)]
        for name in names:
            if any(f"sink_name={name}" in arg.split() for _, arg in stale):
                self._kill_streams(name)
        for i, _ in sorted(stale, reverse=True):  # loopbacks and remaps before the bus
            _run(["pactl", "unload-module", str(i)], check=False)

    # ------------------------------------------------------------------ sinks
    def _load_sink(self, name: str) -> None:
        props = f"sink_properties='device.description={name} {_TAG}=1'"
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
        self._modules[name] = int(_run(["pactl", "load-module", *args]).strip())
        if name != BUS:  # the bus is driven by the remap sinks' keep-alives
            self._start_keepalive(name)

    def _start_keepalive(self, name: str) -> None:
        # Its stdin is a pipe we never write: the stream runs in underrun (silence) at its low
        # latency, and pacat exits by itself when this process dies (EOF), so a crash leaves
        # no keep-alive behind.
        p = subprocess.Popen(
            ["pacat", "--playback", f"--device={name}", f"--latency-msec={self.keepalive_ms}",
             f"--rate={self.rate}", "--channels=1", "--format=s16le", "--raw",
             f"--client-name=kokoro-keepalive-{name}", f"--property={_TAG}=keepalive"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._keepalive[name] = p
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait until its stream plays
            if p.poll() is not None:
                raise VirtualAudioError(f"keep-alive pacat on {name} exited: {p.stderr.read().decode().strip()}")
            mine = [x for x in _pactl_json("sink-inputs")
                    if x["properties"].get("application.process.id") == str(p.pid)]
            if mine:
                # Pin it: PulseAudio 16 moves the streams on the old default sink to the new
                # default whenever the default changes, even streams opened with --device.
                # A user move makes the sink the stream's preferred one; a move to the sink
                # it is on is a no-op, hence away to the bus and back.
                _run(["pactl", "move-sink-input", str(mine[0]["index"]), BUS])
                _run(["pactl", "move-sink-input", str(mine[0]["index"]), name])
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

    def _kill_streams(self, sink: str) -> int:
        """Kill the client streams playing into ``sink`` or recording its monitor; the clients
        see their stream fail (module-owned streams, e.g. the echo loopback, and probes are
        left alone). Returns how many were killed."""
        killed = 0
        for _ in range(3):
            left = self._client_streams(sink)
            if not left:
                break
            for cmd, idx in left:
                _run(["pacmd", cmd, str(idx)], check=False)
            killed += len(left)
        else:
            if self._client_streams(sink):
                raise VirtualAudioError(f"cannot kill the streams on {sink}")
        return killed

    @staticmethod
    def _client_streams(sink: str) -> list[tuple[str, int]]:
        sinks = {s["index"]: s["name"] for s in _pactl_json("sinks")}
        sources = {s["index"]: s["name"] for s in _pactl_json("sources")}
        out = []
        for kind, cmd, owner, table, want in (
                ("sink-inputs", "kill-sink-input", "sink", sinks, sink),
                ("source-outputs", "kill-source-output", "source", sources, sink + ".monitor")):
            for x in _pactl_json(kind):
                props = x["properties"]
                if (table.get(x.get(owner)) == want and "application.process.id" in props
                        and props.get(_TAG) != "probe"):
                    out.append((cmd, x["index"]))
        return out

    @staticmethod
    def default_sink() -> str | None:
        s = _run(["pactl", "get-default-sink"], check=False).strip()
        return None if s in ("", "(null)") else s

    @staticmethod
    def default_source() -> str | None:
        s = _run(["pactl", "get-default-source"], check=False).strip()
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
        tag = f"'media.name=kokoro-echo {_TAG}=echo module-stream-restore.id=kokoro-echo'"
        idx = int(_run(["pactl", "load-module", "module-loopback", f"source={SPEAKER_MONITOR}",
                        f"sink={MOUTH}", f"latency_msec={int(round(delay_ms))}", "source_dont_move=true",
                        "sink_dont_move=true", "remix=no", "channels=1", f"rate={self.rate}",
                        f"sink_input_properties={tag}", f"source_output_properties={tag}"]).strip())
        self._modules["echo"] = idx
        for _ in range(100):
            ins = [x for x in _pactl_json("sink-inputs") if str(x.get("owner_module")) == str(idx)]
            if ins:
                _run(["pactl", "set-sink-input-volume", str(ins[0]["index"]), str(db_to_pa_volume(gain_db))])
                return
            time.sleep(0.02)
        raise VirtualAudioError("echo loopback has no sink input")

    def remove_echo(self) -> None:
        self._echo = None
        idx = self._modules.pop("echo", None)
        if idx is not None and any(i == idx for i, _, _ in _modules()):
            _run(["pactl", "unload-module", str(idx)], check=False)

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
            self._kill_streams(name)
        was_sink = self.default_sink() == name
        was_source = self.default_source() == name + ".monitor"
        if was_sink:  # moves the streams still on it (kill_streams=False) to kokoro_void
            _run(["pactl", "set-default-sink", VOID])
        if was_source:
            _run(["pactl", "set-default-source", VOID + ".monitor"])
        self._unplugged[name] = (was_sink, was_source)
        _run(["pactl", "unload-module", str(self._modules.pop(name))])

    def replug(self, name: str) -> None:
        """The device comes back under the same name (and becomes the default again if it was)."""
        if name not in self._unplugged:
            return
        was_sink, was_source = self._unplugged.pop(name)
        self._load_sink(name)
        if was_sink:
            _run(["pactl", "set-default-sink", name])
        if was_source:
            _run(["pactl", "set-default-source", name + ".monitor"])
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


# ====================================================================== probe, parent side
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


def _to_float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x).reshape(-1)
    return x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)


def block_db(x: np.ndarray, rate: int, block_ms: float = 10.0) -> np.ndarray:
    """dBFS of each ``block_ms`` block of mono audio (int16 or float)."""
    x = _to_float(x)
    hop = max(1, int(rate * block_ms / 1000))
    n = len(x) // hop
    return 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)


def first_loud(x: np.ndarray, rate: int, start: int, thresh_db: float = -45.0,
               block_ms: float = 10.0, relative: bool = False) -> int | None:
    """First sample >= start of the first block above ``thresh_db`` (dBFS, or dB below the
    loudest block if ``relative``), refined to the first sample above that amplitude."""
    x = _to_float(x)[start:]
    db = block_db(x, rate, block_ms)
    if not len(db):
        return None
    thr = thresh_db + (db.max() if relative else 0.0)
    idx = np.where(db > thr)[0]
    if not len(idx):
        return None
    hop = max(1, int(rate * block_ms / 1000))
    b = idx[0] * hop
    amp = 10 ** (thr / 20)
    k = np.where(np.abs(x[max(0, b - hop): b + hop]) > amp)[0]
    return start + (max(0, b - hop) + int(k[0]) if len(k) else b)


def first_silence(x: np.ndarray, rate: int, start: int, thresh_db: float = -45.0,
                  hold_ms: float = 200.0, block_ms: float = 10.0) -> int | None:
    """First sample >= start after which ``x`` stays below ``thresh_db`` for ``hold_ms``
    (blocks of ``block_ms``; the end refined to just after the last sample above that level)."""
    x = _to_float(x)
    db = block_db(x[start:], rate, block_ms)
    hop = max(1, int(rate * block_ms / 1000))
    need = max(1, int(round(hold_ms / block_ms)))
    run = 0
    for i, quiet in enumerate(db <= thresh_db):
        run = run + 1 if quiet else 0
        if run >= need:
            q = start + (i - need + 1) * hop
            k = np.where(np.abs(x[max(start, q - hop): q]) > 10 ** (thresh_db / 20))[0]
            return max(start, q - hop) + int(k[-1]) + 1 if len(k) else q
    return None


def find_clip(signal: np.ndarray, clip: np.ndarray, start: int, rate: int, window_s: float = 0.5,
              head_s: float = 0.2) -> int | None:
    """Sample of ``signal`` where ``clip``'s sample 0 lies, searched in [start, start+window_s].

    Matches the clip's first ``head_s`` of sound (after its leading silence), not the whole
    clip: a playback glitch later in the clip (PulseAudio inserts silence when a client is
    late, and the clip then continues a few samples later) must not move the answer.
    Periodic clips (pure tones) are ambiguous by their period: use speech or noise."""
    clip = _to_float(clip)
    k0 = first_loud(clip, rate, 0, -40.0, relative=True) or 0
    head = clip[k0: k0 + int(head_s * rate)]
    seg = _to_float(signal[start + k0: start + k0 + int(window_s * rate) + len(head)])
    if len(head) == 0 or len(seg) < len(head) or not np.any(seg):
        return None
    n = 1 << int(np.ceil(np.log2(len(seg) + len(head))))
    c = np.fft.irfft(np.fft.rfft(seg, n) * np.conj(np.fft.rfft(head, n)), n)[: len(seg) - len(head) + 1]
    energy = np.concatenate([[0.0], np.cumsum(seg.astype(np.float64) ** 2)])
    local = np.sqrt(energy[len(head):] - energy[: len(seg) - len(head) + 1]) * np.linalg.norm(head)
    lag = int(np.argmax(np.abs(c)))
    if np.abs(c[lag]) < 0.5 * (local[lag] + 1e-9):  # normalised correlation: is the clip there?
        return None
    return start + lag


def _clip_array(c: Clip, rate: int) -> np.ndarray:
    if isinstance(c.audio, (str, Path)):
        from pipeline.audio.convert import read_wav

        audio, src = read_wav(c.audio)
    else:
        audio, src = np.asarray(c.audio), c.rate or rate
    x = _to_float(audio)
    if src != rate:
        from pipeline.audio.convert import Resampler, to_int16

        rs = Resampler(src, rate)
        pad = np.zeros(int(src * 0.05), np.int16)  # flush the resampler's tail
        x = _to_float(np.concatenate([rs(to_int16(x)), rs(pad)]))[: int(round(len(x) * rate / src))]
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


# ====================================================================== probe, subprocess side
def _probe_main(plan_path: str) -> int:
    import sounddevice as sd

    plan = json.loads(Path(plan_path).read_text())
    rate, block = plan["rate"], plan["block"]
    clips = [np.load(c["path"]).astype(np.float32) for c in plan["clips"]]
    rules = plan["clips"]
    total = int(plan["duration"] * rate)
    rec = np.zeros((total + block, 2), np.int16)
    thr_db = plan["threshold_db"]
    hold_blocks = max(1, int(round(plan["silence_hold_ms"] / 1000 * rate / block)))
    out_lat: list[float] = []
    in_lat: list[float] = []
    events: queue.SimpleQueue = queue.SimpleQueue()
    commands: queue.SimpleQueue = queue.SimpleQueue()
    st: dict[str, Any] = {
        "pos": 0, "starts": [-1] * len(clips), "ends": [-1] * len(clips), "done": [False] * len(clips),
        "armed": [r["on"] not in (None, "manual") and r["after"] is None for r in rules],
        "speaker_on": False, "quiet": 0, "last_loud": 0, "status": [], "rtt": 0, "rtt_measured": False,
        "stop": False,
    }

    def schedule(i: int, target_rec: int, now: int) -> None:
        st["starts"][i] = max(now, target_rec - st["rtt"])
        events.put({"event": "clip", "clip": i, "out_sample": st["starts"][i], "target": target_rec})

    def callback(indata, outdata, frames, ti, status):
        p = st["pos"]
        if status:
            st["status"].append((p, str(status)))
            events.put({"event": "status", "sample": p, "flags": str(status)})
        o, i_ = ti.outputBufferDacTime - ti.currentTime, ti.currentTime - ti.inputBufferAdcTime
        if 0 < o < 2 and 0 <= i_ < 2:
            out_lat.append(o)
            in_lat.append(i_)
            if not st["rtt_measured"]:
                st["rtt"] = int((np.median(out_lat[-50:]) + np.median(in_lat[-50:])) * rate)
        n = min(frames, len(rec) - p)
        if n > 0:
            rec[p: p + n] = np.clip(indata[:n] * 32768.0, -32768, 32767).astype(np.int16)
        # speaker level -> on/off events (recording clock)
        spk = indata[:, 0]
        loud = 10 * np.log10(float(np.mean(spk * spk)) + 1e-12) > thr_db
        fired = []
        if loud:
            st["quiet"] = 0
            k = np.where(np.abs(spk) > 10 ** (thr_db / 20))[0]
            st["last_loud"] = p + (int(k[-1]) + 1 if len(k) else frames)
            if not st["speaker_on"]:
                st["speaker_on"] = True
                at = p + (int(k[0]) if len(k) else 0)
                events.put({"event": "speaker_on", "sample": at})
                fired.append(("speaker_on", at))
        elif st["speaker_on"]:
            st["quiet"] += 1
            if st["quiet"] >= hold_blocks:
                st["speaker_on"] = False
                at = st["last_loud"]  # just after the last sample above the threshold
                events.put({"event": "speaker_off", "sample": at})
                fired.append(("speaker_off", at))
        for i, r in enumerate(rules):
            if st["starts"][i] >= 0:
                continue
            if r["at"] is not None:
                target = int(r["at"] * rate)
                if target - st["rtt"] < p + frames:
                    schedule(i, target, p)
            elif st["armed"][i]:
                hit = [at for kind, at in fired if kind == r["on"]]
                if r["on"] == "speaker_on" and not hit and st["speaker_on"] and st.get(f"armed_at{i}") == p:
                    hit = [p]  # already non-silent when armed
                if hit:
                    schedule(i, hit[0] + int(r["delay"] * rate), p)
        while True:
            try:
                cmd = commands.get_nowait()
            except queue.Empty:
                break
            if cmd[0] == "play" and 0 <= cmd[1] < len(clips) and st["starts"][cmd[1]] < 0:
                schedule(cmd[1], p + st["rtt"], p)
        # mix the clips due in this block
        out = np.zeros(frames, np.float32)
        for i, c in enumerate(clips):
            s = st["starts"][i]
            if s < 0 or st["done"][i] or s >= p + frames:
                continue
            a, b = max(s, p), min(s + len(c), p + frames)
            if b > a:
                out[a - p: b - p] += c[a - s: b - s]
            if s + len(c) <= p + frames:
                st["done"][i] = True
                st["ends"][i] = s + len(c)
                events.put({"event": "clip_end", "clip": i, "out_sample": s + len(c)})
                for j, r in enumerate(rules):
                    if r["after"] == i and r["on"] not in (None, "manual"):
                        st["armed"][j] = True
                        st[f"armed_at{j}"] = p + frames
        outdata[:, 0] = np.clip(out, -1.0, 1.0)
        st["pos"] = p + frames

    def read_commands():
        for line in sys.stdin:
            parts = line.split()
            if parts[:1] == ["stop"]:
                st["stop"] = True
            elif parts[:1] == ["play"] and len(parts) == 2 and parts[1].isdigit():
                commands.put(("play", int(parts[1])))
        st["stop"] = True  # parent went away

    def emit(ev):
        print(json.dumps(ev), flush=True)

    channel = plan["channel"]
    onsets: list[int | None] = [None] * len(clips)
    heads = [first_loud(c, rate, 0, -40.0, relative=True) or 0 for c in clips]

    def find_onsets(final: bool) -> None:
        """Where each clip reached the recording (the real output->mic offset), as soon as
        the search window is recorded (or with what there is, at the end)."""
        for i in range(len(clips)):
            w = st["starts"][i]
            if channel is None or w < 0 or onsets[i] is not None:
                continue
            if final or st["pos"] >= w + heads[i] + int(0.7 * rate):
                found = find_clip(rec[: st["pos"], channel], clips[i], w, rate)
                onsets[i] = -1 if found is None else found
                if found is not None:
                    st["rtt"], st["rtt_measured"] = found - w, True
                emit({"event": "clip_onset", "clip": i, "sample": found,
                      "rtt_ms": None if found is None else (found - w) / rate * 1000})

    threading.Thread(target=read_commands, daemon=True).start()
    stream = sd.Stream(samplerate=rate, blocksize=block, channels=(2, 1), dtype="float32", latency="low",
                       device=("pulse", "pulse"), callback=callback)
    st["rtt"] = int(sum(stream.latency) * rate)
    with stream:
        emit({"event": "ready", "rate": rate, "block": block,
              "stream_latency_ms": [x * 1000 for x in stream.latency]})
        end_after = plan["end_after_clips"]
        while not st["stop"] and st["pos"] < total:
            try:
                emit(events.get(timeout=0.01))
                while True:
                    emit(events.get_nowait())
            except queue.Empty:
                pass
            find_onsets(final=False)
            if end_after is not None and clips and all(st["done"]):
                if st["pos"] >= max(st["ends"]) + int(end_after * rate):
                    break
        latency = list(stream.latency)
    while True:
        try:
            emit(events.get_nowait())
        except queue.Empty:
            break
    find_onsets(final=True)
    n = min(st["pos"], len(rec))
    meta = {"out_latency_ms": float(np.median(out_lat) * 1000) if out_lat else float("nan"),
            "in_latency_ms": float(np.median(in_lat) * 1000) if in_lat else float("nan"),
            "stream_latency_ms": [x * 1000 for x in latency], "status": st["status"]}
    np.savez(plan["out"], rec=rec[:n], clip_out_starts=np.array(st["starts"], np.int64), meta=json.dumps(meta))
    emit({"event": "done", "samples": n})
    return 0


def _up_main(rate: int) -> int:
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job ignores it by default
        signal.signal(sig, lambda *_: sys.exit(0))
    with VirtualAudio(rate=rate) as va:
        print(f"virtual audio up ({'own server' if va.started_server else 'existing server'}): default sink "
              f"{SPEAKER}, default source {MIC_SOURCE}, both sides on {BUS_MONITOR}. Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.rigs.virtual_audio")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe", help="(internal) run a probe plan")
    p.add_argument("plan")
    u = sub.add_parser("up", help="start the virtual devices and hold them until Ctrl-C")
    u.add_argument("--rate", type=int, default=48000)
    a = ap.parse_args(argv)
    if a.cmd == "probe":
        return _probe_main(a.plan)
    return _up_main(a.rate)


if __name__ == "__main__":
    sys.exit(main())
