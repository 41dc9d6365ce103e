"""What a conversation's subscribers receive: the events on its bus.

Every output that is not a sound device subscribes to a conversation here: a
WebSocket client, ``talk`` and ``run`` (the CLI), later the store. Each event names its
conversation (``session_id``) and gets the next number of that conversation's stream
(``seq``) from the bus, so a subscriber sees one ordered stream. They are plain
dataclasses (no numpy outside ``ReplyAudio``), pickled through Ray.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(kw_only=True)
class BusEvent:
    session_id: str = ""
    seq: int = 0  # per conversation, set by the bus
    t: float = field(default_factory=time.time)

    @property
    def kind(self) -> str:
        return type(self).__name__


# ---------------------------------------------------------------- a reply, as it is produced
@dataclass(kw_only=True)
class ReplyStarted(BusEvent):
    """A reply was asked of the LLM (``source``: the input type it answers)."""

    response_id: int
    priority: int
    source: str = ""


@dataclass(kw_only=True)
class ReplyDelta(BusEvent):
    """LLM text as it streams, emotion tags included (a front end strips or acts on them)."""

    response_id: int
    priority: int
    text: str


@dataclass(kw_only=True)
class ReplyAudio(BusEvent):
    """One synthesized chunk (a clause or sentence) of a reply, for a client that plays it.

    ``text`` is the chunk's raw reply text (tags included), ``text_start``/``text_end`` its
    place in the reply; ``sample_offset``: samples of this reply sent before it.
    """

    response_id: int
    priority: int
    chunk_index: int
    pcm: np.ndarray  # int16 mono
    sample_rate: int
    text: str = ""
    text_start: int = 0
    text_end: int = 0
    sample_offset: int = 0


@dataclass(kw_only=True)
class ReplyTextDone(BusEvent):
    """The LLM's text of the reply is complete (its audio may still be coming)."""

    response_id: int
    priority: int
    text: str


@dataclass(kw_only=True)
class ReplyFinished(BusEvent):
    """The reply is over: its whole text, or (``interrupted``) only what was delivered."""

    response_id: int
    priority: int
    text: str = ""
    interrupted: bool = False
    audio: bool = False  # audio of it went to the subscribers (ReplyAudio)


# ---------------------------------------------------------------- the conversation
@dataclass(kw_only=True)
class TurnUpdated(BusEvent):
    """A turn changed: its state, transcript, reply, timeline (wall times) and figures."""

    turn: dict[str, Any]


@dataclass(kw_only=True)
class InputMark(BusEvent):
    """A point of the input stream: ``input_started``, ``input_done``, or a source's own mark
    (a scripted barge-in: ``barge_in_scheduled``, ``barge_in_started`` with its speech onset)."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class Notice(BusEvent):
    """Something a user should be told: an error (``level="error"``), a warning, a notice.
    ``code`` is stable for programs, ``message`` readable."""

    level: str
    code: str
    message: str
    response_id: int = 0


@dataclass(kw_only=True)
class Closed(BusEvent):
    """The conversation is closed: the stream ends after this."""

    reason: str = ""
