"""Barge-in, false interruptions, played-words history and input priorities: scripted timelines."""
from __future__ import annotations

import pytest

from pipeline.conversation.inputs import parse_input
from pipeline.flow import events as ev
from pipeline.flow.frames import FrameError
from pipeline.flow.priorities import Priority
from tests.unit.timeline import SYSTEM, Timeline, only_llm_request, prelim

RATE = 24000


class FakePlayer:
    """What the player would report: per response, chunks and how much of each was played."""

    def __init__(self) -> None:
        self.chunks: dict[int, list[dict]] = {}

    def play(self, rid: int, texts: list[str], played_s: float, chunk_s: float = 1.0) -> None:
        out, left, pos = [], played_s, 0
        for i, text in enumerate(texts):
            n = int(chunk_s * RATE)
            p = int(max(0.0, min(left, chunk_s)) * RATE)
            out.append({"text": text, "text_start": pos, "text_end": pos + len(text), "samples": n,
                        "played": p, "speech_start": 0, "speech_end": n, "chunk": i})
            left -= chunk_s
            pos += len(text)
        self.chunks[rid] = out

    def heard(self, rid: int) -> list[dict]:
        return self.chunks.get(rid, [])


@pytest.fixture
def tl():
    player = FakePlayer()
    t = Timeline(heard=player.heard)
    t.player = player
    return t


def speaking(tl, text="Tell me a long story", utterance=1, rid=1):
    tl.user_says(text, utterance)
    tl.event(ev.LLMFirstToken, rid)
    tl.event(ev.ReplyAudible, rid)
    assert tl.s.turns[rid].state == "speaking"


def kinds(sends):
    return [(s.dest, type(s.frame).__name__, s.frame.response_id) for s in sends]


def test_speech_start_pauses_the_reply_at_the_player_and_drops_nothing(tl):
    speaking(tl)
    out = tl.event(ev.SpeechStarted, utterance=2, audio_time=5.0)
    assert kinds(out) == [("player", "HoldFrame", 1)]
    assert out[0].frame.hold is True
    assert tl.s.turns[1].state == "speaking" and tl.s.turns[1].paused_by == 2
    assert tl.s.replying == 1


def test_long_speech_with_words_confirms_the_interrupt_and_keeps_only_heard_words(tl):
    speaking(tl)
    tl.event(ev.LLMDone, 1, text="Once upon a time, there was a fox. It lived in a wood.")
    tl.player.play(1, ["Once upon a time, ", "there was a fox. ", "It lived in a wood."], played_s=1.5)
    tl.event(ev.SpeechStarted, utterance=2, audio_time=5.0)
    assert tl.event(ev.SpeechStopped, utterance=2, audio_time=5.8) == []
    out = tl.transcript("Stop, tell me about cats", 2)
    assert kinds(out) == [("*", "InterruptFrame", 2), ("llm", "LLMRequestFrame", 2)]
    old = tl.s.turns[1]
    assert old.state == "interrupted"
    # chunk 1 fully, and half of "there was a fox." -> "there was" (word ends at or before the half)
    assert old.heard.startswith("Once upon a time, there")
    assert "fox" not in old.heard and "wood" not in old.heard
    msgs = out[1].frame.messages
    assert msgs[0] == {"role": "system", "content": SYSTEM}
    assert msgs[1] == {"role": "user", "content": "Tell me a long story"}
    assert msgs[2]["role"] == "assistant"
    assert msgs[2]["content"] == f"{old.heard}… [interrupted by the user]"
    assert msgs[3] == {"role": "user", "content": "Stop, tell me about cats"}
    assert all(set(m) == {"role", "content"} for m in msgs)  # standard keys only


def test_reply_interrupted_before_its_first_sample_leaves_no_assistant_message(tl):
    tl.user_says("Hello", 1)
    tl.event(ev.LLMDone, 1, text="Hi there, friend.")
    tl.event(ev.SpeechStarted, utterance=2, audio_time=3.0)
    tl.event(ev.SpeechStopped, utterance=2, audio_time=4.0)
    req = only_llm_request([s for s in tl.transcript("Are you there?", 2) if s.dest == "llm"])
    assert [m["role"] for m in req.messages] == ["system", "user", "user"]
    assert tl.s.turns[1].heard == ""


def test_a_burst_shorter_than_min_interrupt_resumes_the_reply_and_is_no_turn(tl):
    speaking(tl)
    tl.event(ev.SpeechStarted, utterance=2, audio_time=5.0)
    out = tl.event(ev.SpeechPaused, utterance=2, audio_time=5.15)  # 150 ms of sound
    assert kinds(out) == [("player", "HoldFrame", 1)] and out[0].frame.hold is False
    assert tl.s.turns[1].metrics.info["false_interruptions"] == 1
    assert tl.s.turns[1].paused_by == 0
    assert prelim(tl, "Hm", 2) == []  # no preemptive reply for a burst
    tl.event(ev.SpeechStopped, utterance=2, audio_time=5.15)
    assert tl.s.turns[2].state == "ignored"
    assert tl.transcript("Hm.", 2) == []  # its words do not make a turn
    assert tl.s.turns[1].state == "speaking" and tl.s.replying == 1
    assert tl.s.false_interruptions == 1


def test_speaking_on_after_a_short_burst_pauses_again(tl):
    speaking(tl)
    tl.event(ev.SpeechStarted, utterance=2, audio_time=5.0)
    tl.event(ev.SpeechPaused, utterance=2, audio_time=5.1)  # resumed
    out = tl.event(ev.SpeechResumed, utterance=2, audio_time=5.3)
    assert kinds(out) == [("player", "HoldFrame", 1)] and out[0].frame.hold is True
    tl.event(ev.SpeechStopped, utterance=2, audio_time=6.0)
    out = tl.transcript("Wait a second", 2)
    assert kinds(out)[0] == ("*", "InterruptFrame", 2)


def test_long_speech_with_an_empty_transcript_resumes_the_reply(tl):
    speaking(tl)
    tl.event(ev.SpeechStarted, utterance=2, audio_time=5.0)
    tl.event(ev.SpeechStopped, utterance=2, audio_time=6.0)  # a second of laughter
    out = tl.transcript("", 2)
    assert kinds(out) == [("player", "HoldFrame", 1)] and out[0].frame.hold is False
    assert tl.s.turns[2].state == "empty"
    assert tl.s.turns[1].metrics.info["false_interruption_reasons"] == ["no words"]
    assert tl.s.turns[1].state == "speaking"


def test_preemptive_words_during_a_paused_reply_confirm_the_interrupt_first(tl):
    speaking(tl)
    tl.event(ev.SpeechStarted, utterance=2, audio_time=5.0)
    tl.event(ev.SpeechPaused, utterance=2, audio_time=5.9)  # long enough: stays paused
    out = prelim(tl, "What about dogs", 2)
    assert kinds(out) == [("*", "InterruptFrame", 2), ("player", "HoldFrame", 3), ("llm", "LLMRequestFrame", 3)]
    assert tl.s.turns[1].state == "interrupted"
    tl.event(ev.SpeechStopped, utterance=2, audio_time=6.4)
    out = tl.transcript("What about dogs?", 2)
    assert kinds(out) == [("player", "HoldFrame", 3)] and out[0].frame.hold is False


def test_a_late_reply_done_does_not_undo_the_interruption(tl):
    speaking(tl)
    tl.user_says("Stop", 2)
    tl.event(ev.ReplyDone, 1)
    assert tl.s.turns[1].state == "interrupted"
    assert tl.s.replying == 2


def test_speech_after_the_reply_finished_does_not_pause_anything(tl):
    tl.user_says("Hello", 1)
    tl.reply(1, "Hi!")
    assert tl.event(ev.SpeechStarted, utterance=2) == []
    assert tl.s.turns[1].state == "done"


def test_a_finished_reply_keeps_its_whole_text(tl):
    tl.user_says("Hello", 1)
    tl.reply(1, "Hi! How are you?")
    assert tl.history[-1]["content"] == "Hi! How are you?"
    assert tl.s.messages()[-1] == {"role": "assistant", "content": "Hi! How are you?"}


# ---------------------------------------------------------------- typed inputs and priorities
def typed(tl, msg):
    tl.t += 0.1
    return tl._feed(parse_input(msg))


def test_user_input_interrupts_a_reply_at_once_with_heard_words(tl):
    speaking(tl)
    tl.event(ev.LLMDone, 1, text="First part. Second part.")
    tl.player.play(1, ["First part. ", "Second part."], played_s=1.0)
    out = typed(tl, {"type": "user_input", "text": "Never mind"})
    assert kinds(out) == [("*", "InterruptFrame", 2), ("llm", "LLMRequestFrame", 2)]
    assert out[1].frame.priority == Priority.HIGH
    assert out[1].frame.messages[2]["content"] == "First part.… [interrupted by the user]"
    assert tl.s.turns[2].source == "user_input"


def test_a_tap_queues_behind_a_high_priority_reply_and_runs_after_it(tl):
    speaking(tl)
    assert typed(tl, {"type": "tap_event", "hitArea": "head", "position": {"x": 0.5, "y": 0.3}}) == []
    assert tl.s.queued == ["tap_event"]
    tl.event(ev.LLMDone, 1, text="Once.")
    out = tl.event(ev.ReplyDone, 1)
    assert kinds(out) == [("llm", "LLMRequestFrame", 2)]
    assert out[0].frame.priority == Priority.MEDIUM
    assert out[0].frame.messages[-1]["content"] == "(The user touched your head.)"
    assert tl.s.queued == []


def test_medium_interrupts_medium_and_high_waits_for_nobody(tl):
    out = typed(tl, {"type": "tap_event", "hitArea": "body"})
    assert kinds(out) == [("llm", "LLMRequestFrame", 1)]
    out = typed(tl, {"type": "plugin_message", "pluginName": "Timer", "content": "Tea is ready"})
    assert kinds(out) == [("*", "InterruptFrame", 2), ("llm", "LLMRequestFrame", 2)]
    out = typed(tl, {"type": "command_execute", "command": "info", "args": {}})
    assert kinds(out) == [("*", "InterruptFrame", 3), ("llm", "LLMRequestFrame", 3)]
    assert out[1].frame.messages[-1]["content"] == "/info"


def test_user_speech_interrupts_a_medium_reply(tl):
    typed(tl, {"type": "tap_event", "hitArea": "body"})
    tl.event(ev.ReplyAudible, 1)
    out = tl.event(ev.SpeechStarted, utterance=1, audio_time=1.0)
    assert kinds(out) == [("player", "HoldFrame", 1)]


def test_queued_inputs_wait_in_order_and_context_never_waits(tl):
    speaking(tl)
    typed(tl, {"type": "file_upload", "fileName": "a.png", "fileType": "image/png", "fileSize": 10, "data": "aGk="})
    typed(tl, {"type": "tap_event", "hitArea": "head"})
    typed(tl, {"type": "character_info", "name": "Neko", "personality": "a cheerful cat"})
    assert tl.s.queued == ["file_upload", "tap_event"]  # medium waits behind the high reply; context does not
    out = tl.event(ev.ReplyDone, 1)
    assert kinds(out) == [("llm", "LLMRequestFrame", 2)]
    assert "a.png" in out[0].frame.messages[-1]["content"]
    assert out[0].frame.messages[0]["content"].endswith("You are Neko: a cheerful cat")
    assert tl.s.queued == ["tap_event"]
    assert kinds(tl.event(ev.ReplyDone, 2)) == [("llm", "LLMRequestFrame", 3)]
    assert "Neko" in tl.s.messages()[0]["content"]
    assert tl.s.queued == []


def test_a_failed_reply_lets_queued_inputs_go(tl):
    tl.user_says("Hello", 1)
    typed(tl, {"type": "tap_event", "hitArea": "head"})
    out = tl.event(ev.StageError, 1, stage="llm", message="LLM endpoint down", fatal=True)
    assert tl.s.turns[1].state == "failed"
    assert kinds(out) == [("llm", "LLMRequestFrame", 2)]


@pytest.mark.parametrize("msg,code,err", [
    ("hello", "not_an_object", "JSON object"),
    ({"text": "x"}, "missing_type", "needs a 'type'"),
    ({"type": "user_speech"}, "unknown_type", "unknown message type 'user_speech'"),
    ({"type": 7}, "unknown_type", "unknown message type 7"),
    ({"type": "user_input"}, "missing_field", "needs 'text'"),
    ({"type": "user_input", "text": 3}, "invalid_field", "user_input.text must be string, got int"),
    ({"type": "user_input", "text": "  "}, "empty_message", "Message cannot be empty"),
    ({"type": "tap_event"}, "missing_field", "needs 'hitArea'"),
    ({"type": "character_info", "useCustom": "yes"}, "invalid_field", "useCustom must be boolean"),
    ({"type": "file_upload", "fileName": "a.txt"}, "missing_field", "needs 'data'"),
    ({"type": "tool_confirm_response", "callId": "c1", "approved": 1}, "invalid_field", "approved must be boolean"),
])
def test_bad_input_messages_say_what_is_wrong(msg, code, err):
    with pytest.raises(FrameError, match=err) as e:
        parse_input(msg)
    assert e.value.code == code


def test_inputs_carry_their_types_priority():
    assert parse_input({"type": "tap_event", "hitArea": "x"}).priority == Priority.MEDIUM
    assert parse_input({"type": "model_info", "modelInfo": {}}).priority == Priority.LOW
    assert parse_input({"type": "user_input", "text": "hi"}).priority == Priority.HIGH
