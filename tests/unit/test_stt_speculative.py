"""The STT stage's speculative transcription (started at a pause) with a fake Whisper."""
from __future__ import annotations

import numpy as np
import pytest

import actors.stt as stt_module
import models.registry
from actors.stt import STTStage
from pipeline.flow.frames import (InputAudioFrame, TranscriptFrame, UserPausedFrame, UserStartedSpeakingFrame,
                                  UserStoppedSpeakingFrame)
from tests.unit.helpers import wait_until

WORDS = "what about the weather"


class RecordingSTT(STTStage):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.sent: list = []

    def emit(self, frame):
        self.sent.append(frame)


@pytest.fixture
def stt(test_config, monkeypatch):
    """A stage whose Whisper hears words only in audio of at least ``heard_from_s`` seconds
    (as the real one scored the cut at a pause as no speech, and the whole utterance not)."""
    calls: list[float] = []
    state = {"heard_from_s": 0.0}

    def fake_transcribe(model, audio, language, beam_size, no_speech_threshold):
        calls.append(len(audio) / 16000)
        return WORDS if state["heard_from_s"] and len(audio) / 16000 >= state["heard_from_s"] else ""

    monkeypatch.setattr(models.registry, "load_whisper", lambda cfg: object())
    monkeypatch.setattr(stt_module, "transcribe", fake_transcribe)
    s = RecordingSTT(test_config)
    s.setup()
    calls.clear()  # (the warm-up)
    yield s, calls, state
    s.worker.close()


def utterance(s: STTStage, speech_s: float = 1.0, after_pause_s: float = 0.35) -> str:
    """Start, speech, a pause, the silence up to the endpoint, stop: the final transcript."""
    s.process(UserStartedSpeakingFrame(audio_time=0.0, utterance_id=1))
    block = np.full(256, 1000, np.int16)
    for _ in range(int(speech_s * 16000) // 256):
        s.process(InputAudioFrame(pcm=block, sample_rate=16000))
    s.process(UserPausedFrame(audio_time=speech_s, utterance_id=1))
    for _ in range(int(after_pause_s * 16000) // 256):
        s.process(InputAudioFrame(pcm=np.zeros(256, np.int16), sample_rate=16000))
    s.process(UserStoppedSpeakingFrame(audio_time=speech_s, utterance_id=1))
    # the final words come from the inference thread, without the data lane waiting for them
    finals = wait_until(lambda: [f for f in s.sent if isinstance(f, TranscriptFrame) and f.final])
    return finals[-1].text


def test_an_empty_speculative_result_is_checked_on_the_whole_utterance(stt):
    s, calls, state = stt
    state["heard_from_s"] = 1.2  # the cut at the pause (1.0 s) is "no speech", the whole (1.34 s) words
    assert utterance(s) == WORDS
    assert len(calls) == 2 and calls[1] > calls[0] and s.speculative_retried == 1


def test_words_at_the_pause_are_used_without_a_second_run(stt):
    s, calls, state = stt
    state["heard_from_s"] = 0.5
    assert utterance(s) == WORDS
    assert len(calls) == 1 and s.speculative_used == 1 and s.speculative_retried == 0


def test_no_words_stay_no_words(stt):
    s, calls, state = stt  # no words in any of it
    assert utterance(s) == ""
    assert len(calls) == 2  # checked once more, still nothing


def test_a_hum_is_not_asked_twice(stt):
    s, calls, state = stt
    state["heard_from_s"] = 0.5  # Whisper would make a word of the hum with its trailing silence
    assert utterance(s, speech_s=0.3, after_pause_s=0.35) == ""
    assert len(calls) == 1 and s.speculative_retried == 0
