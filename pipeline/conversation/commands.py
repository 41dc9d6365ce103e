"""Slash commands (NyaDeskPet ``command_execute``): a registry with the built-ins.

A command is answered by a ``command_response`` (``{"command", "success", "text",
"error"}``), not by the LLM. ``REGISTRY.describe()`` is what ``commands_register``
lists when a client connects. Commands run in the session actor, on the conversation
they were sent to (``CommandContext``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.conversation.session import Session


@dataclass
class CommandContext:
    session: Session
    engine_info: dict[str, Any]  # name, version, models...
    voices: list[str]  # the TTS voices there are
    voice: str  # this conversation's voice now
    set_voice: Callable[[str], None]


@dataclass
class Command:
    name: str
    description: str
    params: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "description", "required"}]
    run: Callable[[CommandContext, dict[str, Any]], str] = lambda ctx, args: ""


class CommandError(Exception):
    pass


def _args(raw: Any, first: str) -> dict[str, Any]:
    """``args`` as a dict: an object as is; a list or a string fills ``first`` (then the rest)."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, list):
        return {first: " ".join(str(a) for a in raw)} if raw else {}
    if isinstance(raw, str) and raw.strip():
        return {first: raw.strip()}
    return {}


class Registry:
    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}

    def add(self, cmd: Command) -> None:
        self.commands[cmd.name] = cmd

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": c.name, "description": c.description, "params": c.params} for c in self.commands.values()]

    def execute(self, ctx: CommandContext, name: str, raw_args: Any) -> dict[str, Any]:
        name = name.strip().lstrip("/")
        cmd = self.commands.get(name)
        if cmd is None:
            return {"command": name, "success": False, "text": "",
                    "error": f"unknown command {name!r}; try 'help' ({', '.join(self.commands)})"}
        first = cmd.params[0]["name"] if cmd.params else "value"
        try:
            text = cmd.run(ctx, _args(raw_args, first))
        except CommandError as e:
            return {"command": name, "success": False, "text": "", "error": str(e)}
        return {"command": name, "success": True, "text": text, "error": None}


def _help(ctx: CommandContext, args: dict[str, Any]) -> str:
    return "\n".join(f"/{c.name}: {c.description}" for c in REGISTRY.commands.values())


def _info(ctx: CommandContext, args: dict[str, Any]) -> str:
    s, e = ctx.session, ctx.engine_info
    turns = sum(1 for t in s.turns.values() if t.transcript)
    return (f"{e.get('name', 'Kokoro Engine')} {e.get('version', '')}".strip() + "\n"
            f"conversation: {s.session_id} ({turns} turns, {len(s.history.messages)} messages kept)\n"
            f"character: {s.persona.name or '(default)'}\n"
            f"voice: {ctx.voice}\n"
            f"llm: {e.get('llm_model', '?')} at {e.get('llm_endpoint', '?')}\n"
            f"stt: {e.get('stt_model', '?')}, tts: {e.get('tts_model', '?')}")


def _clear(ctx: CommandContext, args: dict[str, Any]) -> str:
    n = ctx.session.history.clear()
    return f"history cleared ({n} messages)"


def _voice(ctx: CommandContext, args: dict[str, Any]) -> str:
    name = str(args.get("name", "")).strip()
    if not name:
        return f"voice: {ctx.voice}; available: {', '.join(ctx.voices)}"
    if name not in ctx.voices:
        raise CommandError(f"no voice {name!r}; available: {', '.join(ctx.voices)}")
    ctx.set_voice(name)
    return f"voice set to {name}"


def _persona(ctx: CommandContext, args: dict[str, Any]) -> str:
    p = ctx.session.persona
    if not args:
        return f"name: {p.name or '(default)'}; personality: {p.personality or '(default)'}"
    for key in ("name", "personality"):
        if key in args and not isinstance(args[key], str):
            raise CommandError(f"persona {key} must be text")
    if "name" in args:
        p.name = args["name"].strip()
    if "personality" in args:
        p.personality = args["personality"].strip()
    return f"persona: {p.name or '(default)'}" + (f": {p.personality}" if p.personality else "")


REGISTRY = Registry()
for _cmd in (
    Command("help", "List the commands", [], _help),
    Command("info", "Show the engine, the conversation and its models", [], _info),
    Command("clear", "Forget this conversation's history", [], _clear),
    Command("voice", "Show or set the voice", [{"name": "name", "description": "a voice name", "required": False}],
            _voice),
    Command("persona", "Show or set the character's name and personality",
            [{"name": "name", "description": "the character's name", "required": False},
             {"name": "personality", "description": "who the character is", "required": False}], _persona),
):
    REGISTRY.add(_cmd)
