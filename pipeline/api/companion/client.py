"""The companion WebSocket (seed 001, NyaDeskPet) at ``/ws`` (and ``/``, its default URL).

Each connection is a conversation of its own, unless it joins one: ``?session=<id>``
joins that conversation (``?session=default``: the ``--mic`` voice conversation), or
opens it under that id. Other query options: ``stream=0`` for one ``dialogue`` per reply
instead of ``dialogue_stream_*``; ``audio=pcm_s16le`` (default), ``wav`` or ``none``.
None is secret, so they may ride in the URL (the token never does).

On connect the client gets ``commands_register``. Then every seed 001 message is taken
(``user_input``, ``model_info``, ``tap_event``, ``character_info``, ``file_upload``,
``plugin_*``, ``tool_confirm_response``, ``command_execute``), plus one extension:
``{"type": "audio_played", "responseId", "samples"}``, how much of a reply's audio the
client played (the history then keeps the words up to there). Bad input is answered by a
``system`` message with an error code; the connection stays usable and nobody else notices.
When the last client of a conversation leaves, the conversation closes and its queued work
is dropped in every stage.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from pipeline.api.companion.live2d import ModelView
from pipeline.api.companion.outbound import AUDIO_FORMATS, Outbound
from pipeline.api.companion.uploads import store_upload
from pipeline.api.hub import Hub
from pipeline.api.sessions import system_message
from pipeline.conversation.inputs import InputError, check_message
from pipeline.flow.bus_events import Closed

log = logging.getLogger("kokoro.companion")

MAX_MESSAGE_BYTES = 1 * 1024 * 1024  # any message but a file_upload
MAX_UPLOAD_MESSAGE_BYTES = 140 * 1024 * 1024  # a 100 MB file in base64, and its fields


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "system", "data": {"code": code, "message": message, "level": "error"}}


class CompanionClient:
    def __init__(self, ws: WebSocket, hub: Hub) -> None:
        self.ws, self.hub = ws, hub
        q = ws.query_params
        self.requested_session = q.get("session") or None
        audio = q.get("audio", "pcm_s16le")
        self.notices: list[dict[str, Any]] = []
        if audio not in AUDIO_FORMATS:
            self.notices.append(system_message("unsupported_audio_format", f"audio={audio!r} is not offered "
                                               f"(mp3 never is); sending pcm_s16le. Known: {', '.join(AUDIO_FORMATS)}"))
            audio = "pcm_s16le"
        self.out = Outbound(streaming=q.get("stream", "1") not in ("0", "false", "no"), audio=audio)
        self.session_id = ""
        self._send_lock = asyncio.Lock()

    async def send(self, msg: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.ws.send_json(msg)

    async def run(self) -> None:
        self.session_id = await self.hub.hold(self.requested_session)
        sub = self.hub.subscribe(self.session_id)
        writer = asyncio.create_task(self._write(sub))
        try:
            await self.send({"type": "commands_register", "commands": await self.hub.commands(),
                             "sessionId": self.session_id})
            for n in self.notices:
                await self.send(n)
            await self._read()
        finally:
            writer.cancel()
            self.hub.unsubscribe(sub)
            await self.hub.release(self.session_id)

    # ------------------------------------------------------------ engine -> client
    async def _write(self, sub) -> None:
        live_cues = self.hub.audio_out(self.session_id) != "client" or self.out.audio == "none"
        try:
            async for ev in sub:
                for msg in self.out.on_event(ev, live_cues=live_cues):
                    await self.send(msg)
                if isinstance(ev, Closed) and ev.reason != "subscribed":
                    return
        except (WebSocketDisconnect, RuntimeError):
            return  # the client went away: the reader ends the connection

    # ------------------------------------------------------------ client -> engine
    async def _read(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            try:
                answer = await self._take(msg)
            except InputError as e:
                answer = _error(e.code, str(e))
            except Exception as e:  # one bad message never takes the connection down
                log.exception("companion message failed")
                answer = _error("internal_error", f"the message could not be handled: {type(e).__name__}")
            if answer is not None:
                await self.send(answer)

    async def _take(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        text = raw.get("text")
        if text is None:
            raise InputError("binary_not_supported", "messages are JSON text frames (seed 001); binary frames "
                                                     "are not taken")
        try:
            msg = json.loads(text)
        except ValueError as e:
            raise InputError("invalid_json", f"not JSON: {e}") from None
        is_upload = isinstance(msg, dict) and msg.get("type") == "file_upload"
        if len(text) > (MAX_UPLOAD_MESSAGE_BYTES if is_upload else MAX_MESSAGE_BYTES):
            raise InputError("message_too_large", f"a message is limited to {MAX_MESSAGE_BYTES // 1024} KB "
                                                  f"({MAX_UPLOAD_MESSAGE_BYTES // 2**20} MB for a file_upload); "
                                                  f"this one is {len(text)} bytes")
        if isinstance(msg, dict) and msg.get("type") == "audio_played":
            return self._played(msg)
        kind = check_message(msg)
        if kind == "file_upload":
            msg = await asyncio.to_thread(store_upload, msg, self.hub.data_dir, self.session_id)
        elif kind == "model_info":
            self.out.model = ModelView(msg.get("modelInfo"))
        result = await self.hub.send(self.session_id, msg)
        if "command_response" in result:
            return {"type": "command_response", "data": result["command_response"]}
        if not result.get("accepted"):
            return _error(result.get("code", "refused"), result.get("error", "refused"))
        return None

    def _played(self, msg: dict[str, Any]) -> None:
        rid, samples = msg.get("responseId"), msg.get("samples")
        if not isinstance(rid, int) or isinstance(rid, bool) or not isinstance(samples, int) or samples < 0:
            raise InputError("invalid_field", "audio_played needs responseId (integer) and samples (integer >= 0)")
        self.hub.played(self.session_id, rid, samples)
        return None


async def companion_ws(ws: WebSocket, hub: Hub) -> None:
    await CompanionClient(ws, hub).run()
