"""Cut a streaming LLM reply into speakable chunks.

The first chunk is cut at the first clause boundary, so synthesis starts
while the LLM is still streaming; the second may cut at a clause once it is a
few times longer (Kokoro costs ~0.3 s a call plus ~25 ms a character here, so
small-then-growing chunks keep the audio ahead of the synthesis); later chunks
wait for a sentence end (better prosody) unless they grow long. A boundary counts only once the
character after it is known to be whitespace, so "3.5" or "e.g.x" never split. Emotion tags
("[happy]", avatar.emotion) stay in a chunk's text (offsets index the raw reply) but are not
spoken, and a word cut never falls inside one.

Paced (``paced=True``, the TTS service's default): only the first chunk is cut as the text
streams; each later one is cut when a synthesis lane is free for it (``next_cut``), as long as
the audio already queued allows (``pipeline/conversation/synthesis_pace.py``). Within that budget
it ends at a sentence, else a clause, else a phrase (after a content word, never after a
function word: "I will remind | you to water the plants" keeps its prosody, "I will | remind"
does not). Sentence-long later chunks made the voice stop for 1-2 s after a short first
clause ("Sure." ... "I will remind you to water the plants tomorrow morning.").
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
                 first_max_words: int = 0, paced: bool = False) -> None:
        self.paced = paced
        self.final = False  # the whole reply is in (flush was called)
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

    @property
    def started(self) -> bool:
        return self._index > 0

    @property
    def pending(self) -> str:
        """The text not yet in a chunk (raw: tags included)."""
        return self.text[self._pos:]

    def flush(self) -> list[Chunk]:
        self.final = True  # the end of the text is a boundary now
        out = self.add("")
        if self.paced and self._index > 0:
            return out  # the rest goes by next_cut, as the audio ahead allows
        if self.text[self._pos:].strip():
            out.append(self._emit(len(self.text)))
        self._pos = len(self.text)
        return out

    def _cut(self) -> Chunk | None:
        tail = self.text[self._pos:]
        first = self._index == 0
        if self.paced:
            return self._first_paced(tail) if first else None
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

    # ------------------------------------------------------------ paced: later chunks on demand
    def _first_paced(self, tail: str) -> Chunk | None:
        """The first chunk, paced: the earliest sentence or clause end at least ``first_min_chars``
        long (the TTS sets it from the measured speed: a first chunk shorter than what the next
        one takes to make leaves a silence after it, "First," ... 0.9 s ... "boil some water.").
        If none comes within 20 characters more, a phrase end past it: first audio waits no longer."""
        lead = len(tail) - len(tail.lstrip())
        lo, hi = self.first_min_chars, self.first_min_chars + 20
        sentences, clauses, phrases = self._boundaries(tail, lead + hi + 100)
        for i in sorted(sentences + clauses):
            if lo <= i - lead <= hi:
                return self._emit(self._pos + i)
            if i - lead > hi:
                break
        if len(tail.strip()) > hi:
            later = [i for i in sorted(sentences + clauses + phrases) if i - lead >= lo]
            if later:
                return self._emit(self._pos + later[0])
        if len(tail) > self.max_chars:
            space = tail.rfind(" ", 0, self.max_chars)
            if space > lead:
                return self._emit(self._pos + space)
        return None

    def next_cut(self, max_chars: int, urgent: bool) -> int | None:
        """Where the next (later) chunk should end, given that ``max_chars`` can be synthesized
        before the audio ahead runs out; None: wait for more text. ``urgent``: waiting would let
        the audio run out, so a clause or phrase cut is taken rather than waiting for a sentence."""
        tail = self.text[self._pos:]
        body = tail.strip()
        if not body:
            return None
        lead = len(tail) - len(tail.lstrip())
        budget = max(8, min(max_chars, self.max_chars))
        if self.final and len(body) <= budget + 6:  # all that is left, rather than leave a stub ("on.")
            return len(self.text)
        # the cuts within reach (past the budget too: the first one beyond may be needed); the
        # lanes ask on every token, and a whole long reply's scan costs ~1 ms
        sentences, clauses, phrases = self._boundaries(tail, lead + int(budget * 1.15) + 100)
        size = lambda i: i - lead  # noqa: E731  chars of the chunk ending at tail[:i]
        # a sentence or clause end may run a little past the budget (it has a margin), a phrase not
        fit = lambda cuts, over: [i for i in cuts if 8 <= size(i) <= budget * over]  # noqa: E731
        s, c, p = fit(sentences, 1.15), fit(clauses, 1.15), fit(phrases, 1.0)
        beyond = len(body) > budget  # more text than the budget: waiting cannot give a better cut
        free = beyond or urgent or self.final  # no better cut is coming in time
        farthest = max([*s, *c, *(p if free else [])], key=size, default=None)
        # the better the cut the more it may give up in length: each call has a fixed cost, so a
        # short clause ("of France,") is dear; a sentence end beats cuts twice as far, a clause 1.5x
        if s and size(s[-1]) * 2 >= size(farthest):
            return self._pos + s[-1]
        if free and c and size(c[-1]) * 1.5 >= size(farthest):
            return self._pos + c[-1]
        if free and farthest is not None:
            return self._pos + farthest
        if beyond:  # no cut within the budget: the first one past it (a small stall beats a blurred word)
            later = sorted(i for i in sentences + clauses + phrases if size(i) > budget)
            if later:
                return self._pos + later[0]
            space = tail.rfind(" ", lead, lead + budget)
            return self._pos + space if space > lead else (len(self.text) if self.final else None)
        return len(self.text) if self.final else None

    def take(self, end: int) -> Chunk:
        """The chunk from the pending text up to ``end`` (from ``next_cut``)."""
        return self._emit(end)

    def _boundaries(self, tail: str, limit: int | None = None) -> tuple[list[int], list[int], list[int]]:
        """Confirmed cut positions in ``tail`` (index just past the cut): sentence ends, clause
        ends, and phrase ends (a space after a content word). A cut needs the next character to
        be whitespace (or the reply to be complete), so a word still streaming is never split.
        Only cuts before ``limit`` are looked for."""
        words = blank_tags(tail)  # a cut never falls inside a tag, and tags are no words
        sentences, clauses, phrases = [], [], []
        n = len(tail)
        for i, ch in enumerate(tail[:limit]):
            nxt_space = tail[i + 1].isspace() if i + 1 < n else self.final
            if not nxt_space or ch.isspace():
                continue
            if words.count("[", 0, i + 1) > words.count("]", 0, i + 1):
                continue
            if ch in _SENTENCE_END and not _ABBREV.search(tail[: i + 1]):
                sentences.append(i + 1)
            elif ch in _CLAUSE_END:
                clauses.append(i + 1)
            elif words[i] != " " and i + 1 < n and tail[i + 1:].strip():
                word = words[: i + 1].split()[-1].lower().strip("'\"()")
                if word and word not in _FUNCTION_WORDS and word[-1].isalnum():
                    phrases.append(i + 1)
        return sentences, clauses, phrases

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
