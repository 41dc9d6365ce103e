"""The engine on (virtual) sound devices: open speakers, barge-in, a device that vanishes.

The engine's speaker is the PulseAudio null sink ``kokoro_spk``, its mic
``user_mouth.monitor``; the probe plays the user into ``user_mouth`` and
records both on one clock, so what is asserted here is what a person in the
room would hear. The open speaker is a module-loopback from the speaker into
the mic at -6 dB, 50 ms: the engine hears itself, as on a laptop.
Real VAD/STT/TTS; the LLM is scripted.
"""
from __future__ import annotations

import time

import pytest

from pipeline.config import CONFIG_DIR, load_config
from pipeline.runtime.engine import Engine
from tests.rigs.fake_llm import FakeLLM
from tests.rigs.watch import ConversationWatch

pytestmark = pytest.mark.integration

STORY = ("Once upon a time there was a small red fox who lived at the edge of a quiet green forest by a river, "
         "and every morning she walked down to the water to watch the fish. Every evening she told the owls "
         "what she had seen. One day the river was gone, and in its place there was a long road of grey stone.")
WEATHER = "It will be sunny and warm all day."


# how long a spoken reply may take to start: the first clause of STORY is 100 characters, which
# Kokoro takes 4-6 s for on a slow machine of this kind, more under load. Behaviour is asserted,
# not speed (benchmarks/ measure that)
REPLY_WAIT_S = 60.0


@pytest.fixture(scope="module")
def device_engine(ray_session, virtual_audio):
    with FakeLLM(STORY, ttft=0.2, tokens_per_s=12.0, replies={"weather": WEATHER}) as llm:
        cfg = load_config(CONFIG_DIR / "test.toml", [f"llm.base_url={llm.base_url}", "llm.max_tokens=120"])
        with Engine(cfg) as engine:
            engine.open_conversation(engine.voice_session, audio_out="player")
            watch = ConversationWatch(engine)
            # start_device returns once the stream brings audio: the first question is heard whole
            assert engine.start_voice()["delivering"]
            engine.watch = watch
            yield engine
            watch.close()
            engine.stop_voice()


def test_open_speaker_reply_runs_to_its_end_and_the_user_still_cuts_in(device_engine, virtual_audio, speech):
    from tests.rigs.virtual_audio.probe import Clip

    engine, va = device_engine, virtual_audio
    question = speech("Tell me a story.", pad_s=(0.3, 0.2))
    cut_in = speech("What is the weather tomorrow?", name="cut", pad_s=(0.1, 0.2))
    va.add_echo(50, -6.0)
    try:
        # 1. nobody talks: the engine hears its whole reply through the loopback and never stops for it
        watch = engine.watch
        watch.mark()
        pauses0 = engine.snapshot()["false_pauses"]
        res = va.probe([Clip(question, at=0.3)], duration=REPLY_WAIT_S + 20.0, end_after_clips=25.0)
        assert watch.settle(REPLY_WAIT_S), [(t["state"], t["transcript"], t["events"].keys()) for t in watch.turns.values() if not t["finished"]]
        turns = watch.new_turns()
        assert [t["state"] for t in turns] == ["done"], [(t["state"], t["transcript"]) for t in turns]
        assert not turns[0]["info"].get("onset_pauses"), turns[0]["info"].get("onset_windows")
        assert engine.snapshot()["false_pauses"] == pauses0
        assert turns[0]["reply"] == STORY and engine.snapshot()["history"][-1] == {"role": "assistant",
                                                                                    "content": STORY}
        echo = engine.stats()["mic"]
        assert echo["echo_path"] and -8.0 < echo["echo_coupling_db"] < -4.0, echo
        assert res.speaker_on_after(0) is not None

        # 2. the user talks over the (now converged) reply: it stops, and the answer is to them
        watch.mark()
        res = va.probe([Clip(question, at=0.3), Clip(cut_in, on="speaker_on", delay=2.0, after=0)],
                       duration=REPLY_WAIT_S + 20.0, end_after_clips=8.0)
        assert watch.settle(REPLY_WAIT_S), [(t["state"], t["transcript"], t["events"].keys()) for t in watch.turns.values() if not t["finished"]]
        turns = watch.new_turns()
        states = [(t["state"], t["transcript"]) for t in turns]
        assert [s for s, _ in states] == ["interrupted", "done"], states
        assert "weather" in turns[1]["transcript"].lower() and turns[1]["reply"] == WEATHER
        story = turns[0]
        assert story["heard"] and STORY.startswith(story["heard"]) and len(story["heard"]) < len(STORY) - 40
        onset = res.speech_onset(1)
        silent = res.speaker_silent_after(onset, hold_ms=150.0)
        assert silent is not None and (silent - onset) / res.rate < 1.0  # stopped, long before the story's end
        answer = res.speaker_on_after(silent)
        assert answer is not None  # ... and then answered aloud
    finally:
        va.remove_echo()


def test_a_vanished_speaker_and_mic_are_reported_reopened_and_the_talk_goes_on(device_engine, virtual_audio, speech):
    from pipeline.audio.convert import load_audio
    from tests.rigs.virtual_audio.probe import Clip
    from tests.rigs.virtual_audio.pulse import MOUTH, SPEAKER

    engine, va = device_engine, virtual_audio
    question = speech("Tell me a story.", pad_s=(0.3, 0.2))
    weather = speech("What is the weather tomorrow?", name="w", pad_s=(0.3, 0.2))
    watch = engine.watch
    watch.mark()
    stats0 = engine.stats()
    # the speaker vanishes mid-reply, then comes back
    with va.open_probe([Clip(question, at=0.3)], duration=REPLY_WAIT_S + 10.0) as probe:
        assert probe.wait_event("speaker_on", timeout=REPLY_WAIT_S) is not None, (
            "no reply was heard", watch.new_turns(), watch.new_errors())
        time.sleep(1.0)
        va.unplug(SPEAKER)
        time.sleep(1.5)
        va.replug(SPEAKER)
        probe.stop()
    assert watch.settle(REPLY_WAIT_S), [(t["state"], t["transcript"], t["events"].keys()) for t in watch.turns.values() if not t["finished"]]
    # the mic vanishes between turns, then comes back
    va.unplug(MOUTH)
    time.sleep(1.5)
    va.replug(MOUTH)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and engine.stats()["mic"]["reopened"] <= stats0["mic"]["reopened"]:
        time.sleep(0.2)
    assert watch.wait(lambda w: any("microphone" in e for e in w.new_errors()), 10.0)
    errors = watch.new_errors()
    assert any("speaker" in e for e in errors), errors
    assert any("microphone" in e for e in errors), errors
    stats = engine.stats()
    assert stats["player"]["reopened"] > stats0["player"]["reopened"]
    assert stats["mic"]["reopened"] > stats0["mic"]["reopened"]
    # the conversation goes on, on the same devices: a question is heard and answered aloud
    va.play(load_audio(weather, 16000), 16000, sink=MOUTH, wait=False)

    def answered(w):
        return [t for t in w.new_turns() if "weather" in t["transcript"].lower() and t["finished"]]

    watch.wait(answered, REPLY_WAIT_S)
    done = answered(watch)
    assert done and done[0]["state"] == "done" and done[0]["reply"] == WEATHER, [
        (t["state"], t["transcript"], t["errors"]) for t in watch.new_turns()]
