"""What the server's routes share: the token, the engine (the hub), the open sessions."""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from pipeline.api.sessions import SessionRegistry


def engine_version() -> str:
    try:
        return metadata.version("kokoro-engine")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


@dataclass(eq=False)
class ShellState:
    token: str = field(repr=False)
    hub: Any  # the started engine; WebSocket handlers get it as their second argument
    ws_auth_timeout_s: float = 10.0
    mic_requested: bool = False  # --mic
    voice_active: bool = False  # the engine started its voice conversation
    sessions: SessionRegistry = field(default_factory=SessionRegistry)
    version: str = field(default_factory=engine_version)
