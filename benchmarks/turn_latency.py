"""Voice-to-voice turn latency of the Kokoro Engine, and what Ray costs on the way.

    .venv/bin/python benchmarks/turn_latency.py            # ~2.5-3 min
    .venv/bin/python benchmarks/turn_latency.py --quick    # ~1.5 min
    .venv/bin/python benchmarks/turn_latency.py --embedded # llama.cpp instead of the scripted LLM

What it does, in order, all on ONE started Engine:

1. Speaks a few questions with espeak-ng into a temp dir and finds the TRUE
   end of speech of each WAV from the signal (last 10 ms frame whose RMS is
   within ``--energy-threshold-db`` of the loudest frame), not from the VAD.
2. Runs ``--turns`` turns through ``Engine.talk`` in real time, the LLM being a
   ``FakeLLM`` with 200 ms time to first token (the reference: pipecat 1.14 on
   this machine, same models, 200 ms TTFT server: voice-to-voice p50 1.64 s).
   Every event is in seconds since the first input sample, and the file is fed
   in real time from t=0, so the true speech end (file time) is on the same
   clock. Meanwhile a driver thread pings the vad and player actors on their
   control and data lanes (round robin, ``--ping-hz`` pings a second in all).
3. Ray's CPU on the audio path: the mic feeds silence in real time for
   ``--cpu-s`` s; CPU (utime+stime) of the mic, vad, session actors and of
   raylet/gcs_server over wall time, in % of one core.
4. Hop latency under load: the STT and TTS models run in two separate OS
   processes (transcribe / synthesize in a loop) while a thread pings the chain
   of actors: idle baseline, then (1) nice 0 and 2 threads each (a naive setup),
   then (2) nice 10 and 1 thread each (``models.runtime.lower_thread_priority``).

The pinging during
the turns costs them some CPU (TTS runs at nice 10): ``--no-turn-pings`` shows how much.

Writes benchmarks/results/turn_latency.json (and turn_latency.png when
matplotlib can be imported; ``--plot-only JSON`` redraws it from a JSON file).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import wave
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from pipeline.audio.endpointing import Endpointer  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
REFERENCE = {"pipecat_1.14_voice_to_voice_p50_s": 1.64,
             "note": "pipecat 1.14 on this machine, same models, LLM server with 200 ms time to first token"}

QUESTIONS = [
    "What is the capital of France?",
    "How far away is the moon?",
    "Can you recommend a good book for the weekend?",
    "What is the weather usually like in London in spring?",
    "Tell me a fun fact about octopuses.",
]
DEFAULT_REPLY = "That's a good question. The short answer is that it depends on who you ask."
TTS_LOAD_TEXT = "That's a good question. The short answer is that it depends on who you ask."

EVENT_ORDER = ("user_speech_started", "user_speech_stopped", "transcript_final", "llm_first_token",
               "tts_first_audio", "first_reply_sample_out", "reply_done")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ====================================================================== small helpers
def pct(values: list[float], qs=(50, 95), mean: bool = True, maximum: bool = False) -> dict[str, Any]:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    out: dict[str, Any] = {"n": int(v.size)}
    if v.size == 0:
        return out
    for q in qs:
        out[f"p{q}"] = round(float(np.percentile(v, q)), 4)
    if mean:
        out["mean"] = round(float(v.mean()), 4)
    if maximum:
        out["max"] = round(float(v.max()), 4)
    return out


def r4(x: Any) -> Any:
    return None if x is None else round(float(x), 4)


def _stat_fields(pid: int | str, tid: int | str | None = None) -> list[str] | None:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        s = Path(path).read_text()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()  # fields from #3 (state) on: field n is index n-3


def proc_cpu_s(pid: int, children: bool = False) -> float | None:
    f = _stat_fields(pid)
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
        f = _stat_fields(pid)
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


# ====================================================================== input audio
def speech_bounds(path: Path, threshold_db: float) -> tuple[float, float, float]:
    """(duration, first, last) speech time in seconds, from 10 ms frame RMS energy."""
    with wave.open(str(path), "rb") as w:
        rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: expected 16-bit PCM")
    x = np.frombuffer(raw, np.int16).astype(np.float64)
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    hop = rate // 100
    n = len(x) // hop
    rms = np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(axis=1)) + 1e-9
    db = 20 * np.log10(rms / rms.max())
    loud = np.nonzero(db > threshold_db)[0]
    return len(x) / rate, loud[0] * hop / rate, (loud[-1] + 1) * hop / rate


def make_questions(tmp: Path, threshold_db: float) -> list[dict[str, Any]]:
    from tests.rigs.espeak import espeak_wav

    out = []
    for i, text in enumerate(QUESTIONS):
        p = tmp / f"q{i}.wav"
        try:
            espeak_wav(text, p, rate=None)
        except RuntimeError as e:
            raise SystemExit(str(e)) from None
        dur, first, last = speech_bounds(p, threshold_db)
        out.append({"index": i, "text": text, "path": str(p), "duration_s": round(float(dur), 3),
                    "true_speech_start_s": round(float(first), 3), "true_speech_end_s": round(float(last), 3)})
    return out


def write_silence(path: Path, seconds: float) -> None:
    from pipeline.audio.convert import write_wav

    write_wav(path, np.zeros(int(16000 * seconds), np.int16), 16000)


# ====================================================================== Ray probes
def actor_pids(engine) -> dict[str, int]:
    import ray

    refs = {n: a.__ray_call__.remote(lambda self: os.getpid()) for n, a in engine.actors.items()}
    return {n: ray.get(r, timeout=30) for n, r in refs.items()}


class Pinger(threading.Thread):
    """Round-robin pings over (actor, lane) probes at ``hz`` pings a second in all."""

    def __init__(self, engine, names: list[str], hz: float) -> None:
        super().__init__(name="pinger", daemon=True)
        self.probes = [(f"{n}.{lane}", lane, getattr(engine.actors[n], "ping" if lane == "control" else "ping_data"))
                       for n in names for lane in ("control", "data")]
        self.period = 1.0 / hz
        self.samples: list[tuple[str, str, float, float, float]] = []  # probe, lane, sent, rtt, one-way
        self.errors = 0
        self._halt = threading.Event()

    def run(self) -> None:
        import ray

        i, next_t = 0, time.monotonic()
        while not self._halt.is_set():
            label, lane, method = self.probes[i % len(self.probes)]
            i += 1
            sent, p0 = time.time(), time.perf_counter()
            try:
                _, received = ray.get(method.remote(sent), timeout=30)
                rtt = time.perf_counter() - p0
                self.samples.append((label, lane, sent, rtt, received - sent))
            except Exception:
                self.errors += 1
            next_t += self.period
            delay = next_t - time.monotonic()
            if delay > 0:
                self._halt.wait(delay)
            else:
                next_t = time.monotonic()  # a slow ping: do not burst to catch up

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=35)


def ping_stats(samples: list[tuple], by_probe: bool = True) -> dict[str, Any]:
    def ms(vals):
        return [v * 1000 for v in vals]

    out: dict[str, Any] = {"unit": "ms"}
    out["all_rtt"] = pct(ms([s[3] for s in samples]), (50, 95, 99), maximum=True)
    for lane in ("control", "data"):
        sel = [s for s in samples if s[1] == lane]
        out[f"{lane}_rtt"] = pct(ms([s[3] for s in sel]), (50, 95, 99), maximum=True)
        out[f"{lane}_one_way"] = pct(ms([s[4] for s in sel]), (50, 95, 99), maximum=True)
    if by_probe:
        out["by_probe_rtt"] = {p: pct(ms([s[3] for s in samples if s[0] == p]), (50, 95, 99), maximum=True)
                               for p in dict.fromkeys(s[0] for s in samples)}
    return out


# ====================================================================== load processes
def _load_worker(kind: str, threads: int, nice: int, wav: str, ready, go, stop, results) -> None:
    """Run in its own OS process: load a model and run it in a loop until ``stop``."""
    try:
        from models.runtime import lower_thread_priority
        from pipeline.config import load_config

        if nice:
            lower_thread_priority(nice)  # before loading: the model's thread pools inherit it
        cfg = load_config(None, [f"{kind}.threads={threads}"])
        if kind == "stt":
            from models.registry import load_whisper
            from pipeline.audio.convert import load_audio, to_float32

            model = load_whisper(cfg)
            audio = to_float32(load_audio(wav, 16000))

            def step():
                segs, _ = model.transcribe(audio, language="en", beam_size=1, vad_filter=False,
                                           without_timestamps=True, condition_on_previous_text=False)
                return " ".join(s.text for s in segs)
        else:
            from models.registry import load_kokoro

            tts = load_kokoro(cfg)

            def step():
                return tts.create(TTS_LOAD_TEXT, voice=cfg.tts.voice, speed=cfg.tts.speed, lang=cfg.tts.lang)
        step()  # warm-up
        ready.set()
        go.wait(120)
        times = []
        while not stop.is_set():
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        results.put({"kind": kind, "iterations": len(times), "mean_iter_s": r4(np.mean(times)) if times else None,
                     "busy_s": r4(sum(times))})
    except Exception as e:  # report, never hang the parent
        ready.set()
        results.put({"kind": kind, "error": f"{type(e).__name__}: {e}"})


def thread_nices(pid: int) -> list[int]:
    out = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            f = _stat_fields(pid, tid)
            if f:
                out.append(int(f[16]))
    return sorted(set(out))


def thread_cpu_by_nice(pid: int) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            f = _stat_fields(pid, tid)
            if f:
                d = out.setdefault(int(f[16]), {"threads": 0, "cpu_s": 0.0})
                d["threads"] += 1
                d["cpu_s"] += (int(f[11]) + int(f[12])) / CLK_TCK
    return out


@contextlib.contextmanager
def env_var(name: str, value: str | None):
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def load_phase(engine, label: str, threads: int, nice: int, seconds: float, hz: float, chain: list[str],
               wav: str, omp_threads: str | None) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # never fork a process that runs Ray
    go, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    procs, readies = [], []
    # OMP_NUM_THREADS also sizes numpy's OpenBLAS pool (faster-whisper's features), whose
    # threads start at numpy import, before any nice: Ray sets it to 1 in actors
    # (num_cpus=0), a plain process leaves it unset (one BLAS thread per core, nice 0)
    with env_var("OMP_NUM_THREADS", omp_threads):
        for kind in ("stt", "tts"):
            ready = ctx.Event()
            p = ctx.Process(target=_load_worker, args=(kind, threads, nice, wav, ready, go, stop, results),
                            name=f"load-{kind}", daemon=True)
            p.start()
            procs.append(p)
            readies.append(ready)
    out: dict[str, Any] = {"threads_each": threads, "nice": nice, "seconds": seconds,
                           "OMP_NUM_THREADS": omp_threads or "unset"}
    try:
        t = time.monotonic()
        for r in readies:
            r.wait(max(1.0, 120 - (time.monotonic() - t)))
        out["model_load_s"] = round(time.monotonic() - t, 2)
        out["load_thread_nice"] = {p.name: thread_nices(p.pid) for p in procs}
        pinger = Pinger(engine, chain, hz)
        fc = ForeignCPU()
        threads0 = {p.name: thread_cpu_by_nice(p.pid) for p in procs}
        go.set()
        pinger.start()
        time.sleep(seconds)
        pinger.stop()
        out["cpu"] = fc.done()
        threads1 = {p.name: thread_cpu_by_nice(p.pid) for p in procs}
        # CPU each load process spent at each nice value during the window: shows the
        # model's busy threads really ran at the nice asked for
        out["load_cpu_s_by_thread_nice"] = {
            n: {f"nice {k}": {"threads": v["threads"], "cpu_s": round(v["cpu_s"] - threads0[n].get(k, {}).get("cpu_s", 0), 2)}
                for k, v in threads1[n].items()} for n in threads1}
        stop.set()
        got = []
        for _ in procs:
            with contextlib.suppress(Exception):
                got.append(results.get(timeout=60))
        out["workers"] = {g["kind"]: g for g in got}
        out["ping"] = ping_stats(pinger.samples)
        out["ping_errors"] = pinger.errors
    finally:
        stop.set()
        go.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    print(f"  load {label}: hop rtt p50 {out['ping']['all_rtt'].get('p50')} ms, "
          f"p99 {out['ping']['all_rtt'].get('p99')} ms, max {out['ping']['all_rtt'].get('max')} ms", flush=True)
    return out


def idle_phase(engine, seconds: float, hz: float, chain: list[str]) -> dict[str, Any]:
    pinger = Pinger(engine, chain, hz)
    fc = ForeignCPU()
    pinger.start()
    time.sleep(seconds)
    pinger.stop()
    return {"seconds": seconds, "cpu": fc.done(), "ping": ping_stats(pinger.samples), "ping_errors": pinger.errors}


# ====================================================================== CPU share of the audio path
def cpu_share_phase(engine, pids: dict[str, int], seconds: float, tmp: Path) -> dict[str, Any]:
    import ray

    wav = tmp / "silence.wav"
    write_silence(wav, seconds + 2.0)
    mine = descendants(os.getpid())
    infra = {ray_label(p): p for p in mine if proc_comm(p) in ("raylet", "gcs_server")}
    watch = {f"actor:{n}": pids[n] for n in ("mic", "vad", "session")} | infra
    others = {f"actor:{n}": p for n, p in pids.items() if n not in ("mic", "vad", "session")}
    for p in sorted(mine):
        if p in watch.values() or p in others.values() or not proc_cmdline(p):
            continue
        lab = ray_label(p)
        others[lab if lab not in others else f"{lab}[{p}]"] = p
    mic = engine.actors["mic"]
    ray.get(mic.start_file.remote(str(wav), True))
    try:
        time.sleep(0.5)  # let the feed settle
        fc = ForeignCPU()
        before = {k: proc_cpu_s(p) for k, p in (watch | others).items()}
        t = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - t
        after = {k: proc_cpu_s(p) for k, p in (watch | others).items()}
        cpu = fc.done()
    finally:
        ray.get(mic.stop.remote())
    used = {k: (after[k] - before[k]) for k in before if before[k] is not None and after[k] is not None}
    per = {k: round(100 * v / wall, 2) for k, v in used.items()}
    audio_path = sum(used[k] for k in watch if k in used)
    return {"seconds": round(wall, 2), "note": "mic feeding silence in real time; % of one core",
            "audio_path_pct_of_one_core": round(100 * audio_path / wall, 2),
            "audio_path_processes_pct": {k: per[k] for k in watch if k in per},
            "other_ray_processes_pct": {k: per[k] for k in others if k in per},
            "all_ray_pct_of_one_core": round(100 * sum(used.values()) / wall, 2), "machine": cpu}


# ====================================================================== turns
def run_turn(engine, q: dict[str, Any], out_wav: Path, endpoint_s: float, timeout: float) -> dict[str, Any]:
    import ray

    t_call = time.time()
    res = engine.talk(q["path"], str(out_wav), realtime=True, timeout=timeout)
    wall = time.time() - t_call
    snap = engine.snapshot()
    t0 = snap["globals"].get("input_started")
    new_turns = [t for t in snap["turns"] if t0 is not None and t["events"].get("user_speech_started", 0) >= t0]
    ev, info = res.events, res.info
    info = dict(info)
    chunks = res.info.get("chunks") or []
    row: dict[str, Any] = {"question": q["index"], "transcript": res.transcript, "reply": res.reply,
                           "first_chunk_text": chunks[0].get("text") if chunks else None,
                           "state": res.state, "errors": res.errors, "talk_wall_s": round(wall, 3),
                           "turns_in_talk": len(new_turns), "t0": t0,
                           "true_speech_end_s": q["true_speech_end_s"],
                           "events": {k: ev[k] for k in EVENT_ORDER if k in ev},
                           "info": {k: r4(v) if isinstance(v, (int, float)) else v for k, v in info.items()
                                    if k != "chunks"}}
    need = ("user_speech_started", "user_speech_stopped", "transcript_final", "llm_first_token", "tts_first_audio",
            "first_reply_sample_out")
    ok = (res.state == "done" and not res.errors and all(k in ev for k in need) and ev["user_speech_started"] >= 0
          and all(info.get(k) is not None for k in ("stt_s", "ttft_s", "synth_s", "speech_end_audio")))
    row["valid"] = bool(ok)
    if not ok:
        return row
    end = q["true_speech_end_s"]
    # the endpointer counts 32 ms windows, one per hop (the mic's block)
    hop = engine.cfg.audio.input_block_ms / 1000
    endpoint_eff = 0.032 + (Endpointer(hop_s=hop).windows_spanning(endpoint_s) - 1) * hop
    v2v = ev["first_reply_sample_out"] - end
    transcript_delay = ev["transcript_final"] - ev["user_speech_stopped"]
    m = {
        "vad_endpoint_delay_s": ev["user_speech_stopped"] - end,
        "stt_s": info["stt_s"],
        "transcript_delay_after_endpoint_s": transcript_delay,
        "llm_ttft_s": info["ttft_s"],
        "tts_first_audio_synth_s": info["synth_s"],
        "voice_to_voice_s": v2v,
        "pipeline_overhead_s": v2v - endpoint_s - transcript_delay - info["ttft_s"] - info["synth_s"],
        "hop_transcript_to_llm_s": ev["llm_first_token"] - ev["transcript_final"] - info["ttft_s"],
    }
    # The critical path from the true speech end to the first sample heard, piece by
    # piece (sums to voice_to_voice_s). With the preemptive reply the STT and the LLM
    # run inside the endpoint silence, so only what is still left at the endpoint counts.
    stop, first_tok, tts = ev["user_speech_stopped"], ev["llm_first_token"], ev["tts_first_audio"]
    b = {
        "vad_hangover_s": info["speech_end_audio"] - end,  # where the VAD put the end vs the true end
        "endpoint_silence_s": endpoint_eff,
        "vad_decision_to_event_s": stop - info["speech_end_audio"] - endpoint_eff,
        "llm_first_token_after_endpoint_s": max(0.0, first_tok - stop),
        "first_clause_and_tts_after_endpoint_s": max(0.0, tts - max(first_tok, stop)),
        "tts_to_first_sample_out_s": ev["first_reply_sample_out"] - max(tts, stop),
    }
    row["metrics"] = {k: r4(v) for k, v in m.items()}
    row["breakdown"] = {k: r4(v) for k, v in b.items()}
    # wall-clock windows (for classifying the pings taken meanwhile)
    a = {k: v + t0 for k, v in ev.items()}
    row["windows"] = {"stt": [a["transcript_final"] - info["stt_s"], a["transcript_final"]],
                      "tts_first": [a["tts_first_audio"] - info["synth_s"], a["tts_first_audio"]],
                      "reply_playback": [a["first_reply_sample_out"], a.get("reply_done", a["first_reply_sample_out"])]}
    return row


def classify_pings(samples: list[tuple], rows: list[dict[str, Any]]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {"stt_running": [], "tts_first_chunk_running": [], "reply_playback": [],
                                   "listening_or_between": []}
    wins = [r["windows"] for r in rows if r.get("windows")]
    for s in samples:
        t = s[2]
        where = "listening_or_between"
        for w in wins:
            if w["stt"][0] <= t <= w["stt"][1]:
                where = "stt_running"
                break
            if w["tts_first"][0] <= t <= w["tts_first"][1]:
                where = "tts_first_chunk_running"
                break
            if w["reply_playback"][0] <= t <= w["reply_playback"][1]:
                where = "reply_playback"  # later chunks are synthesized during it
        out[where].append(s)
    return out


# ====================================================================== report
def summary_lines(res: dict[str, Any]) -> list[str]:
    L = []
    mi = res["machine"]
    L.append(f"machine: {mi['nproc']} cores, {mi['cpu_model']}; ray {mi['ray']}; llm: {res['llm']['kind']}"
             f" (ttft {res['llm'].get('ttft_s', 'real')} s)")
    st = res["startup"]
    L.append(f"startup: ray {st['engine_timings'].get('ray_start_s', 0):.2f} s, engine {st['engine_timings'].get('start_s', 0):.2f} s;"
             f" ray RSS ours {st['ray_memory_after_start']['ours_mb']:.0f} MB"
             f" (all 'ray' procs {st['ray_memory_before_start']['all_matching_mb']:.0f} -> "
             f"{st['ray_memory_after_start']['all_matching_mb']:.0f} MB)")
    t = res["turns"]
    L.append(f"turns: {t['valid']}/{t['count']} valid (+{t['warmup_count']} warm-up)")
    L.append(f"  {'metric (s)':36} {'p50':>7} {'p95':>7} {'mean':>7}")
    for k, v in t["metrics"].items():
        if v.get("n"):
            L.append(f"  {k:36} {v['p50']:7.3f} {v['p95']:7.3f} {v['mean']:7.3f}")
    ref = REFERENCE["pipecat_1.14_voice_to_voice_p50_s"]
    v2v = t["metrics"].get("voice_to_voice_s", {}).get("p50")
    if v2v is not None:
        L.append(f"  voice-to-voice p50 {v2v:.3f} s vs reference pipecat 1.14 p50 {ref:.2f} s "
                 f"({v2v - ref:+.3f} s)")
    items = [f"{k.removesuffix('_s')} {v['p50']:.3f}" for k, v in t["breakdown"].items() if v.get("n")]
    L.append("  v2v breakdown, p50 s (sums to ~v2v):")
    for i in range(0, len(items), 3):
        L.append("    " + ", ".join(items[i:i + 3]))
    L.append(f"{'hop rtt (ms)':36} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>8} {'n':>5}")

    def hop(name, st):
        a = st["all_rtt"]
        if a.get("n"):
            L.append(f"  {name:34} {a['p50']:7.2f} {a['p95']:7.2f} {a['p99']:7.2f} {a['max']:8.2f} {a['n']:5d}")

    hop("idle (engine idle)", res["hops"]["idle"]["ping"])
    for k, v in res["hops"]["during_turns"].items():
        hop(f"turns: {k}", v)
    hop("load nice0, 2 thr each", res["hops"]["load_naive"]["ping"])
    hop("load nice10, 1 thr each", res["hops"]["load_limited"]["ping"])
    for k in ("load_naive", "load_limited"):
        w = res["hops"][k].get("workers", {})
        L.append(f"  {k}: " + ", ".join(f"{n} {d.get('iterations')} it ({d.get('mean_iter_s')} s/it)"
                                        if "error" not in d else f"{n} ERROR {d['error']}" for n, d in w.items())
                 + "; load CPU s by thread nice: " + "; ".join(
                     f"{n.removeprefix('load-')} " + ", ".join(f"{kk} {vv['cpu_s']:.1f}" for kk, vv in d.items())
                     for n, d in res["hops"][k].get("load_cpu_s_by_thread_nice", {}).items()))
    c = res["ray_cpu_audio_path"]
    L.append(f"ray CPU on the audio path (silence, realtime): {c['audio_path_pct_of_one_core']:.1f}% of one core "
             f"({', '.join(f'{k} {v:.1f}' for k, v in c['audio_path_processes_pct'].items())}); "
             f"all ray {c['all_ray_pct_of_one_core']:.1f}%")
    fp = [res["turns"].get("cpu", {}).get("foreign_pct_of_one_core"), c["machine"]["foreign_pct_of_one_core"],
          res["hops"]["idle"]["cpu"]["foreign_pct_of_one_core"], res["hops"]["load_naive"].get("cpu", {}).get("foreign_pct_of_one_core"),
          res["hops"]["load_limited"].get("cpu", {}).get("foreign_pct_of_one_core")]
    L.append("foreign CPU (other processes) % of one core, turns/cpu/idle/naive/limited: "
             + "/".join("-" if x is None else f"{x:.0f}" for x in fp)
             + ("  <-- DISTURBED: another workload was running" if any((x or 0) > 15 for x in fp) else ""))
    return L


def plot(res: dict[str, Any], png: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401
    except ImportError:
        return "matplotlib not installed: no PNG"
    rows = [r for r in res["turns"]["rows"] if r.get("valid")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    if rows:
        groups = {
            "VAD hangover + endpoint": ("vad_hangover_s", "endpoint_silence_s", "vad_decision_to_event_s"),
            "LLM first token after endpoint": ("llm_first_token_after_endpoint_s",),
            "1st clause + TTS after endpoint": ("first_clause_and_tts_after_endpoint_s",),
            "TTS -> first sample out": ("tts_to_first_sample_out_s",),
        }
        x = np.arange(len(rows))
        bottom = np.zeros(len(rows))
        for name, keys in groups.items():
            h = np.array([sum(r["breakdown"][k] for k in keys) for r in rows])
            ax1.bar(x, h, bottom=bottom, label=name)
            bottom += h
        ax1.axhline(REFERENCE["pipecat_1.14_voice_to_voice_p50_s"], color="k", ls="--", lw=1,
                    label="pipecat 1.14 p50 (1.64 s)")
        ax1.set_xticks(x, [f"q{r['question']}" for r in rows])
        ax1.set_ylabel("seconds from true speech end")
        ax1.set_title("voice-to-voice, per turn (stacked breakdown)")
        ax1.set_ylim(0, max(bottom.max(), 1.64) * 1.5)
        ax1.legend(fontsize=7, loc="upper left", ncol=2)
    conds = {"idle": res["hops"]["idle"]["ping"], **{f"turns:{k}": v for k, v in res["hops"]["during_turns"].items()},
             "load nice0 2thr": res["hops"]["load_naive"].get("ping", {}),
             "load nice10 1thr": res["hops"]["load_limited"].get("ping", {})}
    names = [k for k, v in conds.items() if v.get("all_rtt", {}).get("n")]
    x = np.arange(len(names))
    for i, q in enumerate(("p50", "p95", "p99", "max")):
        ax2.bar(x + (i - 1.5) * 0.2, [conds[n]["all_rtt"][q] for n in names], 0.2, label=q)
    ax2.set_yscale("log")
    top = max([conds[n]["all_rtt"]["max"] for n in names] or [10])
    ax2.set_yticks([t for t in (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if t <= top * 2])
    ax2.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax2.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax2.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
    ax2.set_ylabel("ping round trip (ms)")
    ax2.set_title("Ray actor hop latency")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return str(png)


# ====================================================================== main
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=None, help="measured turns (default 10; --quick: 3)")
    ap.add_argument("--warmup-turns", type=int, default=1, help="untimed turns first (default 1)")
    ap.add_argument("--quick", action="store_true", help="few turns, short phases (~2 min)")
    ap.add_argument("--embedded", action="store_true", help="use the embedded llama.cpp server, not the FakeLLM")
    ap.add_argument("--ttft", type=float, default=0.2, help="FakeLLM time to first token (s)")
    ap.add_argument("--reply", default=DEFAULT_REPLY, help="FakeLLM reply")
    ap.add_argument("--tokens-per-s", type=float, default=50.0, help="FakeLLM token rate")
    ap.add_argument("--ping-hz", type=float, default=50.0, help="pings a second (round robin over the probes)")
    ap.add_argument("--no-turn-pings", action="store_true",
                    help="do not ping during the turns (to see what the pinging itself costs them)")
    ap.add_argument("--load-s", type=float, default=None, help="seconds per load condition (default 8; quick 3)")
    ap.add_argument("--idle-s", type=float, default=None, help="idle ping baseline seconds (default 5; quick 2)")
    ap.add_argument("--cpu-s", type=float, default=None, help="silence feed for the CPU share (default 10; quick 4)")
    ap.add_argument("--energy-threshold-db", type=float, default=-40.0,
                    help="speech = 10 ms frames within this many dB of the loudest frame")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-turn timeout (s)")
    ap.add_argument("--config", help="TOML profile (default: configs/default.toml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=str(RESULTS_DIR / "turn_latency.json"))
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--plot-only", metavar="JSON", help="only draw the PNG from a result JSON")
    a = ap.parse_args(argv)
    a.turns = a.turns if a.turns is not None else (3 if a.quick else 10)
    a.load_s = a.load_s if a.load_s is not None else (3.0 if a.quick else 8.0)
    a.idle_s = a.idle_s if a.idle_s is not None else (2.0 if a.quick else 5.0)
    a.cpu_s = a.cpu_s if a.cpu_s is not None else (4.0 if a.quick else 10.0)
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plot_only:
        res = json.loads(Path(args.plot_only).read_text())
        print(plot(res, Path(args.plot_only).with_suffix(".png")))
        return 0
    from pipeline.config import ConfigError, load_config, to_dict
    from tests.rigs.fake_llm import FakeLLM
    from pipeline.runtime.engine import Engine
    from pipeline.runtime.ray_init import shutdown_ray

    t_all = time.monotonic()
    out_json = Path(args.out)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="turn_latency_")
    tmp = Path(tmp_ctx.name)
    res: dict[str, Any] = {"benchmark": "turn_latency", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "reference": REFERENCE, "machine": machine_info(),
                           "params": {k: v for k, v in vars(args).items() if k not in ("plot_only",)}}
    questions = make_questions(tmp, args.energy_threshold_db)
    res["questions"] = [{k: v for k, v in q.items() if k != "path"} for q in questions]
    print(f"{len(questions)} questions spoken by espeak-ng; true speech ends "
          f"{[q['true_speech_end_s'] for q in questions]} s", flush=True)

    fake = contextlib.nullcontext() if args.embedded else FakeLLM(args.reply, args.ttft, args.tokens_per_s)
    engine = None
    with fake as f:
        # The scripted LLM stands for a remote provider: it burns no CPU here, so the TTS
        # may spin as it does with tts.spin=auto and a remote llm.base_url.
        overrides = ([] if args.embedded else [f"llm.base_url={f.base_url}", "tts.spin=true"]) + list(args.overrides)
        try:
            cfg = load_config(args.config, overrides)
        except ConfigError as e:
            print(f"config error: {e}", file=sys.stderr)
            return 2
        res["config"] = to_dict(cfg)
        res["llm"] = ({"kind": "embedded llama.cpp"} if args.embedded else
                      {"kind": "FakeLLM", "ttft_s": args.ttft, "tokens_per_s": args.tokens_per_s, "reply": args.reply})
        endpoint_s = cfg.vad.endpoint_silence_ms / 1000
        try:
            mem_before = ray_memory(exclude=set())
            print("starting engine ...", flush=True)
            engine = Engine(cfg, tmp / "logs")
            (tmp / "logs").mkdir(exist_ok=True)
            engine.start()
            time.sleep(1.0)  # let Ray's helper processes finish starting before reading RSS
            mem_after = ray_memory(exclude=set())
            pids = actor_pids(engine)
            res["startup"] = {"engine_timings": {k: round(v, 3) for k, v in engine.timings.items()},
                              "ray_start_s": round(engine.timings.get("ray_start_s", 0.0), 3),
                              "ray_memory_before_start": mem_before, "ray_memory_after_start": mem_after,
                              "actor_pids": pids}
            print(f"engine up in {engine.timings['start_s']:.1f} s (ray {engine.timings['ray_start_s']:.1f} s); "
                  f"ray RSS {mem_after['ours_mb']:.0f} MB", flush=True)

            # ---------------------------------------------------------- turns
            rows, warm = [], []
            for i in range(args.warmup_turns):
                warm.append(run_turn(engine, questions[i % len(questions)], tmp / f"warm{i}.wav", endpoint_s,
                                     args.timeout))
            pinger = Pinger(engine, ["vad", "player"], args.ping_hz)
            fc = ForeignCPU()
            if not args.no_turn_pings:
                pinger.start()
            try:
                for i in range(args.turns):
                    q = questions[i % len(questions)]
                    row = run_turn(engine, q, tmp / f"reply{i}.wav", endpoint_s, args.timeout)
                    rows.append(row)
                    m = row.get("metrics", {})
                    print(f"  turn {i + 1}/{args.turns} q{q['index']}: "
                          + (f"v2v {m['voice_to_voice_s']:.3f} s, endpoint {m['vad_endpoint_delay_s']:.3f}, "
                             f"stt {m['stt_s']:.3f}, ttft {m['llm_ttft_s']:.3f}, synth {m['tts_first_audio_synth_s']:.3f}, "
                             f"overhead {m['pipeline_overhead_s']:.3f}  | {row['transcript']!r}"
                             if row["valid"] else f"INVALID state={row['state']} errors={row['errors']} "
                                                  f"transcript={row['transcript']!r}"), flush=True)
            finally:
                if pinger.is_alive():
                    pinger.stop()
            turn_cpu = fc.done()
            valid = [r for r in rows if r["valid"]]
            res["turns"] = {
                "count": len(rows), "valid": len(valid), "warmup_count": len(warm), "cpu": turn_cpu,
                "metrics": {k: pct([r["metrics"][k] for r in valid]) for k in (valid[0]["metrics"] if valid else {})},
                "breakdown": {k: pct([r["breakdown"][k] for r in valid])
                              for k in (valid[0]["breakdown"] if valid else {})},
                "breakdown_note": "breakdown: the critical path, items sum to voice_to_voice_s (STT and LLM "
                                  "work done inside the endpoint silence by the preemptive reply is not on it). "
                                  "pipeline_overhead_s = v2v - vad.endpoint_silence_ms - "
                                  "transcript_delay_after_endpoint - ttft - synth: negative when the preemptive "
                                  "reply overlapped model work with the endpoint silence. hop_transcript_to_llm_s "
                                  "is negative for the same reason (the request left before the final transcript).",
                "rows": rows, "warmup_rows": warm,
            }
            by_window = classify_pings(pinger.samples, valid)
            res["hops"] = {"during_turns": {"all": ping_stats(pinger.samples)}}
            res["hops"]["during_turns"].update({k: ping_stats(v, by_probe=False) for k, v in by_window.items() if v})
            res["hops"]["during_turns_errors"] = pinger.errors
            res["engine_stats_after_turns"] = engine.stats()

            # ---------------------------------------------------------- Ray CPU on the audio path
            print(f"ray CPU share: mic feeding {args.cpu_s:.0f} s of silence ...", flush=True)
            res["ray_cpu_audio_path"] = cpu_share_phase(engine, pids, args.cpu_s, tmp)

            # ---------------------------------------------------------- hop latency under load
            chain = ["mic", "vad", "stt", "session", "llm", "tts", "player"]
            res["hops"]["chain"] = chain
            print(f"hop latency: idle {args.idle_s:.0f} s, then 2 x {args.load_s:.0f} s of STT+TTS load ...", flush=True)
            res["hops"]["idle"] = idle_phase(engine, args.idle_s, args.ping_hz, chain)
            wav = questions[2]["path"]
            res["hops"]["load_naive"] = load_phase(engine, "nice 0, 2 threads", 2, 0, args.load_s, args.ping_hz,
                                                   chain, wav, None)
            res["hops"]["load_limited"] = load_phase(engine, "nice 10, 1 thread", 1, 10, args.load_s,
                                                     args.ping_hz, chain, wav, "1")
        except (Exception, KeyboardInterrupt):
            res["error"] = traceback.format_exc()
        finally:
            if engine is not None:
                engine.shutdown()
            shutdown_ray()
    time.sleep(1.0)
    res["ray_processes_left_after_shutdown"] = ray_memory(exclude=set())["ours_by_process_mb"]
    res["total_runtime_s"] = round(time.monotonic() - t_all, 1)
    res["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    tmp_ctx.cleanup()

    out_json.write_text(json.dumps(res, indent=2, default=_json_default))
    print()
    try:
        print("\n".join(summary_lines(res)))
        if not args.no_plot:
            print(plot(res, out_json.with_suffix(".png")))
    except Exception as e:  # a partial result (a phase failed): the JSON says what is there
        print(f"(summary incomplete: {type(e).__name__}: {e})")
    if "error" in res:
        print(f"ERROR during the run:\n{res['error']}", file=sys.stderr)
    print(f"total {res['total_runtime_s']:.0f} s; results: {out_json}")
    return 0 if res.get("turns", {}).get("valid") and "error" not in res else 1


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
