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
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

# the parts, by idea: the turns (lib/turn_runs.py), Ray's hops and CPU (lib/ray_hops.py,
# lib/procfs.py), the summary and PNG (lib/turn_report.py)
from benchmarks.lib.procfs import ForeignCPU, machine_info, ray_memory  # noqa: E402
from benchmarks.lib.ray_hops import (Pinger, actor_pids, cpu_share_phase, idle_phase, load_phase,  # noqa: E402
                                     ping_stats)
from benchmarks.lib.stats import pct  # noqa: E402
from benchmarks.lib.turn_report import REFERENCE, plot, summary_lines  # noqa: E402
from benchmarks.lib.turn_runs import classify_pings, make_questions, run_turn  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_REPLY = "That's a good question. The short answer is that it depends on who you ask."


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
