"""Played samples -> the words the user heard."""
from __future__ import annotations

from pipeline.conversation.heard_text import heard_text, words_heard


def chunk(text, samples, played, i=0, start=0, end=None):
    return {"text": text, "samples": samples, "played": played, "speech_start": start,
            "speech_end": samples if end is None else end, "chunk": i}


def test_whole_chunks_heard_are_kept_whole():
    text, complete = heard_text([chunk("Hello there. ", 100, 100), chunk("How are you?", 100, 100, 1)])
    assert (text, complete) == ("Hello there. How are you?", True)


def test_trimmed_chunks_are_joined_where_the_reply_had_a_space():
    # the TTS's chunks are trimmed; their offsets say where the reply had whitespace between them
    a = {**chunk("Once upon a time", 100, 100), "text_start": 0, "text_end": 16}
    b = {**chunk("there was a fox.", 100, 100, 1), "text_start": 17, "text_end": 33}
    assert heard_text([a, b]) == ("Once upon a time there was a fox.", True)
    b_half = {**b, "played": 60}
    assert heard_text([a, b_half]) == ("Once upon a time there was a", False)
    glued = {**chunk("fox", 100, 100, 1), "text_start": 16, "text_end": 19}  # no space in the reply
    assert heard_text([a, glued])[0] == "Once upon a timefox"


def test_nothing_played_is_nothing_heard():
    assert heard_text([chunk("Hello there.", 100, 0)]) == ("", False)
    assert heard_text([]) == ("", True)


def test_a_word_counts_only_once_its_estimated_end_is_played():
    text = "aaa bbb ccc ddd"  # equal weights: each word ends at a quarter
    assert words_heard(text, 24, 0, 100) == 0
    assert words_heard(text, 25, 0, 100) == len("aaa")
    assert words_heard(text, 74, 0, 100) == len("aaa bbb")
    assert words_heard(text, 100, 0, 100) == len(text)


def test_leading_silence_in_a_chunk_delays_its_words():
    text = "one two"
    assert words_heard(text, 40, 40, 100) == 0  # still in the chunk's leading silence
    assert words_heard(text, 70, 40, 100) == len("one")


def test_punctuation_pauses_take_time():
    # "Yes," carries a pause: with it "Yes," ends later than its 3 letters alone would
    assert words_heard("Yes, absolutely", 30, 0, 100) == 0
    assert words_heard("Yes, absolutely", 40, 0, 100) == len("Yes,")


def test_played_words_stop_at_the_first_partial_chunk_in_order():
    chunks = [chunk("It lived in a wood.", 100, 10, 1), chunk("Once upon a time, ", 100, 100, 0)]
    text, complete = heard_text(chunks)
    assert text == "Once upon a time," and not complete


def test_emotion_tags_take_no_time_and_are_not_words():
    text = "aaa [happy] bbb ccc [Very Sad] ddd"  # as "aaa bbb ccc ddd": each word ends at a quarter
    assert words_heard(text, 25, 0, 100) == len("aaa")
    assert words_heard(text, 50, 0, 100) == len("aaa [happy] bbb")  # the tag goes with the word after it
    assert words_heard(text, 75, 0, 100) == len("aaa [happy] bbb ccc")
    assert words_heard("[happy] one two", 50, 0, 100) == len("[happy] one")
    assert words_heard("[laughs]", 50, 0, 100) == 0
