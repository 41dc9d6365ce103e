"""A conversation's bus events as seed 001 (NyaDeskPet) messages, for one client.

* the LLM's text: ``dialogue_stream_start`` / ``_chunk`` / ``_end`` as it streams (emotion
  tags stripped), or one ``dialogue`` for a client that asked for no streaming;
* the reply's audio, one stream per synthesized chunk (a clause or sentence), sent whole as
  soon as it is synthesized: ``audio_stream_start`` (``format`` pcm_s16le, or wav on request;
  ``sampleRate``, ``channels``, the chunk's emotion cues as a ``timeline`` of live2d commands
  at the percentage of its audio where their words are spoken), one ``audio_stream_chunk``
  (base64), ``audio_stream_end``;
* the reply's audio is over: one more ``audio_stream_end``, without ``chunkIndex``, for the
  whole reply (``interrupted: false``);
* a cut reply: its open ``dialogue_stream_end`` and that closing ``audio_stream_end`` say
  ``interrupted: true``, the mouth closes (``live2d`` parameter), nothing of it follows;
* notices and errors: ``system`` with a ``code``.
Every message of a reply carries its ``responseId`` and ``priority``.
"""
from __future__ import annotations

import base64
import io
import wave
from typing import Any

import numpy as np

from avatar.emotion import split_emotions
from pipeline.api.companion.live2d import ModelView
from pipeline.flow import bus_events as be

AUDIO_FORMATS = ("pcm_s16le", "wav", "none")
_HELD = 48  # an open "[" is held back this long at most, waiting for its "]" (a tag split over deltas)


class TagStripper:
    """Emotion tags out of streamed text, a tag split across deltas included."""

    def __init__(self) -> None:
        self.pending = ""

    def feed(self, delta: str) -> tuple[str, list[str]]:
        s = self.pending + delta
        i = s.rfind("[")
        if i != -1 and "]" not in s[i:] and len(s) - i < _HELD:
            s, self.pending = s[:i], s[i:]
        else:
            self.pending = ""
        clean, cues = split_emotions(s)
        return clean, [e for _, e in cues]

    def flush(self) -> tuple[str, list[str]]:
        s, self.pending = self.pending, ""
        clean, cues = split_emotions(s)
        return clean, [e for _, e in cues]


def wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


class Outbound:
    def __init__(self, streaming: bool = True, audio: str = "pcm_s16le", model: ModelView | None = None) -> None:
        if audio not in AUDIO_FORMATS:
            raise ValueError(f"audio format must be one of {AUDIO_FORMATS}")
        self.streaming, self.audio = streaming, audio
        self.model = model or ModelView()
        self._open: dict[int, TagStripper] = {}  # replies whose dialogue stream is open
        self._text: dict[int, str] = {}  # their text so far, tags stripped
        self._audio_sent: set[int] = set()
        self._over: dict[int, None] = {}  # finished or cut (the last 256): nothing more of them goes out

    @staticmethod
    def _reply(ev: Any, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, **fields, "responseId": ev.response_id, "priority": ev.priority}

    def on_event(self, ev: be.BusEvent, live_cues: bool = False) -> list[dict[str, Any]]:
        """The messages for ``ev``. ``live_cues``: the client gets no audio for this conversation
        (text only, or the device plays it): emotion cues go out as the text streams."""
        rid = getattr(ev, "response_id", None)
        if rid is not None and rid in self._over and not isinstance(ev, be.Notice):
            return []
        if isinstance(ev, be.ReplyStarted):
            return self._start(ev)
        if isinstance(ev, be.ReplyDelta):
            out = self._start(ev)
            text, cues = self._open[rid].feed(ev.text)
            return out + self._text_out(ev, text, cues, live_cues)
        if isinstance(ev, be.ReplyTextDone):
            return self._text_done(ev, live_cues)
        if isinstance(ev, be.ReplyAudio):
            return self._audio(ev)
        if isinstance(ev, be.ReplyFinished):
            return self._finished(ev)
        if isinstance(ev, be.Notice):
            data = {"code": ev.code, "message": ev.message, "level": ev.level}
            if ev.response_id:
                data["responseId"] = ev.response_id
            return [{"type": "system", "data": data}]
        if isinstance(ev, be.Closed) and ev.reason != "subscribed":
            return [{"type": "system", "data": {"code": "conversation_closed", "message": ev.reason}}]
        return []

    # ------------------------------------------------------------ text
    def _start(self, ev: Any) -> list[dict[str, Any]]:
        if ev.response_id in self._open:
            return []
        self._open[ev.response_id] = TagStripper()
        self._text[ev.response_id] = ""
        return [self._reply(ev, "dialogue_stream_start")] if self.streaming else []

    def _text_out(self, ev: Any, text: str, cues: list[str], live_cues: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if live_cues:
            out += self._cue_messages(ev, cues)
        if not self._text[ev.response_id]:
            text = text.lstrip()  # a leading tag leaves its space behind ("[happy] Hi" -> " Hi")
        if text:
            self._text[ev.response_id] += text
            if self.streaming:
                out.append(self._reply(ev, "dialogue_stream_chunk", text=text))
        return out

    def _cue_messages(self, ev: Any, cues: list[str]) -> list[dict[str, Any]]:
        out = []
        for emotion in cues:
            commands = [{**c, "responseId": ev.response_id, "priority": ev.priority} for c in self.model.cue(emotion)]
            if len(commands) == 1:
                out.append(commands[0])
            elif commands:  # an expression and a motion at once
                out.append(self._reply(ev, "sync_command", commands=commands))
        return out

    def _text_done(self, ev: be.ReplyTextDone, live_cues: bool) -> list[dict[str, Any]]:
        out = self._start(ev)
        text, cues = self._open.pop(ev.response_id).flush()
        out += self._text_out(ev, text, cues, live_cues)
        full = self._text.pop(ev.response_id, "")
        if self.streaming:
            out.append(self._reply(ev, "dialogue_stream_end", interrupted=False))
        else:
            out.append(self._reply(ev, "dialogue", text=full.strip()))
        return out

    # ------------------------------------------------------------ audio
    def _audio(self, ev: be.ReplyAudio) -> list[dict[str, Any]]:
        if self.audio == "none":
            return []
        self._audio_sent.add(ev.response_id)
        pcm = np.asarray(ev.pcm, np.int16)
        data = wav_bytes(pcm, ev.sample_rate) if self.audio == "wav" else pcm.astype("<i2").tobytes()
        clean, _ = split_emotions(ev.text)
        chunk = {"chunkIndex": ev.chunk_index}
        return [self._reply(ev, "audio_stream_start", format=self.audio, sampleRate=ev.sample_rate, channels=1,
                            timeline=self.model.timeline(ev.text), text=clean.strip(), samples=len(pcm),
                            sampleOffset=ev.sample_offset, **chunk),
                self._reply(ev, "audio_stream_chunk", data=base64.b64encode(data).decode("ascii"), **chunk),
                self._reply(ev, "audio_stream_end", interrupted=False, **chunk)]

    # ------------------------------------------------------------ the end of a reply
    def _finished(self, ev: be.ReplyFinished) -> list[dict[str, Any]]:
        rid = ev.response_id
        self._over[rid] = None
        while len(self._over) > 256:
            self._over.pop(next(iter(self._over)))
        had_audio = rid in self._audio_sent
        self._audio_sent.discard(rid)
        if not ev.interrupted:
            return [self._reply(ev, "audio_stream_end", interrupted=False)] if had_audio else []
        out: list[dict[str, Any]] = []
        if rid in self._open:
            self._open.pop(rid)
            text = self._text.pop(rid, "")
            if self.streaming:
                out.append(self._reply(ev, "dialogue_stream_end", interrupted=True))
            else:  # what was delivered of it: the words heard
                out.append(self._reply(ev, "dialogue", text=split_emotions(ev.text)[0].strip() or text.strip(),
                                       interrupted=True))
        if had_audio:
            out.append(self._reply(ev, "audio_stream_end", interrupted=True))
        closed = self.model.mouth_closed()
        if closed is not None:
            out.append({**closed, "responseId": rid, "priority": ev.priority})
        return out
