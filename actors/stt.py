"""STT stage: faster-whisper (CTranslate2) on each utterance the VAD brackets.

Speculative start: when the VAD reports a pause (silence shorter than the
endpoint), transcription of the speech so far starts at once. If the pause
turns into the endpoint, that result is used and the endpoint wait hid the
STT time; if the user speaks on, it is discarded (the next pause starts anew).
An empty speculative result after half a second of speech is not taken as the
last word: the whole utterance is transcribed again (Whisper's no-speech score is
borderline on speech the echo canceller muted in part, and the cut at the pause
tipped it: see ``_finish``).
"""
from __future__ import annotations

import time

import numpy as np

from dataclasses import dataclass, field

from actors.base import Stage, stage_actor
from models.runtime import InferenceThread
from pipeline.audio.convert import to_float32
from pipeline.flow.events import TranscriptTimed
from pipeline.flow.frames import (Frame, FrameError, InputAudioFrame, TranscriptFrame, UserPausedFrame,
                             UserStartedSpeakingFrame, UserStoppedSpeakingFrame)


SHORT_CONTEXT_MAX_S = 27.0  # longer utterances take faster-whisper's standard 30 s windows
# an empty speculative result is checked again only after this much speech before the pause: a
# hum ("hm") is not asked twice, where Whisper may make a word of it (and the word cut the reply)
RETRY_MIN_SPEECH_S = 0.5


def _context_frames(audio_s: float) -> int:
    """Encoder input length (10 ms mel frames) for an utterance: its length plus
    1 s, rounded up to 2 s, at least 6 s. Whisper pads everything to 30 s; the
    encoder is 5x cheaper on 6-10 s and transcribes short turns as well."""
    seconds = max(6.0, 2.0 * np.ceil((audio_s + 1.0) / 2.0))
    return int(min(30.0, seconds) * 100)


def transcribe_short(model, audio: np.ndarray, language: str, beam_size: int, no_speech_threshold: float) -> str:
    """One greedy/beam pass over a reduced audio context (as whisper.cpp's audio_ctx)."""
    import ctranslate2
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    multilingual = model.model.is_multilingual
    tok = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe",
                    language=(language or "en") if multilingual else None)
    n = _context_frames(len(audio) / 16000)
    mel = model.feature_extractor(audio)[:, :n]
    mel = np.pad(mel, ((0, 0), (0, n - mel.shape[1])))
    enc = model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])), to_cpu=False)
    prompt = list(tok.sot_sequence) + [tok.no_timestamps]
    # ~4 tokens a second of speech; the cap stops a rare runaway repetition
    max_new = int(12 + 8 * len(audio) / 16000)
    res = model.model.generate(enc, [prompt], beam_size=beam_size, max_length=len(prompt) + max_new,
                               return_no_speech_prob=True, suppress_blank=True,
                               suppress_tokens=list(get_suppressed_tokens(tok, [-1])))[0]
    if res.no_speech_prob >= no_speech_threshold:
        return ""
    return drop_repeats(tok.decode([t for t in res.sequences_ids[0] if t < tok.eot]).strip())


def drop_repeats(text: str) -> str:
    """Cut a transcript that starts over: Whisper, given more context than speech, sometimes
    repeats the utterance into the padding ("The moon is far away. The moon is far")."""
    words = text.split()
    norm = ["".join(c for c in w.lower() if c.isalnum()) for w in words]
    for n in range(3, len(words) - 2):  # at least 3 words said, at least 3 repeated
        rest = norm[n:]
        # it starts over: all the rest repeats the start, or the whole start is said again
        # and then it wanders ("Tell me a story Tell me a story Tell me Tell me")
        if (norm[:n] * (len(rest) // n + 1))[:len(rest)] == rest or rest[:n] == norm[:n]:
            return " ".join(words[:n])
    return text


def transcribe(model, audio: np.ndarray, language: str, beam_size: int, no_speech_threshold: float) -> str:
    if len(audio) / 16000 <= SHORT_CONTEXT_MAX_S:
        return transcribe_short(model, audio, language, beam_size, no_speech_threshold)
    segments, _info = model.transcribe(audio, language=language or None, beam_size=beam_size, vad_filter=False,
                                       without_timestamps=True, condition_on_previous_text=False)
    return " ".join(s.text.strip() for s in segments if s.no_speech_prob < no_speech_threshold).strip()


@dataclass
class _Utterance:
    """One conversation's utterance being heard."""

    utterance: int = 0
    start: float = 0.0  # where it starts in the input stream (s)
    chunks: list = field(default_factory=list)
    spec: tuple | None = None  # (future, t_start, audio seconds) of a speculative transcription
    spoken_s: float = 0.0  # speech before the last pause (s)


class STTStage(Stage):
    name = "stt"

    def setup(self) -> None:
        from models.registry import load_whisper

        self.worker = InferenceThread("stt", self.cfg.stt.nice)
        self.model = self.worker.call(load_whisper, self.cfg)
        # warm-up: the first call allocates CTranslate2's buffers
        self.worker.call(transcribe, self.model, np.zeros(16000, np.float32), "en", 1, 1.0)
        self._utt: dict[str, _Utterance] = {}  # per conversation
        self.last_rtf = 0.0
        self.speculative_used = 0
        self.speculative_wasted = 0
        self.speculative_retried = 0  # empty speculative results checked on the whole utterance

    def on_close(self, session_id: str) -> None:
        self._utt.pop(session_id, None)

    def extra_stats(self) -> dict:
        return {"last_rtf": self.last_rtf, "thread_nice": self.worker.thread_nice(),
                "speculative_used": self.speculative_used, "speculative_wasted": self.speculative_wasted,
                "speculative_retried": self.speculative_retried}

    def _timed_transcribe(self, audio: np.ndarray) -> tuple[str, float]:
        t = time.perf_counter()
        s = self.cfg.stt
        text = transcribe(self.model, audio, s.language, s.beam_size, s.no_speech_threshold)
        return text, time.perf_counter() - t

    def _start_transcription(self, audio: np.ndarray):
        return self.worker.submit(self._timed_transcribe, audio), time.time(), len(audio) / 16000

    @staticmethod
    def _audio(u: _Utterance) -> np.ndarray:
        return to_float32(np.concatenate(u.chunks)) if u.chunks else np.zeros(0, np.float32)

    def process(self, frame: Frame) -> None:
        sid = frame.session_id
        u = self._utt.setdefault(sid, _Utterance())
        if isinstance(frame, UserStartedSpeakingFrame):
            self._utt[sid] = _Utterance(frame.utterance_id, frame.audio_time)
        elif isinstance(frame, UserPausedFrame):
            if u.spec is not None:
                self.speculative_wasted += 1  # the user spoke on after the last pause
            u.spec = spec = self._start_transcription(self._audio(u))
            u.spoken_s = frame.audio_time - u.start
            # the early words go to the session at once (preemptive reply), unless
            # the user spoke on or the endpoint came first
            spec[0].add_done_callback(lambda f: self._preliminary(f, sid, u, spec))
        elif isinstance(frame, InputAudioFrame):
            if frame.sample_rate != 16000:
                raise FrameError(f"stt needs 16000 Hz audio, got {frame.sample_rate} Hz")
            u.chunks.append(frame.pcm)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._finish(sid, u, frame)
            self._utt.pop(sid, None)
        else:
            raise FrameError(f"stt does not take {frame.kind}")

    def _preliminary(self, fut, sid: str, u: _Utterance, spec) -> None:
        if u.spec is not spec or fut.cancelled() or fut.exception() is not None:
            return
        text, _took = fut.result()
        if text:
            self.emit(TranscriptFrame(text=text, final=False, utterance_id=u.utterance, audio_start=u.start,
                                      session_id=sid))

    def _finish(self, sid: str, u: _Utterance, stop: UserStoppedSpeakingFrame) -> None:
        """The endpoint: the final words, without waiting here (the data lane serves everyone).

        Every pause is followed by speech (a new pause) or by this stop, so the latest
        speculative run covers all the speech of the utterance."""
        spec = u.spec  # (its preliminary words still go out first when it completes: callbacks run in order)
        if spec is not None:
            self.speculative_used += 1
        fut, t0, audio_s = spec or self._start_transcription(self._audio(u))
        whole = self._audio(u) if spec is not None and u.spoken_s >= RETRY_MIN_SPEECH_S else None

        def done(f) -> None:
            try:
                text, took = f.result()
            except Exception as e:
                self.report_error(f"stt failed: {e}", sid)
                text, took = "", 0.0
            if not text and whole is not None:
                # a barge-in's "What about the weather?" (its start muted by the canceller) came back
                # empty from the audio up to the pause (no-speech score >= 0.6) and as "I'm out of the
                # weather." from the whole utterance: once in 24 barge-ins, and the reply went on as if
                # the user had said nothing
                self.speculative_retried += 1
                again = self.worker.submit(self._timed_transcribe, whole)
                again.add_done_callback(lambda g: self._final(sid, u, stop, g, t0, len(whole) / 16000, took))
                return
            self._final(sid, u, stop, f, t0, audio_s, 0.0)

        fut.add_done_callback(done)

    def _final(self, sid: str, u: _Utterance, stop: UserStoppedSpeakingFrame, fut, t0: float, audio_s: float,
               took_before: float) -> None:
        try:
            text, took = fut.result()
        except Exception as e:
            self.report_error(f"stt failed: {e}", sid)
            text, took = "", 0.0
        took += took_before
        self.last_rtf = took / max(audio_s, 1e-6)
        self.emit(TranscriptFrame(text=text, final=True, utterance_id=stop.utterance_id, audio_start=u.start,
                                  audio_end=stop.audio_time, session_id=sid))
        self.event(TranscriptTimed(session_id=sid, utterance=stop.utterance_id, stt_s=took, audio_s=audio_s,
                                   t_start=t0, wait_s=time.time() - stop.created))


STTActor = stage_actor(STTStage)
