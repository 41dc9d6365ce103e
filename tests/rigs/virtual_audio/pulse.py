"""PulseAudio plumbing of the virtual devices: their names, pactl/pacmd calls, the server
(ours or one already running), the one-user lock, and the client streams on a sink."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEAKER = "kokoro_spk"
MOUTH = "user_mouth"
BUS = "kokoro_bus"
VOID = "kokoro_void"
SPEAKER_MONITOR = SPEAKER + ".monitor"
MIC_SOURCE = MOUTH + ".monitor"
BUS_MONITOR = BUS + ".monitor"
TAG = "kokoro.virtual"  # property on everything we load: finds leftovers of a crashed run
TOOLS = {"pulseaudio": "pulseaudio", "pactl": "pulseaudio-utils", "pacat": "pulseaudio-utils",
         "parec": "pulseaudio-utils", "pacmd": "pulseaudio-utils"}
_MARKER = Path(tempfile.gettempdir()) / f"kokoro-virtual-audio-{os.getuid()}.json"
_LOCK = Path(tempfile.gettempdir()) / f"kokoro-virtual-audio-{os.getuid()}.lock"
_REPO_ROOT = Path(__file__).resolve().parents[3]  # tests/rigs/virtual_audio/pulse.py -> the repo


class VirtualAudioUnavailable(Exception):
    """PulseAudio (or one of its tools) is missing or the server cannot start."""


class VirtualAudioError(RuntimeError):
    """A PulseAudio command failed after the devices were up, or another process holds them."""


def run_tool(args: list[str], timeout: float = 10.0, check: bool = True) -> str:
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise VirtualAudioError(f"{' '.join(args)}: no answer in {timeout} s") from None
    if check and p.returncode != 0:
        raise VirtualAudioError(f"{' '.join(args)} failed ({p.returncode}): {(p.stderr or p.stdout).strip()}")
    return p.stdout


def pactl_json(kind: str) -> list[dict]:
    return json.loads(run_tool(["pactl", "-f", "json", "list", kind]) or "[]")


def loaded_modules() -> list[tuple[int, str, str]]:
    """(index, name, argument) of every loaded module (pactl's JSON leaves out the index)."""
    out = []
    for line in run_tool(["pactl", "list", "short", "modules"]).splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isdigit():
            out.append((int(parts[0]), parts[1], parts[2] if len(parts) > 2 else ""))
    return out


def server_running() -> bool:
    try:
        return subprocess.run(["pactl", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def server_pid() -> int | None:
    """PID of the server we talk to, from the pid file next to its socket (None if unknown)."""
    for line in run_tool(["pactl", "info"], check=False).splitlines():
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
        env["PULSE_PROP"] = f"{TAG}={tag}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def acquire_lock(wait_s: float) -> int:
    """One VirtualAudio per user at a time (same sink names, one server): wait for the
    lock of another process (a test session, a benchmark). The kernel drops the lock when
    its holder dies, so a crash leaves nothing to wait for."""
    fd = os.open(_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise VirtualAudioError(f"the virtual audio devices are in use by pid {holder} "
                                        f"(waited {wait_s:.0f} s for {_LOCK})") from None
            time.sleep(0.2)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def release_lock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def start_server() -> None:
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
    _MARKER.write_text(json.dumps({"pid": server_pid()}))


def owns_server() -> bool:
    try:
        pid = json.loads(_MARKER.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return False
    return pid is not None and pid == server_pid()


def stop_server() -> None:
    """Stop the server we started (and forget it was ours)."""
    subprocess.run(["pulseaudio", "-k"], capture_output=True, timeout=10)
    for _ in range(50):
        if not server_running():
            break
        time.sleep(0.1)
    _MARKER.unlink(missing_ok=True)


def kill_client_streams(sink: str, tries: int = 3) -> int:
    """Kill the client streams playing into ``sink`` or recording its monitor; the clients
    see their stream fail (module-owned streams, e.g. the echo loopback, and probes are
    left alone). Returns how many were killed; with ``tries`` > 1, raises if streams are
    still there after that many rounds (a client reopening on it as fast as it is killed)."""
    killed = 0
    for _ in range(tries):
        left = client_streams(sink)
        if not left:
            break
        for cmd, idx in left:
            run_tool(["pacmd", cmd, str(idx)], check=False)
        killed += len(left)
    else:
        if tries > 1 and client_streams(sink):
            raise VirtualAudioError(f"cannot kill the streams on {sink}")
    return killed


def client_streams(sink: str) -> list[tuple[str, int]]:
    sinks = {s["index"]: s["name"] for s in pactl_json("sinks")}
    sources = {s["index"]: s["name"] for s in pactl_json("sources")}
    out = []
    for kind, cmd, owner, table, want in (
            ("sink-inputs", "kill-sink-input", "sink", sinks, sink),
            ("source-outputs", "kill-source-output", "source", sources, sink + ".monitor")):
        for x in pactl_json(kind):
            props = x["properties"]
            if (table.get(x.get(owner)) == want and "application.process.id" in props
                    and props.get(TAG) != "probe"):
                out.append((cmd, x["index"]))
    return out
