"""Speech start/stop decisions from per-window speech probabilities.

Pure logic (no model) so it can be tested on synthetic windows. Times are
positions in the input stream, in seconds: the start is back-dated to the
first speech window, the end to the first silent window after speech.

Windows may overlap: one every ``hop_s`` (Silero's 32 ms window every 16 ms
sees a word's start 16 ms sooner on average). Durations count the audio the
windows span, so a run of n windows covers ``window_s + (n - 1) * hop_s``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class SpeechEvent:
    # "onset" (a first speech-like window: maybe speech) | "reject" (it was not) | "start" |
    # "pause" (silence began, not yet an endpoint) | "resume" (speech after a pause) | "stop"
    kind: str
    audio_time: float  # where it happened in the input stream (s)
    detected_at: float  # stream time when we could tell (s)


class Endpointer:
    def __init__(self, window_s: float = 0.032, threshold: float = 0.5, neg_threshold: float = 0.35,
                 min_speech_s: float = 0.096, endpoint_silence_s: float = 0.5, pause_s: float = 0.0,
                 onset_gap_s: float = 0.064, hop_s: float | None = None) -> None:
        self.window_s = window_s
        self.hop_s = window_s if hop_s is None else hop_s
        self.threshold = threshold
        self.neg_threshold = neg_threshold
        self.min_speech_windows = self.windows_spanning(min_speech_s)
        self.endpoint_windows = self.windows_spanning(endpoint_silence_s)
        self.pause_windows = self.windows_spanning(pause_s) if pause_s > 0 else 0
        # a starting run survives this much non-speech: under the engine's echo the guard gates the
        # user's quieter windows, and a run broken at the first one resumed the paused reply only
        # for the next window to pause it again (a stutter, and the stop came 0.3-0.5 s late)
        self.onset_gap_windows = max(0, round(onset_gap_s / self.hop_s))
        self.in_speech = False
        self._run = 0  # windows voting for the other state (consecutive, but for onset gaps)
        self._gap = 0  # non-speech windows since the starting run's last speech window
        self._run_start = 0.0
        self._onset_sent = False  # the starting run's onset (the windows asked for can change per window)
        self._confirmed = False  # the starting run has a window that can start speech (see update)

    def windows_spanning(self, seconds: float) -> int:
        """How many windows in a row span at least ``seconds`` of audio (at least one)."""
        return max(1, math.ceil((seconds - self.window_s) / self.hop_s - 1e-6) + 1)

    def reset(self) -> None:
        self.in_speech = False
        self._run = self._gap = 0

    def update(self, prob: float, t: float, start_threshold: float | None = None,
               onset_windows: int = 1, uncertain: bool = False, confirmed: bool = True) -> SpeechEvent | None:
        """Feed the probability of the window starting at stream time ``t`` (one per hop).

        ``start_threshold`` replaces ``threshold`` for starting speech, and the
        onset needs ``onset_windows`` windows (stricter while the engine's own
        voice may be in the mic). ``uncertain``: the window can not be told from
        the engine's echo (speech-like, but no louder than the echo could be); it
        neither adds to a starting run nor breaks it: a reply paused by an onset
        still echoes for up to 150 ms, and the user's words under that echo must
        not retract the onset (which resumed the reply, only to pause it again).
        ``confirmed=False``: the window may carry a run and its onset but can not start speech;
        the run starts (back-dated to its first window) only once one of its windows is
        confirmed (under the engine's echo: one that the echo canceller let through).
        """
        end = t + self.window_s
        if not self.in_speech and uncertain:
            return None
        if not self.in_speech:
            if prob >= (self.threshold if start_threshold is None else start_threshold):
                if self._run == 0:
                    self._run_start, self._onset_sent, self._confirmed = t, False, False
                self._run += 1
                self._gap = 0
                self._confirmed = self._confirmed or confirmed
                if self._run >= self.min_speech_windows and self._confirmed:
                    self.in_speech, self._run = True, 0
                    return SpeechEvent("start", self._run_start, end)
                if self._run >= onset_windows and not self._onset_sent:  # barge-in pauses the reply on
                    self._onset_sent = True  # this, before speech is certain
                    return SpeechEvent("onset", t, end)
            elif self._run:
                self._gap += 1
                if self._gap > self.onset_gap_windows:
                    self._run = self._gap = 0
                    return SpeechEvent("reject", self._run_start, end)
            return None
        if prob < self.neg_threshold:
            if self._run == 0:
                self._run_start = t
            self._run += 1
            if self._run >= self.endpoint_windows:
                self.in_speech, self._run = False, 0
                return SpeechEvent("stop", self._run_start, end)
            if self._run == self.pause_windows:
                return SpeechEvent("pause", self._run_start, end)
        elif prob >= self.threshold:  # hysteresis: values in between keep the silence run going
            paused = self.pause_windows and self._run >= self.pause_windows
            self._run = 0
            if paused:
                return SpeechEvent("resume", t, end)
        return None
