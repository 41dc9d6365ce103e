"""Which words of a reply the user actually heard.

The player reports, for every TTS chunk of a reply, how many of its samples
were played and where the voice lies inside the chunk. Kokoro gives no word
timings, so inside a partly played chunk the words are spread over the voiced
span in proportion to their length (letters, plus a pause after punctuation).
A word counts as heard only when its estimated end has been played. Emotion
tags ("[happy]", avatar.emotion) are not spoken: they take no time and are
not words; one stays in the heard text once a word after it is heard.
"""
from __future__ import annotations

import re

from avatar.emotion import blank_tags

_WORD = re.compile(r"\S+")
_PAUSE = {",": 2.0, ";": 2.5, ":": 2.5, "—": 2.5, ".": 3.5, "!": 3.5, "?": 3.5, "…": 3.5}


def _weight(word: str) -> float:
    letters = sum(c.isalnum() for c in word)
    return max(1, letters) + _PAUSE.get(word[-1], 0.0)


def words_heard(text: str, played: int, speech_start: int, speech_end: int) -> int:
    """Characters of ``text`` (a prefix ending at a word end) heard after ``played`` samples."""
    if played >= speech_end:
        return len(text)
    if played <= speech_start:
        return 0
    words = list(_WORD.finditer(blank_tags(text)))  # same offsets, tags blanked out
    weights = [_weight(m.group()) for m in words]
    total = sum(weights) or 1.0
    span = speech_end - speech_start
    done, cut = 0.0, 0
    for m, w in zip(words, weights):
        done += w
        if speech_start + span * done / total > played:
            break
        cut = m.end()
    return cut


def heard_text(chunks: list[dict]) -> tuple[str, bool]:
    """(the heard prefix of the reply, True if every chunk was heard to its end)."""
    parts: list[str] = []
    prev_end = None
    for c in sorted(chunks, key=lambda c: c.get("chunk", 0)):
        end = c.get("speech_end") or c["samples"]
        n = words_heard(c["text"], c["played"], c.get("speech_start", 0), end)
        # chunk texts are trimmed: the reply had whitespace between two where their offsets part
        if parts and n and prev_end is not None and c.get("text_start", prev_end) > prev_end \
                and not parts[-1][-1:].isspace():
            parts.append(" ")
        parts.append(c["text"][:n])
        prev_end = c.get("text_end")
        if n < len(c["text"]):
            return "".join(parts).strip(), False
    return "".join(parts).strip(), True
