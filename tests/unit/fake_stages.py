"""Fake stages for the actor tests.

Imported by Ray workers as ``tests.unit.fake_stages`` (init_ray puts the repo
root on PYTHONPATH), so keep it free of pytest imports.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import ray

from actors.base import Stage, stage_actor
from actors.tts import TTSStage
from pipeline.flow.frames import ControlFrame, Frame, SentenceFrame


class SlowStage(Stage):
    """Each frame takes ``delay`` seconds of (simulated) synthesis."""

    name = "slow"

    def __init__(self, cfg, delay: float = 0.3) -> None:
        super().__init__(cfg)
        self.delay = delay
        self._lock = threading.Lock()
        self.started: list[dict[str, Any]] = []
        self.finished: list[dict[str, Any]] = []
        self.controls: list[dict[str, Any]] = []

    def process(self, frame: Frame) -> None:
        rec = {"rid": frame.response_id, "index": getattr(frame, "index", None), "seq": frame.seq,
               "start": time.time()}
        with self._lock:
            self.started.append(dict(rec))
        time.sleep(self.delay)
        rec["end"] = time.time()
        with self._lock:
            self.finished.append(rec)

    def on_control(self, frame: ControlFrame, changed: bool) -> None:
        with self._lock:
            self.controls.append({"kind": frame.kind, "rid": frame.response_id, "changed": changed,
                                  "t": time.time()})

    @ray.method(concurrency_group="control")
    def log(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {"started": list(self.started), "finished": list(self.finished),
                    "controls": list(self.controls)}


class RecorderStage(Stage):
    """Records every frame its data lane lets through, in the order processed."""

    name = "recorder"

    def setup(self) -> None:
        self._lock = threading.Lock()
        self.frames: list[Frame] = []

    def process(self, frame: Frame) -> None:
        with self._lock:
            self.frames.append(frame)

    @ray.method(concurrency_group="control")
    def received(self) -> list[Frame]:
        with self._lock:
            return list(self.frames)

    @ray.method(concurrency_group="control")
    def count(self) -> int:
        with self._lock:
            return len(self.frames)


class SenderStage(Stage):
    """Emits numbered sentences to a connected stage with Stage.emit."""

    name = "sender"

    def send_many(self, dest: str, n: int, response_id: int = 1) -> int:
        for i in range(1, n + 1):
            self.send(dest, SentenceFrame(text=f"sentence {i}.", index=i, response_id=response_id))
        return n


class FailingStage(RecorderStage):
    """Fails on frames whose text says so; records the rest."""

    name = "failing"

    def process(self, frame: Frame) -> None:
        if getattr(frame, "text", "") == "boom":
            raise RuntimeError("boom")
        super().process(frame)


SlowActor = stage_actor(SlowStage)
RecorderActor = stage_actor(RecorderStage)
SenderActor = stage_actor(SenderStage)
FailingActor = stage_actor(FailingStage)


# ---------------------------------------------------------------- fake models for whole conversations
class _FakeSession:
    """Stands in for Kokoro's abortable ONNX session (models.runtime.AbortableSession): a tag
    per thread, and each call in flight stopped on its own."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._running: dict[int, tuple[object, threading.Event]] = {}
        self._lock = threading.Lock()
        self.aborted = 0

    @property
    def tag(self):
        return getattr(self._local, "tag", None)

    @tag.setter
    def tag(self, value) -> None:
        self._local.tag = value

    def run_for(self, seconds: float) -> bool:
        """Take ``seconds`` as a model run would; False if it was aborted."""
        me, stop = threading.get_ident(), threading.Event()
        with self._lock:
            self._running[me] = (self.tag, stop)
        try:
            return not stop.wait(seconds)
        finally:
            with self._lock:
                self._running.pop(me, None)

    def abort_if(self, dead) -> bool:
        hit = False
        with self._lock:
            for tag, stop in self._running.values():
                if tag is not None and dead(tag) and not stop.is_set():
                    self.aborted += 1
                    stop.set()
                    hit = True
        return hit


class _FakeKokoro:
    """Audio of 50 ms a character (a 220 Hz tone), taking a fifth of its length to make."""

    SECONDS_PER_CHAR = 0.05

    def __init__(self) -> None:
        self.sess = _FakeSession()

    def get_voices(self) -> list[str]:
        return ["fake_a", "fake_b"]

    def create(self, text: str, voice: str, speed: float, lang: str):
        import numpy as np

        n = int(24000 * self.SECONDS_PER_CHAR * len(text))
        if not self.sess.run_for(0.2 * n / 24000):
            raise RuntimeError("aborted")
        return (0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / 24000)).astype(np.float32), 24000


class FakeTTSStage(TTSStage):
    """The real TTS service (queues, chunking, scheduling, aborts) on a fake model."""

    def setup(self) -> None:
        import models.registry

        real = models.registry.load_kokoro
        models.registry.load_kokoro = lambda cfg: _FakeKokoro()
        try:
            super().setup()
        finally:
            models.registry.load_kokoro = real


class ScriptedSpeechStage(Stage):
    """Stands in for VAD + STT ("stt" in the routes' eyes): speaks scripted user turns as the
    events and transcripts those stages would send."""

    name = "stt"

    def process(self, frame: Frame) -> None:
        pass

    def say(self, session_id: str, text: str, speech_s: float = 1.0, utterance: int = 1) -> bool:
        from pipeline.flow.events import SpeechStarted, SpeechStopped
        from pipeline.flow.frames import TranscriptFrame

        own = dict(session_id=session_id, utterance=utterance)
        self.event(SpeechStarted(audio_time=0.0, **own))
        time.sleep(speech_s)
        self.event(SpeechStopped(audio_time=speech_s, **own))
        self.emit(TranscriptFrame(text=text, utterance_id=utterance, session_id=session_id, audio_end=speech_s))
        return True


FakeTTSActor = stage_actor(FakeTTSStage)
ScriptedSpeechActor = stage_actor(ScriptedSpeechStage)
