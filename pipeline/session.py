"""Conversation state: turns, response ids, history, barge-in decisions.

Pure logic (no Ray): ``handle`` takes a frame and returns the frames to send,
so the same rules run in the session actor and in timeline unit tests.

Response ids are allocated here and only here. A turn starts when the VAD
hears speech (or a typed input arrives); if a reply of lower or equal
priority is in progress, every stage is told to drop it (InterruptFrame).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.frames import EventFrame, Frame, InterruptFrame, LLMRequestFrame, TranscriptFrame
from pipeline.priorities import Priority, interrupts

# events recorded on a turn's timeline, in pipeline order
TURN_EVENTS = ("user_speech_started", "user_speech_stopped", "transcript_final", "llm_first_token",
               "tts_first_audio", "first_reply_sample_out", "reply_done")


@dataclass
class Turn:
    response_id: int
    priority: Priority = Priority.HIGH
    utterance_id: int = 0
    events: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # per-stage figures (stt_s, ttft_s, ...)
    transcript: str = ""
    reply: str = ""
    state: str = "listening"  # listening|thinking|speaking|done|empty|interrupted
    errors: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "empty", "interrupted")

    def to_dict(self) -> dict[str, Any]:
        return {"response_id": self.response_id, "priority": int(self.priority), "utterance_id": self.utterance_id,
                "events": dict(self.events), "info": dict(self.info), "transcript": self.transcript,
                "reply": self.reply, "state": self.state, "errors": list(self.errors)}


@dataclass
class Send:
    dest: str  # a stage name, or "*" for every stage's control lane
    frame: Frame


class Session:
    def __init__(self, system_prompt: str = "", history_turns: int = 8) -> None:
        self.system_prompt = system_prompt
        self.history_turns = history_turns
        self.history: list[dict[str, str]] = []
        self.turns: dict[int, Turn] = {}
        self._by_utterance: dict[int, int] = {}
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

    def new_turn(self, priority: Priority = Priority.HIGH, utterance_id: int = 0) -> tuple[Turn, list[Send]]:
        turn = Turn(self.next_id, priority, utterance_id)
        self.next_id += 1
        self.turns[turn.response_id] = turn
        if utterance_id:
            self._by_utterance[utterance_id] = turn.response_id
        out: list[Send] = []
        cur = self.turns.get(self.replying) if self.replying else None
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
            turn = self.turns.get(ev.response_id)
            if turn is not None:
                turn.errors.append(msg)
            return []
        if name == "user_speech_started":
            turn, out = self.new_turn(Priority.HIGH, d.get("utterance", 0))
            turn.events[name] = ev.t
            turn.info["speech_start_audio"] = d.get("audio_time")
            return out
        if name in ("user_speech_stopped", "stt_done"):
            turn = self.turns.get(self._by_utterance.get(d.get("utterance", -1), -1))
            if turn is not None:
                if name == "user_speech_stopped":
                    turn.events[name] = ev.t
                    turn.info["speech_end_audio"] = d.get("audio_time")
                    turn.state = "thinking"
                else:
                    turn.info["stt_s"] = d.get("stt_s")
                    turn.info["utterance_s"] = d.get("audio_s")
            return []
        turn = self.turns.get(ev.response_id)
        if turn is None:
            return []
        if name in TURN_EVENTS:
            turn.events.setdefault(name, ev.t)
        for k in ("ttft_s", "synth_s", "llm_s"):
            if k in d:
                turn.info.setdefault(k, d[k])
        if name == "first_reply_sample_out" and turn.state == "thinking":
            turn.state = "speaking"
        elif name == "llm_done":
            turn.reply = d.get("text", "")
            if turn.reply:
                self._remember("assistant", turn.reply)
        elif name == "reply_done":
            turn.info["chunks"] = d.get("chunks", [])
            if turn.state != "interrupted":
                turn.state = "done"
            if self.replying == turn.response_id:
                self.replying = None
        return []

    def _transcript(self, tf: TranscriptFrame) -> list[Send]:
        rid = self._by_utterance.get(tf.utterance_id)
        turn = self.turns.get(rid) if rid else None
        if turn is None:
            turn, out = self.new_turn(Priority.HIGH, tf.utterance_id)
        else:
            out = []
        turn.events["transcript_final"] = tf.created
        turn.transcript = tf.text
        if not tf.text.strip():
            turn.state = "empty"  # speech-like sound with no words: no turn
            return out
        return out + self.request_reply(turn, tf.text)

    def request_reply(self, turn: Turn, user_text: str) -> list[Send]:
        self._remember("user", user_text)
        turn.state = "thinking"
        self.replying = turn.response_id
        return [Send("llm", LLMRequestFrame(messages=self.messages(), response_id=turn.response_id,
                                            priority=turn.priority))]

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
