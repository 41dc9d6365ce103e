"""The session stage's glue, run in-process (no Ray): routes, fan-out, conversations kept
apart, what a cut reply's output heard, commands."""
from __future__ import annotations

import pytest

from actors.session import SessionStage
from pipeline.config import Config
from pipeline.flow.bus_events import ReplyStarted, TurnUpdated
from pipeline.flow.events import ReplyStopped, SpeechStarted, SpeechStopped
from pipeline.flow.frames import (HoldFrame, InterruptFrame, LLMRequestFrame, PublishFrame, TranscriptFrame)
from pipeline.flow.routes import ConversationSpec
from tests.unit.helpers import wait_until

STAGES = ("session", "vad", "stt", "llm", "tts", "player", "client")


class _Method:
    def __init__(self, calls: list, handle: str, lane: str) -> None:
        self.calls, self.handle, self.lane = calls, handle, lane

    def remote(self, *args) -> None:
        self.calls.append((self.handle, self.lane, args[-1]))


class FakeHandle:
    """Stands in for an actor handle: records ``push.remote``/``control.remote`` calls."""

    def __init__(self, name: str, calls: list) -> None:
        self.push = _Method(calls, name, "push")
        self.control = _Method(calls, name, "control")
        self.open_conversation = _Method(calls, name, "open")


@pytest.fixture
def stage():
    calls: list = []
    st = SessionStage(Config())
    st.ready()
    st.connect({n: FakeHandle(n, calls) for n in STAGES})
    st.open_conversation(ConversationSpec("a", audio_out="player"))
    st.open_conversation(ConversationSpec("b", audio_out="client"))
    st.calls = calls
    return st


def sent(stage, *dests: str) -> list[tuple[str, str, object]]:
    """What went to ``dests`` (bus publications apart)."""
    return [c for c in stage.calls if c[0] in dests and not isinstance(c[2], PublishFrame)]


def requests(stage) -> list[LLMRequestFrame]:
    return [f for d, _, f in stage.calls if isinstance(f, LLMRequestFrame)]


def test_transcript_is_sent_to_the_llm_with_a_sequence_number(stage):
    stage.push(SpeechStarted(session_id="a", utterance=1))
    stage.push(TranscriptFrame(session_id="a", text="Hello", utterance_id=1))
    [(dest, lane, frame)] = sent(stage, "llm")
    assert (dest, lane) == ("llm", "push")
    assert isinstance(frame, LLMRequestFrame)
    assert (frame.session_id, frame.response_id, frame.seq, frame.source) == ("a", 1, 1, "session")
    assert frame.messages[-1] == {"role": "user", "content": "Hello"}
    published = [f.event for d, _, f in stage.calls if isinstance(f, PublishFrame)]
    assert all(d == "client" for d, _, f in stage.calls if isinstance(f, PublishFrame))
    assert any(isinstance(e, ReplyStarted) and e.response_id == 1 for e in published)
    assert any(isinstance(e, TurnUpdated) and e.turn["state"] == "thinking" for e in published)


def test_barge_in_pauses_at_the_conversations_output_then_fans_out(stage):
    stage.push(SpeechStarted(session_id="a", utterance=1))
    stage.push(TranscriptFrame(session_id="a", text="Tell me a story", utterance_id=1))
    stage.calls.clear()
    stage.push(SpeechStarted(session_id="a", utterance=2, audio_time=5.0))
    holds = sent(stage, *STAGES)  # at the output, and at the client stage (it holds the text)
    assert sorted(d for d, _, _ in holds) == ["client", "player"]
    assert all((lane, type(h), h.hold, h.response_id) == ("control", HoldFrame, True, 1) for _, lane, h in holds)
    stage.calls.clear()
    stage.push(SpeechStopped(session_id="a", utterance=2, audio_time=6.0))
    stage.push(TranscriptFrame(session_id="a", text="Wait", utterance_id=2))
    fanned = [(d, lane, f) for d, lane, f in stage.calls if isinstance(f, InterruptFrame)]
    assert sorted(d for d, _, _ in fanned) == ["client", "llm", "player", "stt", "tts", "vad"]
    assert {lane for _, lane, _ in fanned} == {"control"}
    assert all((f.response_id, f.stopped, f.session_id) == (2, (1,), "a") for _, _, f in fanned)
    assert stage.sessions["a"].turns[1].state == "interrupted"
    assert stage.gate("a").floor == 2  # the session applies it to itself too
    assert stage.gate("b").floor == 0  # another conversation is untouched
    # the next request waits for the player to say what was heard of the cut reply
    assert not requests(stage)
    stage.push(ReplyStopped(session_id="a", response_id=1, seq=0, heard=[
        {"text": "Once upon a time.", "samples": 100, "played": 100, "chunk": 0}]))
    [req] = requests(stage)
    assert req.messages[-2:] == [{"role": "assistant", "content": "Once upon a time.… [interrupted by the user]"},
                                 {"role": "user", "content": "Wait"}]


def test_a_silent_output_does_not_stall_the_conversation(stage, monkeypatch):
    import actors.session as mod

    monkeypatch.setattr(mod, "HEARD_TIMEOUT_S", 0.05)
    stage.send_input("a", {"type": "user_input", "text": "Tell me a story"})
    stage.send_input("a", {"type": "user_input", "text": "No, stop"})  # equal priority: the newest wins
    wait_until(lambda: requests(stage)[1:], timeout=5)
    req = requests(stage)[-1]
    assert req.messages[-1] == {"role": "user", "content": "No, stop"}
    assert stage.sessions["a"].turns[1].metrics.info["heard_unknown"] is True


def test_conversations_are_kept_apart(stage):
    stage.send_input("a", {"type": "user_input", "text": "I am in a"})
    stage.send_input("b", {"type": "user_input", "text": "I am in b"})
    reqs = requests(stage)
    assert [(f.session_id, f.response_id, f.messages[-1]["content"]) for f in reqs] == [
        ("a", 1, "I am in a"), ("b", 1, "I am in b")]  # response ids are per conversation
    stage.close_conversation("a")
    assert stage.send_input("a", {"type": "user_input", "text": "hello?"})["code"] == "unknown_conversation"
    stage.push(TranscriptFrame(session_id="a", text="late", utterance_id=7))  # a late frame: dropped
    assert stage.unknown_conversation == 1 and "a" not in stage.sessions


def test_typed_inputs_are_checked_and_answered(stage):
    bad = stage.send_input("b", {"type": "nope"})
    assert bad["accepted"] is False and bad["code"] == "unknown_type"
    assert stage.send_input("b", {"type": "user_input", "text": 3})["code"] == "invalid_field"
    ok = stage.send_input("b", {"type": "user_input", "text": "Hello there"})
    assert ok == {"accepted": True, "type": "user_input", "priority": 2, "queued": False}
    [frame] = requests(stage)
    assert frame.messages[-1]["content"] == "Hello there"
    queued = stage.send_input("b", {"type": "tap_event", "hitArea": "head"})
    assert queued["queued"] is True and stage.sessions["b"].queued == ["tap_event"]
    # context never waits: the next request already carries the new name
    assert stage.send_input("b", {"type": "character_info", "name": "Neko", "personality": "a cat"})["queued"] is False
    assert stage.sessions["b"].messages()[0]["content"].endswith("You are Neko: a cat")


def test_commands_answer_directly_and_cut_only_a_lower_reply(stage):
    stage.describe({"name": "Kokoro Engine", "version": "x"}, ["jf_alpha", "jf_nezumi"])
    stage.send_input("b", {"type": "tap_event", "hitArea": "head"})  # a medium reply in progress
    stage.calls.clear()
    r = stage.send_input("b", {"type": "command_execute", "command": "voice", "args": {"name": "jf_nezumi"}})
    assert r["command_response"] == {"command": "voice", "success": True, "text": "voice set to jf_nezumi",
                                     "error": None}
    assert any(isinstance(f, InterruptFrame) and f.stopped == (1,) for _, _, f in stage.calls)
    assert stage.conversations["b"].voice == "jf_nezumi"
    assert {d for d, lane, _ in stage.calls if lane == "open"} >= {"tts", "session"}  # every stage learns it
    stage.send_input("b", {"type": "user_input", "text": "Hi"})  # a high reply now
    stage.calls.clear()
    r = stage.send_input("b", {"type": "command_execute", "command": "help"})
    assert r["command_response"]["success"] and "/persona" in r["command_response"]["text"]
    assert not any(isinstance(f, InterruptFrame) for _, _, f in stage.calls)  # equal priority: not cut
    unknown = stage.send_input("b", {"type": "command_execute", "command": "fly"})["command_response"]
    assert unknown["success"] is False and "unknown command 'fly'" in unknown["error"]
    assert stage.send_input("b", {"type": "command_execute", "command": "clear"})["command_response"]["success"]
    assert stage.sessions["b"].history.messages == []
