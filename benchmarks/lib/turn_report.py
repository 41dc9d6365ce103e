"""The latency benchmark's report: summary lines for the terminal and the PNG (per-turn
voice-to-voice breakdown, Ray hop latency per condition)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

REFERENCE = {"pipecat_1.14_voice_to_voice_p50_s": 1.64,
             "note": "pipecat 1.14 on this machine, same models, LLM server with 200 ms time to first token"}


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
