"""Conversation state: turns, response ids, history, barge-in decisions.

Pure logic (no Ray): ``handle`` takes a frame and returns the frames to send,
so the same rules run in the session actor and in timeline unit tests.

Response ids are allocated here and only here. A turn starts when the VAD
hears speech (or a typed input arrives); if a reply of lower or equal
priority is in progress, every stage is told to drop it (InterruptFrame).

Preemptive generation: when the STT's speculative transcript (taken at a
pause, before the endpoint) arrives, the reply is requested at once and its
audio is held at the player. If the endpoint confirms the same words, the
audio is released; if the user speaks on, or the final words differ, that
attempt is cancelled and its id is never used again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.frames import (CancelFrame, EventFrame, Frame, HoldFrame, InterruptFrame, LLMRequestFrame,
                             TranscriptFrame)
from pipeline.priorities import Priority, interrupts

# events recorded on a turn's timeline, in pipeline order
TURN_EVENTS = ("user_speech_started", "user_speech_stopped", "transcript_final", "llm_first_token",
               "tts_first_audio", "first_reply_sample_out", "reply_done")
# events of a reply attempt: an attempt that is cancelled does not leave them behind
ATTEMPT_EVENTS = ("llm_first_token", "tts_first_audio")


@dataclass
class Turn:
    response_id: int  # the live attempt's id (the first id keys the turn)
    priority: Priority = Priority.HIGH
    utterance_id: int = 0
    events: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # per-stage figures (stt_s, ttft_s, ...)
    transcript: str = ""
    reply: str = ""
    state: str = "listening"  # listening|thinking|speaking|done|empty|interrupted
    errors: list[str] = field(default_factory=list)
    preemptive: str | None = None  # words of an attempt started before the endpoint, not yet confirmed
    committed: bool = False  # the user's words are final and in the history

    @property
    def finished(self) -> bool:
        return self.state in ("done", "empty", "interrupted")

    def to_dict(self) -> dict[str, Any]:
        return {"response_id": self.response_id, "priority": int(self.priority), "utterance_id": self.utterance_id,
                "events": dict(self.events), "info": dict(self.info), "transcript": self.transcript,
                "reply": self.reply, "state": self.state, "finished": self.finished, "errors": list(self.errors)}


@dataclass
class Send:
    dest: str  # a stage name, or "*" for every stage; urgent frames go on the control lane
    frame: Frame


def _same_words(a: str, b: str) -> bool:
    norm = lambda s: " ".join("".join(c for c in s.lower() if c.isalnum() or c.isspace()).split())  # noqa: E731
    return norm(a) == norm(b)


class Session:
    def __init__(self, system_prompt: str = "", history_turns: int = 8, preemptive: bool = True) -> None:
        self.system_prompt = system_prompt
        self.history_turns = history_turns
        self.preemptive = preemptive
        self.history: list[dict[str, str]] = []
        self.turns: dict[int, Turn] = {}  # by first response id
        self._by_rid: dict[int, Turn] = {}  # every attempt's id -> its turn
        self._by_utterance: dict[int, Turn] = {}
        self._requested: set[int] = set()  # ids sent to the LLM
        self._cancelled: set[int] = set()
        self.next_id = 1
        self.replying: int | None = None  # response being produced/played
        self.globals: dict[str, float] = {}  # input_started, input_done
        self.errors: list[str] = []

    # ------------------------------------------------------------ inputs
    def handle(self, frame: Frame) -> list[Send]:
        if isinstance(frame, TranscriptFrame):
            return self._transcript(frame)
        if isinstance(frame, EventFrame):
            return self._event(frame)
        return []

    def _new_id(self, turn: Turn) -> int:
        rid, self.next_id = self.next_id, self.next_id + 1
        turn.response_id = rid
        self._by_rid[rid] = turn
        return rid

    def new_turn(self, priority: Priority = Priority.HIGH, utterance_id: int = 0) -> tuple[Turn, list[Send]]:
        turn = Turn(0, priority, utterance_id)
        self._new_id(turn)
        self.turns[turn.response_id] = turn
        if utterance_id:
            self._by_utterance[utterance_id] = turn
        out: list[Send] = []
        cur = self._by_rid.get(self.replying) if self.replying else None
        if cur is not None and not cur.finished and interrupts(priority, cur.priority):
            cur.state = "interrupted"
            out.append(Send("*", InterruptFrame(response_id=turn.response_id, reason="user_speech",
                                                priority=priority)))
            self.replying = None
        return turn, out

    def _event(self, ev: EventFrame) -> list[Send]:
        name, d = ev.name, ev.data
        if name == "input_started":  # a new input stream: forget the last one's end
            self.globals = {"input_started": ev.t}
            return []
        if name == "input_done":
            self.globals[name] = ev.t
            return []
        if name == "error":
            msg = d.get("message", "")
            self.errors.append(msg)
            turn = self._by_rid.get(ev.response_id)
            if turn is not None:
                turn.errors.append(msg)
            return []
        if name == "user_speech_started":
            turn, out = self.new_turn(Priority.HIGH, d.get("utterance", 0))
            turn.events[name] = ev.t
            turn.info["speech_start_audio"] = d.get("audio_time")
            return out
        if name in ("user_speech_stopped", "user_speech_resumed", "stt_done"):
            turn = self._by_utterance.get(d.get("utterance", -1))
            if turn is None:
                return []
            if name == "user_speech_resumed":  # the pause was not the end: drop the early attempt
                return self._cancel_preemptive(turn)
            if name == "user_speech_stopped":
                turn.events[name] = ev.t
                turn.info["speech_end_audio"] = d.get("audio_time")
                if turn.state == "listening":
                    turn.state = "thinking"
            else:
                turn.info["stt_s"] = d.get("stt_s")
                turn.info["utterance_s"] = d.get("audio_s")
            return []
        turn = self._by_rid.get(ev.response_id)
        if turn is None or ev.response_id != turn.response_id or ev.response_id in self._cancelled:
            return []  # a cancelled attempt's leftovers
        if name in TURN_EVENTS:
            turn.events.setdefault(name, ev.t)
        for k in ("ttft_s", "synth_s", "llm_s"):
            if k in d:
                turn.info[k] = d[k]
        if name == "first_reply_sample_out" and turn.state == "thinking":
            turn.state = "speaking"
        elif name == "llm_done":
            turn.reply = d.get("text", "")
            if turn.reply and turn.committed:
                self._remember("assistant", turn.reply)
        elif name == "reply_done":
            turn.info["chunks"] = d.get("chunks", [])
            if turn.state != "interrupted":
                turn.state = "done"
            if self.replying == turn.response_id:
                self.replying = None
        return []

    def _transcript(self, tf: TranscriptFrame) -> list[Send]:
        turn = self._by_utterance.get(tf.utterance_id)
        out: list[Send] = []
        if turn is None:
            turn, out = self.new_turn(Priority.HIGH, tf.utterance_id)
        if not tf.final:
            return out + self._preempt(turn, tf.text)
        turn.events["transcript_final"] = tf.created
        turn.transcript = tf.text
        if not tf.text.strip():
            turn.state = "empty"  # speech-like sound with no words: no turn
            return out + self._cancel_preemptive(turn)
        if turn.preemptive is not None and _same_words(turn.preemptive, tf.text):
            return out + self._commit(turn, tf.text)
        out += self._cancel_preemptive(turn)
        return out + self.request_reply(turn, tf.text)

    def request_reply(self, turn: Turn, user_text: str) -> list[Send]:
        if turn.response_id in self._requested:
            self._new_id(turn)  # an earlier (cancelled) attempt used this id: never reuse it
        self._remember("user", user_text)
        turn.committed = True
        turn.state = "thinking"
        self.replying = turn.response_id
        self._requested.add(turn.response_id)
        return [Send("llm", LLMRequestFrame(messages=self.messages(), response_id=turn.response_id,
                                            priority=turn.priority))]

    # ------------------------------------------------------------ preemptive generation
    def _preempt(self, turn: Turn, text: str) -> list[Send]:
        if not self.preemptive or turn.committed or turn.finished or not text.strip():
            return []
        if turn.preemptive is not None and _same_words(turn.preemptive, text):
            return []  # this attempt already covers these words
        out = self._cancel_preemptive(turn)
        rid = self._new_id(turn)
        self._requested.add(rid)
        turn.preemptive = text
        turn.info["preemptive_attempts"] = turn.info.get("preemptive_attempts", 0) + 1
        msgs = self.messages() + [{"role": "user", "content": text}]
        return out + [Send("player", HoldFrame(response_id=rid, hold=True, priority=turn.priority)),
                      Send("llm", LLMRequestFrame(messages=msgs, response_id=rid, priority=turn.priority))]

    def _commit(self, turn: Turn, text: str) -> list[Send]:
        self._remember("user", text)
        turn.committed, turn.preemptive = True, None
        turn.info["preemptive"] = True
        self.replying = turn.response_id
        if turn.reply:  # the LLM finished before the endpoint
            self._remember("assistant", turn.reply)
        return [Send("player", HoldFrame(response_id=turn.response_id, hold=False, priority=turn.priority))]

    def _cancel_preemptive(self, turn: Turn) -> list[Send]:
        if turn.preemptive is None:
            return []
        turn.preemptive = None
        turn.reply = ""
        self._cancelled.add(turn.response_id)
        for k in ATTEMPT_EVENTS:
            turn.events.pop(k, None)
        for k in ("ttft_s", "synth_s", "llm_s"):
            turn.info.pop(k, None)
        return [Send("*", CancelFrame(response_id=turn.response_id, reason="preemptive attempt superseded"))]

    # ------------------------------------------------------------ history
    def _remember(self, role: str, text: str) -> None:
        self.history.append({"role": role, "content": text})
        self.history = self.history[-2 * self.history_turns:]

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + [dict(m) for m in self.history]

    # ------------------------------------------------------------ queries
    def snapshot(self) -> dict[str, Any]:
        return {"turns": [t.to_dict() for t in self.turns.values()], "globals": dict(self.globals),
                "history": self.messages(), "errors": list(self.errors), "replying": self.replying}
