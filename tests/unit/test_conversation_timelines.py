"""Whole conversations through the stage actors on scripted timelines (as livekit/agents'
agent-session tests do): the real session, LLM, TTS and client stages, with a scripted LLM
server, a fake TTS model (50 ms of tone a character) and scripted user speech in place of
VAD + STT. What is asserted is what reached the outputs (the conversation's bus) and the LLM.
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from pipeline.config import CONFIG_DIR
from pipeline.flow import bus_events as be
from pipeline.flow.routes import ConversationSpec
from tests.rigs.fake_llm import FakeLLM
from tests.unit.helpers import wait_until

STORY = ("Once upon a time, a fox lived by a river. She watched the fish every day. One morning the river "
         "was gone. She followed the road until she found it again.")
# a short first sentence, then one long one: 1.7 s of the fake model's work in one chunk
LONG = ("Yes. Here is a very long sentence without a single pause in it that goes on about the river and "
        "the fox and the road and the fish and the owls in the forest until it ends at last.")
WAIT_S = 60.0


class Rig:
    def __init__(self, ray, cfg, llm: FakeLLM) -> None:
        from actors.client import ClientActor
        from actors.llm import LLMActor
        from actors.session import SessionActor
        from tests.unit.fake_stages import FakeTTSActor, ScriptedSpeechActor

        self.ray = ray
        self.actors = {"session": SessionActor.remote(cfg), "client": ClientActor.remote(cfg),
                       "llm": LLMActor.remote(cfg, llm.base_url)}
        self.tts, self.speech = FakeTTSActor.remote(cfg, 0), ScriptedSpeechActor.remote(cfg)
        targets = {**self.actors, "tts": [self.tts], "stt": [self.speech]}
        self.handles = [*self.actors.values(), self.tts, self.speech]
        ray.get([h.connect.remote(targets) for h in self.handles])
        ray.get([h.ready.remote() for h in self.handles], timeout=120)
        self.events: dict[str, list] = {}

    def open(self, audio_out: str = "client") -> str:
        sid = uuid.uuid4().hex[:8]
        spec = ConversationSpec(sid, audio_out, {"tts": 0, "stt": 0})
        self.ray.get([h.open_conversation.remote(spec) for h in self.handles])
        got = self.events[sid] = []
        gen = self.actors["client"].subscribe.options(num_returns="streaming").remote(sid, uuid.uuid4().hex)
        self.ray.get(next(gen))  # subscribed

        def pump() -> None:
            try:
                for ref in gen:
                    got.append(self.ray.get(ref))
            except Exception:  # the rig's actors were killed: the stream is over
                pass

        threading.Thread(target=pump, daemon=True).start()
        return sid

    def close(self, sid: str) -> None:
        self.ray.get([h.close_conversation.remote(sid) for h in self.handles])

    def type(self, sid: str, text: str) -> dict:
        return self.ray.get(self.actors["session"].send_input.remote(sid, {"type": "user_input", "text": text}))

    def speak(self, sid: str, text: str, speech_s: float = 1.0, utterance: int = 1) -> None:
        self.speech.say.remote(sid, text, speech_s, utterance)

    def of(self, sid: str, kind: type, rid: int | None = None) -> list:
        return [e for e in self.events[sid] if isinstance(e, kind) and (rid is None or e.response_id == rid)]

    def wait(self, cond, timeout: float = WAIT_S):
        return wait_until(cond, timeout=timeout, interval=0.02)

    def kill(self) -> None:
        for h in self.handles:
            self.ray.kill(h)


@pytest.fixture(scope="module")
def llm():
    with FakeLLM(STORY, ttft=0.1, tokens_per_s=20.0, replies={"hello": "Hi there, friend.",
                                                              "weather": "Sunny all day.", "long": LONG}) as f:
        yield f


@pytest.fixture(scope="module")
def rig(ray_cluster, test_config, llm):
    r = Rig(ray_cluster, test_config, llm)
    yield r
    r.kill()


def requests_for(llm: FakeLLM, word: str) -> list[dict]:
    return [r for r in llm.requests if word in str(r["messages"][-1]["content"]).lower()]


def test_a_typed_turn_reaches_the_llm_and_its_reply_the_outputs(rig, llm):
    sid = rig.open()
    assert rig.type(sid, "Hello!")["accepted"]
    rig.wait(lambda: rig.of(sid, be.ReplyFinished))
    [started] = rig.of(sid, be.ReplyStarted)
    assert (started.response_id, started.source) == (1, "user_input")
    assert "".join(e.text for e in rig.of(sid, be.ReplyDelta, 1)) == "Hi there, friend."
    chunks = rig.of(sid, be.ReplyAudio, 1)
    assert [c.text for c in chunks] == ["Hi there,", "friend."]  # the first clause alone: first audio sooner
    assert [c.sample_offset for c in chunks] == [0, len(chunks[0].pcm)]
    [done] = rig.of(sid, be.ReplyFinished)
    assert not done.interrupted and done.audio
    [req] = requests_for(llm, "hello")
    assert [m["role"] for m in req["messages"]] == ["system", "user"]
    rig.wait(lambda: rig.of(sid, be.TurnUpdated)[-1].turn["state"] == "done")
    assert "first_reply_sample_out" in rig.of(sid, be.TurnUpdated)[-1].turn["events"]


def test_speech_over_a_reply_pauses_it_then_cuts_it_and_the_llm_hears_what_was_sent(rig, llm):
    sid = rig.open()
    rig.type(sid, "Tell me a story.")
    rig.wait(lambda: rig.of(sid, be.ReplyAudio, 1))
    rig.speak(sid, "What is the weather?", speech_s=1.0, utterance=1)
    rig.wait(lambda: requests_for(llm, "weather") and rig.of(sid, be.ReplyFinished, 1))
    [cut] = rig.of(sid, be.ReplyFinished, 1)
    assert cut.interrupted
    t_cut = cut.t
    sent = [c for c in rig.of(sid, be.ReplyAudio, 1)]
    assert len(sent) < 4 and all(c.t <= t_cut for c in sent)  # nothing of it after the cut
    said = "".join(c.text + " " for c in sent).strip()
    assert cut.text and said.startswith(cut.text.rstrip("."))
    req = requests_for(llm, "weather")[-1]
    assert req["messages"][-2] == {"role": "assistant", "content": f"{cut.text}… [interrupted by the user]"}
    rig.wait(lambda: [e for e in rig.of(sid, be.ReplyFinished) if e.response_id != 1])
    answer = [e for e in rig.of(sid, be.ReplyDelta) if e.response_id != 1]
    assert "".join(e.text for e in answer) == "Sunny all day."


def test_a_short_burst_only_pauses_and_the_reply_plays_to_its_end(rig):
    sid = rig.open()
    rig.type(sid, "Tell me a story.")
    rig.wait(lambda: rig.of(sid, be.ReplyAudio, 1))
    rig.speak(sid, "", speech_s=0.1, utterance=1)  # a cough: too short, and no words
    rig.wait(lambda: rig.of(sid, be.ReplyFinished, 1))
    [done] = rig.of(sid, be.ReplyFinished, 1)
    assert not done.interrupted
    assert "".join(e.text for e in rig.of(sid, be.ReplyDelta, 1)) == STORY
    assert " ".join(c.text for c in rig.of(sid, be.ReplyAudio, 1)) == STORY  # every chunk, in order
    def turns() -> dict[int, dict]:
        return {e.turn["turn_id"]: e.turn for e in rig.of(sid, be.TurnUpdated)}

    rig.wait(lambda: turns()[1]["state"] == "done")  # (the session hears the output is done after the bus)
    assert [t["state"] for t in turns().values()] == ["done", "ignored"]
    assert turns()[1]["info"]["false_interruptions"] == 1


def test_two_conversations_share_the_stages_and_closing_one_drops_its_work(rig, llm):
    a, b = rig.open(), rig.open()
    rig.type(a, "Tell me a story.")
    rig.type(b, "Hello!")
    rig.wait(lambda: rig.of(b, be.ReplyFinished) and rig.of(a, be.ReplyAudio))
    assert "".join(e.text for e in rig.of(b, be.ReplyDelta)) == "Hi there, friend."
    assert not [e for e in rig.events[b] if getattr(e, "session_id", b) != b]  # nothing of a's
    open_before = rig.ray.get(rig.tts.stats.remote())["conversations"]
    rig.close(a)
    rig.wait(lambda: rig.of(a, be.Closed))
    n = len(rig.of(a, be.ReplyAudio))
    time.sleep(1.0)
    assert len(rig.of(a, be.ReplyAudio)) == n  # the stream ended with the conversation
    stats = rig.ray.get(rig.tts.stats.remote())
    assert stats["queued_chunks"] == 0 and stats["conversations"] == open_before - 1  # its queued work is gone
    rig.type(b, "Hello again!")
    rig.wait(lambda: len(rig.of(b, be.ReplyFinished)) == 2)


def _first_clause_beside_a_long_chunk(rig) -> tuple[float, float]:
    """Conversation a's long second chunk is being synthesized when b asks: (when b's first
    audio came, when a's long chunk came), as bus times."""
    a, b = rig.open(), rig.open()
    rig.type(a, "Say something long.")
    rig.wait(lambda: "".join(e.text for e in rig.of(a, be.ReplyDelta)) == LONG and rig.of(a, be.ReplyAudio))
    time.sleep(0.2)  # its long chunk is with the TTS now (1.7 s of work)
    rig.type(b, "Hello!")
    rig.wait(lambda: rig.of(b, be.ReplyAudio) and len(rig.of(a, be.ReplyAudio)) == 2)
    return rig.of(b, be.ReplyAudio)[0].t, rig.of(a, be.ReplyAudio)[1].t


def test_a_first_clause_runs_beside_another_conversations_long_chunk(ray_cluster, llm):
    """With the first-chunk lane, b's first clause is spoken while a's long sentence is still
    being made; with one lane it waits for it. (Sentence chunks: paced ones would cut a's
    sentence into short pieces, and there would be no long chunk to run beside.)"""
    from pipeline.config import load_config

    for lane in (True, False):
        cfg = load_config(CONFIG_DIR / "test.toml",
                          ["tts.paced_chunks=false", f"tts.first_chunk_lane={str(lane).lower()}"])
        rig = Rig(ray_cluster, cfg, llm)
        try:
            b_first, a_long = _first_clause_beside_a_long_chunk(rig)
            if lane:
                assert b_first < a_long - 0.5, (b_first, a_long)
                assert rig.ray.get(rig.tts.stats.remote())["first_lane_chunks"] >= 1
            else:
                assert b_first >= a_long, (b_first, a_long)
        finally:
            rig.kill()
