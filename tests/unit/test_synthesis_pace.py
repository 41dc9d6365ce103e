"""Chunk budgets from the measured synthesis speed (pipeline/conversation/synthesis_pace.py), and
a simulated reply: paced chunks leave no silence where sentence-long ones left seconds."""
from __future__ import annotations

import pytest

from pipeline.conversation.synthesis_pace import FIRST_MAX_CHARS, SAFETY_S, ReplyPace, SynthesisCost
from tests.rigs.paced_plan import plan

S_PER_CHAR = 0.06


def fitted(fixed: float, rate: float) -> SynthesisCost:
    cost = SynthesisCost()
    for chars in (5, 40, 120, 20, 80) * 5:  # the estimate is smoothed: it takes a few calls
        audio = chars * S_PER_CHAR
        cost.observe(fixed + rate * audio, audio, chars)
    return cost


def test_the_cost_is_fitted_from_the_calls_seen():
    cost = fitted(0.25, 0.5)
    assert cost.fixed_s == pytest.approx(0.25, abs=0.01) and cost.rate == pytest.approx(0.5, abs=0.01)
    assert cost.s_per_char == pytest.approx(S_PER_CHAR, rel=0.1)
    slow = fitted(0.4, 0.9)  # a slower machine: smaller chunks for the same audio ahead
    assert slow.budget_chars(8.0) < cost.budget_chars(8.0)


def test_the_budget_is_what_can_be_made_before_the_audio_ahead_runs_out():
    cost = fitted(0.25, 0.5)
    for ahead in (2.0, 4.0, 8.0):
        chars = cost.budget_chars(ahead)
        assert cost.synth_s(chars) <= ahead - SAFETY_S + 0.05
        assert cost.synth_s(int(chars * 1.2)) > ahead - SAFETY_S  # and not much less
    # little ahead: the floor, a chunk long enough that the next may be longer again
    floor = cost.budget_chars(0.0) * cost.s_per_char
    assert floor > cost.fixed_s / (1 - cost.rate)


def test_one_odd_call_does_not_swing_the_budget():
    cost = fitted(0.3, 0.5)
    before = cost.budget_chars(3.0)
    cost.observe(3.0, 0.6, 10)  # a short chunk that took 3 s (a stalled CPU)
    assert cost.budget_chars(3.0) > 0.6 * before


def test_what_is_ahead_follows_the_audio_sent_and_the_time_since_the_first():
    pace = ReplyPace()
    assert pace.ahead_s(10.0) == 0.0
    pace.sent(1.0, now=10.0)
    pace.sent(2.0, now=10.5)
    assert pace.ahead_s(10.5) == pytest.approx(2.5) and pace.ahead_s(14.0) == 0.0


def simulate(text: str, cost: SynthesisCost, paced: bool) -> list[tuple[float, str]]:
    """One reply through one lane at the given real speed: the silences between its chunks, each
    with the text before it."""
    chunks = plan(text, cost, paced=paced, first_min=4)
    return [(gap, before.text) for (before, _), (_, gap) in zip(chunks, chunks[1:])]


def beyond_the_text(gap: float, before: str) -> float:
    """The issue's measure: silence beyond what the text implies (a sentence end may pause 0.3 s)."""
    return gap - (0.3 if before.rstrip().endswith((".", "!", "?")) else 0.0)


@pytest.mark.parametrize("fixed, rate", [(0.25, 0.5), (0.3, 0.7)])
@pytest.mark.parametrize("text", [
    "Sure. I will remind you to water the plants tomorrow morning.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who loved the stars. "
    "Every night he rowed out past the harbour lights and named them one by one.",
])
def test_paced_chunks_leave_no_long_silence_where_sentences_did(text, fixed, rate):
    cost = fitted(fixed, rate)
    old, new = simulate(text, cost, paced=False), simulate(text, cost, paced=True)
    worst_old = max(beyond_the_text(*g) for g in old)
    worst_new = max(beyond_the_text(*g) for g in new)
    if text.startswith("Sure."):
        assert worst_old > 0.6  # the silence the issue heard: a short clause, then a whole sentence
    assert worst_new < 0.4 and worst_new <= max(worst_old, 0.0) + 0.05, (old, new)


def test_the_first_chunk_is_longer_on_a_slower_machine():
    fast, slow = fitted(0.25, 0.5), fitted(0.3, 0.6)
    assert fast.first_min_chars() < slow.first_min_chars()
    # its audio covers the making of a floor-long next chunk, but for a pause a listener takes
    for cost in (fast, slow):
        audio = cost.first_min_chars() * cost.s_per_char
        assert audio + 0.4 >= cost.fixed_s + cost.rate * cost.floor_s()
    # however slow the machine, the first chunk stays short: first audio is what users wait on
    assert fitted(0.5, 0.85).first_min_chars() == FIRST_MAX_CHARS
