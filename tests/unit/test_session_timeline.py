"""Session: scripted timelines of VAD/STT/LLM/player events, checked turn by turn."""
from __future__ import annotations

import pytest

from pipeline.flow.frames import (CancelFrame, EventFrame, HoldFrame, InterruptFrame, LLMRequestFrame, LLMTokenFrame,
                             TranscriptFrame)
from pipeline.flow.priorities import MESSAGE_PRIORITY, Priority, interrupts, priority_of
from pipeline.conversation.session import Send, Session

SYSTEM = "You are a test companion."


class Timeline:
    """Feeds frames to a Session with increasing timestamps; keeps every Send."""

    def __init__(self, **kw) -> None:
        self.s = Session(kw.pop("system_prompt", SYSTEM), **kw)
        self.t = 1000.0
        self.sent: list[Send] = []

    def _feed(self, frame) -> list[Send]:
        out = self.s.handle(frame)
        self.sent += out
        return out

    def event(self, name: str, rid: int = 0, **data) -> list[Send]:
        self.t += 0.1
        return self._feed(EventFrame(name=name, response_id=rid, t=self.t, data=data))

    def transcript(self, text: str, utterance: int) -> list[Send]:
        self.t += 0.1
        return self._feed(TranscriptFrame(text=text, utterance_id=utterance, created=self.t))

    def user_says(self, text: str, utterance: int) -> list[Send]:
        out = self.event("user_speech_started", utterance=utterance, audio_time=0.5)
        out += self.event("user_speech_stopped", utterance=utterance, audio_time=1.5)
        return out + self.transcript(text, utterance)

    def reply(self, rid: int, text: str) -> list[Send]:
        out = self.event("llm_first_token", rid, ttft_s=0.2)
        out += self.event("llm_done", rid, text=text, llm_s=0.5)
        out += self.event("first_reply_sample_out", rid)
        return out + self.event("reply_done", rid, chunks=[{"chunk": 0}])


def only_llm_request(sends: list[Send]) -> LLMRequestFrame:
    assert len(sends) == 1
    assert sends[0].dest == "llm"
    assert isinstance(sends[0].frame, LLMRequestFrame)
    return sends[0].frame


def test_speech_start_opens_turn_one():
    tl = Timeline()
    assert tl.event("user_speech_started", utterance=1, audio_time=0.42) == []
    assert list(tl.s.turns) == [1]
    turn = tl.s.turns[1]
    assert (turn.response_id, turn.utterance_id, turn.state) == (1, 1, "listening")
    assert turn.events["user_speech_started"] == tl.t
    assert turn.info["speech_start_audio"] == 0.42
    assert tl.s.next_id == 2
    assert tl.s.replying is None


def test_speech_stop_and_stt_done_land_on_the_utterances_turn():
    tl = Timeline()
    tl.event("user_speech_started", utterance=1)
    tl.event("user_speech_stopped", utterance=1, audio_time=1.25)
    tl.event("stt_done", utterance=1, stt_s=0.3, audio_s=1.1)
    turn = tl.s.turns[1]
    assert turn.state == "thinking"
    assert turn.info["speech_end_audio"] == 1.25
    assert (turn.info["stt_s"], turn.info["utterance_s"]) == (0.3, 1.1)
    assert tl.event("user_speech_stopped", utterance=99) == []  # unknown utterance: ignored
    assert list(tl.s.turns) == [1]


def test_transcript_requests_a_reply_with_system_prompt_and_user_text():
    tl = Timeline()
    tl.event("user_speech_started", utterance=1)
    req = only_llm_request(tl.transcript("What time is it?", 1))
    assert req.response_id == 1
    assert req.priority == Priority.HIGH
    assert req.messages == [{"role": "system", "content": SYSTEM},
                            {"role": "user", "content": "What time is it?"}]
    turn = tl.s.turns[1]
    assert (turn.transcript, turn.state) == ("What time is it?", "thinking")
    assert turn.events["transcript_final"] == tl.t
    assert tl.s.replying == 1


def test_no_system_message_without_a_system_prompt():
    tl = Timeline(system_prompt="")
    tl.event("user_speech_started", utterance=1)
    req = only_llm_request(tl.transcript("hi", 1))
    assert req.messages == [{"role": "user", "content": "hi"}]


def test_empty_transcript_is_an_empty_turn_without_llm_request():
    tl = Timeline()
    tl.event("user_speech_started", utterance=1)
    assert tl.transcript("   ", 1) == []
    turn = tl.s.turns[1]
    assert turn.state == "empty"
    assert turn.finished
    assert tl.s.history == []
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
    assert turn.info["chunks"] == [{"chunk": 0}]
    assert (turn.info["ttft_s"], turn.info["llm_s"]) == (0.2, 0.5)
    assert tl.s.messages()[1:] == [{"role": "user", "content": "Hi there"},
                                   {"role": "assistant", "content": "Hello! Nice to meet you."}]
    assert tl.s.replying is None
    # the next request carries the whole conversation
    req = only_llm_request(tl.user_says("How are you?", 2))
    assert req.response_id == 2
    assert [m["role"] for m in req.messages] == ["system", "user", "assistant", "user"]
    assert req.messages[-1]["content"] == "How are you?"


def test_turn_events_recorded_in_pipeline_order():
    tl = Timeline()
    tl.user_says("Hi", 1)
    tl.event("tts_first_audio", 1, synth_s=0.1)
    tl.reply(1, "Hello.")
    ev = tl.s.turns[1].events
    for name in ("user_speech_started", "user_speech_stopped", "transcript_final", "llm_first_token",
                 "tts_first_audio", "first_reply_sample_out", "reply_done"):
        assert name in ev
    times = [ev[n] for n in ("user_speech_started", "user_speech_stopped", "transcript_final", "llm_first_token",
                             "first_reply_sample_out", "reply_done")]
    assert times == sorted(times)
    assert tl.s.turns[1].info["synth_s"] == 0.1


def test_first_reply_sample_means_speaking():
    tl = Timeline()
    tl.user_says("Hi", 1)
    tl.event("first_reply_sample_out", 1)
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
    assert [m["content"] for m in tl.s.history] == ["q3", "a3", "q4", "a4"]
    assert tl.s.messages()[0] == {"role": "system", "content": SYSTEM}


def test_errors_are_recorded_globally_and_on_their_turn():
    tl = Timeline()
    tl.user_says("Hello", 1)
    tl.event("error", 1, stage="tts", message="tts failed")
    tl.event("error", 0, stage="mic", message="mic glitch")
    assert tl.s.errors == ["tts failed", "mic glitch"]
    assert tl.s.turns[1].errors == ["tts failed"]


def test_globals_and_snapshot():
    tl = Timeline()
    tl.event("input_started")
    tl.user_says("Hello", 1)
    tl.reply(1, "Hi.")
    tl.event("input_done")
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
    assert tl.event("llm_done", 42, text="ghost") == []
    assert tl.s.turns == {}
    assert tl.s.history == []


# ---------------------------------------------------------------- preemptive generation
def prelim(tl: Timeline, text: str, utterance: int) -> list[Send]:
    tl.t += 0.1
    return tl._feed(TranscriptFrame(text=text, utterance_id=utterance, final=False, created=tl.t))


def test_preemptive_reply_is_held_then_released_when_the_endpoint_confirms():
    tl = Timeline()
    tl.event("user_speech_started", utterance=1, audio_time=0.5)
    sends = prelim(tl, "What time is it?", 1)
    hold, req = sends
    assert (hold.dest, type(hold.frame), hold.frame.hold) == ("player", HoldFrame, True)
    assert req.dest == "llm" and req.frame.response_id == hold.frame.response_id == 2
    assert req.frame.messages[-1] == {"role": "user", "content": "What time is it?"}
    assert tl.s.history == []  # not the user's words until the endpoint says so
    tl.event("llm_first_token", 2, ttft_s=0.2)
    tl.event("llm_done", 2, text="It is noon.")
    assert tl.s.history == []
    tl.event("user_speech_stopped", utterance=1, audio_time=1.5)
    sends = tl.transcript("What time is it", 1)  # same words, punctuation aside
    assert [(s.dest, type(s.frame), s.frame.hold) for s in sends] == [("player", HoldFrame, False)]
    assert [m["role"] for m in tl.s.history] == ["user", "assistant"]
    turn = tl.s.turns[1]
    assert turn.info["preemptive"] is True and turn.response_id == 2
    tl.event("first_reply_sample_out", 2)
    tl.event("reply_done", 2)
    assert turn.state == "done" and turn.reply == "It is noon."


def test_speaking_on_cancels_the_preemptive_attempt_and_its_id_is_never_reused():
    tl = Timeline()
    tl.event("user_speech_started", utterance=1)
    prelim(tl, "Tell me", 1)
    tl.event("llm_first_token", 2, ttft_s=0.2)
    sends = tl.event("user_speech_resumed", utterance=1)
    assert [(s.dest, type(s.frame), s.frame.response_id) for s in sends] == [("*", CancelFrame, 2)]
    assert "llm_first_token" not in tl.s.turns[1].events  # the dropped attempt leaves no timings
    tl.event("llm_done", 2, text="stale words")  # leftovers of the cancelled attempt are ignored
    tl.event("user_speech_stopped", utterance=1)
    req = only_llm_request(tl.transcript("Tell me a story", 1))
    assert req.response_id == 3
    assert tl.s.turns[1].reply == "" and tl.s.history[-1] == {"role": "user", "content": "Tell me a story"}


def test_final_words_that_differ_cancel_the_attempt_and_ask_again():
    tl = Timeline()
    tl.event("user_speech_started", utterance=1)
    prelim(tl, "Play some", 1)
    sends = tl.transcript("Play some jazz", 1)
    assert [(s.dest, type(s.frame).__name__, s.frame.response_id) for s in sends] == [
        ("*", "CancelFrame", 2), ("llm", "LLMRequestFrame", 3)]


def test_a_second_preliminary_with_new_words_replaces_the_first():
    tl = Timeline()
    tl.event("user_speech_started", utterance=1)
    prelim(tl, "Set a timer", 1)
    assert prelim(tl, "Set a timer", 1) == []  # same words: the attempt stands
    sends = prelim(tl, "Set a timer for ten minutes", 1)
    assert [type(s.frame).__name__ for s in sends] == ["CancelFrame", "HoldFrame", "LLMRequestFrame"]
    assert sends[0].frame.response_id == 2 and sends[2].frame.response_id == 3


def test_preemptive_off_ignores_preliminary_words():
    tl = Timeline(preemptive=False)
    tl.event("user_speech_started", utterance=1)
    assert prelim(tl, "Hello", 1) == []
    assert only_llm_request(tl.transcript("Hello", 1)).response_id == 1
