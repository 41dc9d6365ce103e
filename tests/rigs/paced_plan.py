"""What the TTS service would cut a reply into, and the silences it would leave, at a given
synthesis speed: one lane, text all there, time simulated (tests and benchmarks, not real time)."""
from __future__ import annotations

from pipeline.conversation.synthesis_pace import ReplyPace, SynthesisCost
from pipeline.conversation.text_chunker import Chunk, TextChunker


def plan(text: str, cost: SynthesisCost, paced: bool = True, first_min: int | None = None
         ) -> list[tuple[Chunk, float]]:
    """[(chunk, silence before it)], as actors/tts.py decides with ``cost`` as its measured speed
    and a model that runs exactly at that speed (audio: ``cost.s_per_char`` a character)."""
    if first_min is None:
        first_min = max(4, cost.first_min_chars()) if paced else 4
    c = TextChunker(first_min, paced=paced)
    todo = list(c.add(text)) + c.flush()
    now, play_end, pace, out = 0.0, None, ReplyPace(), []
    while todo or c.pending.strip():
        if todo:
            chunk = todo.pop(0)
        else:
            pending = len(c.pending.strip())
            chunk = c.take(c.next_cut(cost.budget_chars(pace.ahead_s(now)), pace.urgent(cost, pending, now)))
        audio = len(chunk.speech) * cost.s_per_char
        now += cost.synth_s(len(chunk.speech))
        pace.sent(audio, now)
        out.append((chunk, 0.0 if play_end is None else max(0.0, now - play_end)))
        play_end = max(now, play_end or 0.0) + audio
    return out
