"""Typed pipeline events: what the stages tell the session that happened, and when.

The session decides on these types, never on names. Each is a small frame of its own
(it travels like a frame and is never stale: a record of what happened). ``mark`` names
the point it sets on its turn's timeline, if any (``pipeline.conversation.metrics``
keeps the order of those names, in one place).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pipeline.flow.frames import Frame


@dataclass(kw_only=True)
class Event(Frame):
    t: float = field(default_factory=time.time)  # wall time it happened (not when it was sent)

    input_side: ClassVar[bool] = True  # a record of what happened: never stale
    mark: ClassVar[str] = ""  # the turn timeline point it sets ("" = none)


# ---------------------------------------------------------------- the user's speech (VAD)
@dataclass(kw_only=True)
class SpeechOnset(Event):
    """A first speech-like window: a reply in progress pauses at once (cheap to undo)."""

    audio_time: float = 0.0
    detect_lag: float = 0.0
    windows: list = field(default_factory=list)  # the VAD's last windows (VoiceDetector._recent)


@dataclass(kw_only=True)
class SpeechOnsetRejected(Event):
    """The onset proved not to be speech: a reply it paused goes on."""

    audio_time: float = 0.0


@dataclass(kw_only=True)
class SpeechEvent(Event):
    utterance: int = 0  # the VAD's count of utterances heard
    audio_time: float = 0.0  # where it happened in the input stream (s)


@dataclass(kw_only=True)
class SpeechStarted(SpeechEvent):
    detect_lag: float = 0.0
    windows: list = field(default_factory=list)  # the VAD's last windows (VoiceDetector._recent)
    mark: ClassVar[str] = "user_speech_started"


@dataclass(kw_only=True)
class SpeechPaused(SpeechEvent):
    """Silence long enough to transcribe speculatively; not yet the end of the turn."""


@dataclass(kw_only=True)
class SpeechResumed(SpeechEvent):
    """The pause was not the end: the user speaks on."""


@dataclass(kw_only=True)
class SpeechStopped(SpeechEvent):
    detect_lag: float = 0.0
    mark: ClassVar[str] = "user_speech_stopped"


# ---------------------------------------------------------------- models
@dataclass(kw_only=True)
class TranscriptTimed(Event):
    """STT figures of an utterance (the words themselves come in a TranscriptFrame)."""

    utterance: int = 0
    stt_s: float = 0.0
    audio_s: float = 0.0
    t_start: float = 0.0
    wait_s: float = 0.0


@dataclass(kw_only=True)
class LLMFirstToken(Event):
    ttft_s: float = 0.0
    mark: ClassVar[str] = "llm_first_token"


@dataclass(kw_only=True)
class LLMDone(Event):
    text: str = ""
    llm_s: float = 0.0


@dataclass(kw_only=True)
class LLMCancelled(Event):
    text: str = ""


@dataclass(kw_only=True)
class TTSFirstAudio(Event):
    synth_s: float = 0.0
    chars: int = 0
    t_start: float = 0.0
    mark: ClassVar[str] = "tts_first_audio"


# ---------------------------------------------------------------- outputs (player, client)
@dataclass(kw_only=True)
class ReplyAudible(Event):
    """The reply's first sample is heard (or sent to a client that plays it)."""

    mark: ClassVar[str] = "first_reply_sample_out"


@dataclass(kw_only=True)
class ReplyEnded(Event):
    """The output is done with a reply. ``heard``: each chunk with its samples played
    (``pipeline.conversation.heard_text`` turns it into words); ``chunks``: where each
    chunk was heard (sample positions of a WAV, times)."""

    heard: list[dict] = field(default_factory=list)
    chunks: list[dict] = field(default_factory=list)
    output_rate: int = 0


@dataclass(kw_only=True)
class ReplyDone(ReplyEnded):
    """Played to its end."""

    mark: ClassVar[str] = "reply_done"


@dataclass(kw_only=True)
class ReplyStopped(ReplyEnded):
    """Cut (an interrupt or cancel); pushed at once, with what was heard up to the cut."""

    mark: ClassVar[str] = "reply_stopped"


@dataclass(kw_only=True)
class ReplyAudioStopped(Event):
    """A metric: the last non-silent sample of a cut reply was heard at ``audio_stopped_t``
    (sent once the fade-out and the device's buffer have played)."""

    audio_stopped_t: float = 0.0


# ---------------------------------------------------------------- sources, devices, failures
@dataclass(kw_only=True)
class InputStarted(Event):
    source: str = ""


@dataclass(kw_only=True)
class InputDone(Event):
    pass


@dataclass(kw_only=True)
class SourceMark(Event):
    """A point an audio source reports on its own clock (a test rig's scripted barge-in)."""

    name: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class DeviceReopened(Event):
    device: str = ""
    device_name: str = ""


@dataclass(kw_only=True)
class StageError(Event):
    """A stage failed on something (``response_id``: the reply it concerns, 0 = none).
    ``fatal``: that reply will not come (a dead LLM endpoint)."""

    stage: str = ""
    message: str = ""
    fatal: bool = False
