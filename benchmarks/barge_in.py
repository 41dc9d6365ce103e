"""Barge-in on virtual audio devices, measured from the signals.

The engine runs on PulseAudio null sinks (``tests/rigs/virtual_audio/``): its
speaker is ``kokoro_spk``, its mic ``user_mouth.monitor``. A probe process
plays the user's clips into ``user_mouth`` and records both the speaker and
the mic on one clock (``kokoro_bus.monitor``), so every figure below comes from
those two recorded signals, not from the engine's own timestamps:

* stop latency: user speech onset in the mic -> the speaker silent (its last
  sample above -45 dBFS before 150 ms of quiet), per trial, p50/p95;
* voice-to-voice: the question's speech end in the mic -> the reply's first
  sound on the speaker;
* false barge-in: short noise bursts (< ``interrupt.min_speech_ms``) played over a
  reply, and, with an open-speaker echo (-6 dB, ~50 ms, module-loopback), whole
  replies with nobody talking: a reply cut, a turn started or the output paused
  by the engine's own voice counts as a self-interruption.

    .venv/bin/python benchmarks/barge_in.py --trials 20            # -> benchmarks/results/barge_in.json
    .venv/bin/python benchmarks/barge_in.py --trials 3 --quick     # a smoke run
    .venv/bin/python benchmarks/barge_in.py --plot-only benchmarks/results/barge_in.json

Writes barge_in.png beside the JSON when matplotlib can be imported: each
trial's stop latency per condition, against the 150 ms target.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import CONFIG_DIR, load_config  # noqa: E402
from tests.rigs.espeak import espeak_wav  # noqa: E402
from tests.rigs.fake_llm import FakeLLM  # noqa: E402
from tests.rigs.watch import ConversationWatch  # noqa: E402
from pipeline.runtime.engine import Engine  # noqa: E402
from tests.rigs.virtual_audio.devices import VirtualAudio  # noqa: E402
from tests.rigs.virtual_audio.probe import Clip  # noqa: E402
from tests.rigs.virtual_audio.pulse import refresh_portaudio  # noqa: E402
from tests.rigs.virtual_audio.signals import first_loud  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# a long first clause: its audio runs ~6 s with no gap, so "silent" can only mean "stopped"
STORY = ("Once upon a time there was a small red fox who lived at the edge of a quiet green forest by a river, "
         "and every morning she walked down to the water to watch the fish. Every evening she told the owls "
         "what she had seen.")
ANSWER = "Sure, let us talk about the weather."


def espeak(text: str, path: Path) -> Path:
    return espeak_wav(text, path, rate=48000, pad_s=(0.1, 0.1))


def burst(path: Path, ms: int, seed: int) -> Path:
    """A voiced hum (like "hm") of ``ms`` milliseconds: speech-like, too short to be a turn."""
    from pipeline.audio.convert import write_wav

    rate = 48000
    t = np.arange(int(ms / 1000 * rate)) / rate
    f0 = 120 + 40 * random.Random(seed).random()
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * np.hanning(len(t))
    write_wav(path, (0.35 * x / np.abs(x).max() * 32767).astype(np.int16), rate)
    return path


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 4) if xs else None


def run_trial(va: VirtualAudio, engine: Engine, watch: ConversationWatch, question: Path, clip: Path,
              delay: float) -> dict:
    """Ask; ``delay`` s after the reply is heard, play ``clip``; measure from the recording."""
    watch.mark()
    clips = [Clip(question, at=0.3), Clip(clip, on="speaker_on", delay=delay, after=0)]
    res = va.probe(clips, duration=40.0, end_after_clips=6.0)
    watch.settle(30.0)  # every turn over: the answer to the barge-in included
    snap = engine.snapshot()
    turns = watch.new_turns()
    rate = res.rate
    q_end = res.clip_onsets[0] + int(len(res.clips[0]) - 0.1 * rate) if res.clip_onsets[0] is not None else None
    out: dict = {"delay_s": delay, "turn_states": [t["state"] for t in turns],
                 "false_interruptions": snap.get("false_interruptions"), "false_pauses": snap.get("false_pauses")}
    if q_end is not None:
        first = first_loud(res.speaker, rate, q_end)
        out["v2v_s"] = None if first is None else round((first - q_end) / rate, 4)
    onset = res.speech_onset(1)
    if onset is None:
        out["error"] = "barge-in clip never played (no reply heard?)"
        return out
    if 1 in res.placed_by_offset:  # not found over the echo: placed by the question's offset
        out["onset_placed_by_offset"] = True
    silent = res.speaker_silent_after(onset, hold_ms=150.0)
    out["onset_s"] = round(onset / rate, 4)
    out["stop_s"] = None if silent is None else round((silent - onset) / rate, 4)
    out["speaker_on_at_onset"] = bool(first_loud(res.speaker[max(0, onset - rate // 10):onset + 1], rate, 0)
                                      is not None)
    # voice-to-voice for the answer to the cut-in: its speech end in the mic -> the answer's first sound
    # (the story's long first clause makes the first reply's figure the LLM's pace, not the engine's)
    tail = first_loud(res.clips[1][::-1], rate, 0, -40.0, relative=True)
    if tail is not None and silent is not None:
        end = res.clip_onsets[1] + len(res.clips[1]) - tail
        answer = first_loud(res.speaker, rate, max(end, silent))
        out["answer_v2v_s"] = None if answer is None else round((answer - end) / rate, 4)
    return out


CONDITIONS = ("headphones", "open_speaker_-6dB")


def plot(result: dict, png: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no PNG"
    conds = [c for c in CONDITIONS if c in result]
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, cond in enumerate(conds):
        stops = [t["stop_s"] * 1000 for t in result[cond]["trials"]
                 if t.get("stop_s") is not None and t.get("speaker_on_at_onset")]
        x = k + np.linspace(-0.15, 0.15, len(stops)) if len(stops) > 1 else [k] * len(stops)
        ax.scatter(x, stops, s=18, label=f"{cond}: p50 {np.median(stops):.0f} ms, "
                                         f"p95 {np.percentile(stops, 95):.0f} ms (n={len(stops)})" if stops else cond)
    ax.axhline(150, color="red", lw=1, ls="--", label="target p95 150 ms")
    ax.set_xticks(range(len(conds)), conds)
    ax.set_ylabel("user speech onset -> speaker silent (ms)")
    ax.set_title("Barge-in stop latency on the virtual devices, from the recorded signals")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return str(png)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="fewer false-barge-in and echo runs")
    ap.add_argument("--out", default=str(RESULTS / "barge_in.json"))
    ap.add_argument("--plot-only", metavar="JSON", help="redraw the PNG from a results file, run nothing")
    a = ap.parse_args()
    if a.plot_only:
        print(plot(json.loads(Path(a.plot_only).read_text()), Path(a.plot_only).with_suffix(".png")))
        return 0
    rng = random.Random(7)
    tmp = Path(tempfile.mkdtemp(prefix="kokoro-bargein-"))
    question = espeak("Tell me a story.", tmp / "q.wav")
    cut_in = espeak("What about the weather?", tmp / "b.wav")
    result: dict = {"machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
                    "setup": {"speaker": "kokoro_spk (PulseAudio null sink)", "mic": "user_mouth.monitor",
                              "llm": "FakeLLM, 200 ms to first token, 12 tokens/s", "trials": a.trials}}
    with VirtualAudio() as va, FakeLLM(STORY, ttft=0.2, tokens_per_s=12.0, replies={"weather": ANSWER}) as llm:
        refresh_portaudio()
        cfg = load_config(CONFIG_DIR / "test.toml", [f"llm.base_url={llm.base_url}", "llm.max_tokens=120"])
        engine = Engine(cfg).start()
        try:
            import ray

            sid = engine.voice_session
            watch = ConversationWatch(engine, sid)
            ray.get(engine.actors["player"].open_device.remote(48000, sid))
            ray.get(engine.actors["mic"].start_device.remote(sid))
            for cond, echo in (("headphones", False), ("open_speaker_-6dB", True)):
                if echo:
                    va.add_echo(50, -6.0)
                trials = []
                for i in range(a.trials):
                    tr = run_trial(va, engine, watch, question, cut_in, rng.uniform(1.0, 3.0))
                    trials.append(tr)
                    print(cond, i, tr, flush=True)
                # only trials whose clip began while the reply was sounding (not in a gap between chunks)
                stops = [t["stop_s"] for t in trials if t.get("stop_s") is not None and t["speaker_on_at_onset"]]
                v2v = [t["v2v_s"] for t in trials if t.get("v2v_s") is not None]
                answer = [t["answer_v2v_s"] for t in trials if t.get("answer_v2v_s") is not None
                          and "interrupted" in t["turn_states"]]
                result[cond] = {
                    "stop_latency_s": {"p50": pct(stops, 50), "p95": pct(stops, 95), "max": pct(stops, 100),
                                       "n": len(stops), "target_p95": 0.15},
                    "voice_to_voice_s": {"p50": pct(v2v, 50), "p95": pct(v2v, 95), "n": len(v2v),
                                         "what": "question end -> the story's first sound (a ~6 s first clause)"},
                    "answer_voice_to_voice_s": {"p50": pct(answer, 50), "p95": pct(answer, 95), "n": len(answer),
                                                "what": "cut-in speech end -> the answer's first sound"},
                    "missed": sum(1 for t in trials if t.get("stop_s") is None),
                    # paused, then resumed: the user's words were taken for noise (an empty transcript)
                    "barge_in_lost": sum(1 for t in trials if t["turn_states"][:1] == ["speaking"]),
                    "in_a_gap": sum(1 for t in trials if not t.get("speaker_on_at_onset", True)), "trials": trials}
                # false barge-in: short hums over the reply must not cut it
                n_false = 3 if a.quick else 10
                cut = 0
                for i in range(n_false):
                    hum = burst(tmp / f"hum{i}.wav", rng.choice([120, 160, 200]), i)
                    tr = run_trial(va, engine, watch, question, hum, rng.uniform(1.0, 3.0))
                    cut += "interrupted" in tr["turn_states"]
                    print(cond, "burst", i, tr["turn_states"], flush=True)
                result[cond]["false_barge_in_on_bursts"] = {"runs": n_false, "replies_cut": cut}
                if echo:  # nobody talks: the engine's own voice must never pause or cut it
                    snap0 = engine.snapshot()
                    runs = 2 if a.quick else 5
                    selfint = 0
                    for i in range(runs):
                        watch.mark()
                        va.probe([Clip(question, at=0.3)], duration=30.0, end_after_clips=22.0)
                        watch.settle(30.0)
                        turns = watch.new_turns()
                        selfint += sum(1 for t in turns if t["state"] in ("interrupted", "ignored", "empty")
                                       or t["info"].get("onset_pauses"))
                    snap1 = engine.snapshot()
                    result[cond]["self_interruptions"] = {
                        "long_replies": runs, "self_interruptions": selfint, "target": 0,
                        "false_pauses": snap1["false_pauses"] - snap0["false_pauses"]}
                    va.remove_echo()
            result["engine_stats"] = {k: {kk: v for kk, v in s.items() if kk in (
                "echo_blocks", "echo_path", "echo_coupling_db", "strict_windows", "residual_gated", "reopened",
                "device_errors", "output_latency_s", "reference_jumps", "clock_steps", "callback_late_ms")} for k, s in engine.stats().items() if k in ("mic", "vad", "player")}
        finally:
            engine.shutdown()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(plot(result, Path(a.out).with_suffix(".png")))
    print(json.dumps({k: v for k, v in result.items() if k not in ("headphones", "open_speaker_-6dB")}, indent=1))
    for cond in CONDITIONS:
        if cond in result:
            r = result[cond]
            print(cond, "stop", r["stop_latency_s"], "answer v2v", r["answer_voice_to_voice_s"], "missed", r["missed"],
                  r.get("false_barge_in_on_bursts"), r.get("self_interruptions"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
