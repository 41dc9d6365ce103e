"""Input priority classes (NyaDeskPet's message priority table).

A higher-priority input interrupts a reply of lower or equal priority; a lower
one waits behind it.
"""
from __future__ import annotations

from enum import IntEnum


class Priority(IntEnum):
    LOW = 0
    MEDIUM = 1
    HIGH = 2


# message type -> priority, as in NyaDeskPet's "Message Priority" table;
# user speech counts as user input.
MESSAGE_PRIORITY: dict[str, Priority] = {
    "user_input": Priority.HIGH,
    "user_speech": Priority.HIGH,
    "command_execute": Priority.HIGH,
    "tap_event": Priority.MEDIUM,
    "file_upload": Priority.MEDIUM,
    "plugin_message": Priority.MEDIUM,
    "model_info": Priority.LOW,
    "character_info": Priority.LOW,
    "plugin_status": Priority.LOW,
}


def priority_of(message_type: str) -> Priority:
    try:
        return MESSAGE_PRIORITY[message_type]
    except KeyError:
        raise ValueError(f"unknown message type {message_type!r}; known: {sorted(MESSAGE_PRIORITY)}") from None


def interrupts(new: Priority, current: Priority) -> bool:
    """True when an input of priority ``new`` may cut off a reply of ``current``."""
    return new >= current
