"""Lip-sync of the avatar in the running engine over a long reply.

    .venv/bin/python benchmarks/lipsync.py             # ~1.5 min per run
    .venv/bin/python benchmarks/lipsync.py --runs 2

One Engine with the real VAD, Whisper and Kokoro, a scripted OpenAI-compatible server
(``FakeLLM``) answering with a ~20 s reply, and the avatar (the default model, haru)
headless under an Xvfb this script starts. Each run speaks a question (espeak-ng) through
``Engine.talk`` in real time and gets back the reply WAV and the mouth track (display
time, mouth opening) on the talk's clock. Measured:

- lag (ms) and correlation between the rendered mouth opening and the envelope of the
  reply as written to the WAV (``avatar.lipsync.lag_and_correlation``: 30 ms RMS in dB,
  top 40 dB, lags every 1 ms within ±200 ms; positive = mouth late), over the whole reply
  and over 5 s windows;
- frame times: intervals between consecutive display times, p50/p99/max, while the engine
  is idle, while the user's question is heard (VAD, speculative and final STT), and while
  the reply plays (Kokoro synthesizing the later chunks meanwhile);
- when each emotion cue was applied against the time its words were heard.

Writes benchmarks/results/lipsync.json, and lipsync.png (mouth over the envelope, frame
intervals) when matplotlib can be imported (``pip install -e ".[bench]"``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
QUESTION = "Can you tell me about your weekend?"
REPLY = ("[happy] Oh, my weekend was lovely, thank you for asking! On Saturday morning I walked down to the old "
         "harbour, where the fishing boats come in, and I watched the gulls fight over breakfast. Then I found a "
         "tiny bookshop hidden behind the bakery. [surprised] The owner had a cat that slept on the poetry shelf, "
         "and it would not move for anyone. On Sunday it rained all day, so I stayed in, made a big pot of soup, "
         "and read until the evening.")
FRAME_S = 1 / 30


def pct(values, qs=(50, 99)) -> dict[str, Any]:
    v = np.asarray(values, np.float64)
    if not v.size:
        return {"n": 0}
    out: dict[str, Any] = {"n": int(v.size)}
    out.update({f"p{q}": round(float(np.percentile(v, q)), 2) for q in qs})
    out["max"] = round(float(v.max()), 2)
    out["mean"] = round(float(v.mean()), 2)
    return out


def frame_stats(track: np.ndarray, t_from: float, t_to: float) -> dict[str, Any]:
    """Intervals (ms) between consecutive frames displayed in [t_from, t_to]."""
    t = track[(track[:, 0] >= t_from) & (track[:, 0] <= t_to), 0]
    if len(t) < 2:
        return {"n": 0}
    dt = np.diff(t) * 1000
    out = pct(dt)
    out["fps"] = round(float((len(t) - 1) / (t[-1] - t[0])), 2)
    out["late_frames"] = int(np.sum(dt > 1.5 * FRAME_S * 1000))  # a frame shown >= half a period late
    out["span_s"] = round(float(t[-1] - t[0]), 2)
    return out


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3]}


def cpu_s(pid: int | None) -> float | None:
    """utime + stime of a process so far (s), None if unknown."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, TypeError):
        return None


def one_run(engine, question: Path, tmp: Path, i: int) -> dict[str, Any]:
    import ray

    from avatar.lipsync import lag_and_correlation
    from pipeline.audio.convert import read_wav

    avatar = engine.actors["avatar"]
    pid = ray.get(avatar.status.remote())["window_pid"]
    idle_from, cpu0 = time.time(), cpu_s(pid)
    time.sleep(3.0)  # the engine idle: the avatar's own frame times
    idle = np.array(ray.get(avatar.mouth_track.remote(idle_from, time.time())) or np.zeros((0, 2)))
    out = tmp / f"reply-{i}.wav"
    res = engine.talk(str(question), str(out))
    status = ray.get(avatar.status.remote())
    cpu1, wall = cpu_s(pid), time.time() - idle_from
    tts = ray.get(engine.pools["tts"][0].stats.remote())
    if res.errors or res.state != "done" or not res.mouth_track:
        return {"error": f"talk failed: state {res.state}, errors {res.errors}"}
    pcm, rate = read_wav(out)
    track = np.array(res.mouth_track)  # relative to the talk's t0, like its events
    chunks = [c for c in res.info["chunks"] if c.get("sample_start") is not None]
    t_wav = chunks[0]["t_start"] - chunks[0]["sample_start"] / rate
    dur = len(pcm) / rate
    during = track[(track[:, 0] >= t_wav) & (track[:, 0] <= t_wav + dur)]
    lag, r = lag_and_correlation(during, pcm, rate, t_wav)
    windows = []
    for w0 in np.arange(0.0, dur - 2.5, 5.0):
        sel = during[(during[:, 0] >= t_wav + w0) & (during[:, 0] < t_wav + w0 + 5.0)]
        if len(sel) > 30 and sel[:, 1].std() > 0:
            wl, wr = lag_and_correlation(sel, pcm, rate, t_wav)
            windows.append({"from_s": round(float(w0), 1), "lag_ms": round(wl * 1000, 1), "r": round(wr, 3)})
    ev = res.events
    cues = [{"emotion": c["emotion"], "expression": c["expression"],
             "applied_after_heard_ms": round((c["applied"] - c["t"]) * 1000, 1)}
            for c in status["cues"] if c["t"] >= res.t0]
    return {
        "reply_audio_s": round(dur, 2), "frames_during_reply": int(len(during)),
        "lag_ms": round(lag * 1000, 1), "correlation": round(r, 3), "windows_5s": windows,
        "frame_interval_ms": {
            "idle_engine": frame_stats(idle, idle[0, 0], idle[-1, 0]) if len(idle) else {"n": 0},
            "question_vad_stt": frame_stats(track, 0.0, ev.get("transcript_final", 0.0)),
            "reply_playing_tts": frame_stats(track, ev["first_reply_sample_out"], ev["reply_done"]),
            "whole_talk": frame_stats(track, 0.0, float(track[-1, 0])),
        },
        "events": {k: ev[k] for k in ("user_speech_stopped", "transcript_final", "tts_first_audio",
                                      "first_reply_sample_out", "reply_done") if k in ev},
        "cues": cues,
        # the window process's CPU over the idle 3 s and the talk, in % of one core
        "avatar_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1) if cpu0 is not None and cpu1 is not None else None,
        "tts_rtf": round(tts["rtf"], 3) if tts.get("rtf") else None,  # synthesis s per s of audio, so far
        "speech_s": round(sum((c["sample_end"] - c["sample_start"]) / rate for c in chunks if c.get("sample_end")), 2),
        "_plot": {"track": during.tolist(), "t_wav": t_wav, "wav": str(out), "all_track": track.tolist()},
    }


def plot(result: dict[str, Any], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no PNG (pip install -e '.[bench]')"
    from avatar.lipsync import envelope, level_db
    from pipeline.audio.convert import read_wav

    run = next(r for r in result["runs"] if "_plot" in r)
    p = run["_plot"]
    pcm, rate = read_wav(p["wav"])
    track = np.array(p["track"])
    t = track[:, 0] - p["t_wav"]
    grid = np.arange(0, len(pcm) / rate, 0.005)
    db = level_db(envelope(pcm, grid, 30.0, rate))
    env = np.maximum(db, db.max() - 40.0)
    env = (env - env.min()) / max(1e-9, env.max() - env.min())
    fig, axes = plt.subplots(3, 1, figsize=(12, 9))
    for ax, (lo, hi) in zip(axes[:2], [(0, grid[-1]), (2.0, 5.0)]):
        ax.plot(grid, env, color="0.6", lw=0.8, label="audio envelope (30 ms RMS, dB, top 40 dB, 0..1)")
        ax.step(t, track[:, 1], where="post", color="C3", lw=1.0, label="rendered mouth opening (display time)")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("s from the reply's first sample")
        ax.legend(loc="upper right", fontsize=8)
    axes[0].set_title(f"lip-sync over a {run['reply_audio_s']} s Kokoro reply: lag {run['lag_ms']} ms, "
                      f"r = {run['correlation']}")
    at = np.array(p["all_track"])
    axes[2].plot(at[1:, 0], np.diff(at[:, 0]) * 1000, lw=0.7)
    for name in ("transcript_final", "first_reply_sample_out", "reply_done"):
        if name in run["events"]:
            axes[2].axvline(run["events"][name], color="0.5", ls="--", lw=0.8)
            axes[2].text(run["events"][name], axes[2].get_ylim()[1] * 0.9, name, fontsize=7, rotation=90)
    axes[2].set_ylabel("frame interval (ms)")
    axes[2].set_xlabel("s since the first input sample")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--model", default="haru", help="avatar model (name or settings file)")
    ap.add_argument("--out", default=str(RESULTS_DIR / "lipsync.json"))
    args = ap.parse_args(argv)

    from avatar.xvfb import Xvfb
    from pipeline.config import CONFIG_DIR, load_config
    from tests.rigs.espeak import espeak_wav
    from tests.rigs.fake_llm import FakeLLM
    from pipeline.runtime.engine import Engine

    result: dict[str, Any] = {"machine": machine_info(), "reply_chars": len(REPLY), "question": QUESTION,
                              "model": args.model, "runs": []}
    with tempfile.TemporaryDirectory() as d, Xvfb() as display, FakeLLM(REPLY, ttft=0.2) as llm:
        tmp = Path(d)
        question = espeak_wav(QUESTION, tmp / "question.wav", 16000, (0.5, 0.3))
        cfg = load_config(CONFIG_DIR / "default.toml", [
            f"llm.base_url={llm.base_url}", "llm.max_tokens=400", "engine.log_level=WARNING",
            "avatar.enabled=true", "avatar.headless=true", f"avatar.model={args.model}"])
        result["display"] = display
        result["avatar"] = {k: getattr(cfg.avatar, k) for k in ("fps", "width", "height", "attack_ms", "release_ms")}
        with Engine(cfg) as engine:
            if not engine.avatar_status.get("running"):
                print(f"error: {engine.avatar_status.get('error')}", file=sys.stderr)
                return 1
            for i in range(args.runs):
                run = one_run(engine, question, tmp, i)
                result["runs"].append(run)
                if "error" in run:
                    print(f"run {i}: {run['error']}", file=sys.stderr)
                    continue
                fi = run["frame_interval_ms"]
                print(f"run {i}: reply {run['reply_audio_s']} s, lag {run['lag_ms']} ms, r {run['correlation']}; "
                      f"frame interval p50/p99 ms idle {fi['idle_engine'].get('p50')}/{fi['idle_engine'].get('p99')}, "
                      f"question {fi['question_vad_stt'].get('p50')}/{fi['question_vad_stt'].get('p99')}, "
                      f"reply {fi['reply_playing_tts'].get('p50')}/{fi['reply_playing_tts'].get('p99')}", flush=True)
            result["png"] = plot(result, Path(args.out).with_suffix(".png"))
    for run in result["runs"]:
        run.pop("_plot", None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}" + (f" and {result['png']}" if result.get("png", "").endswith(".png") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
