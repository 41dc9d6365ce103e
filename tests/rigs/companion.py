"""A scripted companion front end (seed 001) over a real WebSocket, for tests and benchmarks.

It reads every message on a thread of its own, so a test asks for what it waits on
(``next``), and ``reply`` collects one reply: its streamed text, its audio decoded,
whether it was cut, and when each part came.
"""
from __future__ import annotations

import base64
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.rigs.served import TOKEN

WAIT_S = 60.0  # what the engine has to do first (an LLM reply, a synthesis) on a slow, shared CPU


@dataclass
class Reply:
    response_id: int
    priority: int = 0
    text: str = ""  # the streamed dialogue, tags stripped
    chunks: dict[int, np.ndarray] = field(default_factory=dict)  # audio by chunk index
    rate: int = 0
    interrupted: bool = False
    timelines: list[list[dict]] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    t_first_audio: float | None = None  # monotonic time of the first audio_stream_chunk

    @property
    def audio(self) -> np.ndarray:
        parts = [self.chunks[k] for k in sorted(self.chunks)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)


class Companion:
    def __init__(self, port: int, session: str | None = None, stream: bool = True, audio: str = "pcm_s16le",
                 token: str = TOKEN, path: str = "/ws") -> None:
        q = [f"session={session}"] if session else []
        q += [] if stream else ["stream=0"]
        q += [] if audio == "pcm_s16le" else [f"audio={audio}"]
        url = f"ws://127.0.0.1:{port}{path}" + ("?" + "&".join(q) if q else "")
        self.ws = connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=30,
                          max_size=None)
        self.inbox: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        self.closed: int | None = None
        threading.Thread(target=self._read, daemon=True).start()
        hello = self.next(lambda m: m["type"] == "commands_register", 30)
        self.session_id = hello["sessionId"]
        self.commands = hello["commands"]

    def _read(self) -> None:
        try:
            for text in self.ws:
                msg = json.loads(text)
                msg["_t"] = time.monotonic()
                self.seen.append(msg)
                self.inbox.put(msg)
        except ConnectionClosed as e:
            self.closed = e.rcvd.code if e.rcvd else 1006
        self.inbox.put(None)

    def send(self, msg: dict[str, Any]) -> float:
        self.ws.send(json.dumps(msg))
        return time.monotonic()

    def say(self, text: str, **extra: Any) -> float:
        return self.send({"type": "user_input", "text": text, "timestamp": int(time.time() * 1000), **extra})

    def next(self, pred: Callable[[dict], bool], timeout: float = WAIT_S) -> dict:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching message within {timeout} s; last: {self.seen[-5:]}")
            try:
                msg = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if msg is None:
                raise ConnectionError(f"the connection closed ({self.closed})")
            if pred(msg):
                return msg

    def reply(self, response_id: int | None = None, timeout: float = WAIT_S,
              until: Callable[[Reply], bool] | None = None, into: Reply | None = None,
              skip: tuple[int, ...] = ()) -> Reply:
        """The next reply (or ``response_id``'s, or more of ``into``), until its audio is over
        (the reply-level ``audio_stream_end``), or its text for a client with no audio, or
        ``until`` says so. Messages of replies in ``skip`` are passed over."""
        r: Reply | None = into
        if into is not None:
            response_id = into.response_id
        end = time.monotonic() + timeout
        while True:
            m = self.next(lambda m: "responseId" in m and m["responseId"] not in skip
                          and (response_id is None or m["responseId"] == response_id),
                          max(0.1, end - time.monotonic()))
            if r is None:
                r = Reply(m["responseId"], m.get("priority", 0))
                response_id = r.response_id
            r.messages.append(m)
            kind = m["type"]
            if kind == "dialogue_stream_chunk":
                r.text += m["text"]
            elif kind == "dialogue":
                r.text = m["text"]
                r.interrupted = m.get("interrupted", False)
            elif kind == "audio_stream_start":
                r.rate = m["sampleRate"]
                r.timelines.append(m["timeline"])
            elif kind == "audio_stream_chunk":
                r.t_first_audio = r.t_first_audio or m["_t"]
                r.chunks[m["chunkIndex"]] = np.frombuffer(base64.b64decode(m["data"]), "<i2").copy()
            elif kind in ("audio_stream_end", "dialogue_stream_end") and m.get("interrupted"):
                r.interrupted = True
            if until is not None and until(r):
                return r
            if kind == "audio_stream_end" and "chunkIndex" not in m:
                return r  # the reply's audio is over (or cut)
            if kind == "dialogue_stream_end" and m.get("interrupted") and not r.chunks:
                return r

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
