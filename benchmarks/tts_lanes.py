"""What two synthesis lanes on one Kokoro model buy (actors/tts.py, ``tts.first_chunk_lane``).

    .venv/bin/python benchmarks/tts_lanes.py      # ~1 min on the 2-core machine

Measured on the model alone, no actors: Kokoro's speed with 1 and 2 onnxruntime threads; a short
first clause ("Sure,") arriving 0.3 s into a long sentence, run beside it on the same session (two
lanes) against after it (one lane); and the throughput of two sentences at once on one session,
in a row, and on two 1-thread sessions. Writes benchmarks/results/tts_lanes.json.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from models.registry import load_kokoro  # noqa: E402
from pipeline.config import load_config  # noqa: E402

LONG = "The quick brown fox jumps over the lazy dog, and then it runs into the quiet forest."
SHORT = "Sure,"
VOICE = dict(voice="jf_alpha", speed=1.0, lang="en-us")


def model(threads: int):
    tts = load_kokoro(load_config(None, [f"tts.threads={threads}"]))
    tts.create("Hello.", **VOICE)  # the first run allocates
    return tts


def timed(tts, text: str) -> tuple[float, float, float]:
    """(wall s, CPU s of this process, audio s)."""
    c, t = time.process_time(), time.perf_counter()
    audio, rate = tts.create(text, **VOICE)
    return time.perf_counter() - t, time.process_time() - c, len(audio) / rate


def at_once(jobs: list[tuple[object, str, float]]) -> tuple[dict[int, tuple[float, float]], float]:
    """Run (model, text, start delay) jobs on threads; ({job: (wall s from its start, audio s)}, total wall s)."""
    out: dict[int, tuple[float, float]] = {}

    def go(i: int, tts, text: str, delay: float) -> None:
        time.sleep(delay)
        w, _, a = timed(tts, text)
        out[i] = (w, a)

    threads = [threading.Thread(target=go, args=(i, *job)) for i, job in enumerate(jobs)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return out, time.perf_counter() - t


def main() -> int:
    r: dict = {"benchmark": "tts_lanes", "long": LONG, "short": SHORT}
    for n in (1, 2):
        w, c, a = timed(model(n), LONG)
        r[f"threads_{n}"] = {"rtf": round(w / a, 3), "cpu_s_per_audio_s": round(c / a, 3), "audio_s": round(a, 2)}
    tts = model(2)
    short_alone, long_alone = timed(tts, SHORT)[0], timed(tts, LONG)[0]
    done, _ = at_once([(tts, LONG, 0.0), (tts, SHORT, 0.3)])
    r["short_beside_long"] = {
        "short_alone_s": round(short_alone, 3), "long_alone_s": round(long_alone, 3),
        "two_lanes": {"short_ready_after_s": round(done[1][0], 3), "long_s": round(done[0][0], 3)},
        # one lane: the short one waits for the rest of the long one
        "one_lane": {"short_ready_after_s": round(long_alone - 0.3 + short_alone, 3), "long_s": round(long_alone, 3)}}
    done, wall = at_once([(tts, LONG, 0.0), (tts, LONG, 0.0)])
    t = time.perf_counter()
    row = timed(tts, LONG)[2] + timed(tts, LONG)[2]
    serial = time.perf_counter() - t
    a, b = model(1), model(1)
    done1, wall1 = at_once([(a, LONG, 0.0), (b, LONG, 0.0)])
    r["two_sentences_s_per_audio_s"] = {
        "one_session_at_once": round(wall / sum(x[1] for x in done.values()), 3),
        "one_session_in_a_row": round(serial / row, 3),
        "two_1_thread_sessions_at_once": round(wall1 / sum(x[1] for x in done1.values()), 3)}
    out = REPO_ROOT / "benchmarks" / "results" / "tts_lanes.json"
    out.write_text(json.dumps(r, indent=2))
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
