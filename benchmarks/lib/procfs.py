"""What a process costs, read from /proc: CPU seconds (per process, per thread nice), RSS,
the process tree, Ray's processes by role, and the CPU the rest of the machine used."""
from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int | str, tid: int | str | None = None) -> list[str] | None:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        s = Path(path).read_text()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()  # fields from #3 (state) on: field n is index n-3


def proc_cpu_s(pid: int, children: bool = False) -> float | None:
    f = stat_fields(pid)
    if f is None:
        return None
    ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if children else 0)
    return ticks / CLK_TCK


def proc_cmdline(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def proc_comm(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def proc_rss_kb(pid: int | str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(root: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid in all_pids():
        f = stat_fields(pid)
        if f:
            kids.setdefault(int(f[1]), []).append(pid)
    out, todo = set(), [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def ray_label(pid: int) -> str:
    cmd, comm = proc_cmdline(pid), proc_comm(pid)
    if comm in ("raylet", "gcs_server"):
        return comm
    if cmd.startswith("ray::"):
        return cmd.split()[0]  # ray::MicStage, ray::IDLE, ray::DashboardAgent ...
    for key in ("dashboard/dashboard.py", "log_monitor.py", "autoscaler/_private/monitor.py"):
        if key in cmd:
            return key.split("/")[-1]
    return comm or cmd[:40]


def ray_memory(exclude: set[int]) -> dict[str, Any]:
    """Sum VmRSS of processes whose cmdline names ray/raylet/gcs_server.

    ``all_matching_mb`` is the plain rule (it would include another user's Ray);
    ``ours_mb`` only counts those that descend from this process.
    """
    mine = descendants(os.getpid())
    total, ours, by_label = 0, 0, {}
    for pid in all_pids():
        if pid in exclude or pid == os.getpid():
            continue
        cmd = proc_cmdline(pid).lower()
        if not cmd or not any(k in cmd for k in ("ray", "raylet", "gcs_server")):
            continue
        kb = proc_rss_kb(pid)
        total += kb
        if pid in mine:
            ours += kb
            lab = ray_label(pid)
            by_label[lab] = round(by_label.get(lab, 0) + kb / 1024, 1)
    return {"all_matching_mb": round(total / 1024, 1), "ours_mb": round(ours / 1024, 1),
            "ours_by_process_mb": dict(sorted(by_label.items(), key=lambda kv: -kv[1]))}


class ForeignCPU:
    """CPU the machine spent outside this process tree over a window (another agent's tests...)."""

    def __init__(self) -> None:
        self.t, self.busy, self.ours = time.monotonic(), self._busy(), self._ours()

    @staticmethod
    def _busy() -> float:
        parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        v = [int(x) for x in parts]
        # user nice system idle iowait irq softirq steal ...; guest is already in user
        return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK_TCK

    @staticmethod
    def _ours() -> float:
        pids = descendants(os.getpid()) | {os.getpid()}
        return sum(proc_cpu_s(p, children=True) or 0.0 for p in pids)

    def done(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.t, 1e-6)
        busy, ours = self._busy() - self.busy, self._ours() - self.ours
        return {"machine_busy_pct_of_one_core": round(100 * busy / wall, 1),
                "ours_pct_of_one_core": round(100 * ours / wall, 1),
                "foreign_pct_of_one_core": round(100 * max(0.0, busy - ours) / wall, 1)}


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip())
    except Exception:
        nproc = os.cpu_count() or 0
    mem = 0
    with contextlib.suppress(OSError):
        mem = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1]) // 1024
    import ray

    return {"nproc": nproc, "cpu_model": model, "mem_total_mb": mem, "python": platform.python_version(),
            "platform": platform.platform(), "ray": ray.__version__,
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3]}


def thread_nices(pid: int) -> list[int]:
    out = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            f = stat_fields(pid, tid)
            if f:
                out.append(int(f[16]))
    return sorted(set(out))


def thread_cpu_by_nice(pid: int) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            f = stat_fields(pid, tid)
            if f:
                d = out.setdefault(int(f[16]), {"threads": 0, "cpu_s": 0.0})
                d["threads"] += 1
                d["cpu_s"] += (int(f[11]) + int(f[12])) / CLK_TCK
    return out


def kokoro_rtf() -> float | None:
    """The machine's raw Kokoro speed, alone (the figure every latency here is relative to):
    the median of three runs of one sentence."""
    from models.registry import load_kokoro
    from pipeline.config import load_config

    tts = load_kokoro(load_config())
    tts.create("Hello.", voice="jf_alpha", speed=1.0, lang="en-us")
    text = "The quick brown fox jumps over the lazy dog, and then it runs into the quiet forest."
    rtfs = []
    for _ in range(3):
        t = time.perf_counter()
        audio, rate = tts.create(text, voice="jf_alpha", speed=1.0, lang="en-us")
        rtfs.append((time.perf_counter() - t) / (len(audio) / rate))
    return round(sorted(rtfs)[1], 3)
