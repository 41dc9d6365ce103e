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
backend's import time and RSS). About 3 minutes on 2 cores. The signals and the room model
are in benchmarks/lib/echo_scene.py, the measures in echo_measure.py, the runs in echo_runs.py.

    .venv/bin/python benchmarks/echo_cancel.py
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.lib.echo_measure import THRESHOLDS, Silero  # noqa: E402
from benchmarks.lib.echo_runs import (SWEEP_THRESHOLDS, backend_cost, clean_reference, cpu_quiet,  # noqa: E402
                                      double_talk, echo_only, far_silent, no_echo, stress, sweep)
from benchmarks.lib.echo_scene import (DELAYS_MS, ECHO_GAIN_DB, NOISE_DBFS, REPLY, REPLY2, USER,  # noqa: E402
                                       USER2, espeak_pcm, kokoro_pcm)
from pipeline.audio.echo_cancel import (BLOCK, PLAYBACK_VAD_THRESHOLD, RATE, WARMUP_S,  # noqa: E402
                                        WARMUP_VAD_THRESHOLD)

RESULT = Path(__file__).resolve().parent / "results" / "echo_cancel.json"


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


def main(argv: list[str] | None = None) -> None:
    # no options: the parser is there so that --help prints this docstring (it used to run
    # the whole benchmark and overwrite the results)
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
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
