"""Transcript clean-up that needs no model."""
from actors.stt import drop_repeats


def test_a_transcript_that_starts_over_is_cut_to_its_first_pass():
    assert drop_repeats("The Moon is about 380,000 km away. The Moon is about 380,000 km away. The Moon is") == \
        "The Moon is about 380,000 km away."
    assert drop_repeats("My favorite season is spring. My favorite season is") == "My favorite season is spring."


def test_real_repetition_inside_speech_is_kept():
    for text in ("No, no, no, that is not what I said.", "Yes yes", "I said go go go now please",
                 "Play it again and again and again"):
        assert drop_repeats(text) == text


def test_a_full_restart_that_then_wanders_is_cut_too():
    assert drop_repeats("Tell me a story Tell me a story Tell me Tell me") == "Tell me a story"
