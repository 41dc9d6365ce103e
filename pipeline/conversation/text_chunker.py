"""Cut a streaming LLM reply into speakable chunks.

The first chunk is cut at the first clause boundary, so synthesis starts
while the LLM is still streaming; the second may cut at a clause once it is a
few times longer (Kokoro costs ~0.3 s a call plus ~25 ms a character here, so
small-then-growing chunks keep the audio ahead of the synthesis); later chunks
wait for a sentence end (better prosody) unless they grow long. A boundary counts only once the
character after it is known to be whitespace, so "3.5" or "e.g.x" never split. Emotion tags
("[happy]", avatar.emotion) stay in a chunk's text (offsets index the raw reply) but are not
spoken, and a word cut never falls inside one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from avatar.emotion import blank_tags, strip_tags

_SENTENCE_END = ".!?…。！？"
_CLAUSE_END = ",;:—–、，；："
_MARKUP = re.compile(r"[*_#`>|~]+|\[[^\]]*\]\([^)]*\)")  # markdown bits nobody should hear
_FUNCTION_WORDS = frozenset(
    "a an the of to in on at for with by from into onto about as and or but nor so if than that "
    "which who whom whose this these those my your his her its our their is are was were be been "
    "am do does did has have had will would can could should may might must not no i you he she "
    "it we they me him us them what when where how why there here very just".split())
_ABBREV = re.compile(r"\b(?:mr|mrs|ms|dr|prof|sr|jr|st|vs|etc|e\.g|i\.e)\.$", re.IGNORECASE)


@dataclass
class Chunk:
    text: str  # as found in the reply (offsets refer to it)
    start: int
    end: int
    index: int

    @property
    def speech(self) -> str:
        return clean_for_speech(self.text)


def clean_for_speech(text: str) -> str:
    return re.sub(r"\s+", " ", _MARKUP.sub(" ", strip_tags(text))).strip()


class TextChunker:
    def __init__(self, first_min_chars: int = 4, min_chars: int = 40, max_chars: int = 220,
                 first_max_words: int = 0) -> None:
        self.first_min_chars = first_min_chars
        # >0: the first chunk may also end after this many words with no punctuation yet
        # (faster first audio, at some cost in prosody); 0 = punctuation only
        self.first_max_words = first_max_words
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.text = ""  # the whole reply so far
        self._pos = 0  # start of the not-yet-emitted tail
        self._index = 0
        self._mid_sentence = False
        self._shift = 0

    def add(self, piece: str) -> list[Chunk]:
        self.text += piece
        out = []
        while (chunk := self._cut()) is not None:
            out.append(chunk)
        return out

    def flush(self) -> list[Chunk]:
        out = self.add("")
        if self.text[self._pos:].strip():
            out.append(self._emit(len(self.text)))
        self._pos = len(self.text)
        return out

    def _cut(self) -> Chunk | None:
        tail = self.text[self._pos:]
        first = self._index == 0
        k = self._index - self._shift  # a word-cut first chunk and its completion count as one
        early_clause = self.first_min_chars * 3 ** k if k < 2 else None
        if self._mid_sentence:  # the first chunk was cut at a word: finish that sentence soon
            early_clause = 1
        clause_at = None
        for i, ch in enumerate(tail[:-1]):
            if not tail[i + 1].isspace():
                continue
            size = len(tail[: i + 1].strip())
            if ch in _SENTENCE_END and not _ABBREV.search(tail[: i + 1]):
                if first or size >= (early_clause or self.min_chars) or size >= self.max_chars:
                    return self._emit(self._pos + i + 1)
            elif ch in _CLAUSE_END:
                if early_clause is not None and size >= early_clause:
                    return self._emit(self._pos + i + 1)
                if i < self.max_chars:  # only boundaries that keep the chunk within max_chars
                    clause_at = i
        if first and self.first_max_words:
            # words only: tags count for nothing, and a tag still open ("[very") is not yet a word
            words = blank_tags(tail)
            spaces = [i for i, ch in enumerate(words) if ch.isspace() and i > 0 and not words[i - 1].isspace()
                      and words.count("[", 0, i) <= words.count("]", 0, i)]
            # N complete words and no boundary among them; never end the fragment on a
            # function word ("The capital of | France" blurs, "The capital of France | is" does not)
            for n in range(self.first_max_words, min(len(spaces), self.first_max_words + 3) + 1):
                last = words[:spaces[n - 1]].split()[-1].lower().strip("'\"")
                if last not in _FUNCTION_WORDS:
                    self._mid_sentence, self._shift = True, 1
                    return self._emit(self._pos + spaces[n - 1])
        if len(tail) > self.max_chars:  # a very long sentence: cut at its last clause, else a space
            cut = clause_at + 1 if clause_at is not None else tail.rfind(" ", 0, self.max_chars)
            if cut > 0:
                return self._emit(self._pos + cut)
        return None

    def _emit(self, end: int) -> Chunk:
        self._mid_sentence = self._mid_sentence and self._index == 0  # only until the 2nd chunk
        raw = self.text[self._pos:end]
        lead = len(raw) - len(raw.lstrip())
        start = self._pos + lead
        chunk = Chunk(text=self.text[start:end].rstrip(), start=start, end=start + len(self.text[start:end].rstrip()),
                      index=self._index)
        self._pos = end
        self._index += 1
        return chunk
