"""The echo benchmark's runs: each reply and path through the canceller (cold, warm), double
talk, the user with no echo, headphones, a clipping speaker, the threshold sweep, and the
backend's cost."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.lib.echo_measure import (THRESHOLDS, Silero, cancel, convergence, detection, erle_energy,
                                         residual_stats, speech_onset_end, starts, summarize_detection)
from benchmarks.lib.echo_scene import DELAYS_MS, LEAD_S, dbfs, i16, noise, scene, twice, warm_then
from pipeline.audio.echo_cancel import BLOCK, PLAYBACK_VAD_THRESHOLD, RATE


def backend_cost() -> dict:
    """Import time, RSS and native threads of the backend, in a fresh interpreter."""
    code = r"""
import json, os, time
import numpy as np
def rss():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')) / 1024
def threads():
    return len(os.listdir('/proc/self/task'))
r0, th0 = rss(), threads()
t = time.perf_counter()
from livekit import rtc
t_import = time.perf_counter() - t
r1 = rss()
from pipeline.audio.echo_cancel import EchoCanceller
t = time.perf_counter()
aec = EchoCanceller()
t_create = time.perf_counter() - t
x = np.zeros(512, np.int16)
for _ in range(300):
    aec.process(x, x)
print(json.dumps({"import_s": round(t_import, 3), "create_s": round(t_create, 4),
                  "rss_before_mb": round(r0, 1), "rss_after_import_mb": round(r1, 1),
                  "rss_after_10s_of_audio_mb": round(rss(), 1), "threads_added": threads() - th0}))
"""
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def echo_only(fars: dict, sil: Silero, costs: list) -> tuple[dict, dict]:
    """Each reply played twice (cold, then warm) through each acoustic path."""
    rows: dict = {}
    gated = {"false_starts": 0, "windows_over_threshold": 0, "runs": 0}
    for name, far in fars.items():
        for room in (False, True):
            for d in DELAYS_MS:
                s = scene(far, d, room)
                n = len(s["near"])
                r = cancel(twice(s)["near"], twice(s)["far"])
                costs.append(r["cost"])
                y = r["out"]
                p = sil.probs(y)
                m = n // BLOCK
                praw = sil.probs(s["near"])
                cold_ge = np.flatnonzero(p[:m] >= 0.5)
                row = {
                    "erle_cold_db": erle_energy(s["near"], y[:n], s["echo"]),
                    "erle_warm_db": erle_energy(s["near"], y[n:], s["echo"]),
                    **convergence(s["near"], y[:n], s["echo"], LEAD_S),
                    "echo_dbfs": round(dbfs(s["echo"][s["far"] != 0]), 1),
                    "silero_raw_echo": {"max": round(float(praw.max()), 3),
                                        "frac_ge_0.5": round(float(np.mean(praw >= 0.5)), 3),
                                        "false_starts_0.5": starts(praw, 0.5)},
                    "silero_residual_cold": residual_stats(p[:m], LEAD_S),
                    "silero_residual_warm": residual_stats(p[m:], LEAD_S),
                    # evidence for warmup_s: seconds of reference AEC3 had seen at the last
                    # cold residual window >= 0.5
                    "reference_s_at_last_cold_window_ge_0.5":
                        round(float(r["ref_s"][cold_ge[-1]]), 2) if len(cold_ge) else None,
                }
                gated["false_starts"] += starts(p, r["thr"])
                gated["windows_over_threshold"] += int(np.sum(p >= r["thr"]))
                gated["runs"] += 1
                rows[f"{name}/{'room' if room else 'direct'}/{d}ms"] = row
                print(f"echo {name:10s} {'room' if room else 'direct':6s} {d} ms: ERLE cold {row['erle_cold_db']} "
                      f"warm {row['erle_warm_db']} dB, conv {row['convergence_s']} s, residual max cold "
                      f"{row['silero_residual_cold']['max']} warm {row['silero_residual_warm']['max']}", flush=True)
    return rows, gated


def double_talk(fars: dict, users: dict, sil: Silero, costs: list) -> dict:
    """User phrases over the echo of Kokoro replies, cold (first reply) and warm (after one
    reply), at several moments and levels; per threshold, how fast and how much is heard."""
    at_s = (1.2, 2.5, 4.0, 6.0)  # in the scene; the reply starts at LEAD_S
    gains = (0.0, -6.0)
    rows: dict = {state: {str(t): [] for t in THRESHOLDS} | {"gated": []} for state in ("cold", "warm")}
    levels: dict = {str(g): [] for g in gains}
    for name, far in fars.items():
        for room in (False, True):
            for d in DELAYS_MS:
                warm = scene(far, d, room)
                for un, user in users.items():
                    on, end = speech_onset_end(user)
                    for at in at_s:
                        for g in gains:
                            s = scene(far, d, room, user, at, g)
                            seg = slice(int((at + on) * RATE), int((at + end) * RATE))
                            levels[str(g)].append(dbfs(s["user"][seg]) - dbfs(s["echo"][seg]))
                            for state in ("cold", "warm"):
                                if state == "cold":
                                    r = cancel(s["near"], s["far"])
                                    y, thr = r["out"], r["thr"]
                                else:
                                    w = warm_then(warm, s)
                                    r = cancel(w["near"], w["far"])
                                    k = len(warm["near"])
                                    y, thr = r["out"][k:], r["thr"][k // BLOCK:]
                                costs.append(r["cost"])
                                p = sil.probs(y)
                                for t in THRESHOLDS:
                                    rows[state][str(t)].append(detection(p, at + on, at + end, t))
                                rows[state]["gated"].append(detection(p, at + on, at + end, thr))
                print(f"double talk {name} {'room' if room else 'direct'} {d} ms done", flush=True)
    out = {"user_at_s": list(at_s), "reply_starts_at_s": LEAD_S, "user_gain_db": list(gains),
           "user_minus_echo_db_median": {g: round(float(np.median(v)), 1) for g, v in levels.items()}}
    for state in rows:
        out[state] = {k: summarize_detection(v) for k, v in rows[state].items()}
    return out


def clean_reference(users: dict, sil: Silero) -> dict:
    """The user phrases with no echo and no AEC: the detection lag Silero itself has."""
    res = {}
    for un, user in users.items():
        on, end = speech_onset_end(user)
        x = i16(np.concatenate([np.zeros(int(LEAD_S * RATE)), user.astype(np.float64)]) + noise(len(user) + 8000))
        p = sil.probs(x)
        res[un] = {str(t): detection(p, LEAD_S + on, LEAD_S + end, t) for t in (0.5, PLAYBACK_VAD_THRESHOLD, 0.9)}
    return res


def far_silent(users: dict, sil: Silero) -> dict:
    """Nothing plays: the user's voice must come through (AEC3 still high-passes it)."""
    res = {}
    for un, user in users.items():
        n = (len(user) + RATE) // BLOCK * BLOCK
        near = np.zeros(n)
        near[8000:8000 + len(user)] = user
        near = i16(near + noise(n))
        r = cancel(near, np.zeros(n, np.int16))
        y = r["out"].astype(np.float64)
        x = near.astype(np.float64)
        spec = lambda v: np.abs(np.fft.rfft(v)) ** 2  # noqa: E731
        f = np.fft.rfftfreq(n, 1 / RATE)
        X, Y = spec(x), spec(y)
        bands = {}
        for lo, hi in ((0, 80), (80, 200), (200, 4000), (4000, 8000)):
            b = (f >= lo) & (f < hi)
            bands[f"{lo}-{hi}Hz"] = round(10 * math.log10(Y[b].sum() / X[b].sum()), 1)
        snr = {}  # waveform match above a frequency (AEC3's high-pass and its filterbank change the phase)
        for lo in (200, 1000, 2000):
            hp = f >= lo
            xs = np.fft.irfft(np.where(hp, np.fft.rfft(x), 0), n)
            ys = np.fft.irfft(np.where(hp, np.fft.rfft(y), 0), n)
            snr[f"above_{lo}Hz"] = round(dbfs(xs) - dbfs(ys - xs), 1)
        px, py = sil.probs(near), sil.probs(r["out"])
        on, end = speech_onset_end(user)
        res[un] = {"level_change_db": round(dbfs(y) - dbfs(x), 2), "band_change_db": bands,
                   "waveform_snr_db": snr,
                   "silero_max_abs_diff": round(float(np.abs(px - py).max()), 3),
                   "detect_in": detection(px, 0.5 + on, 0.5 + end, 0.5),
                   "detect_out": detection(py, 0.5 + on, 0.5 + end, 0.5)}
    return res


def no_echo(far: np.ndarray, user: np.ndarray, sil: Silero) -> dict:
    """Headphones: the reply plays twice but the mic hears no echo. Silence in the mic
    must stay silence; a user speaking is suppressed until AEC3 learns there is no echo."""
    full = np.concatenate([np.zeros(int(LEAD_S * RATE)), far.astype(np.float64), far.astype(np.float64),
                           np.zeros(RATE)])
    n = len(full) // BLOCK * BLOCK
    full = i16(full[:n])
    quiet = i16(noise(n))
    r = cancel(quiet, full)
    p = sil.probs(r["out"])
    res = {"near_silent": {"in_dbfs": round(dbfs(quiet), 1), "out_dbfs": round(dbfs(r["out"]), 1),
                           "silero_max": round(float(p.max()), 3)}, "user_over_no_echo": []}
    on, end = speech_onset_end(user)
    for at in (1.2, 4.0, 8.0, 12.0):
        near = noise(n)
        k = int(at * RATE)
        near[k:k + len(user)] += user
        near = i16(near)
        r = cancel(near, full)
        p = sil.probs(r["out"])
        seg = slice(k, k + len(user))
        res["user_over_no_echo"].append({"user_at_s": at, "reference_s_before": round(at - LEAD_S, 1),
                                         "level_change_db": round(dbfs(r["out"][seg]) - dbfs(near[seg]), 1),
                                         **detection(p, at + on, at + end, 0.5)})
    return res


def stress(far: np.ndarray, sil: Silero, costs: list) -> dict:
    """Harder than the spec (for information): echo at 0 dB through a clipping speaker."""
    res = {}
    for d in DELAYS_MS:
        s = scene(far, d, True, echo_gain_db=0.0, clip=True)
        n = len(s["near"])
        r = cancel(twice(s)["near"], twice(s)["far"])
        costs.append(r["cost"])
        p = sil.probs(r["out"])
        m = n // BLOCK
        res[f"{d}ms"] = {"erle_cold_db": erle_energy(s["near"], r["out"][:n], s["echo"]),
                         "erle_warm_db": erle_energy(s["near"], r["out"][n:], s["echo"]),
                         "residual_cold": residual_stats(p[:m], LEAD_S),
                         "residual_warm": residual_stats(p[m:], LEAD_S),
                         "gated_false_starts": starts(p, r["thr"])}
    return res


SWEEP_DELAYS_MS = (30, 40, 50, 65, 80, 120)
SWEEP_THRESHOLDS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)


def sweep(fars: dict, sil: Silero, costs: list) -> dict:
    """More acoustic paths for the threshold choice: each Kokoro reply played twice (cold,
    warm) through 6 delays x 2 paths x 3 room seeds x 2 echo levels (-6, -3 dB)."""
    acc = {st: {"false_starts": {str(t): 0 for t in SWEEP_THRESHOLDS},
                "windows_ge": {str(t): 0 for t in SWEEP_THRESHOLDS}, "max": []} for st in ("cold", "warm")}
    last_burst_ref, gated_fs, gated_win, runs = [], 0, 0, 0
    for far in fars.values():
        for room in (False, True):
            for d in SWEEP_DELAYS_MS:
                for seed in (0, 1, 2):
                    for g in (-6.0, -3.0):
                        s = scene(far, d, room, echo_gain_db=g, seed=seed)
                        m = len(s["near"]) // BLOCK
                        r = cancel(twice(s)["near"], twice(s)["far"])
                        costs.append(r["cost"])
                        p = sil.probs(r["out"])
                        runs += 1
                        for st, q in (("cold", p[:m]), ("warm", p[m:])):
                            acc[st]["max"].append(float(q.max()))
                            for t in SWEEP_THRESHOLDS:
                                acc[st]["false_starts"][str(t)] += starts(q, t)
                                acc[st]["windows_ge"][str(t)] += int(np.sum(q >= t))
                        burst = np.flatnonzero(p[:m] >= 0.5)
                        if len(burst):
                            last_burst_ref.append(float(r["ref_s"][burst[-1]]))
                        gated_fs += starts(p, r["thr"])
                        gated_win += int(np.sum(p >= r["thr"]))
    for st in acc:
        mx = np.array(acc[st].pop("max"))
        acc[st]["residual_max"] = {"median": round(float(np.median(mx)), 3),
                                   "p90": round(float(np.percentile(mx, 90)), 3), "max": round(float(mx.max()), 3)}
    print(f"sweep: {runs} runs, gated false starts {gated_fs}", flush=True)
    return {"runs": runs, "delays_ms": list(SWEEP_DELAYS_MS), "echo_gain_db": [-6.0, -3.0], "room_seeds": 3, **acc,
            "cold_runs_with_a_window_ge_0.5": len(last_burst_ref),
            "reference_s_at_last_cold_window_ge_0.5": {
                "max": round(max(last_burst_ref), 2) if last_burst_ref else None,
                "p90": round(float(np.percentile(last_burst_ref, 90)), 2) if last_burst_ref else None},
            "gated_with_module_thresholds": {"false_starts": gated_fs, "windows_over_threshold": gated_win}}


def cpu_quiet(far: np.ndarray) -> dict:
    """CPU per 512-sample call on its own (the in-run figures share the machine with Silero
    and whatever else runs): 3 passes of the reply's echo through a fresh canceller, the best."""
    s = scene(far, 50, True)
    best = None
    for _ in range(3):
        c = cancel(s["near"], s["far"])["cost"] * 1000
        if best is None or c.mean() < best.mean():
            best = c
    return {"mean": round(float(best.mean()), 3), "p50": round(float(np.median(best)), 3),
            "p99": round(float(np.percentile(best, 99)), 3), "calls": int(len(best)),
            "share_of_one_core": round(float(best.mean()) / 32.0, 4)}
