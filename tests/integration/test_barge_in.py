"""Barge-in end to end with the real VAD/STT/TTS: the user cuts the reply off mid-sentence.

The mic is a file heard through a simulated room (tests/rigs/room.py): a second file is
mixed in a set time after the first reply sample is heard (``python -m tests.rigs.talk
--barge-in``); with ``echo`` the engine's own output leaks back into the mic at -6 dB /
50 ms, as from open speakers.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import ray

from pipeline.audio.convert import read_wav
from pipeline.config import CONFIG_DIR, REPO_ROOT, load_config
from pipeline.runtime.engine import Engine
from tests.rigs.fake_llm import FakeLLM
from tests.rigs.room import room_talk

ROOM_GAIN_DB, ROOM_DELAY_MS = -6.0, 50.0  # the simulated room's echo (SimulatedRoom's defaults)

pytestmark = pytest.mark.integration

# a long first clause: its audio is still playing when the user cuts in (no gap between chunks)
STORY = ("Once upon a time there was a small red fox who lived at the edge of a quiet green forest by a river, "
         "and every morning she walked down to the water to watch the fish. Every evening she told the owls "
         "what she had seen. One day the river was gone, and in its place there was a long road of grey stone. "
         "The fox sat by the road for a long time and wondered where all the water had gone, and then she "
         "followed the road up into the hills, past farms and fields and sleeping villages, until at last she "
         "found the river again, splashing down from the mountains as if nothing had ever happened.")
WEATHER = "It will be sunny and warm all day."
SHORT_STORY = ("A small red fox lived by a river, and every morning she watched the fish. One day the river was "
               "gone, so she followed the road into the hills until she found it again.")


@pytest.fixture(scope="module")
def llm():
    # slow tokens: the story is still streaming when the user cuts in
    with FakeLLM(STORY, ttft=0.2, tokens_per_s=5.0, replies={"weather": WEATHER, "short": SHORT_STORY}) as f:
        yield f


@pytest.fixture(scope="module")
def engine(ray_session, llm):
    cfg = load_config(CONFIG_DIR / "test.toml", [f"llm.base_url={llm.base_url}", "llm.max_tokens=120"])
    with Engine(cfg) as e:
        yield e


def rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean((x.astype(np.float64) / 32768) ** 2)) + 1e-9)


def test_barge_in_cuts_the_reply_and_the_history_keeps_only_the_heard_words(engine, llm, speech, tmp_path):
    question = speech("Tell me a story.", pad_s=(0.5, 0.2))
    cut_in = speech("What is the weather tomorrow?", name="barge", pad_s=(0.3, 0.3))
    out = tmp_path / "reply.wav"
    n_before = len(llm.requests)
    res = room_talk(engine, question, out, barge_in=cut_in, barge_in_at=1.5)
    assert res.errors == []
    story, answer = [t for t in res.turns if t["transcript"].strip()][-2:]
    assert "story" in story["transcript"].lower() and "weather" in answer["transcript"].lower()
    assert story["state"] == "interrupted" and answer["state"] == "done"
    assert answer["reply"] == WEATHER
    # the interrupted reply: heard words are a proper, non-empty prefix of what was generated
    heard = story["heard"]
    assert heard and STORY.startswith(heard) and len(heard) < len(STORY) - 20, heard
    # its audio stopped after the user began, and well before the story would have ended
    onset, stopped = res.marks["barge_in_speech_start"], story["events"]["reply_audio_stopped"]
    assert onset < stopped < onset + 1.0, (onset, stopped)
    # the LLM stream of the story was closed early, not read to the end
    assert llm.closed_early >= 1
    # the next request saw exactly the heard words, marked interrupted, then the new question
    req = [r for r in llm.requests[n_before:] if "weather" in r["messages"][-1]["content"].lower()][-1]
    roles = [m["role"] for m in req["messages"]]
    assert roles[-3:] == ["user", "assistant", "user"]
    assert req["messages"][-2]["content"] == f"{heard}… [interrupted by the user]"
    assert res.history[-2]["content"] == WEATHER or res.history[-1]["content"] == WEATHER
    # in the output: no story audio after the cut until the answer starts
    pcm, rate = read_wav(out)
    first = [c for c in res.info["chunks"] if c["chunk"] == 0][0]
    to_sample = lambda t: int(first["sample_start"] + (t - first["t_start"]) * rate)  # noqa: E731
    t_answer = answer["events"]["first_reply_sample_out"]
    gap = pcm[to_sample(stopped) + rate // 50:to_sample(t_answer) - rate // 50]
    assert len(gap) > rate // 10 and rms_db(gap) < -60, rms_db(gap)


def _counts(engine) -> dict[str, int]:
    """The engine's running totals (they add up over the module's talks: tests compare deltas)."""
    snap = engine.snapshot()
    return {"echo_blocks": engine.stats()["mic"]["echo_blocks"], "false_pauses": snap["false_pauses"],
            "false_interruptions": snap["false_interruptions"]}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before}


def test_open_speaker_echo_never_interrupts_the_reply(engine, speech, tmp_path):
    question = speech("Tell me a short story.", pad_s=(0.5, 0.2))
    before = _counts(engine)
    res = room_talk(engine, question, tmp_path / "reply.wav", echo=True)
    d = _delta(before, _counts(engine))
    assert res.errors == []
    spoken = [t for t in res.turns if t["transcript"].strip()]
    assert len(spoken) == 1 and spoken[0]["state"] == "done", [(t["transcript"], t["state"]) for t in res.turns]
    assert spoken[0]["reply"] == SHORT_STORY
    assert "onset_pauses" not in spoken[0]["info"]  # not even a pause: the reply never stuttered
    assert d["false_interruptions"] == 0 and d["false_pauses"] == 0, d
    assert not any(t["events"].get("user_speech_started", 0) > res.events["first_reply_sample_out"]
                   for t in res.turns), "the engine's own voice started a user turn"
    # the reply above was spoken into this talk's echo, not into a clean mic: the canceller had
    # the reply as its reference while it played, the mic's echo path (learnt anew for this
    # simulated room) holds at the end, at about the simulated level, and the mic follows its
    # reference by the simulated delay (a clean talk: no echo path and a silent mic, delay None)
    mic = engine.stats()["mic"]
    delay = ray.get(engine.actors["mic"].echo_delay.remote())
    assert d["echo_blocks"] > 0, d
    assert mic["echo_path"] and mic["echo_coupling_db"] == pytest.approx(ROOM_GAIN_DB, abs=3.0), mic
    assert delay["delay_ms"] == pytest.approx(ROOM_DELAY_MS, abs=5.0) and delay["peak"] > 0.3, delay


def test_user_still_interrupts_through_the_echo(engine, speech, tmp_path):
    question = speech("Tell me a story.", pad_s=(0.5, 0.2))
    cut_in = speech("What is the weather tomorrow?", name="barge", pad_s=(0.3, 0.3))
    res = room_talk(engine, question, tmp_path / "reply.wav", barge_in=cut_in, barge_in_at=2.0, echo=True)
    story, answer = [t for t in res.turns if t["transcript"].strip()][-2:]
    assert story["state"] == "interrupted" and "weather" in answer["transcript"].lower()


def test_a_short_burst_only_pauses_and_the_reply_resumes(engine, tmp_path, speech):
    question = speech("Tell me a story.", pad_s=(0.5, 0.2))
    rate = 16000
    t = np.arange(int(0.16 * rate)) / rate  # 160 ms voiced "hm": shorter than interrupt.min_speech_ms
    hum = (0.5 * np.sin(2 * np.pi * 140 * t) * np.hanning(len(t)) * 32767).astype(np.int16)
    burst = tmp_path / "burst.wav"
    from pipeline.audio.convert import write_wav

    write_wav(burst, np.concatenate([np.zeros(rate // 5, np.int16), hum, np.zeros(rate // 5, np.int16)]), rate)
    before = _counts(engine)
    res = room_talk(engine, question, tmp_path / "reply.wav", barge_in=burst, barge_in_at=1.0)
    d = _delta(before, _counts(engine))
    story = [t for t in res.turns if "story" in t["transcript"].lower()][-1]
    info = story["info"]
    # the burst paused the reply ...
    assert info.get("onset_pauses", 0) >= 1, info
    # ... and the pause was undone: an onset the VAD took back (a false pause), or a turn with no
    # words (a false interruption); the session counts each, and this talk added them
    resumed = len(info.get("false_pause_times", [])) + info.get("false_interruptions", 0)
    assert resumed >= 1, info
    assert d["false_pauses"] + d["false_interruptions"] == resumed, (d, info)
    # the reply then played to its end, never cut
    assert story["state"] == "done" and "reply_done" in story["events"], story
    assert story["heard"] is None
    assert story["reply"] == STORY[:len(story["reply"])] and story["reply"], story["reply"]
    assert [t["state"] for t in res.turns if t is not story] in ([], ["ignored"], ["empty"])


def test_talk_cli_reports_barge_in_fields(llm, speech, tmp_path):
    question = speech("Tell me a story.", pad_s=(0.5, 0.2))
    cut_in = speech("What is the weather tomorrow?", name="barge", pad_s=(0.3, 0.3))
    p = subprocess.run([sys.executable, "-m", "tests.rigs.talk", "--config", str(CONFIG_DIR / "test.toml"),
                        "--input", str(question), "--output", str(tmp_path / "out.wav"), "--json",
                        "--barge-in", str(cut_in), "--barge-in-at", "1.5",
                        "--set", f"llm.base_url={llm.base_url}", "--set", "llm.max_tokens=120"],
                       capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)
    assert res["state"] == "interrupted"
    assert res["barge_in_speech_start"] < res["reply_audio_stopped"]
    assert 0 < res["barge_in_to_silence_s"] < 1.0
    assert [m["role"] for m in res["history"]][-4:] == ["user", "assistant", "user", "assistant"]
    assert res["history"][-3]["content"].endswith("[interrupted by the user]")
