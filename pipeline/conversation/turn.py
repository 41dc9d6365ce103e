"""One turn of a conversation: the control state the session decides on.

Its measurements live apart, in ``metrics`` (``TurnMetrics``): nothing the session
decides reads them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.conversation.metrics import TurnMetrics
from pipeline.flow.priorities import Priority

FINISHED = ("done", "empty", "interrupted", "ignored", "failed")
ONSET = -1  # Turn.paused_by while paused on a speech onset the VAD has not yet confirmed


@dataclass
class Turn:
    response_id: int  # the live attempt's id (the first id keys the turn)
    priority: Priority = Priority.HIGH
    utterance_id: int = 0
    source: str = "user_speech"  # or the NyaDeskPet message type of a typed input
    transcript: str = ""
    reply: str = ""
    heard: str | None = None  # words actually delivered, once the reply was interrupted
    state: str = "listening"  # listening|thinking|speaking|done|empty|ignored|interrupted|failed
    errors: list[str] = field(default_factory=list)
    preemptive: str | None = None  # words of an attempt started before the endpoint, not yet confirmed
    committed: bool = False  # the user's words are final and in the history
    paused_by: int = 0  # utterance whose speech paused this reply (0: not paused; ONSET: not yet sure)
    barge_in: int = 0  # the reply this turn's speech paused (0: none)
    speech_start_audio: float | None = None  # where the user's speech starts/ends in the input stream
    speech_end_audio: float | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)  # image/text parts of a typed input
    metrics: TurnMetrics = field(default_factory=TurnMetrics)
    turn_id: int = 0  # its first response id: what keys it while its attempts take new ids

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_dict(self) -> dict[str, Any]:
        info = dict(self.metrics.info)
        if self.speech_start_audio is not None:
            info["speech_start_audio"] = self.speech_start_audio
        if self.speech_end_audio is not None:
            info["speech_end_audio"] = self.speech_end_audio
        if self.barge_in:
            info["barge_in"] = self.barge_in
        return {"turn_id": self.turn_id, "response_id": self.response_id, "priority": int(self.priority), "utterance_id": self.utterance_id,
                "source": self.source, "events": dict(self.metrics.events), "info": info,
                "transcript": self.transcript, "reply": self.reply, "heard": self.heard, "state": self.state,
                "paused": bool(self.paused_by), "finished": self.finished, "errors": list(self.errors)}
