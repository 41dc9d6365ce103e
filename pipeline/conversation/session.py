"""Conversation state: turns, response ids, history, barge-in and priority decisions.

Pure logic (no Ray): ``handle`` takes a frame and returns the frames to send,
so the same rules run in the session actor and in timeline unit tests.

Response ids are allocated here and only here, and only grow.

Barge-in, in two steps (as livekit/agents does; pipecat cuts at once):
1. the VAD hears a first speech-like window while a reply is in progress: the
   reply's audio is *paused* at the player (silent within one block), nothing
   dropped; if the VAD then decides it was not speech, the reply goes on;
2. the interruption is confirmed once the user has spoken for at least
   ``min_interrupt_s`` and the transcript has words: every stage drops the old
   reply (InterruptFrame) and the history keeps only the words that were heard.
   A shorter burst, or speech whose transcript is empty (a cough, a laugh), is
   a false interruption: the reply resumes where it paused.

Typed inputs carry a NyaDeskPet message type and its priority: an input of
higher or equal priority than the reply in progress interrupts it at once,
a lower one waits in a queue until the reply is over.

Preemptive generation: when the STT's speculative transcript (taken at a
pause, before the endpoint) arrives, the reply is requested at once and its
audio is held at the player. If the endpoint confirms the same words, the
audio is released; if the user speaks on, or the final words differ, that
attempt is cancelled and its id is never used again.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.flow.frames import (CancelFrame, EventFrame, Frame, HoldFrame, InterruptFrame, LLMRequestFrame,
                             TranscriptFrame, UserInputFrame)
from pipeline.conversation.heard_text import heard_text
from pipeline.conversation.inputs import CONTEXT_ONLY, describe_input
from pipeline.flow.priorities import Priority, interrupts

# events recorded on a turn's timeline, in pipeline order
TURN_EVENTS = ("user_speech_started", "user_speech_stopped", "transcript_final", "llm_first_token",
               "tts_first_audio", "first_reply_sample_out", "reply_paused", "reply_resumed", "reply_stopped",
               "reply_done")
# events of a reply attempt: an attempt that is cancelled does not leave them behind
ATTEMPT_EVENTS = ("llm_first_token", "tts_first_audio")
FINISHED = ("done", "empty", "interrupted", "ignored", "failed")
ONSET = -1  # Turn.paused_by while paused on a speech onset the VAD has not yet confirmed


@dataclass
class Turn:
    response_id: int  # the live attempt's id (the first id keys the turn)
    priority: Priority = Priority.HIGH
    utterance_id: int = 0
    source: str = "user_speech"  # or the NyaDeskPet message type of a typed input
    events: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # per-stage figures (stt_s, ttft_s, ...)
    transcript: str = ""
    reply: str = ""
    heard: str | None = None  # words actually played, once the reply was interrupted
    state: str = "listening"  # listening|thinking|speaking|done|empty|ignored|interrupted|failed
    errors: list[str] = field(default_factory=list)
    preemptive: str | None = None  # words of an attempt started before the endpoint, not yet confirmed
    committed: bool = False  # the user's words are final and in the history
    paused_by: int = 0  # utterance whose speech paused this reply (0: not paused; ONSET: not yet sure)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return {"response_id": self.response_id, "priority": int(self.priority), "utterance_id": self.utterance_id,
                "source": self.source, "events": dict(self.events), "info": dict(self.info),
                "transcript": self.transcript, "reply": self.reply, "heard": self.heard, "state": self.state,
                "paused": bool(self.paused_by), "finished": self.finished, "errors": list(self.errors)}


@dataclass
class Send:
    dest: str  # a stage name, or "*" for every stage; urgent frames go on the control lane
    frame: Frame


def _same_words(a: str, b: str) -> bool:
    norm = lambda s: " ".join("".join(c for c in s.lower() if c.isalnum() or c.isspace()).split())  # noqa: E731
    return norm(a) == norm(b)


class Session:
    def __init__(self, system_prompt: str = "", history_turns: int = 8, preemptive: bool = True,
                 min_interrupt_s: float = 0.25, interrupted_marker: str = "[interrupted by the user]",
                 heard: Callable[[int], list[dict]] | None = None) -> None:
        self.system_prompt = system_prompt
        self.history_turns = history_turns
        self.preemptive = preemptive
        self.min_interrupt_s = min_interrupt_s
        self.interrupted_marker = interrupted_marker
        # the player's record of a response: each chunk with its samples played
        self.heard = heard or (lambda rid: [])
        self.history: list[dict[str, Any]] = []  # messages, plus "_rid"/"interrupted" kept to ourselves
        self.context: dict[str, Any] = {}  # character/model/plugin info from low-priority inputs
        self.turns: dict[int, Turn] = {}  # by first response id
        self._by_rid: dict[int, Turn] = {}  # every attempt's id -> its turn
        self._by_utterance: dict[int, Turn] = {}
        self._requested: set[int] = set()  # ids sent to the LLM
        self._cancelled: set[int] = set()
        self._queue: list[tuple[int, int, UserInputFrame]] = []  # (-priority, order, input)
        self._order = itertools.count()
        self.next_id = 1
        self.replying: int | None = None  # response being produced/played
        self.globals: dict[str, float] = {}  # input_started, input_done
        self.errors: list[str] = []
        self.false_interruptions = 0
        self.false_pauses = 0  # onsets that paused a reply and proved not to be speech

    # ------------------------------------------------------------ inputs
    def handle(self, frame: Frame) -> list[Send]:
        if isinstance(frame, TranscriptFrame):
            return self._transcript(frame)
        if isinstance(frame, EventFrame):
            return self._event(frame)
        if isinstance(frame, UserInputFrame):
            return self._input(frame)
        return []

    def _new_id(self, turn: Turn) -> int:
        rid, self.next_id = self.next_id, self.next_id + 1
        turn.response_id = rid
        self._by_rid[rid] = turn
        return rid

    def new_turn(self, priority: Priority = Priority.HIGH, utterance_id: int = 0,
                 source: str = "user_speech") -> Turn:
        turn = Turn(0, priority, utterance_id, source)
        self._new_id(turn)
        self.turns[turn.response_id] = turn
        if utterance_id:
            self._by_utterance[utterance_id] = turn
        return turn

    def current(self) -> Turn | None:
        """The reply in progress (requested, not finished), if any."""
        turn = self._by_rid.get(self.replying) if self.replying else None
        return turn if turn is not None and not turn.finished else None

    # ------------------------------------------------------------ barge-in
    def _speech_s(self, turn: Turn, audio_time: float | None) -> float:
        start = turn.info.get("speech_start_audio")
        return (audio_time or 0.0) - start if start is not None else 0.0

    def _pause(self, reply: Turn, by: Turn) -> list[Send]:
        if reply.paused_by == by.utterance_id:
            return []
        was, reply.paused_by = reply.paused_by, by.utterance_id
        by.info["barge_in"] = reply.response_id
        if was == ONSET:
            return []  # already silent since the onset
        return [Send("player", HoldFrame(response_id=reply.response_id, hold=True, priority=by.priority))]

    def _onset(self, name: str, t: float = 0.0, windows: list | None = None) -> list[Send]:
        """The VAD's first speech-like window (or its retraction): pause the reply at once.

        Pausing is cheap to undo, so it does not wait for the VAD to be sure:
        this is what keeps "user starts -> engine silent" short.
        """
        cur = self.current()
        if cur is None:
            return []
        if name == "user_speech_onset" and not cur.paused_by:
            cur.paused_by = ONSET
            cur.info["onset_pauses"] = cur.info.get("onset_pauses", 0) + 1
            # the VAD's last windows (prob, level, echo guard): why it paused, for diagnosis
            cur.info.setdefault("onset_windows", []).append(windows or [])
            return [Send("player", HoldFrame(response_id=cur.response_id, hold=True, priority=Priority.HIGH))]
        if name == "user_speech_onset_rejected" and cur.paused_by == ONSET:
            cur.paused_by = 0
            self.false_pauses += 1
            cur.info.setdefault("false_pause_times", []).append(t)
            return [Send("player", HoldFrame(response_id=cur.response_id, hold=False, priority=cur.priority))]
        return []

    def _resume(self, reply: Turn, why: str) -> list[Send]:
        """A false interruption: the reply goes on where it paused."""
        if not reply.paused_by or reply.finished:
            return []
        reply.paused_by = 0
        self.false_interruptions += 1
        reply.info["false_interruptions"] = reply.info.get("false_interruptions", 0) + 1
        reply.info.setdefault("false_interruption_reasons", []).append(why)
        return [Send("player", HoldFrame(response_id=reply.response_id, hold=False, priority=reply.priority))]

    def _interrupt(self, reply: Turn, by: Turn, reason: str) -> list[Send]:
        """Confirm: every stage drops ``reply``; the history keeps what was heard."""
        reply.state = "interrupted"
        reply.paused_by = 0
        reply.info["interrupted_by"] = by.response_id
        text, complete = heard_text(self.heard(reply.response_id))
        reply.heard = text
        reply.info["heard_complete"] = complete
        self._set_assistant(reply, text, interrupted=True)
        if self.replying == reply.response_id:
            self.replying = None
        return [Send("*", InterruptFrame(response_id=by.response_id, reason=reason, priority=by.priority))]

    def _paused_by(self, turn: Turn) -> Turn | None:
        cur = self.current()
        return cur if cur is not None and cur.paused_by == turn.utterance_id and turn.utterance_id else None

    # ------------------------------------------------------------ events
    def _event(self, ev: EventFrame) -> list[Send]:
        name, d = ev.name, ev.data
        if name == "input_started":  # a new input stream: forget the last one's end
            self.globals = {"input_started": ev.t}
            return []
        if name == "input_done":
            self.globals[name] = ev.t
            return []
        if name in ("barge_in_scheduled", "barge_in_started"):  # a scripted barge-in (talk --barge-in)
            self.globals[name] = ev.t
            if "speech_onset" in d:
                self.globals["barge_in_speech_start"] = d["speech_onset"]
            return []
        if name == "error":
            msg = d.get("message", "")
            self.errors.append(msg)
            turn = self._by_rid.get(ev.response_id)
            if turn is not None:
                turn.errors.append(msg)
                if d.get("stage") == "llm" and turn.response_id == ev.response_id and not turn.finished:
                    turn.state = "failed"  # no reply will come: let queued inputs go
                    if self.replying == turn.response_id:
                        self.replying = None
                    return self._next_queued()
            return []
        if name in ("user_speech_onset", "user_speech_onset_rejected"):
            return self._onset(name, ev.t, ev.data.get("windows"))
        if name.startswith("user_speech_") or name == "stt_done":
            return self._speech_event(name, ev)
        turn = self._by_rid.get(ev.response_id)
        if turn is None or ev.response_id != turn.response_id or ev.response_id in self._cancelled:
            return []  # a cancelled attempt's leftovers
        if name in TURN_EVENTS:
            turn.events.setdefault(name, ev.t)
        for k in ("ttft_s", "synth_s", "llm_s"):
            if k in d:
                turn.info[k] = d[k]
        if "audio_stopped_t" in d:
            turn.events["reply_audio_stopped"] = d["audio_stopped_t"]
        if name == "first_reply_sample_out" and turn.state == "thinking":
            turn.state = "speaking"
        elif name == "llm_done":
            turn.reply = d.get("text", "")
            if turn.reply and turn.committed and turn.state != "interrupted":
                self._set_assistant(turn, turn.reply)
        elif name in ("reply_done", "reply_stopped"):
            turn.info["chunks"] = d.get("chunks", [])
            if turn.state not in ("interrupted", "failed"):
                turn.state = "done"
            if self.replying == turn.response_id:
                self.replying = None
            return self._next_queued()
        return []

    def _speech_event(self, name: str, ev: EventFrame) -> list[Send]:
        d = ev.data
        if name == "user_speech_started":
            turn = self.new_turn(Priority.HIGH, d.get("utterance", 0))
            turn.events[name] = ev.t
            turn.info["speech_start_audio"] = d.get("audio_time")
            cur = self.current()
            if cur is not None and interrupts(turn.priority, cur.priority):
                return self._pause(cur, turn)
            return []
        turn = self._by_utterance.get(d.get("utterance", -1))
        if turn is None or turn.finished:
            return []
        paused = self._paused_by(turn)
        short = self._speech_s(turn, d.get("audio_time")) < self.min_interrupt_s
        out: list[Send] = []
        if name == "user_speech_resumed":  # the pause was not the end
            out = self._cancel_preemptive(turn)
            cur = self.current()
            if turn.info.get("barge_in") and cur is not None and cur.response_id == turn.info["barge_in"]:
                out += self._pause(cur, turn)  # it was resumed as a short burst: the user goes on
            return out
        if name == "user_speech_paused":
            if paused is not None and short:
                out = self._resume(paused, "short burst")
            return out
        if name == "user_speech_stopped":
            turn.events[name] = ev.t
            turn.info["speech_end_audio"] = d.get("audio_time")
            if turn.info.get("barge_in") and short:  # a burst during a reply: not a turn
                turn.state = "ignored"
                out = self._cancel_preemptive(turn)
                if paused is not None:
                    out += self._resume(paused, "short burst")
                return out
            if turn.state == "listening":
                turn.state = "thinking"
            return out
        if name == "stt_done":
            turn.info["stt_s"] = d.get("stt_s")
            turn.info["utterance_s"] = d.get("audio_s")
        return out

    # ------------------------------------------------------------ transcripts
    def _transcript(self, tf: TranscriptFrame) -> list[Send]:
        turn = self._by_utterance.get(tf.utterance_id)
        if turn is None:
            turn = self.new_turn(Priority.HIGH, tf.utterance_id)
        if turn.finished:
            return []  # e.g. a burst already judged not to be a turn
        if not tf.final:
            turn.info["partial"] = tf.text  # the live transcript, for display
            return self._preempt(turn, tf.text)
        turn.events["transcript_final"] = tf.created
        turn.transcript = tf.text
        paused = self._paused_by(turn)
        if not tf.text.strip():
            turn.state = "empty"  # speech-like sound with no words: no turn
            out = self._cancel_preemptive(turn)
            return out + (self._resume(paused, "no words") if paused is not None else [])
        out = self._take_floor(turn, "user_speech")
        if turn.preemptive is not None and _same_words(turn.preemptive, tf.text):
            return out + self._commit(turn, tf.text)
        out += self._cancel_preemptive(turn)
        return out + self.request_reply(turn, tf.text)

    def _take_floor(self, turn: Turn, reason: str) -> list[Send]:
        """``turn`` will be answered now: interrupt the reply in progress if it may."""
        cur = self.current()
        if cur is None or cur is turn or not interrupts(turn.priority, cur.priority):
            return []
        if turn.response_id < cur.response_id:
            self._new_id(turn)  # the interrupt must reach past the reply it cuts
        return self._interrupt(cur, turn, reason)

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

    # ------------------------------------------------------------ typed inputs (NyaDeskPet messages)
    def _input(self, f: UserInputFrame) -> list[Send]:
        cur = self.current()
        if cur is not None and not interrupts(f.priority, cur.priority):
            heapq.heappush(self._queue, (-int(f.priority), next(self._order), f))
            return []
        if f.message_type in CONTEXT_ONLY:
            self._apply_context(f)
            return []
        turn = self.new_turn(f.priority, source=f.message_type)
        turn.events["input_received"] = f.created
        turn.transcript = describe_input(f.message_type, f.data)
        return self._take_floor(turn, f.message_type) + self.request_reply(turn, turn.transcript)

    def _apply_context(self, f: UserInputFrame) -> None:
        self.context[f.message_type] = dict(f.data)

    def _next_queued(self) -> list[Send]:
        out: list[Send] = []
        while self._queue and self.current() is None:
            out += self._input(heapq.heappop(self._queue)[2])
        return out

    @property
    def queued(self) -> list[str]:
        return [f.message_type for _, _, f in sorted(self._queue)]

    # ------------------------------------------------------------ preemptive generation
    def _preempt(self, turn: Turn, text: str) -> list[Send]:
        if not self.preemptive or turn.committed or turn.finished or not text.strip():
            return []
        if turn.preemptive is not None and _same_words(turn.preemptive, text):
            return []  # this attempt already covers these words
        if turn.info.get("barge_in") and self._paused_by(turn) is None and self.current() is not None:
            return []  # a burst too short to interrupt: the reply it paused is playing again
        out = self._cancel_preemptive(turn)
        if self._paused_by(turn) is not None:
            out += self._take_floor(turn, "user_speech")  # words, after long enough speech: a real barge-in
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
            self._set_assistant(turn, turn.reply)
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
    def _remember(self, role: str, text: str, **extra: Any) -> None:
        self.history.append({"role": role, "content": text, **extra})
        self.history = self.history[-2 * self.history_turns:]

    def _set_assistant(self, turn: Turn, text: str, interrupted: bool = False) -> None:
        """The assistant message of ``turn``: the whole reply, or the words heard before an interruption."""
        self.history = [m for m in self.history if m.get("_rid") != turn.response_id]
        if text.strip():
            self._remember("assistant", text, _rid=turn.response_id, interrupted=interrupted)

    def messages(self) -> list[dict[str, str]]:
        """The history as the next LLM request sends it (standard OpenAI message keys only)."""
        system = self.system_prompt
        persona = self.context.get("character_info")
        if persona and persona.get("useCustom", True) and (persona.get("name") or persona.get("personality")):
            system = (system + f"\nYou are {persona.get('name', 'the character')}: "
                      f"{persona.get('personality', '')}".rstrip(": ")).strip()
        out = [{"role": "system", "content": system}] if system else []
        for m in self.history:
            content = m["content"]
            if m.get("interrupted") and self.interrupted_marker:
                content = f"{content}… {self.interrupted_marker}"
            out.append({"role": m["role"], "content": content})
        return out

    # ------------------------------------------------------------ queries
    def snapshot(self) -> dict[str, Any]:
        return {"turns": [t.to_dict() for t in self.turns.values()], "globals": dict(self.globals),
                "history": self.messages(), "errors": list(self.errors), "replying": self.replying,
                "queued": self.queued, "false_interruptions": self.false_interruptions,
                "false_pauses": self.false_pauses}
