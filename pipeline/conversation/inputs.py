"""Typed inputs from front ends: NyaDeskPet's frontend -> backend messages.

``parse_input`` checks a message (a dict with a ``type``) and makes the
``UserInputFrame`` the session takes, with the priority its type carries.
``describe_input`` turns it into the user message the LLM sees. Low-priority
messages (model, character and plugin info) only update context: they get
no spoken reply.
"""
from __future__ import annotations

from typing import Any

from pipeline.flow.frames import FrameError, UserInputFrame
from pipeline.flow.priorities import MESSAGE_PRIORITY, priority_of

CONTEXT_ONLY = frozenset({"model_info", "character_info", "plugin_status"})
_REQUIRED: dict[str, tuple[str, ...]] = {
    "user_input": ("text",),
    "command_execute": ("command",),
    "tap_event": ("hitArea",),
    "file_upload": ("fileName",),
    "plugin_message": ("content",),
}


def parse_input(msg: Any) -> UserInputFrame:
    """A NyaDeskPet message -> UserInputFrame; FrameError says what is wrong."""
    if not isinstance(msg, dict):
        raise FrameError(f"an input message must be a JSON object, got {type(msg).__name__}")
    kind = msg.get("type")
    if kind == "user_speech" or kind not in MESSAGE_PRIORITY:
        known = sorted(k for k in MESSAGE_PRIORITY if k != "user_speech")
        raise FrameError(f"unknown input type {kind!r}; known: {', '.join(known)}")
    missing = [k for k in _REQUIRED.get(kind, ()) if msg.get(k) in (None, "")]
    if missing:
        raise FrameError(f"{kind} needs {', '.join(missing)}")
    if kind == "user_input" and not isinstance(msg["text"], str):
        raise FrameError("user_input.text must be a string")
    data = {k: v for k, v in msg.items() if k != "type"}
    return UserInputFrame(message_type=kind, data=data, priority=priority_of(kind))


def describe_input(kind: str, data: dict[str, Any]) -> str:
    """The user message the LLM is given for an input."""
    if kind == "user_input":
        return str(data.get("text", ""))
    if kind == "command_execute":
        args = data.get("args") or {}
        extra = " ".join(f"{k}={v}" for k, v in args.items()) if isinstance(args, dict) else str(args)
        return f"/{data['command']} {extra}".rstrip()
    if kind == "tap_event":
        return f"(The user touched your {data['hitArea']}.)"
    if kind == "file_upload":
        size = data.get("fileSize")
        return (f"(The user sent you a file: {data['fileName']}"
                f"{', ' + str(data['fileType']) if data.get('fileType') else ''}"
                f"{f', {size} bytes' if size else ''}.)")
    if kind == "plugin_message":
        who = data.get("pluginName") or data.get("pluginId") or "a plugin"
        return f"(Message from {who}: {data['content']})"
    return f"({kind}: {data})"
