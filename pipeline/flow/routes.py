"""Where every frame goes: the whole flow, in one place.

    mic ─ InputAudioFrame ─> vad ─ audio + speech marks ─> stt ─ TranscriptFrame ─> session
    session ─ LLMRequestFrame ─> llm ─ LLMTokenFrame, EndOfTurnFrame ─> tts + client
    tts ─ TTSAudioFrame, EndOfTurnFrame ─> the conversation's audio output (player | client)
    player ─ ChunkAudibleFrame ─> avatar
    every stage ─ Event ─> session;  session ─ PublishFrame (bus events) ─> client
    session ─ HoldFrame ─> the audio output and the client;  InterruptFrame, CancelFrame ─> every stage

``client`` is the bus: the output stage that streams a conversation's text, audio and
events to its subscribers (WebSocket clients, the CLI). A conversation's audio goes to
the device player (the voice conversation; a WAV in ``talk``) or to its clients.

STT and TTS are shared model services, possibly pools: a conversation is pinned to one
member of each (``ConversationSpec.members``), which holds its per-conversation state.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.flow.events import Event
from pipeline.flow.frames import (CancelFrame, ChunkAudibleFrame, EndOfTurnFrame, Frame, HoldFrame, InputAudioFrame,
                                  InterruptFrame, LLMRequestFrame, LLMTokenFrame, PublishFrame, TranscriptFrame,
                                  TTSAudioFrame, UserSpeechFrame)

AUDIO_OUT = "audio_out"  # stands for the conversation's audio output
EVERY_STAGE = "*"  # every stage that knows the conversation, on its control lane
AUDIO_OUTPUTS = ("player", "client")
POOLED = ("stt", "tts")  # stages that run as pools of shared model services


@dataclass(frozen=True)
class Route:
    source: str  # a stage name, or "*" for any
    kinds: tuple[type, ...]
    to: tuple[str, ...]


ROUTES: tuple[Route, ...] = (
    Route("mic", (InputAudioFrame,), ("vad",)),
    Route("vad", (InputAudioFrame, UserSpeechFrame), ("stt",)),
    Route("stt", (TranscriptFrame,), ("session",)),
    Route("session", (LLMRequestFrame,), ("llm",)),
    # LLM text reaches the synthesis and every text output; a spoken notice from the
    # session (the apology for a dead LLM) takes the same way
    Route("llm", (LLMTokenFrame, EndOfTurnFrame), ("tts", "client")),
    Route("session", (LLMTokenFrame, EndOfTurnFrame), ("tts", "client")),
    Route("tts", (TTSAudioFrame, EndOfTurnFrame), (AUDIO_OUT,)),
    Route("player", (ChunkAudibleFrame,), ("avatar",)),
    Route("*", (Event,), ("session",)),
    # the session's decisions: a reply held or released at its output, replies cut everywhere,
    # and what the subscribers are told (turns, notices, input marks)
    Route("session", (HoldFrame,), (AUDIO_OUT, "client")),  # the client stage holds a held reply's text too
    Route("session", (InterruptFrame, CancelFrame), (EVERY_STAGE,)),
    Route("session", (PublishFrame,), ("client",)),
)


@dataclass
class ConversationSpec:
    """What every stage knows of a conversation: where its frames go.

    ``audio_out``: "player" (the sound device, or a WAV in ``talk``), "client" (the
    subscribers play it) or "" (text only: no synthesis). ``members``: the pool member
    of each shared service that holds this conversation's state.
    """

    session_id: str
    audio_out: str = "client"
    members: dict[str, int] = field(default_factory=dict)
    voice: str = ""  # the TTS voice; "" = tts.voice from the config

    def __post_init__(self) -> None:
        if self.audio_out not in AUDIO_OUTPUTS + ("",):
            raise ValueError(f"audio_out must be one of {AUDIO_OUTPUTS} or '', got {self.audio_out!r}")


def destinations(source: str, frame: Frame, spec: ConversationSpec | None) -> tuple[str, ...]:
    """The stages ``frame`` goes to from ``source`` (each once, in route order)."""
    out: list[str] = []
    for r in ROUTES:
        if r.source not in (source, "*") or not isinstance(frame, r.kinds):
            continue
        for dest in r.to:
            if dest == AUDIO_OUT:
                dest = spec.audio_out if spec is not None else ""
            if dest == "tts" and spec is not None and not spec.audio_out:
                continue  # a text-only conversation: nothing to synthesize
            if dest and dest != source and dest not in out:
                out.append(dest)
    return tuple(out)
