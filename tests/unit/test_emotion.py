"""Emotion tags, mood, character state and the per-model expression map."""
from __future__ import annotations

import pytest

from avatar.emotion import (EMOTIONS, CharacterState, ExpressionMap, Mood, emotion_of, split_emotions,
                            strip_tags)

HARU = [f"f0{i}" for i in range(1, 9)]
HARU_MOTIONS = {"idle": 3, "tap_body": 3, "pinch_in": 1, "pinch_out": 1, "shake": 1, "flick_head": 1}
SHIZUKU = ["f01", "f02", "f03", "f04"]


def test_tags_are_removed_and_known_emotions_become_cues_at_their_place():
    clean, cues = split_emotions("[happy] Hello there! I missed you [SAD] so much.")
    assert clean == "Hello there! I missed you so much."
    assert cues == [(0, "happy"), (clean.index("so much"), "sad")]


def test_unknown_tags_are_stripped_but_give_no_cue():
    assert split_emotions("Oh [laughs] that is funny [wink]!") == ("Oh that is funny!", [])
    assert strip_tags("a [sighs deeply] b").split() == ["a", "b"]


def test_markdown_links_and_numbers_in_brackets_are_not_tags():
    assert split_emotions("see [the docs](http://x.y) and [1]") == ("see [the docs](http://x.y) and [1]", [])


def test_aliases_case_and_several_words():
    assert emotion_of("Joy") == "happy"
    assert emotion_of("very  HAPPY") == "happy"
    assert emotion_of("laughs") is None
    assert emotion_of("smug", aliases={"smug": "happy"}) == "happy"
    assert split_emotions("[Surprise] Wow", aliases={"surprise": "excited"}) == ("Wow", [(0, "excited")])


def test_tags_at_the_edges_leave_no_stray_spaces():
    assert split_emotions("Hello [happy]") == ("Hello", [(5, "happy")])
    assert split_emotions("Hello[happy] world") == ("Hello world", [(5, "happy")])
    assert split_emotions("Line one.\n[shy]\nLine two.")[0] == "Line one.\nLine two."


def test_mood_drifts_with_cues_and_relaxes_to_its_baseline():
    m = Mood(baseline=0.5, gain=0.3, relax_s=60.0)
    assert m.value == 0.5
    up = m.cue("happy")
    assert 0.5 < up < 0.5 + 0.5 * EMOTIONS["happy"]
    assert m.cue("happy") > up  # repeated cues keep pulling
    down = Mood().cue("sad")
    assert down < 0.5
    assert Mood().cue("laughs") == 0.5  # not an emotion: no change
    high = m.value
    assert abs(m.relax(60.0) - (0.5 + (high - 0.5) * 0.36788)) < 1e-3  # one time constant
    assert abs(m.relax(1e6) - 0.5) < 1e-9
    for _ in range(100):
        m.cue("excited")
    assert 0.0 <= m.value <= 1.0


def test_character_state_is_the_seed_shape():
    s = CharacterState()
    assert s.to_dict() == {"name": "Kokoro", "current_expression": "neutral", "mood": 0.5, "is_speaking": False}


def test_haru_defaults_map_every_emotion_to_an_existing_expression():
    m = ExpressionMap.build(HARU, HARU_MOTIONS, model_name="haru")
    assert m.lookup("happy") == ("f05", ("tap_body", 0))
    assert m.lookup("surprised") == ("f06", ("flick_head", 0))
    assert set(m.expressions) == set(EMOTIONS) and set(m.expressions.values()) <= set(HARU)
    # recognised by its expression list alone, too
    assert ExpressionMap.build(HARU).expressions == m.expressions


def test_shizuku_defaults_and_cubism3_group_names():
    m = ExpressionMap.build(SHIZUKU, {"TapBody": 2, "FlickHead": 1}, model_name="shizuku")
    assert m.lookup("sad")[0] == "f02" and m.lookup("angry")[0] == "f03"
    assert m.lookup("happy") == ("f04", ("TapBody", 0))
    assert m.lookup("thinking") == (None, None)


def test_expressions_named_after_emotions_map_themselves():
    m = ExpressionMap.build(["Smile", "Sad", "Angry", "Surprised"])
    assert m.lookup("happy")[0] == "Smile" and m.lookup("surprised")[0] == "Surprised"
    assert m.lookup("shy") == (None, None)


def test_per_model_overrides_win_and_bad_entries_are_reported_not_raised():
    over = {"expressions": {"happy": "f07", "Joy": "f07", "sad": None, "smug": "f01", "angry": "f99"},
            "motions": {"happy": ["idle", 2], "surprised": None, "shy": ["tap_body", 9], "sad": "x"}}
    m = ExpressionMap.build(HARU, HARU_MOTIONS, model_name="haru", overrides=over)
    assert m.lookup("happy") == ("f07", ("idle", 2))
    assert m.lookup("sad") == (None, None)
    assert m.lookup("surprised") == ("f06", None)
    assert m.lookup("angry")[0] == "f03"  # f99 does not exist: the default stays
    assert len(m.warnings) == 4 and any("smug" in w for w in m.warnings)


@pytest.mark.parametrize("text", ["", "no tags at all", "[", "]", "[]", "[ ]", "[happy"])
def test_texts_without_complete_tags_pass_unchanged(text):
    assert split_emotions(text) == (text, [])
