"""The session stage's glue, run in-process (no Ray): fan-out, emit, gating of events."""
from __future__ import annotations

import pytest

from actors.session import SessionStage
from pipeline.config import Config
from pipeline.flow.frames import EventFrame, InterruptFrame, LLMRequestFrame, TranscriptFrame


class _Method:
    def __init__(self, calls: list, handle: str, lane: str) -> None:
        self.calls, self.handle, self.lane = calls, handle, lane

    def remote(self, frame) -> None:
        self.calls.append((self.handle, self.lane, frame))


class FakeHandle:
    """Stands in for an actor handle: records ``push.remote``/``control.remote`` calls."""

    def __init__(self, name: str, calls: list) -> None:
        self.push = _Method(calls, name, "push")
        self.control = _Method(calls, name, "control")


@pytest.fixture
def stage():
    calls: list = []
    st = SessionStage(Config())
    st.ready()
    st.connect({n: FakeHandle(n, calls) for n in ("session", "vad", "stt", "llm", "tts", "player")})
    st.calls = calls
    return st


def event(name: str, rid: int = 0, **data) -> EventFrame:
    return EventFrame(name=name, response_id=rid, data=data)


def test_transcript_is_sent_to_the_llm_with_a_sequence_number(stage):
    stage.push(event("user_speech_started", utterance=1))
    stage.push(TranscriptFrame(text="Hello", utterance_id=1))
    [(dest, lane, frame)] = stage.calls
    assert (dest, lane) == ("llm", "push")
    assert isinstance(frame, LLMRequestFrame)
    assert (frame.response_id, frame.seq, frame.source) == (1, 1, "session")
    assert frame.messages[-1] == {"role": "user", "content": "Hello"}


def test_barge_in_pauses_on_the_players_control_lane_then_fans_out(stage):
    stage.push(event("user_speech_started", utterance=1))
    stage.push(TranscriptFrame(text="Tell me a story", utterance_id=1))
    stage.calls.clear()
    stage.push(event("user_speech_started", utterance=2, audio_time=5.0))
    [(dest, lane, hold)] = stage.calls
    assert (dest, lane, type(hold).__name__, hold.hold, hold.response_id) == ("player", "control", "HoldFrame",
                                                                              True, 1)
    stage.calls.clear()
    stage.push(event("user_speech_stopped", utterance=2, audio_time=6.0))
    stage.push(TranscriptFrame(text="Wait", utterance_id=2))
    fanned = [(d, lane, f) for d, lane, f in stage.calls if isinstance(f, InterruptFrame)]
    assert sorted(d for d, lane, _ in fanned) == ["llm", "player", "stt", "tts", "vad"]
    assert {lane for _, lane, _ in fanned} == {"control"}
    assert all(f.response_id == 2 for _, _, f in fanned)
    assert stage.session.turns[1].state == "interrupted"
    assert stage.gate.floor == 2  # the session applies it to itself too


def test_events_without_a_response_still_count_after_a_barge_in(stage):
    stage.push(event("user_speech_started", utterance=1))
    stage.push(TranscriptFrame(text="Hi", utterance_id=1))
    stage.push(event("user_speech_started", utterance=2, audio_time=5.0))  # barge-in: paused
    stage.push(event("user_speech_stopped", utterance=2, audio_time=6.0))
    stage.push(TranscriptFrame(text="Wait", utterance_id=2))  # confirmed: floor -> 2
    stage.push(event("user_speech_started", utterance=3))  # the user barges in again
    stage.push(event("input_done"))
    assert len(stage.session.turns) == 3
    assert stage.session.turns[1].state == "interrupted"
    assert stage.session.turns[2].paused_by == 3  # paused until utterance 3 proves to be a turn
    assert "input_done" in stage.session.globals


def test_typed_inputs_are_checked_and_answered(stage):
    assert stage.send_input({"type": "nope"})["error"].startswith("unknown input type")
    ok = stage.send_input({"type": "user_input", "text": "Hello there"})
    assert ok == {"accepted": True, "type": "user_input", "priority": 2, "queued": False}
    [(dest, lane, frame)] = stage.calls
    assert (dest, lane) == ("llm", "push") and frame.messages[-1]["content"] == "Hello there"
    queued = stage.send_input({"type": "tap_event", "hitArea": "head"})
    assert queued["queued"] is True and stage.session.queued == ["tap_event"]
