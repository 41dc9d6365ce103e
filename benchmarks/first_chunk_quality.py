"""Does cutting the first TTS chunk at a word hurt what the listener hears?

Each reply is chunked as the TTS stage would (whole clauses, the opt-in word cut
``tts.first_chunk_max_words``, and paced chunks as ``tts.paced_chunks`` cuts them at the
speed Kokoro had inside the engine here: 0.45 s a call + 0.65 s a second of audio, which
gives phrase seams such as "I will remind | you to water"), every chunk is synthesized on its own
by Kokoro and joined with an 80 ms gap, and Whisper transcribes the result.
Writes the word error rate per setting to benchmarks/results/first_chunk_quality.json.

    .venv/bin/python benchmarks/first_chunk_quality.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.stt import transcribe  # noqa: E402
from models.registry import load_kokoro, load_whisper  # noqa: E402
from pipeline.audio.convert import Resampler, to_float32, to_int16  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.conversation.synthesis_pace import SynthesisCost  # noqa: E402
from pipeline.conversation.text_chunker import TextChunker  # noqa: E402
from tests.rigs.paced_plan import plan  # noqa: E402

REPLIES = [
    "The capital of France is Paris. It sits on the river Seine.",
    "That's a good question. Let me think about it for a second.",
    "I think the best way to cook rice is slowly, with a lid on.",
    "Well you could try reading a mystery novel this weekend.",
    "The moon is about three hundred eighty thousand kilometers away from the earth.",
    "Sure thing, here is a joke about cats for you.",
    "My favourite season in London is spring because the parks are full of flowers.",
    "You should drink some water and get a good night of sleep before the exam.",
    "Sure. I will remind you to water the plants tomorrow morning, before you leave for work.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who loved the stars.",
]
IN_ENGINE = SynthesisCost(fixed_s=0.45, rate=0.65, s_per_char=0.065)  # fitted in reply_stalls.py runs


def chunked(reply: str, setting: str):
    if setting == "paced":
        return [c for c, _ in plan(reply, IN_ENGINE)]
    ch = TextChunker(first_max_words=int(setting.split("=")[1]))
    return [c for w in reply.split(" ") for c in ch.add(w + " ")] + ch.flush()


def words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    d = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, d[0] = d[:], i
        for j in range(1, len(hyp) + 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (ref[i - 1] != hyp[j - 1]))
    return d[-1]


def main() -> None:
    cfg = load_config()
    tts, stt = load_kokoro(cfg), load_whisper(cfg)
    to16k = Resampler(24000, 16000)
    out: dict = {"replies": REPLIES, "settings": {}}
    for setting in ("first_chunk_max_words=0", "first_chunk_max_words=3", "paced"):
        errors = total = 0
        rows = []
        for reply in REPLIES:
            chunks = chunked(reply, setting)
            parts = []
            for c in chunks:
                audio, rate = tts.create(c.speech, voice=cfg.tts.voice, lang=cfg.tts.lang)
                parts += [to_int16(np.asarray(audio, np.float32)), np.zeros(int(0.08 * rate), np.int16)]
            heard = transcribe(stt, to_float32(to16k(np.concatenate(parts))), "en", 1, 0.6)
            e = edit_distance(words(reply), words(heard))
            errors, total = errors + e, total + len(words(reply))
            rows.append({"chunks": [c.text for c in chunks], "heard": heard, "word_errors": e})
        out["settings"][setting] = {"wer": round(errors / total, 4), "rows": rows}
        print(f"{setting}: WER {errors / total:.3f}")
    path = Path(__file__).resolve().parent / "results" / "first_chunk_quality.json"
    path.write_text(json.dumps(out, indent=2))
    print(path)


if __name__ == "__main__":
    main()
