"""`kokoro-engine talk` end to end: real Ray actors, real models, a real HTTP LLM server."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from actors.stt import transcribe
from pipeline.audio.convert import load_audio, read_wav, to_float32, write_wav
from pipeline.config import CONFIG_DIR, REPO_ROOT
from tests.rigs.fake_llm import FakeLLM

pytestmark = pytest.mark.integration

REPLY = "The capital of France is Paris. It sits on the river Seine."


def talk(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", "talk", "--config", str(CONFIG_DIR / "test.toml"),
                           *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)


def words(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


@pytest.mark.parametrize("preemptive", [True, False])
def test_full_turn_reply_is_spoken_and_timed(speech, tmp_path, whisper, preemptive):
    question = speech("What is the capital of France?", rate=22050, pad_s=(0.6, 0.2))
    out = tmp_path / "reply.wav"
    with FakeLLM(REPLY, ttft=0.2) as llm:
        p = talk("--input", str(question), "--output", str(out), "--json", "--set", f"llm.base_url={llm.base_url}",
                 "--set", f"llm.preemptive={str(preemptive).lower()}")
        assert p.returncode == 0, p.stderr[-3000:]
        res = json.loads(p.stdout)
        sent = llm.requests[-1]["messages"]
    assert "capital" in res["transcript"].lower()
    assert res["reply"] == REPLY
    # the LLM saw the system prompt and exactly the words that were heard
    assert sent[0]["role"] == "system" and sent[-1]["role"] == "user"
    assert words(sent[-1]["content"]) == words(res["transcript"])
    assert res["stages"].get("preemptive", False) == preemptive
    ev = res["events"]
    # every event of the turn happened (the JSON lists them in a fixed order, whatever their times)
    assert set(ev) == {"user_speech_started", "user_speech_stopped", "transcript_final", "llm_first_token",
                       "tts_first_audio", "first_reply_sample_out", "reply_done"}, ev
    # and only the order cause and effect impose: a reply prepared at the pause (preemptive) may
    # have its first token before the endpoint or the final transcript, never before the speech
    causal = [("user_speech_started", "user_speech_stopped"), ("user_speech_stopped", "transcript_final"),
              ("user_speech_started", "llm_first_token"),
              ("llm_first_token", "tts_first_audio"), ("tts_first_audio", "first_reply_sample_out"),
              ("first_reply_sample_out", "reply_done"),
              # never a word before the user has finished, even when the reply was prepared early
              ("user_speech_stopped", "first_reply_sample_out"), ("transcript_final", "first_reply_sample_out")]
    if not preemptive:
        causal.append(("transcript_final", "llm_first_token"))
    broken = [(a, b) for a, b in causal if not ev[a] <= ev[b]]
    assert not broken, (broken, ev)
    # the first clause is spoken before the whole reply is synthesized
    assert len(res["chunks"]) >= 2
    # the reply WAV holds the reply: its own transcription has the reply's words
    pcm, rate = read_wav(out)
    assert len(pcm) / rate > 2.0
    heard = transcribe(whisper, to_float32(load_audio(out)), "en", 1, 0.6).lower()
    for word in ("capital", "france", "paris", "river"):
        assert word in heard, heard
    # chunk positions tile the output file in order
    starts = [c["sample_start"] for c in res["chunks"]]
    assert starts == sorted(starts) and starts[0] == 0
    assert res["chunks"][-1]["sample_end"] <= len(pcm)


def test_noise_only_input_gives_no_turn(tmp_path):
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(16000 * 3) * 1500).astype(np.int16)
    wav = tmp_path / "noise.wav"
    write_wav(wav, noise, 16000)
    with FakeLLM(REPLY) as llm:
        p = talk("--input", str(wav), "--output", str(tmp_path / "r.wav"), "--json", "--fast",
                 "--set", f"llm.base_url={llm.base_url}")
        assert not [r for r in llm.requests if r.get("stream")]  # only the start-up warm-up
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)
    assert res["transcript"] == "" and res["reply"] == ""
    plain = talk("--input", str(wav), "--output", str(tmp_path / "r.wav"), "--fast",
                 "--set", "llm.base_url=http://127.0.0.1:9/v1")
    assert plain.returncode == 0 and "no speech" in plain.stdout


def test_dead_llm_endpoint_is_reported(speech, tmp_path):
    question = speech("Are you there?")
    out = tmp_path / "r.wav"
    p = talk("--input", str(question), "--output", str(out), "--json",
             "--set", "llm.base_url=http://127.0.0.1:9/v1", "--set", "llm.timeout_s=3")
    assert p.returncode == 5, p.stderr[-2000:]  # not "no speech heard" and 0
    assert "LLM endpoint http://127.0.0.1:9/v1 did not answer" in p.stderr
    res = json.loads(p.stdout)
    assert res["transcript"] and res["state"] == "failed"  # the engine heard the user ...
    assert any("LLM endpoint" in e and "127.0.0.1:9" in e for e in res["errors"]), res["errors"]  # ... and says why
    # ... aloud too: the voice conversation says a short apology instead of going silent
    assert "not responding" in res["stages"]["spoken_notice"]
    pcm, rate = read_wav(out)
    assert np.abs(pcm.astype(np.int32)).max() > 3000 and len(pcm) > rate  # a second or more of speech


def test_bad_input_and_config_fail_clearly(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    p = talk("--input", str(bad), "--output", str(tmp_path / "r.wav"))
    assert p.returncode == 2 and "cannot decode" in p.stderr
    p = talk("--input", str(bad), "--output", str(tmp_path / "r.wav"), "--set", "vad.endpoint_silenc=400")
    assert p.returncode == 2 and "vad.endpoint_silenc" in p.stderr
    p = talk("--input", str(bad), "--output", str(tmp_path / "r.wav"), "--set", "vad.threshold=high")
    assert p.returncode == 2 and "vad.threshold" in p.stderr


def test_run_without_audio_device_says_so():
    p = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "run", "--set", "audio.input_device=no-such-mic"],
                       capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert p.returncode == 3
    assert "no-such-mic" in p.stderr and "talk --input" in p.stderr


def test_models_command_lists_every_model():
    p = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "models", "--json", "--no-load"], capture_output=True,
                       text=True, timeout=120, cwd=REPO_ROOT)
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert {"whisper-tiny.en", "kokoro-82m-int8", "silero-vad", "smollm2-135m-instruct"} <= set(rows)
    assert all(r["loads"] and (r["size_bytes"] > 0 or r["name"] == "webrtcvad") for r in rows.values()), rows
    p = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "models", "--set", "stt.model=/nonexistent"],
                       capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert p.returncode == 1 and "stt.model" in p.stdout
