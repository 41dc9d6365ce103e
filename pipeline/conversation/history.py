"""The conversation as the LLM sees it: persona, context and the last turns.

Only what was delivered is kept: a reply cut by the user keeps the words heard, marked
``[interrupted by the user]``. Attachments (an image, a text file's content) go to the
request of the turn they came with; the history keeps a short note of them, not the data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Persona:
    system_prompt: str = ""
    name: str = ""  # from character_info (or the persona command)
    personality: str = ""
    expressions: list[str] = field(default_factory=list)  # from model_info: what the face can show

    def system(self) -> str:
        text = self.system_prompt
        if self.name or self.personality:
            who = f"You are {self.name or 'the character'}"
            text = (text + f"\n{who}: {self.personality}".rstrip(": ")).strip()
        if self.expressions:
            text += ("\nYour face can show: " + ", ".join(self.expressions[:24]) +
                     ". To show one, put its name in brackets before the words it goes with, e.g. "
                     f"[{self.expressions[0]}].")
        return text


class History:
    def __init__(self, persona: Persona, max_turns: int = 8, interrupted_marker: str = "") -> None:
        self.persona = persona
        self.max_turns = max_turns
        self.interrupted_marker = interrupted_marker
        self.messages: list[dict[str, Any]] = []  # plus "_rid"/"interrupted", kept to ourselves

    def remember(self, role: str, text: str, **extra: Any) -> None:
        self.messages.append({"role": role, "content": text, **extra})
        self.messages = self.messages[-2 * self.max_turns:]

    def reserve(self, response_id: int) -> None:
        """Keep the reply's place right after its user message: its words may come later
        (a cut reply's heard words come back from its output after the next user message)."""
        if not any(m.get("_rid") == response_id for m in self.messages):
            self.remember("assistant", "", _rid=response_id)

    def set_assistant(self, response_id: int, text: str, interrupted: bool = False) -> None:
        """The assistant message of a reply: its whole text, or the words heard before a cut."""
        for m in self.messages:
            if m.get("_rid") == response_id:
                m["content"], m["interrupted"] = text, interrupted
                return
        if text.strip():
            self.remember("assistant", text, _rid=response_id, interrupted=interrupted)

    def clear(self) -> int:
        n, self.messages = len(self.messages), []
        return n

    def for_request(self, extra_user: str | None = None,
                    attachments: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The messages of the next LLM request (standard OpenAI keys only). ``extra_user``: a
        user message not yet in the history (a preemptive attempt). ``attachments``: content
        parts (OpenAI ``image_url`` parts) added to the last user message."""
        system = self.persona.system()
        out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        for m in self.messages:
            content = m["content"]
            if not content.strip():
                continue  # a reply not (yet) heard: nothing of it was said
            if m.get("interrupted") and self.interrupted_marker:
                content = f"{content}… {self.interrupted_marker}"
            out.append({"role": m["role"], "content": content})
        if extra_user is not None:
            out.append({"role": "user", "content": extra_user})
        if attachments and out and out[-1]["role"] == "user":
            out[-1] = {"role": "user", "content": [{"type": "text", "text": out[-1]["content"]}, *attachments]}
        return out
