"""The session stage's glue, run in-process (no Ray): fan-out, emit, gating of events."""
from __future__ import annotations

import pytest

from actors.session import SessionStage
from pipeline.config import Config
from pipeline.frames import EventFrame, InterruptFrame, LLMRequestFrame, TranscriptFrame


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


def test_barge_in_fans_out_to_every_other_stages_control_lane(stage):
    stage.push(event("user_speech_started", utterance=1))
    stage.push(TranscriptFrame(text="Tell me a story", utterance_id=1))
    stage.calls.clear()
    stage.push(event("user_speech_started", utterance=2))
    assert sorted(d for d, lane, _ in stage.calls) == ["llm", "player", "stt", "tts", "vad"]
    assert {lane for _, lane, _ in stage.calls} == {"control"}
    assert all(isinstance(f, InterruptFrame) and f.response_id == 2 for _, _, f in stage.calls)
    assert stage.session.turns[1].state == "interrupted"
    assert stage.gate.floor == 2  # the session applies it to itself too


def test_events_without_a_response_still_count_after_a_barge_in(stage):
    stage.push(event("user_speech_started", utterance=1))
    stage.push(TranscriptFrame(text="Hi", utterance_id=1))
    stage.push(event("user_speech_started", utterance=2))  # barge-in: floor -> 2
    stage.push(TranscriptFrame(text="Wait", utterance_id=2))
    stage.push(event("user_speech_started", utterance=3))  # the user barges in again
    stage.push(event("input_done"))
    assert len(stage.session.turns) == 3
    assert stage.session.turns[2].state == "interrupted"
    assert "input_done" in stage.session.globals
