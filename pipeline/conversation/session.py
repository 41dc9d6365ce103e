"""Conversation state: turns, response ids, history, barge-in and priority decisions.

Pure logic (no Ray): ``handle`` takes a frame (a typed event, a transcript, a typed
input) and returns the frames to send; ``pipeline.flow.routes`` says where each goes.
The same rules run in the session actor and in timeline unit tests. One ``Session`` is
one conversation; its response ids are allocated here and only here, and only grow.

Barge-in, in two steps (as livekit/agents does; pipecat cuts at once):
1. the VAD hears a first speech-like window while a reply is in progress: the
   reply's audio is *paused* at its output (silent within one block), nothing
   dropped; if the VAD then decides it was not speech, the reply goes on;
2. the interruption is confirmed once the user has spoken for at least
   ``min_interrupt_s`` and the transcript has words: every stage drops the old
   reply (InterruptFrame) and the history keeps only the words that were heard,
   which the output pushes back with its ``ReplyStopped``. The next request waits for
   that (a few ms; ``expire_heard`` if the output never answers).
   A shorter burst, or speech whose transcript is empty (a cough, a laugh), is
   a false interruption: the reply resumes where it paused.

Typed inputs carry a NyaDeskPet message type and its priority: an input of higher
or equal priority than the reply in progress interrupts it at once (README: equal
priority interrupts: the newest message wins), a lower one waits in a queue until the
reply is over. Context messages (model, character, plugin info) never interrupt.

Preemptive generation: when the STT's speculative transcript (taken at a pause, before
the endpoint) arrives, the reply is requested at once and its audio is held at the
output. If the endpoint confirms the same words, the audio is released; if the user
speaks on, or the final words differ, that attempt is cancelled and its id never reused.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Any

from pipeline.conversation.barge_in import BargeIn
from pipeline.conversation.history import History, Persona
from pipeline.conversation.metrics import chunk_gaps
from pipeline.conversation.inputs import CONTEXT_ONLY, attachments_of, describe_input
from pipeline.conversation.preemptive import Preemptive, same_words
from pipeline.conversation.turn import Turn
from pipeline.flow import events as ev
from pipeline.flow.bus_events import InputMark, Notice, ReplyStarted, TurnUpdated
from pipeline.flow.frames import (EndOfTurnFrame, Frame, LLMRequestFrame,
                                  LLMTokenFrame, PublishFrame, TranscriptFrame, UserInputFrame)
from pipeline.flow.priorities import Priority, interrupts

APOLOGY = "Sorry, I can't answer right now: my language model is not responding."


class Session(BargeIn, Preemptive):
    def __init__(self, session_id: str = "default", system_prompt: str = "", history_turns: int = 8,
                 preemptive: bool = True, min_interrupt_s: float = 0.25,
                 interrupted_marker: str = "[interrupted by the user]", speak_notices: bool = False,
                 vision: bool = False) -> None:
        self.session_id = session_id
        self.vision = vision  # the LLM takes images (OpenAI image_url parts)
        self.preemptive = preemptive
        self.min_interrupt_s = min_interrupt_s
        self.speak_notices = speak_notices  # a voice conversation says its failures aloud
        self.persona = Persona(system_prompt)
        self.history = History(self.persona, history_turns, interrupted_marker)
        self.context: dict[str, Any] = {}  # model/plugin info from low-priority inputs
        self.turns: dict[int, Turn] = {}  # by first response id
        self._by_rid: dict[int, Turn] = {}  # every attempt's id -> its turn
        self._by_utterance: dict[int, Turn] = {}
        self._requested: set[int] = set()  # ids sent (or due) to the LLM
        self._cancelled: set[int] = set()
        self._queue: list[tuple[int, int, UserInputFrame]] = []  # (-priority, order, input)
        self._order = itertools.count()
        self._pending: list[tuple[Turn, int, str | None]] = []  # requests waiting for a cut reply's heard words
        self.awaiting_heard: set[int] = set()  # cut replies whose output has not said what was heard
        self._published: dict[int, dict] = {}
        self.next_id = 1
        self.replying: int | None = None  # response being produced/played
        self.globals: dict[str, float] = {}  # input_started, input_done, a rig's barge-in marks
        self.errors: list[str] = []
        self.false_interruptions = 0
        self.false_pauses = 0  # onsets that paused a reply and proved not to be speech

    # ------------------------------------------------------------ entry
    def handle(self, frame: Frame) -> list[Frame]:
        before = {rid for rid, t in self.turns.items() if not t.finished}
        if isinstance(frame, TranscriptFrame):
            out = self._transcript(frame)
        elif isinstance(frame, UserInputFrame):
            out = self._input(frame)
        elif isinstance(frame, ev.Event):
            out = self._event(frame)
        else:
            out = []
        return [self._own(f) for f in out + self._turn_updates(before)]

    def _own(self, f: Frame) -> Frame:
        f.session_id = self.session_id
        return f

    def publish(self, event: Any) -> PublishFrame:
        event.session_id = self.session_id
        return PublishFrame(event=event, session_id=self.session_id)

    def _turn_updates(self, before: set[int]) -> list[Frame]:
        """A TurnUpdated for each turn that changed (the subscribers' view of the timeline)."""
        out = []
        recent = set(list(self.turns)[-8:])  # a finished turn still learns late things (what was heard)
        for rid in sorted(before | recent | {rid for rid in self.turns if rid not in self._published}):
            d = self.turns[rid].to_dict()
            if self._published.get(rid) != d:
                self._published[rid] = d
                out.append(self.publish(TurnUpdated(turn=d)))
        return out

    # ------------------------------------------------------------ turns and ids
    def _new_id(self, turn: Turn) -> int:
        rid, self.next_id = self.next_id, self.next_id + 1
        turn.response_id = rid
        self._by_rid[rid] = turn
        return rid

    def new_turn(self, priority: Priority = Priority.HIGH, utterance_id: int = 0,
                 source: str = "user_speech") -> Turn:
        turn = Turn(0, priority, utterance_id, source)
        turn.turn_id = self._new_id(turn)
        self.turns[turn.response_id] = turn
        if utterance_id:
            self._by_utterance[utterance_id] = turn
        return turn

    def current(self) -> Turn | None:
        """The reply in progress (requested, not finished), if any."""
        turn = self._by_rid.get(self.replying) if self.replying else None
        return turn if turn is not None and not turn.finished else None

    # ------------------------------------------------------------ events
    def _event(self, e: ev.Event) -> list[Frame]:
        if isinstance(e, (ev.InputStarted, ev.InputDone, ev.SourceMark)):
            return self._input_mark(e)
        if isinstance(e, ev.StageError):
            return self._error(e)
        if isinstance(e, (ev.SpeechOnset, ev.SpeechOnsetRejected)):
            return self._onset(e)
        if isinstance(e, (ev.SpeechEvent, ev.TranscriptTimed)):
            return self._speech_event(e)
        if isinstance(e, ev.ReplyStopped) and e.response_id in self.awaiting_heard:
            out = self._heard(e.response_id, e.heard)
            turn = self._by_rid.get(e.response_id)
            if turn is not None:
                turn.metrics.info["chunks"] = e.chunks
                turn.metrics.mark("reply_stopped", e.t)
            return out
        turn = self._by_rid.get(e.response_id)
        if turn is None or e.response_id != turn.response_id or e.response_id in self._cancelled:
            return []  # a cancelled attempt's leftovers
        if e.mark:
            turn.metrics.mark(e.mark, e.t)
        m = turn.metrics.info
        if isinstance(e, ev.LLMFirstToken):
            m["ttft_s"] = e.ttft_s
        elif isinstance(e, ev.TTSFirstAudio):
            m["synth_s"] = e.synth_s
        elif isinstance(e, ev.ReplyAudioStopped):
            turn.metrics.mark("reply_audio_stopped", e.audio_stopped_t, first=False)
        elif isinstance(e, ev.ReplyAudible) and turn.state == "thinking":
            turn.state = "speaking"
        elif isinstance(e, ev.LLMDone):
            m["llm_s"] = e.llm_s
            turn.reply = e.text
            if turn.reply and turn.committed and turn.state != "interrupted":
                self.history.set_assistant(turn.response_id, turn.reply)
        elif isinstance(e, ev.ReplyEnded):
            m["chunks"] = e.chunks
            m.update(chunk_gaps(e.chunks))
            if "spoken_notice" in m and turn.state != "interrupted":
                turn.state = "failed"  # its apology was said
            elif turn.state not in ("interrupted", "failed"):
                turn.state = "done"
            if self.replying == turn.response_id:
                self.replying = None
            return self._next_queued()
        return []

    def _input_mark(self, e: ev.Event) -> list[Frame]:
        if isinstance(e, ev.InputStarted):  # a new input stream: forget the last one's end
            self.globals = {"input_started": e.t}
            return [self.publish(InputMark(name="input_started", t=e.t, data={"source": e.source}))]
        if isinstance(e, ev.InputDone):
            self.globals["input_done"] = e.t
            return [self.publish(InputMark(name="input_done", t=e.t))]
        self.globals[e.name] = e.t  # a source's own mark (a scripted barge-in)
        if "speech_onset" in e.data:
            self.globals["barge_in_speech_start"] = e.data["speech_onset"]
        return [self.publish(InputMark(name=e.name, t=e.t, data=dict(e.data)))]

    def _error(self, e: ev.StageError) -> list[Frame]:
        self.errors.append(e.message)
        out: list[Frame] = [self.publish(Notice(level="error", code=f"{e.stage}_failed", message=e.message,
                                                response_id=e.response_id))]
        turn = self._by_rid.get(e.response_id)
        if turn is None:
            return out
        turn.errors.append(e.message)
        if e.fatal and turn.response_id == e.response_id and not turn.finished:
            if self.speak_notices:  # a voice conversation says so; the turn fails once it is said
                turn.state = "speaking"
                out += self._say(turn, APOLOGY)
                self.replying = turn.response_id
                return out
            turn.state = "failed"  # no reply will come: let queued inputs go
            if self.replying == turn.response_id:
                self.replying = None
            return out + self._next_queued()
        return out

    def _say(self, turn: Turn, text: str) -> list[Frame]:
        """Speak ``text`` as ``turn``'s reply, without the LLM (a failure said aloud)."""
        rid = self._new_id(turn)
        turn.metrics.info["spoken_notice"] = text
        return [LLMTokenFrame(text=text, response_id=rid, priority=turn.priority),
                EndOfTurnFrame(text=text, response_id=rid, priority=turn.priority)]

    def _speech_event(self, e: ev.Event) -> list[Frame]:
        if isinstance(e, ev.SpeechStarted):
            turn = self.new_turn(Priority.HIGH, e.utterance)
            turn.metrics.mark(e.mark, e.t)
            turn.speech_start_audio = e.audio_time
            turn.metrics.info["start_windows"] = e.windows  # why the VAD started it, for diagnosis
            cur = self.current()
            if cur is not None and interrupts(turn.priority, cur.priority):
                return self._pause(cur, turn)
            return []
        turn = self._by_utterance.get(e.utterance, None)
        if turn is None or turn.finished:
            return []
        if isinstance(e, ev.TranscriptTimed):
            turn.metrics.info["stt_s"] = e.stt_s
            turn.metrics.info["utterance_s"] = e.audio_s
            return []
        paused = self._paused_by(turn)
        short = self._speech_s(turn, e.audio_time) < self.min_interrupt_s
        out: list[Frame] = []
        if isinstance(e, ev.SpeechResumed):  # the pause was not the end
            out = self._cancel_preemptive(turn)
            cur = self.current()
            if turn.barge_in and cur is not None and cur.response_id == turn.barge_in:
                out += self._pause(cur, turn)  # it was resumed as a short burst: the user goes on
            return out
        if isinstance(e, ev.SpeechPaused):
            if paused is not None and short:
                out = self._resume(paused, "short burst")
            return out
        if isinstance(e, ev.SpeechStopped):
            turn.metrics.mark(e.mark, e.t, first=False)
            turn.speech_end_audio = e.audio_time
            turn.metrics.info["endpoint_s"] = e.detect_lag  # the VAD's wait after the end of speech
            if turn.barge_in and short:  # a burst during a reply: not a turn
                turn.state = "ignored"
                out = self._cancel_preemptive(turn)
                if paused is not None:
                    out += self._resume(paused, "short burst")
                return out
            if turn.state == "listening":
                turn.state = "thinking"
        return out

    # ------------------------------------------------------------ transcripts
    def _transcript(self, tf: TranscriptFrame) -> list[Frame]:
        turn = self._by_utterance.get(tf.utterance_id)
        if turn is None:
            turn = self.new_turn(Priority.HIGH, tf.utterance_id)
        if turn.finished:
            return []  # e.g. a burst already judged not to be a turn
        if not tf.final:
            turn.metrics.info["partial"] = tf.text  # the live transcript, for display
            return self._preempt(turn, tf.text)
        turn.metrics.mark("transcript_final", tf.created)
        turn.transcript = tf.text
        paused = self._paused_by(turn)
        if not tf.text.strip():
            turn.state = "empty"  # speech-like sound with no words: no turn
            out = self._cancel_preemptive(turn)
            return out + (self._resume(paused, "no words") if paused is not None else [])
        out = self._take_floor(turn, "user_speech")
        if turn.preemptive is not None and same_words(turn.preemptive, tf.text):
            return out + self._commit(turn, tf.text)
        out += self._cancel_preemptive(turn)
        return out + self.request_reply(turn, tf.text)

    def _take_floor(self, turn: Turn, reason: str) -> list[Frame]:
        """``turn`` will be answered now: interrupt the reply in progress if it may."""
        cur = self.current()
        if cur is None or cur is turn or not interrupts(turn.priority, cur.priority):
            return []
        if turn.response_id < cur.response_id:
            self._new_id(turn)  # the interrupt must reach past the reply it cuts
        return self._interrupt(cur, turn, reason)

    def request_reply(self, turn: Turn, user_text: str) -> list[Frame]:
        if turn.response_id in self._requested:
            self._new_id(turn)  # an earlier (cancelled) attempt used this id: never reuse it
        self.history.remember("user", user_text)
        turn.committed = True
        turn.state = "thinking"
        self.replying = turn.response_id
        return self._ask(turn, None)

    def _ask(self, turn: Turn, preemptive_text: str | None) -> list[Frame]:
        """Request the LLM reply of ``turn``'s live attempt, once the history is settled."""
        self._requested.add(turn.response_id)
        self._pending.append((turn, turn.response_id, preemptive_text))
        return self._flush()

    def _flush(self) -> list[Frame]:
        if self.awaiting_heard:
            return []  # a cut reply's heard words are still to come: they belong before this request
        out: list[Frame] = []
        pending, self._pending = self._pending, []
        for turn, rid, extra in pending:
            if rid != turn.response_id or rid in self._cancelled or turn.finished:
                continue
            msgs = self.history.for_request(extra, turn.attachments)
            if turn.committed:
                self.history.reserve(rid)
            out.append(self.publish(ReplyStarted(response_id=rid, priority=int(turn.priority), source=turn.source)))
            out.append(LLMRequestFrame(messages=msgs, response_id=rid, priority=turn.priority))
        return out

    # ------------------------------------------------------------ typed inputs (NyaDeskPet messages)
    def _input(self, f: UserInputFrame) -> list[Frame]:
        if f.message_type in CONTEXT_ONLY:  # never interrupts, never waits: it is context
            self._apply_context(f)
            return []
        cur = self.current()
        if cur is not None and not interrupts(f.priority, cur.priority):
            heapq.heappush(self._queue, (-int(f.priority), next(self._order), f))
            return []
        turn = self.new_turn(f.priority, source=f.message_type)
        turn.metrics.mark("input_received", f.created)
        turn.transcript = describe_input(f.message_type, f.data)
        out: list[Frame] = []
        turn.attachments = attachments_of(f.data)
        if turn.attachments and not self.vision:
            turn.attachments = []
            out.append(self.publish(Notice(level="warning", code="attachment_not_used", response_id=turn.response_id,
                                           message="the image was not given to the LLM: llm.vision is off")))
        return out + self._take_floor(turn, f.message_type) + self.request_reply(turn, turn.transcript)

    def _apply_context(self, f: UserInputFrame) -> None:
        self.context[f.message_type] = dict(f.data)
        if f.message_type == "character_info":
            use = f.data.get("useCustom", True)
            self.persona.name = str(f.data.get("name") or "") if use else ""
            self.persona.personality = str(f.data.get("personality") or "") if use else ""
        elif f.message_type == "model_info":
            info = f.data.get("modelInfo") or {}
            exprs = info.get("expressions") if isinstance(info, dict) else None
            self.persona.expressions = [str(e.get("name", e) if isinstance(e, dict) else e)
                                        for e in exprs] if isinstance(exprs, list) else []

    def take_floor_for(self, priority: Priority, reason: str) -> list[Frame]:
        """An input answered outside the LLM (a command) cuts a reply of *lower* priority."""
        cur = self.current()
        if cur is None or not priority > cur.priority:
            return []
        by = self.new_turn(priority, source=reason)
        by.state = "done"
        return [self._own(f) for f in self._interrupt(cur, by, reason)]

    def _next_queued(self) -> list[Frame]:
        out: list[Frame] = []
        while self._queue and self.current() is None:
            out += self._input(heapq.heappop(self._queue)[2])
        return out

    @property
    def queued(self) -> list[str]:
        return [f.message_type for _, _, f in sorted(self._queue)]

    # ------------------------------------------------------------ queries
    def messages(self) -> list[dict[str, Any]]:
        """The history as the next LLM request sends it."""
        return self.history.for_request()

    def snapshot(self) -> dict[str, Any]:
        return {"turns": [t.to_dict() for t in self.turns.values()], "globals": dict(self.globals),
                "history": self.messages(), "errors": list(self.errors), "replying": self.replying,
                "queued": self.queued, "false_interruptions": self.false_interruptions,
                "false_pauses": self.false_pauses}
