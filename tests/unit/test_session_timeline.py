"""Session: scripted timelines of VAD/STT/LLM/player events, checked turn by turn."""
from __future__ import annotations

import pytest

from pipeline.flow import events as ev
from pipeline.flow.frames import CancelFrame, HoldFrame, LLMTokenFrame
from pipeline.flow.priorities import MESSAGE_PRIORITY, Priority, interrupts, priority_of
from tests.unit.timeline import SYSTEM, Timeline, only_llm_request, prelim


def test_speech_start_opens_turn_one():
    tl = Timeline()
    assert tl.event(ev.SpeechStarted, utterance=1, audio_time=0.42) == []
    assert list(tl.s.turns) == [1]
    turn = tl.s.turns[1]
    assert (turn.response_id, turn.utterance_id, turn.state) == (1, 1, "listening")
    assert turn.metrics.events["user_speech_started"] == tl.t
    assert turn.speech_start_audio == 0.42
    assert tl.s.next_id == 2
    assert tl.s.replying is None


def test_speech_stop_and_stt_done_land_on_the_utterances_turn():
    tl = Timeline()
    tl.event(ev.SpeechStarted, utterance=1)
    tl.event(ev.SpeechStopped, utterance=1, audio_time=1.25)
    tl.event(ev.TranscriptTimed, utterance=1, stt_s=0.3, audio_s=1.1)
    turn = tl.s.turns[1]
    assert turn.state == "thinking"
    assert turn.speech_end_audio == 1.25
    assert (turn.metrics.info["stt_s"], turn.metrics.info["utterance_s"]) == (0.3, 1.1)
    assert tl.event(ev.SpeechStopped, utterance=99) == []  # unknown utterance: ignored
    assert list(tl.s.turns) == [1]


def test_transcript_requests_a_reply_with_system_prompt_and_user_text():
    tl = Timeline()
    tl.event(ev.SpeechStarted, utterance=1)
    req = only_llm_request(tl.transcript("What time is it?", 1))
    assert req.response_id == 1
    assert req.priority == Priority.HIGH
    assert req.messages == [{"role": "system", "content": SYSTEM},
                            {"role": "user", "content": "What time is it?"}]
    turn = tl.s.turns[1]
    assert (turn.transcript, turn.state) == ("What time is it?", "thinking")
    assert turn.metrics.events["transcript_final"] == tl.t
    assert tl.s.replying == 1


def test_no_system_message_without_a_system_prompt():
    tl = Timeline(system_prompt="")
    tl.event(ev.SpeechStarted, utterance=1)
    req = only_llm_request(tl.transcript("hi", 1))
    assert req.messages == [{"role": "user", "content": "hi"}]


def test_empty_transcript_is_an_empty_turn_without_llm_request():
    tl = Timeline()
    tl.event(ev.SpeechStarted, utterance=1)
    assert tl.transcript("   ", 1) == []
    turn = tl.s.turns[1]
    assert turn.state == "empty"
    assert turn.finished
    assert tl.history == []
    assert tl.s.replying is None


def test_transcript_without_a_vad_turn_opens_one():
    tl = Timeline()
    req = only_llm_request(tl.transcript("typed input", 7))
    assert req.response_id == 1
    assert tl.s.turns[1].utterance_id == 7


def test_llm_done_adds_the_assistant_reply_to_history():
    tl = Timeline()
    tl.user_says("Hi there", 1)
    tl.reply(1, "Hello! Nice to meet you.")
    turn = tl.s.turns[1]
    assert turn.reply == "Hello! Nice to meet you."
    assert turn.state == "done"
    assert turn.metrics.info["chunks"] == [{"chunk": 0}]
    assert (turn.metrics.info["ttft_s"], turn.metrics.info["llm_s"]) == (0.2, 0.5)
    assert tl.s.messages()[1:] == [{"role": "user", "content": "Hi there"},
                                   {"role": "assistant", "content": "Hello! Nice to meet you."}]
    assert tl.s.replying is None
    # the next request carries the whole conversation
    req = only_llm_request(tl.user_says("How are you?", 2))
    assert req.response_id == 2
    assert [m["role"] for m in req.messages] == ["system", "user", "assistant", "user"]
    assert req.messages[-1]["content"] == "How are you?"


def test_each_event_sets_its_timeline_point_at_its_own_time():
    """The timeline is when things happened (the event's ``t``), not when the session heard
    of them: here every event arrives 0.1 s after the last but says it happened elsewhere."""
    from pipeline.conversation.metrics import TURN_EVENTS

    tl = Timeline()
    happened = {"user_speech_started": 10.0, "user_speech_stopped": 11.0, "llm_first_token": 11.4,
                "tts_first_audio": 11.9, "first_reply_sample_out": 12.0, "reply_done": 14.0}
    tl._feed(ev.SpeechStarted(session_id="t", utterance=1, t=happened["user_speech_started"]))
    tl._feed(ev.SpeechStopped(session_id="t", utterance=1, t=happened["user_speech_stopped"]))
    tl.transcript("Hi", 1)
    for kind, name in ((ev.LLMFirstToken, "llm_first_token"), (ev.TTSFirstAudio, "tts_first_audio"),
                       (ev.ReplyAudible, "first_reply_sample_out")):
        tl._feed(kind(session_id="t", response_id=1, t=happened[name]))
    tl._feed(ev.ReplyAudible(session_id="t", response_id=1, t=99.0))  # a repeat does not move the first
    tl._feed(ev.ReplyDone(session_id="t", response_id=1, t=happened["reply_done"]))
    marks = tl.s.turns[1].metrics.events
    assert {k: marks[k] for k in happened} == happened
    assert marks["transcript_final"] == tl.t  # the transcript's own creation time
    assert set(marks) <= set(TURN_EVENTS)  # every point has its place in the one list


def test_first_reply_sample_means_speaking():
    tl = Timeline()
    tl.user_says("Hi", 1)
    tl.event(ev.ReplyAudible, 1)
    assert tl.s.turns[1].state == "speaking"
    assert tl.s.replying == 1


def test_priority_table():
    assert interrupts(Priority.HIGH, Priority.MEDIUM)
    assert not interrupts(Priority.LOW, Priority.HIGH)
    assert priority_of("user_speech") == Priority.HIGH
    assert priority_of("tap_event") == Priority.MEDIUM
    assert priority_of("plugin_status") == Priority.LOW
    assert set(MESSAGE_PRIORITY.values()) == set(Priority)
    with pytest.raises(ValueError, match="unknown message type"):
        priority_of("nope")


def test_response_ids_only_grow():
    tl = Timeline()
    for u in range(1, 5):
        tl.user_says(f"message {u}", u)
    assert list(tl.s.turns) == [1, 2, 3, 4]
    reqs = [s.frame for s in tl.sent if s.dest == "llm"]
    assert [r.response_id for r in reqs] == [1, 2, 3, 4]
    interrupts_sent = [s.frame.response_id for s in tl.sent if s.dest == "*"]
    assert interrupts_sent == [2, 3, 4]  # each turn cut the reply still thinking before it


def test_history_keeps_the_last_turns_only():
    tl = Timeline(history_turns=2)
    for u in range(1, 5):
        tl.user_says(f"q{u}", u)
        tl.reply(u, f"a{u}")
    assert [m["content"] for m in tl.history] == ["q3", "a3", "q4", "a4"]
    assert tl.s.messages()[0] == {"role": "system", "content": SYSTEM}


def test_errors_are_recorded_globally_and_on_their_turn():
    tl = Timeline()
    tl.user_says("Hello", 1)
    tl.event(ev.StageError, 1, stage="tts", message="tts failed")
    tl.event(ev.StageError, 0, stage="mic", message="mic glitch")
    assert tl.s.errors == ["tts failed", "mic glitch"]
    assert tl.s.turns[1].errors == ["tts failed"]


def test_globals_and_snapshot():
    tl = Timeline()
    tl.event(ev.InputStarted)
    tl.user_says("Hello", 1)
    tl.reply(1, "Hi.")
    tl.event(ev.InputDone)
    snap = tl.s.snapshot()
    assert set(snap["globals"]) == {"input_started", "input_done"}
    assert snap["replying"] is None
    [turn] = snap["turns"]
    assert (turn["response_id"], turn["transcript"], turn["reply"], turn["state"]) == (1, "Hello", "Hi.", "done")
    assert turn["priority"] == int(Priority.HIGH)
    assert snap["history"][0]["role"] == "system"


def test_unrelated_frames_and_unknown_responses_are_ignored():
    tl = Timeline()
    assert tl.s.handle(LLMTokenFrame(text="x", response_id=1)) == []
    assert tl.event(ev.LLMDone, 42, text="ghost") == []
    assert tl.s.turns == {}
    assert tl.history == []


# ---------------------------------------------------------------- preemptive generation
def test_preemptive_reply_is_held_then_released_when_the_endpoint_confirms():
    tl = Timeline()
    tl.event(ev.SpeechStarted, utterance=1, audio_time=0.5)
    sends = prelim(tl, "What time is it?", 1)
    hold, req = sends
    assert (hold.dest, type(hold.frame), hold.frame.hold) == ("player", HoldFrame, True)
    assert req.dest == "llm" and req.frame.response_id == hold.frame.response_id == 2
    assert req.frame.messages[-1] == {"role": "user", "content": "What time is it?"}
    assert tl.history == []  # not the user's words until the endpoint says so
    tl.event(ev.LLMFirstToken, 2, ttft_s=0.2)
    tl.event(ev.LLMDone, 2, text="It is noon.")
    assert tl.history == []
    tl.event(ev.SpeechStopped, utterance=1, audio_time=1.5)
    sends = tl.transcript("What time is it", 1)  # same words, punctuation aside
    assert [(s.dest, type(s.frame), s.frame.hold) for s in sends] == [("player", HoldFrame, False)]
    assert [m["role"] for m in tl.history] == ["user", "assistant"]
    turn = tl.s.turns[1]
    assert turn.metrics.info["preemptive"] is True and turn.response_id == 2
    tl.event(ev.ReplyAudible, 2)
    tl.event(ev.ReplyDone, 2)
    assert turn.state == "done" and turn.reply == "It is noon."


def test_speaking_on_cancels_the_preemptive_attempt_and_its_id_is_never_reused():
    tl = Timeline()
    tl.event(ev.SpeechStarted, utterance=1)
    prelim(tl, "Tell me", 1)
    tl.event(ev.LLMFirstToken, 2, ttft_s=0.2)
    sends = tl.event(ev.SpeechResumed, utterance=1)
    assert [(s.dest, type(s.frame), s.frame.response_id) for s in sends] == [("*", CancelFrame, 2)]
    assert "llm_first_token" not in tl.s.turns[1].metrics.events  # the dropped attempt leaves no timings
    tl.event(ev.LLMDone, 2, text="stale words")  # leftovers of the cancelled attempt are ignored
    tl.event(ev.SpeechStopped, utterance=1)
    req = only_llm_request(tl.transcript("Tell me a story", 1))
    assert req.response_id == 3
    assert tl.s.turns[1].reply == "" and tl.history[-1] == {"role": "user", "content": "Tell me a story"}


def test_final_words_that_differ_cancel_the_attempt_and_ask_again():
    tl = Timeline()
    tl.event(ev.SpeechStarted, utterance=1)
    prelim(tl, "Play some", 1)
    sends = tl.transcript("Play some jazz", 1)
    assert [(s.dest, type(s.frame).__name__, s.frame.response_id) for s in sends] == [
        ("*", "CancelFrame", 2), ("llm", "LLMRequestFrame", 3)]


def test_a_second_preliminary_with_new_words_replaces_the_first():
    tl = Timeline()
    tl.event(ev.SpeechStarted, utterance=1)
    prelim(tl, "Set a timer", 1)
    assert prelim(tl, "Set a timer", 1) == []  # same words: the attempt stands
    sends = prelim(tl, "Set a timer for ten minutes", 1)
    assert [type(s.frame).__name__ for s in sends] == ["CancelFrame", "HoldFrame", "LLMRequestFrame"]
    assert sends[0].frame.response_id == 2 and sends[2].frame.response_id == 3


def test_preemptive_off_ignores_preliminary_words():
    tl = Timeline(preemptive=False)
    tl.event(ev.SpeechStarted, utterance=1)
    assert prelim(tl, "Hello", 1) == []
    assert only_llm_request(tl.transcript("Hello", 1)).response_id == 1
