"""Many text conversations at once on one `kokoro-engine serve`: first audio, errors, memory, CPU.

    .venv/bin/python benchmarks/serve_load.py                 # 1, 2, 4, 8 conversations, ~6 min
    .venv/bin/python benchmarks/serve_load.py --levels 1 4 --turns 3

The real server (real STT and TTS, the scripted OpenAI-compatible LLM with 200 ms to first
token) and scripted companion front ends (seed 001) over loopback WebSockets. At each level N,
N clients connect (N conversations) and each asks ``--turns`` questions one after the other,
each question after the last reply's audio has played (at the client, from its first chunk) and
``--think-s`` (0.5-1.5 s, random) more, the first question too, as a person would.
Measured per turn, at the client: ``user_input`` sent -> first ``audio_stream_chunk`` received.
Per level: first-audio p50/p95, errors (system messages, timeouts), the server's memory (RSS of
the server and every process it started, summed: Ray's actors included) with the N
conversations open, and its CPU seconds per conversation-turn.

Targets on the 2-core machine: with 4 conversations, first-audio p95 under 2x the single
conversation's; each extra conversation adds at most 100 MB of RSS (the models are shared).
Writes benchmarks/results/serve_load.json and .png.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from benchmarks.lib.procfs import kokoro_rtf, ray_label  # noqa: E402
from tests.rigs.companion import Companion  # noqa: E402
from tests.rigs.fake_llm import FakeLLM  # noqa: E402
from tests.rigs.served import serving  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
REPLY = "Sure, here is a short answer for you. I hope it helps, and ask me more if you like."
QUESTIONS = ["What time is it?", "Tell me something nice.", "How are you today?", "What should I cook tonight?",
             "Can you help me plan my day?", "What is your favourite colour?"]


def tree_rss_mb(pid: int) -> float:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def tree_cpu_by_process(pid: int) -> dict[str, float]:
    """CPU seconds of the server and every process it started, summed by process title
    (Ray's actors are titled ``ray::TTSStage...``): where the cost of a turn goes."""
    out: dict[str, float] = {}
    for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            t = p.cpu_times()
            name = ray_label(p.pid).split(".")[0]  # "ray::TTSStage.process" while it runs a task
            out[name] = out.get(name, 0.0) + t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 4) if xs else None


def conversation(port: int, turns: int, think: tuple[float, float], rng: random.Random, out: dict) -> None:
    """One client: its turns' first-audio times and errors into ``out``."""
    try:
        c = Companion(port)
    except Exception as e:  # noqa: BLE001 - a refused connection is an error of this level
        out["errors"].append(f"connect: {e}")
        return
    out["clients"].append(c)
    out["ready"].wait()
    for i in range(turns):
        # every question, the first too, comes after a person's pause: N people do not all
        # press enter in the same millisecond (that burst is a queue of N first clauses on
        # the one TTS service, not a steady load)
        time.sleep(rng.uniform(*think))
        t_sent = c.say(rng.choice(QUESTIONS))
        try:
            r = c.reply(timeout=180)
        except Exception as e:  # noqa: BLE001
            out["errors"].append(f"turn {i}: {type(e).__name__}: {e}"[:300])
            continue
        if r.t_first_audio is None or r.interrupted:
            out["errors"].append(f"turn {i}: no audio (interrupted={r.interrupted})")
            continue
        out["first_audio_s"].append(r.t_first_audio - t_sent)
        # a front end plays the reply as it arrives: its person asks again only after hearing it
        heard_at = r.t_first_audio + len(r.audio) / max(1, r.rate)
        time.sleep(max(0.0, heard_at - time.monotonic()))
    out["system_messages"] += [m for m in c.seen if m["type"] == "system"]


def run_level(port: int, pid: int, n: int, turns: int, think: tuple[float, float], seed: int) -> dict:
    out = {"first_audio_s": [], "errors": [], "system_messages": [], "clients": [], "ready": threading.Event()}
    threads = [threading.Thread(target=conversation, args=(port, turns, think, random.Random(seed + i), out))
               for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(out["clients"]) + len(out["errors"]) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # every conversation open, nothing asked yet
    rss_open = tree_rss_mb(pid)
    by0, t0 = tree_cpu_by_process(pid), time.monotonic()
    out["ready"].set()
    peak = rss_open
    while any(t.is_alive() for t in threads):
        peak = max(peak, tree_rss_mb(pid))
        time.sleep(0.5)
    wall, by1 = time.monotonic() - t0, tree_cpu_by_process(pid)
    by = {k: v - by0.get(k, 0.0) for k, v in by1.items()}
    cpu = sum(by.values())
    for c in out["clients"]:
        c.close()
    fa = out["first_audio_s"]
    return {"conversations": n, "turns": n * turns, "first_audio_s": {"p50": pct(fa, 50), "p95": pct(fa, 95),
                                                                       "max": pct(fa, 100), "n": len(fa)},
            "errors": len(out["errors"]), "error_samples": out["errors"][:5],
            "system_messages": len(out["system_messages"]), "rss_mb_open": round(rss_open, 1),
            "rss_mb_peak": round(peak, 1), "wall_s": round(wall, 1),
            "cpu_s_per_turn": round(cpu / max(1, n * turns), 3), "cpu_pct_of_one_core": round(100 * cpu / wall, 1),
            "cpu_s_per_turn_by_process": {k: round(v / max(1, n * turns), 3) for k, v in
                                          sorted(by.items(), key=lambda kv: -kv[1]) if v / max(1, n * turns) >= 0.01},
            "samples": [round(x, 4) for x in fa]}


def plot(result: dict, png: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no PNG"
    levels = result["levels"]
    ns = [lv["conversations"] for lv in levels]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ns, [lv["first_audio_s"]["p50"] for lv in levels], "o-", label="p50")
    a.plot(ns, [lv["first_audio_s"]["p95"] for lv in levels], "s-", label="p95")
    single = levels[0]["first_audio_s"]["p95"] if levels and levels[0]["conversations"] == 1 else None
    if single:
        a.axhline(2 * single, color="grey", ls="--", label="2x single p95 (target at 4)")
    a.set(xlabel="concurrent conversations", ylabel="user_input -> first audio chunk (s)", xticks=ns)
    a.legend()
    b.plot(ns, [lv["rss_mb_open"] for lv in levels], "o-", label="RSS, conversations open")
    b.plot(ns, [lv["rss_mb_peak"] for lv in levels], "s-", label="RSS, peak while talking")
    b.set(xlabel="concurrent conversations", ylabel="server + its processes (MB)", xticks=ns)
    b.legend()
    fig.suptitle(f"serve_load (Kokoro RTF alone: {result['machine'].get('kokoro_rtf')})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    return f"wrote {png}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--turns", type=int, default=5, help="questions per conversation")
    ap.add_argument("--think-s", type=float, nargs=2, default=[0.5, 1.5])
    ap.add_argument("--ttft", type=float, default=0.2)
    ap.add_argument("--out", default=str(RESULTS / "serve_load.json"))
    ap.add_argument("--plot-only", metavar="JSON")
    a = ap.parse_args()
    if a.plot_only:
        print(plot(json.loads(Path(a.plot_only).read_text()), Path(a.plot_only).with_suffix(".png")))
        return 0
    result = {"benchmark": "serve_load", "machine": {"cpus": psutil.cpu_count(), "kokoro_rtf": kokoro_rtf()},
              "setup": {"llm": f"FakeLLM, {a.ttft} s to first token, 50 tokens/s", "reply": REPLY,
                        "turns_per_conversation": a.turns, "think_s": a.think_s}, "levels": []}
    with FakeLLM(REPLY, ttft=a.ttft) as llm, serving(llm, Path(tempfile.mkdtemp())) as srv:
        warm = Companion(srv.port)  # one turn first: the models' first real run is not on the clock
        warm.say("Hello!")
        warm.reply(timeout=180)
        warm.close()
        time.sleep(1.0)
        result["rss_mb_idle"] = round(tree_rss_mb(srv.proc.pid), 1)
        for i, n in enumerate(a.levels):
            lv = run_level(srv.port, srv.proc.pid, n, a.turns, tuple(a.think_s), seed=100 * i)
            result["levels"].append(lv)
            print(json.dumps({k: v for k, v in lv.items() if k != "samples"}), flush=True)
            time.sleep(2.0)  # the last level's conversations close
    levels = {lv["conversations"]: lv for lv in result["levels"]}
    if 1 in levels and 4 in levels:
        single, four = levels[1]["first_audio_s"]["p95"], levels[4]["first_audio_s"]["p95"]
        result["target_4_conversations_p95_under_2x_single"] = {
            "single_p95_s": single, "four_p95_s": four, "ratio": round(four / single, 3) if single and four else None,
            "met": bool(single and four and four < 2 * single)}
    ns = sorted(levels)
    if len(ns) > 1:
        per = (levels[ns[-1]]["rss_mb_open"] - levels[ns[0]]["rss_mb_open"]) / (ns[-1] - ns[0])
        result["rss_mb_per_extra_conversation"] = {"value": round(per, 1), "target_max": 100, "met": per <= 100}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(plot(result, Path(a.out).with_suffix(".png")))
    print(json.dumps({k: v for k, v in result.items() if k != "levels"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
