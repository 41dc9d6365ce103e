"""STT stage: faster-whisper (CTranslate2) on each utterance the VAD brackets.

Speculative start: when the VAD reports a pause (silence shorter than the
endpoint), transcription of the speech so far starts at once. If the pause
turns into the endpoint, that result is used and the endpoint wait hid the
STT time; if the user speaks on, it is discarded (the next pause starts anew).
"""
from __future__ import annotations

import time

import numpy as np

from actors.base import Stage, stage_actor
from models.runtime import InferenceThread
from pipeline.audio import to_float32
from pipeline.frames import (Frame, FrameError, InputAudioFrame, TranscriptFrame, UserPausedFrame,
                             UserStartedSpeakingFrame, UserStoppedSpeakingFrame)


def transcribe(model, audio: np.ndarray, language: str, beam_size: int, no_speech_threshold: float) -> str:
    segments, _info = model.transcribe(audio, language=language or None, beam_size=beam_size, vad_filter=False,
                                       without_timestamps=True, condition_on_previous_text=False)
    return " ".join(s.text.strip() for s in segments if s.no_speech_prob < no_speech_threshold).strip()


class STTStage(Stage):
    name = "stt"

    def setup(self) -> None:
        from models.registry import load_whisper

        self.worker = InferenceThread("stt", self.cfg.stt.nice)
        self.model = self.worker.call(load_whisper, self.cfg)
        # warm-up: the first call allocates CTranslate2's buffers
        self.worker.call(transcribe, self.model, np.zeros(16000, np.float32), "en", 1, 1.0)
        self._chunks: list[np.ndarray] = []
        self._utterance = 0
        self._start = 0.0
        self._spec = None  # (future, t_start, audio seconds) of a speculative transcription
        self.last_rtf = 0.0
        self.speculative_used = 0
        self.speculative_wasted = 0

    def extra_stats(self) -> dict:
        return {"last_rtf": self.last_rtf, "thread_nice": self.worker.thread_nice(),
                "speculative_used": self.speculative_used, "speculative_wasted": self.speculative_wasted}

    def _start_transcription(self):
        audio = to_float32(np.concatenate(self._chunks)) if self._chunks else np.zeros(0, np.float32)
        s = self.cfg.stt
        fut = self.worker.submit(transcribe, self.model, audio, s.language, s.beam_size, s.no_speech_threshold)
        return fut, time.time(), len(audio) / 16000

    def process(self, frame: Frame) -> None:
        if isinstance(frame, UserStartedSpeakingFrame):
            self._chunks, self._utterance, self._start = [], frame.utterance_id, frame.audio_time
            self._spec = None
        elif isinstance(frame, UserPausedFrame):
            if self._spec is not None:
                self.speculative_wasted += 1  # the user spoke on after the last pause
            self._spec = self._start_transcription()
        elif isinstance(frame, InputAudioFrame):
            if frame.sample_rate != 16000:
                raise FrameError(f"stt needs 16000 Hz audio, got {frame.sample_rate} Hz")
            self._chunks.append(frame.pcm)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._finish(frame)
        else:
            raise FrameError(f"stt does not take {frame.kind}")

    def _finish(self, stop: UserStoppedSpeakingFrame) -> None:
        # every pause is followed by speech (a new pause) or by this stop, so
        # the latest speculative run covers all the speech of the utterance
        if self._spec is not None:
            self.speculative_used += 1
        fut, t0, audio_s = self._spec or self._start_transcription()
        self._spec, self._chunks = None, []
        text = fut.result()
        took = time.time() - t0
        self.last_rtf = took / max(audio_s, 1e-6)
        self.emit("session", TranscriptFrame(text=text, final=True, utterance_id=stop.utterance_id,
                                             audio_start=self._start, audio_end=stop.audio_time))
        self.event("stt_done", 0, utterance=stop.utterance_id, stt_s=took, audio_s=audio_s, t_start=t0,
                   wait_s=time.time() - stop.created)


STTActor = stage_actor(STTStage)
