"""TTS stage: Kokoro-82M (kokoro-onnx) on clause/sentence chunks of the stream.

The first clause is synthesized while the LLM is still streaming the rest.
Each audio frame carries the text range it speaks, so the player can tell
which words were actually heard.
"""
from __future__ import annotations

import time

import numpy as np

from actors.base import Stage, stage_actor
from models.runtime import InferenceThread
from pipeline.audio.convert import to_int16
from pipeline.flow.frames import ControlFrame, EndOfTurnFrame, Frame, FrameError, LLMTokenFrame, TTSAudioFrame
from pipeline.conversation.text_chunker import Chunk, TextChunker


class TTSStage(Stage):
    name = "tts"

    def setup(self) -> None:
        from models.registry import load_kokoro

        self.worker = InferenceThread("tts", self.cfg.tts.nice)
        self.tts = self.worker.call(load_kokoro, self.cfg)
        self.sample_rate = 24000
        self.worker.call(self._synth, "Hello.")  # warm-up: first run allocates
        self._chunkers: dict[int, TextChunker] = {}
        self._first_audio: set[int] = set()
        self.synth_s = 0.0
        self.audio_s = 0.0

    def extra_stats(self) -> dict:
        return {"rtf": self.synth_s / self.audio_s if self.audio_s else None, "aborted": self.tts.sess.aborted,
                "thread_nice": self.worker.thread_nice()}

    def _synth(self, text: str) -> np.ndarray:
        c = self.cfg.tts
        audio, rate = self.tts.create(text, voice=c.voice, speed=c.speed, lang=c.lang)
        self.sample_rate = rate
        return to_int16(np.asarray(audio, dtype=np.float32).ravel())

    def _chunker(self, rid: int) -> TextChunker:
        if rid not in self._chunkers:
            t = self.cfg.tts
            self._chunkers = {r: c for r, c in self._chunkers.items() if self.gate.is_live(r)}
            self._chunkers[rid] = TextChunker(t.first_chunk_min_chars, t.chunk_min_chars,
                                              first_max_words=t.first_chunk_max_words)
        return self._chunkers[rid]

    def process(self, frame: Frame) -> None:
        rid = frame.response_id
        if isinstance(frame, LLMTokenFrame):
            for chunk in self._chunker(rid).add(frame.text):
                self._speak(chunk, frame)
        elif isinstance(frame, EndOfTurnFrame):
            for chunk in self._chunker(rid).flush():
                self._speak(chunk, frame)
            self._chunkers.pop(rid, None)
            if self.gate.is_live(rid):
                self.emit("player", EndOfTurnFrame(response_id=rid, text=frame.text, priority=frame.priority))
        else:
            raise FrameError(f"tts does not take {frame.kind}")

    def on_control(self, frame: ControlFrame, changed: bool) -> None:
        # (dead replies' chunkers are dropped by _chunker on the data lane, the only
        # thread that touches them) stop the clause in flight if nobody will hear it
        if changed:
            self.tts.sess.abort_if(lambda rid: rid is not None and not self.gate.is_live(rid))

    def _speak(self, chunk: Chunk, src: Frame) -> None:
        rid = src.response_id
        text = chunk.speech
        if not text or not self.gate.is_live(rid):
            return
        t0 = time.time()
        self.tts.sess.tag = rid
        try:
            pcm = self.worker.call(self._synth, text)
        except Exception:
            if not self.gate.is_live(rid):
                return  # aborted by an interrupt/cancel
            raise
        took = time.time() - t0
        self.synth_s += took
        self.audio_s += len(pcm) / self.sample_rate
        if not self.gate.is_live(rid) or len(pcm) == 0:
            return
        if rid not in self._first_audio:
            self._first_audio.add(rid)
            self.event("tts_first_audio", rid, synth_s=took, chars=len(text), t_start=t0)
        self.emit("player", TTSAudioFrame(pcm=pcm, sample_rate=self.sample_rate, response_id=rid,
                                          priority=src.priority, text=chunk.text, text_start=chunk.start,
                                          text_end=chunk.end, chunk_index=chunk.index))


TTSActor = stage_actor(TTSStage)
