"""VAD stage: webrtcvad as a cheap pre-gate, Silero (ONNX) for the decision.

Runs Silero's 32 ms window (512 samples at 16 kHz) every ``audio.input_block_ms``
(16 ms: a word's start is seen 16 ms sooner on average than at one window per
32 ms; two model states take turns, each on contiguous windows, as Silero's
recurrent state expects), decides speech start/stop with ``Endpointer`` and
forwards the speech (with pre-roll) to STT, one hop of new audio per window,
bracketed by ordered UserStarted/StoppedSpeaking frames.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from typing import Any, Callable

from actors.base import Stage, stage_actor
from pipeline.audio.convert import rms, to_float32
from pipeline.audio.endpointing import Endpointer
from pipeline.config import Config
from pipeline.flow.events import (SpeechOnset, SpeechOnsetRejected, SpeechPaused, SpeechResumed, SpeechStarted,
                                  SpeechStopped)
from pipeline.flow.frames import (Frame, FrameError, InputAudioFrame, UserPausedFrame, UserStartedSpeakingFrame,
                             UserStoppedSpeakingFrame)

WINDOW = 512  # samples at 16 kHz
MAX_LATE_S = 1.0  # how far a late-confirmed speech start reaches back for its onset
ECHO_FLOOR = 3.0  # echo guard (RMS, int16) above which the engine's own voice may be in the mic
# The user talking over the reply is heard in the mic before cancellation (AEC3 mutes their first
# 96-128 ms). Measured on the slow machine under load, the engine's own voice passed that test too:
# the playback stamps the echo's level is estimated from were off by tens of ms after stalls, and a
# word's start reached the mic "louder than the echo can be". Two checks against it:
# - the mic must also be within TALK_OVER_PEAK_DB of the loudest echo of the last TALK_OVER_PEAK_S (a
#   user is heard over the reply as a whole, not only over the gap between two of its words; in a gap
#   the canceller has no far end to mute the user with, so the cancelled mic hears them anyway);
# - such windows can pause the reply, but speech starts only once the canceller lets a window of it
#   through (Endpointer ``confirmed``); after TALK_OVER_MAX_S of them with none let through, it is
#   the echo: the talk-over test rests until the mic's speech ends;
# - while the mic says the playback's timing is in doubt (its stamps jumped, or its output stalled:
#   InputAudioFrame.echo_timing_doubt), the test sits out: the echo's level is known, not when.
TALK_OVER_PEAK_S, TALK_OVER_PEAK_DB = 0.5, -6.0
TALK_OVER_MAX_S = 0.5  # the paused reply's echo and the guard's tail fade in ~0.25 s


class VoiceDetector:
    """One conversation's voice activity: its Silero states, endpointer and buffers."""

    def __init__(self, cfg: Config, session_id: str, emit: Callable[[Frame], None]) -> None:
        import webrtcvad

        from models.registry import load_silero

        self.cfg, self.session_id, self.emit = cfg, session_id, emit
        v = self.cfg.vad
        self.hop = 16000 * self.cfg.audio.input_block_ms // 1000
        self.phases = WINDOW // self.hop  # model states taking turns: each sees windows end to end
        self.silero = [load_silero() for _ in range(self.phases)]
        # Silero on the mic before echo cancellation too, while the engine's voice may be in it:
        # AEC3 mutes the first ~100 ms (96-128 measured) of a user talking over the echo
        self.silero_raw = [load_silero() for _ in range(self.phases)]
        self._raw_warm = False
        self.gate_vad = webrtcvad.Vad(v.webrtc_aggressiveness) if v.webrtc_gate else None
        self.endpointer = Endpointer(WINDOW / 16000, v.threshold, v.neg_threshold,
                                     v.min_speech_ms / 1000, v.endpoint_silence_ms / 1000,
                                     v.speculative_silence_ms / 1000, hop_s=self.hop / 16000)
        # under echo an onset takes two windows' worth of audio (see _window): 2 at 32 ms, 3 at 16
        self._echo_onset_windows = self.endpointer.windows_spanning(2 * WINDOW / 16000)
        hop_ms = self.cfg.audio.input_block_ms
        self.pre_roll_windows = max(1, v.pre_roll_ms // hop_ms)
        # windows before the speech start with their probability (after the echo guard): under
        # echo the start can be confirmed late (a window not louder than the echo breaks the run),
        # so the STT gets the whole run of speech-like windows before it, plus the pre-roll. Not
        # Silero's raw score: a cold canceller's residual scores high and would be transcribed
        self.before: deque[tuple[InputAudioFrame, float]] = deque(
            maxlen=self.pre_roll_windows + int(MAX_LATE_S * 1000) // hop_ms)
        self._buf = np.zeros(0, np.int16)
        self._raw_buf = np.zeros(0, np.int16)  # the same samples before echo cancellation
        self._buf_pos = 0
        self._buf_capture = 0.0
        self._win = np.zeros(WINDOW, np.int16)  # the last window (its newest hop last), and before cancellation
        self._raw_win = np.zeros(WINDOW, np.int16)
        self.utterance = 0
        self.gated = 0
        self.windows = 0
        # playback-aware gating: windows left during which the engine's voice may be in the mic
        self._echo_windows = 0
        self._echo_hold = max(1, 400 // hop_ms)  # the room's echo tail outlasts the playback a little
        self.strict_windows = 0
        # per hop of the window (newest last): the echo guard, level and timing doubt the mic sent with it
        self._echo: deque[tuple[float, float, float]] = deque([(0.0, 0.0, 0.0)] * self.phases, maxlen=self.phases)
        self._echo_guard = 0.0
        self._echo_level = 0.0
        self._echo_doubt = 0.0
        self.residual_gated = 0
        self.talk_over_windows = 0
        self.talk_over_spent = 0  # times the talk-over test gave up on a run (the echo, not the user)
        self.talk_over_doubted = 0  # windows the talk-over test sat out: the playback's timing in doubt
        self._echo_peak: deque[float] = deque(maxlen=max(1, int(TALK_OVER_PEAK_S * 1000) // hop_ms))
        self._talk_over_run = 0  # talk-over windows in a row that the canceller did not let through
        self._talk_over_max = self.endpointer.windows_spanning(TALK_OVER_MAX_S)
        self._talk_over_resting = False
        # (prob, level, guard, talk-over prob, raw level, echo level, t): why an onset or a start
        self._recent: deque[tuple] = deque(maxlen=4 * self.phases)

    def stats(self) -> dict:
        return {"windows": self.windows, "gated": self.gated, "in_speech": self.endpointer.in_speech,
                "strict_windows": self.strict_windows, "residual_gated": self.residual_gated,
                "talk_over_windows": self.talk_over_windows, "talk_over_spent": self.talk_over_spent,
                "talk_over_doubted": self.talk_over_doubted}

    def speech_prob(self, pcm: np.ndarray, phase: int) -> float:
        """Silero probability for one 512-sample window; the webrtc gate can veto."""
        model = self.silero[phase]
        x = to_float32(pcm)
        if self.gate_vad is not None and not self.endpointer.in_speech:
            # webrtcvad takes 10/20/30 ms frames: check the last 30 ms (the newest audio)
            if not self.gate_vad.is_speech(pcm[-480:].tobytes(), 16000):
                self.gated += 1
                model(x, 16000)  # keep Silero's recurrent state fed with the real audio
                return 0.0
        return float(model(x, 16000)[0][0])

    def process(self, frame: InputAudioFrame) -> None:
        if frame.sample_rate != 16000:
            raise FrameError(f"vad needs 16000 Hz audio, got {frame.sample_rate} Hz (the mic stage resamples)")
        if frame.echo_guard > ECHO_FLOOR:
            self._echo_windows = self._echo_hold + len(frame.pcm) // self.hop
        if len(self._buf) == 0:
            self._buf_pos, self._buf_capture = frame.stream_pos, frame.capture_time
        self._buf = np.concatenate([self._buf, frame.pcm])
        self._raw_buf = np.concatenate([self._raw_buf, frame.pcm if frame.raw_pcm is None else frame.raw_pcm])
        while len(self._buf) >= self.hop:
            new, self._buf = self._buf[:self.hop], self._buf[self.hop:]
            raw, self._raw_buf = self._raw_buf[:self.hop], self._raw_buf[self.hop:]
            self._win = np.concatenate([self._win[self.hop:], new])
            self._raw_win = np.concatenate([self._raw_win[self.hop:], raw])
            # the guard follows the echo the mic can carry now (the mic's estimate already spans the
            # echo's delay): a paused reply stops guarding once its echo has passed, while the strict
            # threshold holds a little longer for the room's tail. (A guard held at its last value
            # kept gating the user's first words after the pause and blurred their transcript.)
            # Over the window: the larger of its hops' (the louder echo may be in either)
            self._echo.append((frame.echo_guard, frame.echo_level, frame.echo_timing_doubt))
            self._echo_guard = max(g for g, _, _ in self._echo)
            self._echo_level = max(e for _, e, _ in self._echo)
            self._echo_doubt = max(d for _, _, d in self._echo)
            # (an echo level assumed at 0 dB coupling, before any was measured, is no measure of the
            # user: the first barge-in of a headphones session took 1.1 s against it)
            self._echo_peak.append(self._echo_level if frame.echo_measured else 0.0)
            block = InputAudioFrame(pcm=new, sample_rate=16000, stream_pos=self._buf_pos,
                                    capture_time=self._buf_capture, session_id=self.session_id)
            self._buf_pos += self.hop
            self._buf_capture += self.hop / 16000
            self._window(block)

    def _talk_over(self, raw: np.ndarray, raw_level: float, phase: int) -> float:
        """Silero's probability for the window before echo cancellation (RMS ``raw_level``) if it
        is louder than the engine's echo can be (the user talking over it), else 0."""
        if self._echo_level <= 0:
            self._raw_warm = False
            return 0.0
        if self._echo_doubt > 0:
            # the echo's level is known, not when it plays: a stalled output's stutter reached the
            # mic "louder than the echo can be" where the stamps had a pause (an onset pause on the
            # engine's own voice). The user is heard through the canceller meanwhile (~0.1 s later)
            self._raw_warm = False
            self.talk_over_doubted += 1
            return 0.0
        if not self._raw_warm:  # its recurrent state is from another stretch of echo
            for model in self.silero_raw:
                model.reset_states()
            self._raw_warm = True
        prob = float(self.silero_raw[phase](to_float32(raw), 16000)[0][0])
        floor = max(self._echo_level * 10 ** (self.cfg.echo.guard_db_converging / 20),
                    max(self._echo_peak) * 10 ** (TALK_OVER_PEAK_DB / 20))
        return prob if raw_level >= floor else 0.0

    def _talk_over_check(self, talk_over: float, strict: float, let_through: bool) -> tuple[bool, bool]:
        """(whether the talk-over test lifts this window to speech, whether the window may start
        speech: see TALK_OVER_MAX_S). ``let_through``: the cancelled mic calls it speech too."""
        if talk_over < strict:
            if talk_over < self.cfg.vad.neg_threshold:  # the mic's speech ended
                self._talk_over_run, self._talk_over_resting = 0, False
            return False, True
        if let_through or self.endpointer.in_speech:
            self._talk_over_run = 0
            return True, True
        if self._talk_over_resting:
            return False, True
        self._talk_over_run += 1
        if self._talk_over_run > self._talk_over_max:  # no canceller let it through: the engine's voice
            self._talk_over_resting = True
            self.talk_over_spent += 1
            return False, True
        return True, False

    def _window(self, block: InputAudioFrame) -> None:
        """One window: the last ``WINDOW`` samples, ``block`` (the newest hop) last."""
        t = (block.stream_pos + self.hop - WINDOW) / 16000  # where the window starts
        strict, onset, uncertain, confirmed = None, 1, False, True
        phase = self.windows % self.phases
        self.windows += 1
        raw_level = rms(self._raw_win)
        prob = self.speech_prob(self._win, phase)
        talk_over = self._talk_over(self._raw_win, raw_level, phase)
        # a converging canceller may add echo: count only what the mic had
        level = min(rms(self._win), raw_level)
        self._recent.append((round(prob, 3), round(level, 1), round(self._echo_guard if self._echo_windows else 0.0, 1),
                             round(talk_over, 3), round(raw_level, 1), round(self._echo_level, 1), round(t, 3)))
        if self._echo_windows > 0:  # the engine is (or was just) talking: its echo must not start a turn
            self._echo_windows -= 1
            self.strict_windows += 1
            # one window of the canceller's leak must not pause the reply: not while it converges,
            # and (one pause in a long file-mode reply with one window allowed) not after either
            strict, onset = self.cfg.echo.vad_threshold, self._echo_onset_windows
            if not self.endpointer.in_speech and level < self._echo_guard:
                uncertain = prob >= self.cfg.vad.neg_threshold  # speech-like, but it may be the echo
                prob = 0.0  # no louder than what the canceller leaves of the echo
                self.residual_gated += 1
            lift, confirmed = self._talk_over_check(talk_over, strict, prob >= strict)
            if lift:  # the user over the echo, before the canceller's double-talk suppression
                prob, uncertain = max(prob, talk_over), False
                onset = 1  # louder than the echo can be: no leak of the canceller's (that takes two)
                self.talk_over_windows += 1
        else:
            self._talk_over_run, self._talk_over_resting = 0, False
        ev = self.endpointer.update(prob, t, strict, onset, uncertain, confirmed)
        sid = self.session_id
        if ev is not None and ev.kind == "onset":  # lets a reply pause at once ...
            self.emit(SpeechOnset(session_id=sid, audio_time=ev.audio_time, detect_lag=ev.detected_at - ev.audio_time,
                                  windows=list(self._recent)))
        elif ev is not None and ev.kind == "reject":  # ... or go on
            self.emit(SpeechOnsetRejected(session_id=sid, audio_time=ev.audio_time))
        if ev is not None and ev.kind == "start":
            self.utterance += 1
            lag = ev.detected_at - ev.audio_time
            mark = dict(session_id=sid, utterance_id=self.utterance, audio_time=ev.audio_time)
            self.emit(UserStartedSpeakingFrame(**mark))
            # pre-roll: the windows before detection hold the onset of the speech
            for f in self._lead_in(ev.audio_time):
                self.emit(f)
            self.before.clear()
            self.emit(SpeechStarted(session_id=sid, utterance=self.utterance, audio_time=ev.audio_time, detect_lag=lag,
                                   windows=list(self._recent)))
        if self.endpointer.in_speech or (ev is not None and ev.kind == "stop"):
            self.emit(block)
            if ev is not None and ev.kind == "pause":
                self.emit(UserPausedFrame(session_id=sid, utterance_id=self.utterance, audio_time=ev.audio_time))
                self.emit(SpeechPaused(session_id=sid, utterance=self.utterance, audio_time=ev.audio_time))
            elif ev is not None and ev.kind == "resume":
                self.emit(SpeechResumed(session_id=sid, utterance=self.utterance, audio_time=ev.audio_time))
        else:
            self.before.append((block, prob))
        if ev is not None and ev.kind == "stop":
            self.emit(UserStoppedSpeakingFrame(session_id=sid, utterance_id=self.utterance, audio_time=ev.audio_time))
            self.emit(SpeechStopped(session_id=sid, utterance=self.utterance, audio_time=ev.audio_time,
                                    detect_lag=ev.detected_at - ev.audio_time))

    def _lead_in(self, run_start: float) -> list[InputAudioFrame]:
        """The windows to send before a speech start: the starting run itself (from ``run_start``,
        its windows gated as possible echo included: leaving them out cut "What is the weather"
        to "a manner"), the speech-like run before it (probability at least ``neg_threshold``),
        and the pre-roll before that."""
        items = list(self.before)
        i = len(items)
        while i > 0 and items[i - 1][0].stream_pos / 16000 >= run_start - 1e-6:
            i -= 1
        while i > 0 and items[i - 1][1] >= self.cfg.vad.neg_threshold:
            i -= 1
        return [f for f, _ in items[max(0, i - self.pre_roll_windows):]]


class VADStage(Stage):
    """Voice activity for every conversation that has a voice: a detector each."""

    name = "vad"

    def setup(self) -> None:
        self.detectors: dict[str, VoiceDetector] = {}

    def on_close(self, session_id: str) -> None:
        self.detectors.pop(session_id, None)

    def extra_stats(self) -> dict:
        out: dict[str, Any] = {}
        for d in list(self.detectors.values()):  # summed over conversations
            for k, v in d.stats().items():
                out[k] = out.get(k, 0) + v
        return out

    def process(self, frame: Frame) -> None:
        if not isinstance(frame, InputAudioFrame):
            raise FrameError(f"vad takes InputAudioFrame, got {frame.kind}")
        d = self.detectors.get(frame.session_id)
        if d is None:
            d = self.detectors[frame.session_id] = VoiceDetector(self.cfg, frame.session_id, self.emit)
        d.process(frame)


VADActor = stage_actor(VADStage)
