"""Frames: the small dataclasses that move between stages.

Every frame carries the session it belongs to, the ``response_id`` of the turn
it is part of, a sequence number (per sender->receiver channel, set on send)
and a priority. Frames fall into three families:

* data frames (audio, text) travel in order on the data lane;
* ordered control frames (speech started/stopped, end of turn) travel in order
  with the data they delimit, so an "end" never overtakes its last token;
* urgent control frames (interrupt, cancel, priority change) travel on the
  control lane and overtake all data.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pipeline.flow.priorities import Priority


class FrameError(ValueError):
    """A frame that cannot be accepted (wrong type, shape, rate...)."""


@dataclass(kw_only=True)
class Frame:
    session_id: str = "default"
    response_id: int = 0
    seq: int = 0
    priority: Priority = Priority.HIGH
    source: str = ""
    created: float = field(default_factory=time.time)

    #: frames produced from user input (mic audio, VAD events, transcripts)
    #: belong to the turn being *heard*, not to a reply, and are never stale.
    input_side: ClassVar[bool] = False
    #: urgent frames use the control lane and overtake data.
    urgent: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        return type(self).__name__


# ---------------------------------------------------------------- audio
@dataclass(kw_only=True)
class AudioFrame(Frame):
    pcm: np.ndarray  # int16, mono, 1-D
    sample_rate: int
    capture_time: float = 0.0  # wall time of the first sample
    stream_pos: int = 0  # index of the first sample in its stream

    def __post_init__(self) -> None:
        if not isinstance(self.pcm, np.ndarray) or self.pcm.dtype != np.int16 or self.pcm.ndim != 1:
            got = getattr(self.pcm, "dtype", type(self.pcm).__name__)
            raise FrameError(f"{self.kind}.pcm must be a 1-D int16 numpy array, got {got}")
        if int(self.sample_rate) <= 0:
            raise FrameError(f"{self.kind}.sample_rate must be positive, got {self.sample_rate}")

    @property
    def duration(self) -> float:
        return len(self.pcm) / self.sample_rate


@dataclass(kw_only=True)
class InputAudioFrame(AudioFrame):
    """Microphone audio (16 kHz after the mic stage), echo-cancelled when playback runs."""

    # while the engine talks: the RMS (int16) below which this audio is taken for what is
    # left of the engine's own voice after echo cancellation (0: no echo possible)
    echo_guard: float = 0.0
    # while the engine's voice may be in the mic: that voice's level as it reaches the mic (RMS,
    # an upper bound: the loudest playback of the echo's reach times the measured coupling)
    echo_level: float = 0.0
    # the echo's coupling (mic vs playback) was measured, not assumed (0 dB until the first
    # correlated window): only then is ``echo_level`` a level the user can be compared with
    echo_measured: bool = False
    # how far (s) the playback's stamps may be off now (after a jump, or while the output's stream
    # stalls): ``echo_level`` is then a bound stretched that far, and loudness over it no sign of
    # the user (their voice must come through the canceller)
    echo_timing_doubt: float = 0.0
    # this audio before echo cancellation (None: not cancelled). A canceller still converging
    # can *add* a misestimated echo (measured: residual 4x the echo it was given), so the guard
    # compares the quieter of the two: what it can not have added. And AEC3 mutes the first
    # ~100 ms (96-128 measured) of a user talking over the echo (its double-talk onset); before
    # cancellation, speech louder than the echo can be is the user, heard that much sooner
    raw_pcm: np.ndarray | None = None

    input_side: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.raw_pcm is not None and (not isinstance(self.raw_pcm, np.ndarray) or self.raw_pcm.dtype != np.int16
                                         or self.raw_pcm.shape != self.pcm.shape):
            raise FrameError(f"{self.kind}.raw_pcm must be int16 and shaped like pcm {self.pcm.shape}")


@dataclass(kw_only=True)
class TTSAudioFrame(AudioFrame):
    """Synthesized reply audio for one text chunk.

    ``text_start``/``text_end`` locate ``text`` inside the full reply, so played
    samples can be mapped back to the words that were actually heard.
    """

    text: str = ""
    text_start: int = 0
    text_end: int = 0
    chunk_index: int = 0


# ---------------------------------------------------------------- text
@dataclass(kw_only=True)
class TranscriptFrame(Frame):
    text: str
    utterance_id: int = 0  # the VAD's count of utterances heard
    final: bool = True
    audio_start: float = 0.0  # seconds into the input stream
    audio_end: float = 0.0

    input_side: ClassVar[bool] = True


@dataclass(kw_only=True)
class UserInputFrame(Frame):
    """A typed input from a front end (a NyaDeskPet message): text, a tap, a command...

    ``priority`` follows the message type (``pipeline.flow.priorities``); ``data`` is the
    message as received, less its ``type``.
    """

    message_type: str
    data: dict[str, Any] = field(default_factory=dict)

    input_side: ClassVar[bool] = True


@dataclass(kw_only=True)
class LLMRequestFrame(Frame):
    """Ask the LLM stage for a reply to ``messages`` (OpenAI chat format)."""

    messages: list[dict[str, Any]]


@dataclass(kw_only=True)
class LLMTokenFrame(Frame):
    text: str


@dataclass(kw_only=True)
class SentenceFrame(Frame):
    """A sentence or clause cut from the reply, ready for synthesis."""

    text: str
    text_start: int = 0
    text_end: int = 0
    index: int = 0


# ---------------------------------------------------------------- control
@dataclass(kw_only=True)
class ControlFrame(Frame):
    pass


@dataclass(kw_only=True)
class UserSpeechFrame(ControlFrame):
    """A VAD decision about the user's speech, in order with the audio it marks."""

    utterance_id: int = 0  # the VAD's count of utterances heard
    audio_time: float = 0.0  # where it happened in the input stream (s)

    input_side: ClassVar[bool] = True


@dataclass(kw_only=True)
class UserStartedSpeakingFrame(UserSpeechFrame):
    pass


@dataclass(kw_only=True)
class UserPausedFrame(UserSpeechFrame):
    """Speech has gone quiet for a while: a likely (not yet certain) end of turn."""


@dataclass(kw_only=True)
class UserStoppedSpeakingFrame(UserSpeechFrame):
    pass


@dataclass(kw_only=True)
class EndOfTurnFrame(ControlFrame):
    """The producer has sent everything for ``response_id``."""

    text: str = ""  # full text of what was produced, where relevant


@dataclass(kw_only=True)
class InterruptFrame(ControlFrame):
    """Drop everything older than ``response_id`` (the new current turn).

    ``stopped``: the replies it cuts; the conversation's output answers each with a
    ``ReplyStopped`` carrying what was heard of it (the history keeps those words).
    """

    reason: str = ""
    stopped: tuple[int, ...] = ()
    urgent: ClassVar[bool] = True


@dataclass(kw_only=True)
class CancelFrame(ControlFrame):
    """Cancel exactly ``response_id`` (e.g. the user pressed stop)."""

    reason: str = ""
    urgent: ClassVar[bool] = True


@dataclass(kw_only=True)
class HoldFrame(ControlFrame):
    """Keep (``hold=True``) or release the audio of ``response_id``.

    A reply started before the user's turn is certain to have ended
    (preemptive generation) is synthesized but held at the player until the
    endpoint confirms it.
    """

    hold: bool = True
    urgent: ClassVar[bool] = True


@dataclass(kw_only=True)
class PriorityChangeFrame(ControlFrame):
    """The reply ``response_id`` now runs at ``priority``."""

    urgent: ClassVar[bool] = True


@dataclass(kw_only=True)
class PublishFrame(Frame):
    """Session -> client stage: a bus event for the conversation's subscribers, in order
    with the session's other events (``pipeline.flow.bus_events``)."""

    event: Any

    input_side: ClassVar[bool] = True


# ---------------------------------------------------------------- avatar
@dataclass(kw_only=True)
class ChunkAudibleFrame(Frame):
    """Player -> avatar: a reply chunk's first sample is heard at wall time ``t_audible``.

    ``text`` is the chunk's raw reply text, emotion tags included (they are not spoken);
    ``duration`` (s) lets a cue inside the chunk land where its words are heard.
    """

    text: str = ""
    text_start: int = 0
    chunk_index: int = 0
    t_audible: float = 0.0
    duration: float = 0.0
