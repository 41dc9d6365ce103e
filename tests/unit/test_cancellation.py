"""ResponseGate: which responses are still live for a stage."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.flow.gate import ResponseGate
from pipeline.flow.frames import (CancelFrame, EndOfTurnFrame, InputAudioFrame, InterruptFrame, LLMTokenFrame,
                             PriorityChangeFrame, SentenceFrame, TranscriptFrame, TTSAudioFrame,
                             UserStartedSpeakingFrame, UserStoppedSpeakingFrame)


def reply_frames(rid: int):
    return [LLMTokenFrame(text="x", response_id=rid), SentenceFrame(text="x.", response_id=rid),
            TTSAudioFrame(pcm=np.zeros(10, np.int16), sample_rate=24000, response_id=rid),
            EndOfTurnFrame(response_id=rid)]


def input_frames(rid: int):
    return [InputAudioFrame(pcm=np.zeros(512, np.int16), sample_rate=16000, response_id=rid),
            TranscriptFrame(text="hello", response_id=rid), UserStartedSpeakingFrame(response_id=rid),
            UserStoppedSpeakingFrame(response_id=rid)]


def test_everything_is_live_at_first():
    gate = ResponseGate()
    assert gate.floor == 0
    assert all(gate.admit(f) for rid in (0, 1, 5) for f in reply_frames(rid))
    assert gate.dropped == 0


def test_interrupt_makes_older_responses_stale():
    gate = ResponseGate()
    assert gate.apply(InterruptFrame(response_id=3)) is True
    assert gate.floor == 3
    assert [gate.is_live(r) for r in range(6)] == [False, False, False, True, True, True]
    for f in reply_frames(2):
        assert gate.admit(f) is False
    for f in reply_frames(3) + reply_frames(4):
        assert gate.admit(f) is True
    assert gate.dropped == 4


def test_interrupt_never_lowers_the_floor():
    gate = ResponseGate()
    gate.apply(InterruptFrame(response_id=5))
    assert gate.apply(InterruptFrame(response_id=3)) is False
    assert gate.apply(InterruptFrame(response_id=5)) is False  # repeated: no change
    assert gate.floor == 5
    assert not gate.is_live(4)


def test_cancel_kills_exactly_one_response():
    gate = ResponseGate()
    assert gate.apply(CancelFrame(response_id=2)) is True
    assert [gate.is_live(r) for r in (1, 2, 3)] == [True, False, True]
    assert gate.floor == 0
    assert gate.apply(CancelFrame(response_id=2)) is False  # already cancelled
    assert [gate.admit(f) for f in reply_frames(2)] == [False] * 4
    assert all(gate.admit(f) for f in reply_frames(1) + reply_frames(3))
    assert gate.dropped == 4


def test_cancel_below_the_floor_changes_nothing():
    gate = ResponseGate()
    gate.apply(InterruptFrame(response_id=4))
    assert gate.apply(CancelFrame(response_id=2)) is False
    assert gate.apply(CancelFrame(response_id=4)) is True
    assert not gate.is_live(4)
    assert gate.is_live(5)


def test_cancel_above_the_floor_survives_a_later_interrupt():
    gate = ResponseGate()
    gate.apply(CancelFrame(response_id=6))
    gate.apply(InterruptFrame(response_id=5))
    assert gate.is_live(5)
    assert not gate.is_live(6)  # still cancelled
    assert gate.is_live(7)


@pytest.mark.parametrize("make", [
    lambda rid: InputAudioFrame(pcm=np.zeros(512, np.int16), sample_rate=16000, response_id=rid),
    lambda rid: TranscriptFrame(text="hello", response_id=rid),
    lambda rid: UserStartedSpeakingFrame(response_id=rid),
    lambda rid: UserStoppedSpeakingFrame(response_id=rid),
])
def test_input_side_frames_are_never_dropped(make):
    gate = ResponseGate()
    gate.apply(InterruptFrame(response_id=10))
    gate.apply(CancelFrame(response_id=10))
    for rid in (0, 3, 10):
        assert gate.admit(make(rid)) is True
    assert gate.dropped == 0


def test_dropped_counts_only_rejected_frames():
    gate = ResponseGate()
    gate.apply(InterruptFrame(response_id=2))
    gate.apply(CancelFrame(response_id=3))
    frames = (reply_frames(1) + input_frames(1) + reply_frames(2) + reply_frames(3) + input_frames(3)
              + reply_frames(4))
    admitted = [gate.admit(f) for f in frames]
    assert admitted.count(False) == 8  # reply frames of 1 (stale) and 3 (cancelled)
    assert gate.dropped == 8


def test_other_control_frames_do_not_change_the_gate():
    gate = ResponseGate()
    assert gate.apply(PriorityChangeFrame(response_id=3)) is False
    assert gate.apply(EndOfTurnFrame(response_id=3)) is False
    assert gate.floor == 0
    assert gate.is_live(1) and gate.is_live(3)
