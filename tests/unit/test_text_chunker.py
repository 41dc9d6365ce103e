"""TextChunker: cutting a streamed reply into speakable chunks."""
from __future__ import annotations

import random

import pytest

from pipeline.conversation.text_chunker import Chunk, TextChunker, clean_for_speech

REPLY = ("Sure, I can help with that. Dr. Smith said version 3.5 is out, e.g. the new one; it costs about "
         "12 dollars! Would you like me to check the price for you? Let me know.")
REPLIES = [
    REPLY,
    "Hello! How are you today? I'm doing fine, thanks for asking.",
    "Well, that depends: Mr. Jones prefers tea, but Mrs. Jones likes coffee. Pi is about 3.14159, right?",
    "Okay.",
    "It is 5 p.m. now, so the shop is closed; try again tomorrow at 9.30 or so. Anything else?",
    "No punctuation at all in this one just words flowing on and on",
]


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p + " " for p in parts[:-1]] + [parts[-1]]


def tokens(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, 3)
        out.append(text[i:i + n])
        i += n
    return out


def run(pieces: list[str], **kw) -> tuple[TextChunker, list[Chunk]]:
    c = TextChunker(**kw)
    out: list[Chunk] = []
    for p in pieces:
        out += c.add(p)
    out += c.flush()
    return c, out


def test_first_chunk_is_cut_at_the_first_clause_while_streaming():
    c = TextChunker()
    got = []
    for w in words(REPLY):
        got += c.add(w)
        if got:
            break
    # the first chunk comes out with the first word: "Sure," followed by a space
    assert [ch.text for ch in got] == ["Sure,"]
    assert c.text == "Sure, "
    assert got[0].index == 0


def test_first_chunk_waits_for_first_min_chars_at_a_clause():
    c = TextChunker(first_min_chars=4)
    assert c.add("Hi, ") == []  # "Hi," is 3 chars: too short to be worth a synthesis call
    assert c.add("there, ") == [Chunk("Hi, there,", 0, 10, 0)]


def test_first_sentence_end_cuts_regardless_of_length():
    c = TextChunker(first_min_chars=4)
    assert [ch.text for ch in c.add("Ok. ")] == ["Ok."]


def test_chunks_of_the_reference_reply():
    c, chunks = run(words(REPLY))
    assert [ch.text for ch in chunks] == [
        "Sure,",
        "I can help with that.",
        "Dr. Smith said version 3.5 is out, e.g. the new one; it costs about 12 dollars!",
        "Would you like me to check the price for you?",
        "Let me know.",
    ]
    assert [ch.index for ch in chunks] == list(range(5))


@pytest.mark.parametrize("reply", REPLIES)
def test_offsets_index_into_the_text(reply):
    c, chunks = run(words(reply))
    assert c.text == reply
    for ch in chunks:
        assert c.text[ch.start:ch.end] == ch.text
        assert ch.text == ch.text.strip() and ch.text
    # chunks are in order and do not overlap
    ends = [(ch.start, ch.end) for ch in chunks]
    assert all(a[1] <= b[0] for a, b in zip(ends, ends[1:]))


@pytest.mark.parametrize("reply", REPLIES)
def test_chunks_reproduce_the_words_of_the_reply(reply):
    _, chunks = run(words(reply))
    assert " ".join(ch.text for ch in chunks).split() == reply.split()


def test_no_split_inside_a_decimal_number():
    c = TextChunker(first_min_chars=4)
    assert c.add("It costs 3.") == []
    assert c.add("5 euros") == []  # "3." was followed by "5": not a sentence end
    _, chunks = run(words("Version 3.5 is out. Version 4.0 is next."))
    assert [ch.text for ch in chunks] == ["Version 3.5 is out.", "Version 4.0 is next."]


@pytest.mark.parametrize("abbrev", ["Dr.", "Mr.", "Mrs.", "Prof.", "e.g.", "i.e.", "etc.", "vs."])
def test_no_split_after_an_abbreviation(abbrev):
    _, chunks = run(words(f"Ask {abbrev} Smith about it. Then call me."))
    assert chunks[0].text == f"Ask {abbrev} Smith about it."


def test_boundary_needs_the_next_character():
    c = TextChunker()
    assert c.add("Hello.") == []  # could still be "Hello.com"
    assert [ch.text for ch in c.add(" ")] == ["Hello."]


def test_flush_returns_the_rest():
    c = TextChunker()
    first = c.add("Hello there, my friend how are")
    assert [ch.text for ch in first] == ["Hello there,"]
    rest = c.flush()
    assert [ch.text for ch in rest] == ["my friend how are"]
    assert rest[0].index == 1
    assert c.text[rest[0].start:rest[0].end] == "my friend how are"
    assert c.flush() == []  # nothing left


def test_flush_emits_a_final_boundary_without_trailing_space():
    c = TextChunker()
    c.add("Fine, thanks")
    assert c.add(".") == []
    assert [ch.text for ch in c.flush()] == ["thanks."]


def test_flush_of_whitespace_only_tail_emits_nothing():
    c = TextChunker()
    assert [ch.text for ch in c.add("Okay. ")] == ["Okay."]
    c.add("   \n")
    assert c.flush() == []


def test_second_chunk_may_cut_at_a_clause_and_later_ones_wait_for_sentences():
    _, chunks = run(words("Yes, of course, I will do that, and then I will go home, and sleep, and rest. Done."))
    texts = [ch.text for ch in chunks]
    assert texts[0] == "Yes,"
    assert texts[1] == "of course, I will do that,"  # 2nd chunk: a clause once >= 12 chars
    assert texts[2] == "and then I will go home, and sleep, and rest."  # 3rd: waits for the sentence end


def test_very_long_sentence_is_cut_before_max_chars():
    body = " ".join(f"word{i}" for i in range(80))
    _, chunks = run(words(f"Hello there. {body} and that is all."), max_chars=100)
    assert chunks[0].text == "Hello there."
    assert all(len(ch.text) <= 100 for ch in chunks)
    assert " ".join(ch.text for ch in chunks).split() == f"Hello there. {body} and that is all.".split()


@pytest.mark.parametrize("reply", REPLIES)
@pytest.mark.parametrize("seed", range(5))
def test_token_by_token_gives_the_same_chunks_as_word_by_word(reply, seed):
    _, by_word = run(words(reply))
    c, by_token = run(tokens(reply, seed))
    assert c.text == reply
    assert by_token == by_word


def test_one_big_piece_gives_the_same_chunks_as_word_by_word():
    _, by_word = run(words(REPLY))
    _, at_once = run([REPLY])
    assert at_once == by_word


def test_speech_text_strips_markdown():
    assert clean_for_speech("**Hello**  _there_,\n `code` [link](http://x.y) ok") == "Hello there , code ok"
    assert Chunk("# Title", 0, 7, 0).speech == "Title"


def test_long_stretch_added_at_once_respects_max_chars():
    body = " ".join(f"word{i}" + ("," if i % 13 == 12 else "") for i in range(120))
    _, chunks = run([f"Hello there. Ok then. {body} and more"])
    assert all(len(ch.text) <= 220 for ch in chunks), [len(ch.text) for ch in chunks]


def test_first_chunk_word_cut_is_opt_in_and_finishes_its_sentence_next():
    reply = "That's a good question. Let me think about it for a second, and then I will answer you properly."

    def chunks(**kw):
        c = TextChunker(**kw)
        out = []
        for w in reply.split(" "):
            out += c.add(w + " ")
        return [x.text for x in out + c.flush()]

    assert chunks()[0] == "That's a good question."  # off by default: punctuation only
    assert chunks(first_max_words=3) == ["That's a good", "question.", "Let me think about it for a second,",
                                         "and then I will answer you properly."]
    # punctuation that comes first still wins
    c = TextChunker(first_max_words=3)
    assert [x.text for x in c.add("Sure, I can help. ") + c.flush()] == ["Sure,", "I can help."]


def test_emotion_tags_are_not_spoken_but_links_still_go_whole():
    assert clean_for_speech("[happy] Hello [Laughs] there! [very happy]") == "Hello there!"
    assert clean_for_speech("I see [link](http://x.y) [1] ok") == "I see [1] ok"
    assert Chunk("[sad] Oh no.", 0, 12, 0).speech == "Oh no."


def test_chunks_with_tags_still_index_the_raw_reply():
    reply = "[happy] Hello there! I am so glad [excited] you came. [shy] Thanks."
    _, chunks = run(words(reply))
    assert [reply[c.start:c.end] for c in chunks] == [c.text for c in chunks]
    assert chunks[0].text == "[happy] Hello there!"
    assert [c.speech for c in chunks] == ["Hello there!", "I am so glad you came.", "Thanks."]


def test_a_word_cut_never_splits_a_tag_and_tags_are_not_words():
    def first(reply):
        c = TextChunker(first_max_words=2)
        return [x.text for x in c.add(reply) + c.flush()][0]

    assert first("[very happy] Well then ") == "[very happy] Well then"
    assert first("Well [very happy] then ") == "Well [very happy] then"
    # a tag still streaming ("[very" with no "]" yet) is not cut either
    c = TextChunker(first_max_words=2)
    assert [x.text for x in c.add("Hi [very ")] == []


# ------------------------------------------------------------ paced: later chunks cut on demand
def paced(text: str, budgets: list[int], final: bool = True, urgent: bool = False) -> list[str | None]:
    c = TextChunker(paced=True)
    out: list[str | None] = [x.text for x in c.add(text)]
    if final:
        out += [x.text for x in c.flush()]
    for b in budgets:
        end = c.next_cut(b, urgent)
        if end is None:
            out.append(None)
            break
        out.append(c.take(end).text)
    return out


def test_paced_cuts_only_the_first_chunk_as_the_text_streams():
    c = TextChunker(paced=True)
    assert [x.text for x in c.add("Sure. I will remind you to water the plants tomorrow morning. ")] == ["Sure."]
    assert c.flush() == [] and c.final and c.pending.strip().startswith("I will")


def test_paced_chunks_grow_with_the_budget_and_end_after_content_words():
    got = paced("Sure. I will remind you to water the plants tomorrow morning.", [12, 20, 80, 80])
    assert got == ["Sure.", "I will remind", "you to water", "the plants tomorrow morning.", None]


def test_paced_prefers_a_sentence_then_a_clause_within_the_budget():
    text = ("Once upon a time, in a small village by the sea, there lived an old fisherman who loved the stars. "
            "Every night he rowed out.")
    assert paced(text, [40, 200]) == ["Once upon a time,", "in a small village by the sea,",
                                      "there lived an old fisherman who loved the stars. Every night he rowed out."]
    # a sentence end beats a farther clause if it is at least half as far, else the clause
    # (one call's fixed cost buys more audio)
    c = TextChunker(paced=True)
    c.add("Yes, that is right. The octopus, as it happens, has three hearts and blue blood ")
    assert c.take(c.next_cut(60, urgent=False)).text == "that is right. The octopus, as it happens,"
    c = TextChunker(paced=True)
    c.add("Yes, that is quite right. The octopus, as it happens ")
    assert c.take(c.next_cut(60, urgent=False)).text == "that is quite right."


def test_paced_waits_for_a_sentence_unless_urgent_and_never_splits_a_streaming_word():
    assert paced("Sure. I will remind you to water ", [60], final=False) == ["Sure.", None]
    assert paced("Sure. I will remind you to water ", [60], final=False, urgent=True) == ["Sure.", "I will remind"]
    # the budget is short of the text: no use waiting, the best cut within it is taken
    assert paced("Sure. I will remind you to water the plants tomorrow", [14], final=False) == ["Sure.", "I will remind"]
    # "wat" may be "water" or "watch": the text after the last space is no word yet
    assert paced("Sure. I will remind you to wat", [60], final=False, urgent=True) == ["Sure.", "I will remind"]


def test_paced_never_ends_a_chunk_on_a_function_word_or_inside_a_tag():
    got = paced("Well. It is in the box of the [happy] kitchen and the [sa", [16], final=False, urgent=True)
    assert got[1] in ("It is in the box",) and got[1].split()[-1] not in ("the", "of", "in")
    got = paced("Well. Hi [happy] there my friend is [sa", [80], final=False, urgent=True)
    assert got == ["Well.", "Hi [happy] there my friend"]


def test_paced_chunks_reproduce_the_whole_reply():
    for reply in REPLIES:
        c = TextChunker(paced=True)
        chunks = list(c.add(reply)) + c.flush()
        budget = 10
        while (end := c.next_cut(budget, urgent=False)) is not None:
            chunks.append(c.take(end))
            budget *= 2
        assert not c.pending.strip(), reply
        assert " ".join(x.text for x in chunks).split() == reply.split()
        assert all(reply[x.start:x.end] == x.text for x in chunks)
