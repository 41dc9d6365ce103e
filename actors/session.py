"""Session actor: one ``pipeline.conversation.session.Session`` per conversation.

It takes the stages' typed events, transcripts and typed inputs, and sends what each
conversation's session decides where the routes say (control fans out to every stage).
It never waits on another stage: what a cut reply's output heard comes back to it as a
``ReplyStopped``; a timer lets the conversation go on if that answer never comes.
"""
from __future__ import annotations

import threading
from typing import Any

import ray

from actors.base import Stage, stage_actor
from pipeline.conversation.commands import REGISTRY, CommandContext
from pipeline.conversation.inputs import CALL_RESPONSES, InputError, check_message, parse_input
from pipeline.conversation.session import Session
from pipeline.flow.frames import Frame
from pipeline.flow.priorities import priority_of
from pipeline.flow.routes import ConversationSpec

HEARD_TIMEOUT_S = 1.0  # how long a cut reply's output may take to say what was heard


class SessionStage(Stage):
    name = "session"

    def setup(self) -> None:
        # the control lane's thread (snapshot, open/close) and the data lane's share sessions
        self._lock = threading.RLock()
        self.sessions: dict[str, Session] = {}
        self.engine_info: dict[str, Any] = {}
        self.voices: list[str] = []
        self.calls: dict[str, Any] = {}  # callId -> waiting handle (the tool loop; see send_input)
        self._armed: dict[str, set[int]] = {}  # cut replies whose heard-timeout timer runs

    def on_open(self, spec: ConversationSpec) -> None:
        with self._lock:
            if spec.session_id in self.sessions:
                return
            c = self.cfg
            self.sessions[spec.session_id] = Session(
                spec.session_id, c.llm.system_prompt, c.llm.history_turns, c.llm.preemptive,
                c.interrupt.min_speech_ms / 1000, c.interrupt.history_marker,
                speak_notices=spec.audio_out == "player", vision=c.llm.vision)

    def on_close(self, session_id: str) -> None:
        with self._lock:
            self.sessions.pop(session_id, None)

    @ray.method(concurrency_group="control")
    def describe(self, engine_info: dict[str, Any], voices: list[str]) -> bool:
        """What ``info`` and ``voice`` answer (the engine knows its models)."""
        self.engine_info, self.voices = dict(engine_info), list(voices)
        return True

    # ------------------------------------------------------------ frames
    def process(self, frame: Frame) -> None:
        with self._lock:
            session = self.sessions.get(frame.session_id)
            if session is None:
                return
            out = session.handle(frame)
        self._send(session, out)

    def _send(self, session: Session, frames: list[Frame]) -> None:
        for f in frames:
            self.emit(f)
        new = session.awaiting_heard - self._armed.setdefault(session.session_id, set())
        if new:
            self._armed[session.session_id] |= new
            timer = threading.Timer(HEARD_TIMEOUT_S, self._expire_heard, args=(session.session_id, new))
            timer.daemon = True
            timer.start()

    def _expire_heard(self, session_id: str, rids: set[int]) -> None:
        with self._lock:
            self._armed.get(session_id, set()).difference_update(rids)
            session = self.sessions.get(session_id)
            late = rids & session.awaiting_heard if session is not None else set()
            if not late:
                return
            self.log.warning("%s: no output said what was heard of %s; going on without it", session_id,
                             sorted(late))
            out = session.expire_heard(late)
        self._send(session, out)

    # ------------------------------------------------------------ typed inputs
    def send_input(self, session_id: str, message: dict[str, Any]) -> dict[str, Any]:
        """A typed input (NyaDeskPet message) from a front end. Says why when it is refused
        (``error``, ``code``); a command's answer is in ``command_response``."""
        try:
            kind = check_message(message)
        except InputError as e:
            return {"accepted": False, "code": e.code, "error": str(e)}
        with self._lock:
            session = self.sessions.get(session_id)
        if session is None:
            return {"accepted": False, "code": "unknown_conversation", "error": f"no conversation {session_id!r}"}
        if kind in CALL_RESPONSES:
            return self._call_response(kind, message)
        if kind == "command_execute":
            return self._command(session, message)
        frame = parse_input(message)
        frame.session_id = session_id
        self.process(frame)
        with self._lock:
            queued = any(f is frame for _, _, f in session._queue)
        return {"accepted": True, "type": kind, "priority": int(frame.priority), "queued": queued}

    def _call_response(self, kind: str, message: dict[str, Any]) -> dict[str, Any]:
        """plugin_response / tool_confirm_response go to whatever waits on that callId."""
        waiter = self.calls.pop(message["callId"], None)
        if waiter is None:
            return {"accepted": False, "code": "unknown_call",
                    "error": f"no call {message['callId']!r} is waiting for a {kind}"}
        waiter.resolve.remote(message)
        return {"accepted": True, "type": kind}

    @ray.method(concurrency_group="control")
    def await_call(self, call_id: str, waiter: Any) -> bool:
        """Register ``waiter`` (an actor with ``resolve(message)``) for ``call_id``'s response."""
        self.calls[call_id] = waiter
        return True

    def _command(self, session: Session, message: dict[str, Any]) -> dict[str, Any]:
        spec = self.conversations.get(session.session_id)
        voice = (spec.voice if spec is not None else "") or self.cfg.tts.voice
        ctx = CommandContext(session, self.engine_info, self.voices, voice,
                             lambda v: self._set_voice(session.session_id, v))
        with self._lock:
            out = session.take_floor_for(priority_of("command_execute"), "command_execute")
            result = REGISTRY.execute(ctx, message["command"], message.get("args"))
        self._send(session, out)
        return {"accepted": True, "type": "command_execute", "command_response": result}

    def _set_voice(self, session_id: str, voice: str) -> None:
        spec = self.conversations.get(session_id)
        if spec is None:
            return
        spec.voice = voice
        for handles in self._targets.values():  # every stage (and each pool member) learns it
            for h in handles:
                h.open_conversation.remote(spec)

    @ray.method(concurrency_group="control")
    def commands(self) -> list[dict[str, Any]]:
        return REGISTRY.describe()

    # ------------------------------------------------------------ queries
    @ray.method(concurrency_group="control")
    def snapshot(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            session = self.sessions.get(session_id)
            return session.snapshot() if session is not None else {}


SessionActor = stage_actor(SessionStage)
