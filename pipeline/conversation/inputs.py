"""Typed inputs from front ends: NyaDeskPet's frontend -> backend messages (seed 001).

``check_message`` validates a message against the seed's fields (types included) and
says what is wrong with a stable ``code``; ``parse_input`` makes the ``UserInputFrame``
the session takes, with the priority its type carries; ``describe_input`` turns it into
the user message the LLM sees and ``attachments_of`` into the content parts that go with
it. Low-priority messages (model, character and plugin info) only update context.
"""
from __future__ import annotations

from typing import Any

from pipeline.flow.frames import FrameError, UserInputFrame
from pipeline.flow.priorities import priority_of

CONTEXT_ONLY = frozenset({"model_info", "character_info", "plugin_status"})
# answered by whatever waits on their callId (the tool loop), not by a reply
CALL_RESPONSES = frozenset({"plugin_response", "tool_confirm_response"})
TEXT_FILE_MAX_CHARS = 20000  # of an uploaded text file, offered to the reply

_NUM = (int, float)
# type -> field -> (accepted types, required); fields not named here pass through unchecked
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "user_input": {"text": ((str,), True), "timestamp": (_NUM, False), "attachment": ((dict,), False)},
    "model_info": {"modelInfo": ((dict,), True)},
    "tap_event": {"hitArea": ((str,), True), "position": ((dict,), False)},
    "character_info": {"useCustom": ((bool,), False), "name": ((str,), False), "personality": ((str,), False)},
    "file_upload": {"fileName": ((str,), True), "fileType": ((str,), False), "fileSize": ((int,), False),
                    "data": ((str,), False)},
    "plugin_response": {"callId": ((str,), True), "pluginId": ((str,), False), "success": ((bool,), False)},
    "plugin_status": {"plugins": ((list,), True)},
    "tool_confirm_response": {"callId": ((str,), True), "approved": ((bool,), True), "remember": ((bool,), False)},
    "command_execute": {"command": ((str,), True), "args": ((dict, list), False)},
    "plugin_message": {"pluginId": ((str,), False), "pluginName": ((str,), False), "content": ((str,), True),
                       "timestamp": (_NUM, False)},
}
KNOWN_TYPES = tuple(SCHEMA)


class InputError(FrameError):
    """A message that cannot be taken; ``code`` is stable, the text says what to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _type_name(types: tuple[type, ...]) -> str:
    names = {str: "string", bool: "boolean", int: "integer", float: "number", dict: "object", list: "array"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def check_message(msg: Any) -> str:
    """The message's type, if the seed's fields are there with the right types."""
    if not isinstance(msg, dict):
        raise InputError("not_an_object", f"a message must be a JSON object, got {type(msg).__name__}")
    kind = msg.get("type")
    if kind is None:
        raise InputError("missing_type", "every message needs a 'type' field")
    if not isinstance(kind, str) or kind not in SCHEMA:
        raise InputError("unknown_type", f"unknown message type {kind!r}; known: {', '.join(sorted(SCHEMA))}")
    for name, (types, required) in SCHEMA[kind].items():
        value = msg.get(name)
        if value is None:
            if required:
                raise InputError("missing_field", f"{kind} needs '{name}' ({_type_name(types)})")
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise InputError("invalid_field", f"{kind}.{name} must be {_type_name(types)}, "
                                              f"got {type(value).__name__}")
    if kind == "user_input" and not msg["text"].strip() and not msg.get("attachment"):
        raise InputError("empty_message", "Message cannot be empty")
    if kind == "user_input" and msg.get("attachment") is not None:
        att = msg["attachment"]
        if att.get("type") != "image" or not isinstance(att.get("data"), str) or not att["data"]:
            raise InputError("invalid_field", "user_input.attachment must be {\"type\": \"image\", \"data\": base64}")
    if kind == "file_upload" and not (msg.get("data") or msg.get("stored_path")):
        raise InputError("missing_field", "file_upload needs 'data' (base64 string)")
    if kind == "command_execute" and not msg["command"].strip():
        raise InputError("missing_field", "command_execute needs a non-empty 'command'")
    return kind


def parse_input(msg: Any) -> UserInputFrame:
    """A NyaDeskPet message -> UserInputFrame; InputError says what is wrong."""
    kind = check_message(msg)
    data = {k: v for k, v in msg.items() if k != "type"}
    return UserInputFrame(message_type=kind, data=data, priority=priority_of(kind))


def describe_input(kind: str, data: dict[str, Any]) -> str:
    """The user message the LLM is given for an input."""
    if kind == "user_input":
        text = str(data.get("text", ""))
        return text + (" [image attached]" if data.get("attachment") else "")
    if kind == "command_execute":
        args = data.get("args") or {}
        extra = " ".join(f"{k}={v}" for k, v in args.items()) if isinstance(args, dict) else str(args)
        return f"/{data['command']} {extra}".rstrip()
    if kind == "tap_event":
        return f"(The user touched your {data['hitArea']}.)"
    if kind == "file_upload":
        size = data.get("fileSize")
        head = (f"(The user sent you a file: {data['fileName']}"
                f"{', ' + str(data['fileType']) if data.get('fileType') else ''}"
                f"{f', {size} bytes' if size else ''}.)")
        text = data.get("content_text")
        return f"{head}\n{text[:TEXT_FILE_MAX_CHARS]}" if text else head
    if kind == "plugin_message":
        who = data.get("pluginName") or data.get("pluginId") or "a plugin"
        return f"(Message from {who}: {data['content']})"
    return f"({kind}: {data})"


def attachments_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI image content parts of an input: a user_input's image attachment, or an
    uploaded image (``image_url``, a data URL the server made from the stored file)."""
    att = data.get("attachment")
    if isinstance(att, dict) and att.get("type") == "image" and att.get("data"):
        mime = att.get("mimeType") or "image/jpeg"
        url = att["data"] if str(att["data"]).startswith("data:") else f"data:{mime};base64,{att['data']}"
        return [{"type": "image_url", "image_url": {"url": url}}]
    if data.get("image_url"):
        return [{"type": "image_url", "image_url": {"url": data["image_url"]}}]
    return []
