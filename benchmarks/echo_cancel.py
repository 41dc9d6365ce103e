"""Echo cancellation on real speech: how much echo AEC3 removes, and whether Silero still fires.

The engine's voice (Kokoro, resampled 24k -> 16k; also espeak-ng, as the unit
tests use) plays from a simulated speaker: the mic hears it 30, 50 or 80 ms
later at -6 dB, either as a pure delayed copy ("direct") or through a small
room ("room": a speaker low-pass plus a 0.25 s reverb tail), plus low noise.
In the double-talk runs a user phrase (espeak-ng, another voice) is mixed in
while the echo goes on. Everything runs through ``pipeline.audio.echo_cancel.EchoCanceller``
in the mic stage's 512-sample blocks, and Silero (as actors/vad.py runs it)
scores every 32 ms window of:

  (a) the raw echo (what the VAD hears today without AEC),
  (b) the residual echo after AEC (a false start if it crosses the threshold),
  (c) the user phrase during double talk, after AEC.

Every reply is played twice through one canceller: "cold" is the first reply of
a new canceller (AEC3 still converging), "warm" the second. A sweep over more
paths (6 delays, 3 rooms, 2 echo levels) backs the threshold choice. Also: the
far end silent (the user's voice must pass), the mic silent while the reply plays
(headphones), and a clipping speaker at 0 dB (harder than the spec, for info).

Writes benchmarks/results/echo_cancel.json (ERLE per delay, convergence time,
Silero stats, the recommended thresholds while playing, CPU per block, the
backend's import time and RSS). About 3 minutes on 2 cores.

    .venv/bin/python benchmarks/echo_cancel.py
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.audio.convert import read_wav  # noqa: E402
from tests.rigs.espeak import espeak_wav  # noqa: E402
from pipeline.audio.echo_cancel import (BLOCK, PLAYBACK_VAD_THRESHOLD, RATE, WARMUP_S,  # noqa: E402
                                  WARMUP_VAD_THRESHOLD, EchoCanceller)

REPLY = ("Sure, I can help with that. The weather tomorrow looks sunny, with a light breeze in the afternoon. "
         "Would you like me to set a reminder for your morning walk?")
REPLY2 = ("Of course. Paris is the capital of France, and it sits on the river Seine. "
          "Many people visit it every spring to see the gardens.")
USER = "Wait, stop, what about Sunday?"
USER2 = "Hold on, I have a question."
DELAYS_MS = (30, 50, 80)
ECHO_GAIN_DB = -6.0
NOISE_DBFS = -65.0  # RMS of the mic's noise floor
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
RESULT = Path(__file__).resolve().parent / "results" / "echo_cancel.json"


# ------------------------------------------------------------------ signals
def espeak_pcm(text: str, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """espeak-ng speech as 16 kHz mono int16 (sox resamples), no padding."""
    with tempfile.TemporaryDirectory() as d:
        pcm, _ = read_wav(espeak_wav(text, Path(d) / "out.wav", RATE, voice=voice, speed=speed))
    return pcm


def kokoro_pcm(texts: list[str]) -> list[np.ndarray]:
    """Kokoro (the engine's configured voice) at 24 kHz, resampled to 16 kHz as the player's reference."""
    from models.registry import load_kokoro
    from pipeline.audio.convert import Resampler, to_int16
    from pipeline.config import load_config

    cfg = load_config(None)
    tts = load_kokoro(cfg)
    out = []
    for text in texts:
        audio, rate = tts.create(text, voice=cfg.tts.voice, speed=cfg.tts.speed, lang=cfg.tts.lang)
        out.append(Resampler(rate, RATE)(to_int16(np.asarray(audio, np.float32))))
    return out


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:len(x)]


def room_response(delay_ms: float, gain_db: float = ECHO_GAIN_DB, room: bool = True, seed: int = 0,
                  rt60_s: float = 0.25, drr_db: float = 8.0) -> np.ndarray:
    """Impulse response speaker -> mic: a delay and gain; with ``room`` a small speaker's
    low-pass (~3.5 kHz, no bass below ~150 Hz) and an exponentially decaying tail (by default
    -60 dB at 0.25 s, direct-to-reverberant 8 dB). The peak gain of the direct path is ``gain_db``."""
    d = int(round(delay_ms * RATE / 1000))
    if not room:
        h = np.zeros(d + 1)
        h[d] = 1.0
    else:
        rng = np.random.default_rng(seed)
        tail_n = int(rt60_s * RATE)
        t = np.arange(tail_n) / RATE
        tail = rng.standard_normal(tail_n) * np.exp(-t * 6.9 / rt60_s)  # -60 dB at rt60_s
        tail[:int(0.004 * RATE)] = 0.0  # first reflections after 4 ms
        tail *= 10 ** (-drr_db / 20) / math.sqrt(np.sum(tail ** 2))
        direct = np.zeros(tail_n)
        direct[0] = 1.0
        k = np.arange(-16, 17)
        lp = np.sinc(2 * 3500 / RATE * k) * np.hamming(len(k))  # ~3.5 kHz low-pass
        lp /= lp.sum()
        hp = -np.ones(107) / 107  # crude high-pass: remove the ~150 Hz moving average
        hp[53] += 1.0
        body = np.convolve(np.convolve(direct + tail, lp), hp)
        h = np.concatenate([np.zeros(max(0, d - 16 - 53)), body])  # centre the filters' delay on d
    return h * 10 ** (gain_db / 20)


def echo_of(far: np.ndarray, delay_ms: float, room: bool, gain_db: float = ECHO_GAIN_DB, seed: int = 0,
            **room_kw) -> np.ndarray:
    return _fft_convolve(far.astype(np.float64), room_response(delay_ms, gain_db, room, seed, **room_kw))


def noise(n: int, dbfs: float = NOISE_DBFS, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n) * 32768 * 10 ** (dbfs / 20)


def i16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def dbfs(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return 10 * math.log10(np.mean(x ** 2) / 32768 ** 2 + 1e-20)


# ------------------------------------------------------------------ running the canceller
def cancel(near: np.ndarray, far: np.ndarray, base_threshold: float = 0.5, **kw) -> dict:
    """Both streams through one EchoCanceller in 512-sample blocks. Returns the output
    re-aligned with the input (its latency removed), per-call seconds, and per block the
    gating threshold ``vad_threshold(base_threshold)`` and the seconds of reference seen."""
    aec = EchoCanceller(**kw)
    n = len(near) // BLOCK * BLOCK
    out, cost, thr, ref = [], [], [], []
    for i in range(0, n, BLOCK):
        t = time.perf_counter()
        out.append(aec.process(near[i:i + BLOCK], far[i:i + BLOCK]))
        cost.append(time.perf_counter() - t)
        thr.append(aec.vad_threshold(base_threshold))
        ref.append(aec.reference_samples / RATE)
    y = np.concatenate(out)
    lat = aec.latency_samples
    y = np.concatenate([y[lat:], np.zeros(lat, np.int16)])
    # the threshold of block i was decided on output that lags by ``lat``: shift it the same way
    shift = lat // BLOCK
    thr = thr[shift:] + [thr[-1]] * shift
    return {"out": y, "aec": aec, "cost": np.array(cost), "thr": np.array(thr), "ref_s": np.array(ref)}


def echo_blocks(echo: np.ndarray, hop: int, min_echo_dbfs: float = -45.0) -> list[int]:
    return [i for i in range(0, len(echo) - hop + 1, hop) if dbfs(echo[i:i + hop]) >= min_echo_dbfs]


def erle_energy(near: np.ndarray, out: np.ndarray, echo: np.ndarray) -> float:
    """ERLE over the 32 ms blocks where the echo is at least -45 dBFS: input / output energy."""
    idx = echo_blocks(echo, BLOCK)
    m = np.zeros(len(near), bool)
    for i in idx:
        m[i:i + BLOCK] = True
    return round(dbfs(near[m]) - dbfs(out[m]), 1)


def erle_trace(near: np.ndarray, out: np.ndarray, echo: np.ndarray, hop: int = 4000) -> tuple[list, list]:
    """ERLE per 250 ms window holding echo: (window end times, dB)."""
    idx = echo_blocks(echo, hop)
    return [(i + hop) / RATE for i in idx], [round(dbfs(near[i:i + hop]) - dbfs(out[i:i + hop]), 1) for i in idx]


def convergence(near: np.ndarray, out: np.ndarray, echo: np.ndarray, onset_s: float,
                floor_db: float = 20.0) -> dict:
    """Time from the reply's start until every later 250 ms echo window keeps ERLE >= ``floor_db``."""
    ts, es = erle_trace(near, out, echo)
    low = [t for t, e in zip(ts, es) if e < floor_db]
    return {"convergence_s": round(max(low) - onset_s, 2) if low else 0.0,
            "windows_below_20db": len(low), "windows": len(es),
            "erle_first_3s_db": [e for t, e in zip(ts, es) if t - onset_s <= 3.0]}


# ------------------------------------------------------------------ Silero
class Silero:
    def __init__(self) -> None:
        from models.registry import load_silero

        self.model = load_silero()

    def probs(self, pcm: np.ndarray) -> np.ndarray:
        """One probability per 512-sample window, fresh recurrent state (a new mic stream)."""
        self.model.reset_states()
        x = pcm.astype(np.float32) / 32768.0
        return np.array([float(self.model(x[i:i + BLOCK], RATE)[0][0])
                         for i in range(0, len(x) - BLOCK + 1, BLOCK)])


def starts(p: np.ndarray, threshold, min_windows: int = 3) -> int:
    """Speech starts an Endpointer would declare (min_speech_ms 96 = 3 windows in a row at or
    over the threshold; ``threshold`` a number or one per window)."""
    thr = np.broadcast_to(np.asarray(threshold, float), p.shape)
    n = run = 0
    for v, t in zip(p, thr):
        run = run + 1 if v >= t else 0
        if run == min_windows:
            n += 1
    return n


def residual_stats(p: np.ndarray, onset_s: float) -> dict:
    win = BLOCK / RATE
    return {"max": round(float(p.max()), 3), "max_at_s": round(float(p.argmax()) * win - onset_s, 2),
            "windows_ge": {str(t): int(np.sum(p >= t)) for t in THRESHOLDS},
            "false_starts": {str(t): starts(p, t) for t in THRESHOLDS}}


def detection(p: np.ndarray, onset_s: float, end_s: float, threshold) -> dict:
    """The phrase at ``onset_s``..``end_s``: lag from its onset to the end of the first window
    at/over the threshold (when a VAD can know), to an Endpointer start (3 windows in a row),
    and the fraction of its windows over the threshold."""
    win = BLOCK / RATE
    thr = np.broadcast_to(np.asarray(threshold, float), p.shape)
    i0, i1 = int(onset_s / win), min(len(p), int(math.ceil(end_s / win)))
    hit = np.flatnonzero(p[i0:i1] >= thr[i0:i1])
    first = None if len(hit) == 0 else round((i0 + hit[0] + 1) * win - onset_s, 3)
    start, run = None, 0
    for j in range(i0, i1):
        run = run + 1 if p[j] >= thr[j] else 0
        if run == 3:
            start = round((j + 1) * win - onset_s, 3)
            break
    return {"first": first, "start": start, "frac": round(float(np.mean(p[i0:i1] >= thr[i0:i1])), 3)}


def summarize_detection(rows: list[dict]) -> dict:
    miss = 9.0
    first = np.array([r["first"] if r["first"] is not None else miss for r in rows])
    start = np.array([r["start"] if r["start"] is not None else miss for r in rows])
    frac = np.array([r["frac"] for r in rows])
    return {"runs": len(rows), "missed": int(np.sum(start >= miss)),
            "first_window_lag_s": {"median": round(float(np.median(first)), 3),
                                   "p90": round(float(np.percentile(first, 90)), 3)},
            "endpointer_start_lag_s": {"median": round(float(np.median(start)), 3),
                                       "p90": round(float(np.percentile(start, 90)), 3)},
            "frac_first_window_within_100ms": round(float(np.mean(first <= 0.1)), 2),
            "frac_first_window_within_160ms": round(float(np.mean(first <= 0.16)), 2),
            "phrase_windows_over_threshold": {"median": round(float(np.median(frac)), 3),
                                              "min": round(float(frac.min()), 3)}}


def speech_onset_end(pcm: np.ndarray, thresh_db: float = -40.0) -> tuple[float, float]:
    x = pcm.astype(np.float64) / 32768
    hop = RATE // 100
    n = len(x) // hop
    rms = np.sqrt(np.mean(x[:n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    idx = np.flatnonzero(20 * np.log10(rms / rms.max()) > thresh_db)
    return idx[0] * hop / RATE, (idx[-1] + 1) * hop / RATE


# ------------------------------------------------------------------ scenes
LEAD_S = 0.5  # silence before the reply starts


def scene(far_speech: np.ndarray, delay_ms: float, room: bool, user: np.ndarray | None = None,
          user_at_s: float = 0.0, user_gain_db: float = 0.0, echo_gain_db: float = ECHO_GAIN_DB,
          clip: bool = False, seed: int = 0) -> dict:
    """far: LEAD_S of silence, the reply, 1 s of silence; near: its echo + noise (+ the user
    phrase at ``user_at_s``, ``user_gain_db`` relative to its espeak level). ``clip``: a
    speaker driven into soft clipping (tanh) before the room, a nonlinearity AEC3's linear
    filter cannot model."""
    far = np.concatenate([np.zeros(int(LEAD_S * RATE)), far_speech.astype(np.float64), np.zeros(RATE)])
    n = (len(far) // BLOCK) * BLOCK
    far = far[:n]
    played = 32768 * np.tanh(far / 32768 * 3) / 3 * 1.6 if clip else far
    echo = echo_of(played, delay_ms, room, gain_db=echo_gain_db, seed=seed)
    track = np.zeros(n)
    if user is not None:
        k = int(user_at_s * RATE)
        u = user.astype(np.float64)[: n - k] * 10 ** (user_gain_db / 20)
        track[k:k + len(u)] = u
    near = echo + noise(n, seed=seed + 1) + track
    return {"far": i16(far), "near": i16(near), "echo": echo, "user": track}


def twice(s: dict) -> dict:
    """The same scene played twice in a row: the second time AEC3 has converged ("warm")."""
    return {k: np.concatenate([v, v]) for k, v in s.items()}


def warm_then(warmup: dict, s: dict) -> dict:
    return {k: np.concatenate([warmup[k], s[k]]) for k in ("far", "near")}


# ------------------------------------------------------------------ the measurements
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
    root = Path(__file__).resolve().parents[1]
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


def recommend(echo: dict, sw: dict) -> dict:
    """The lowest thresholds with no Endpointer false start (and, stricter, no window at all)
    on the residual echo, in the cold and in the warm half of every run."""
    def lowest(pairs) -> float | None:
        for t in THRESHOLDS:
            if all(v[str(t)] == 0 for v in pairs):
                return t
        return None

    def sw_lowest(st: str, field: str) -> float | None:
        return next((t for t in SWEEP_THRESHOLDS if sw[st][field][str(t)] == 0), None)

    rec = {"main_runs": {
        "no_false_start_cold": lowest(r["silero_residual_cold"]["false_starts"] for r in echo.values()),
        "no_window_cold": lowest(r["silero_residual_cold"]["windows_ge"] for r in echo.values()),
        "no_false_start_warm": lowest(r["silero_residual_warm"]["false_starts"] for r in echo.values()),
        "no_window_warm": lowest(r["silero_residual_warm"]["windows_ge"] for r in echo.values())},
        "sweep": {"no_false_start_cold": sw_lowest("cold", "false_starts"),
                  "no_window_cold": sw_lowest("cold", "windows_ge"),
                  "no_false_start_warm": sw_lowest("warm", "false_starts"),
                  "no_window_warm": sw_lowest("warm", "windows_ge")},
        "chosen": {"playing": PLAYBACK_VAD_THRESHOLD,
                   "warmup": "no speech start" if math.isinf(WARMUP_VAD_THRESHOLD) else WARMUP_VAD_THRESHOLD,
                   "warmup_s_of_reference": WARMUP_S}}
    return rec


def main() -> None:
    t0 = time.perf_counter()
    print("synthesizing (Kokoro, espeak-ng) ...", flush=True)
    kokoro, kokoro2 = kokoro_pcm([REPLY, REPLY2])
    fars = {"kokoro": kokoro, "kokoro-2": kokoro2, "espeak": espeak_pcm(REPLY)}
    users = {"en-us+f3": espeak_pcm(USER, voice="en-us+f3", speed=160),
             "en-gb+m3": espeak_pcm(USER2, voice="en-gb+m3", speed=170)}
    sil = Silero()
    costs: list = []
    out: dict = {"setup": {
        "backend": "WebRTC AEC3 via livekit.rtc.AudioProcessingModule (livekit wheel)",
        "delays_ms": list(DELAYS_MS), "echo_gain_db": ECHO_GAIN_DB, "noise_dbfs": NOISE_DBFS,
        "paths": {"direct": "pure delayed copy", "room": "3.5 kHz low-pass, ~150 Hz high-pass, 0.25 s reverb tail"},
        "replies": {"kokoro": REPLY, "kokoro-2": REPLY2, "espeak": REPLY},
        "users": {"en-us+f3": USER, "en-gb+m3": USER2}, "block": BLOCK, "rate": RATE,
        "cold": "first reply of a new EchoCanceller", "warm": "after the same reply once (converged)",
        "false_start": "3 windows in a row at/over the threshold (Endpointer, min_speech_ms=96)",
        "gated": "threshold per window from EchoCanceller.vad_threshold(0.5)"}}
    out["backend_cost"] = backend_cost()
    out["echo"], gated = echo_only(fars, sil, costs)
    out["sweep"] = sweep({k: fars[k] for k in ("kokoro", "kokoro-2")}, sil, costs)
    out["recommended_threshold"] = recommend(out["echo"], out["sweep"])
    out["gating_with_module_thresholds"] = {"residual_echo_main_runs": gated,
                                            "residual_echo_sweep": out["sweep"]["gated_with_module_thresholds"]}
    out["double_talk"] = double_talk({k: fars[k] for k in ("kokoro", "kokoro-2")}, users, sil, costs)
    out["clean_user_no_echo"] = clean_reference(users, sil)
    out["far_silent"] = far_silent(users, sil)
    out["no_echo_headphones"] = no_echo(kokoro, users["en-us+f3"], sil)
    out["stress_0db_clipping_room"] = stress(kokoro, sil, costs)
    c = np.concatenate(costs) * 1000
    x = np.zeros(BLOCK, np.float32)
    sil.model.reset_states()
    t = time.perf_counter()
    for _ in range(200):
        sil.model(x, RATE)
    out["cpu_ms_per_512_block"] = {
        "alone": cpu_quiet(kokoro),
        "during_benchmark": {"mean": round(float(c.mean()), 3), "p50": round(float(np.median(c)), 3),
                             "p99": round(float(np.percentile(c, 99)), 3), "max": round(float(c.max()), 3),
                             "calls": int(len(c))},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "silero_ms_per_window_for_comparison": round((time.perf_counter() - t) / 200 * 1000, 3)}
    out["runtime_s"] = round(time.perf_counter() - t0, 1)
    RESULT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("backend_cost", "recommended_threshold", "gating_with_module_thresholds",
                                          "cpu_ms_per_512_block")}, indent=1))
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
