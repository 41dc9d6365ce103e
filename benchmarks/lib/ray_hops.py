"""What Ray costs on the engine's path: ping round trips over the actors' control and data
lanes (idle, during turns, under STT+TTS load in separate processes), and the CPU share of
the audio-path actors while the mic feeds silence."""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.lib.procfs import (ForeignCPU, descendants, proc_cmdline, proc_comm, proc_cpu_s, ray_label,
                                   thread_cpu_by_nice, thread_nices)
from benchmarks.lib.stats import pct, r4

TTS_LOAD_TEXT = "That's a good question. The short answer is that it depends on who you ask."


def actor_pids(engine) -> dict[str, int]:
    import ray

    refs = {n: a.__ray_call__.remote(lambda self: os.getpid()) for n, a in engine.named_handles().items()}
    return {n: ray.get(r, timeout=30) for n, r in refs.items()}


class Pinger(threading.Thread):
    """Round-robin pings over (actor, lane) probes at ``hz`` pings a second in all."""

    def __init__(self, engine, names: list[str], hz: float) -> None:
        super().__init__(name="pinger", daemon=True)
        self.probes = [(f"{n}.{lane}", lane, getattr(engine.named_handles()[n], "ping" if lane == "control" else "ping_data"))
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


def write_silence(path: Path, seconds: float) -> None:
    from pipeline.audio.convert import write_wav

    write_wav(path, np.zeros(int(16000 * seconds), np.int16), 16000)


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
    ray.get(mic.start_file.remote(str(wav), engine.open_conversation(engine.voice_session, "player"), True))
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
