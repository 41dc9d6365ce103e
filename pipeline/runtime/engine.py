"""The engine: shared stages and model services, and the conversations they serve.

    mic -> vad -> stt -> session -> llm -> tts -> player | client -> avatar (optional)
    (the whole flow: pipeline/flow/routes.py)

One actor per stage serves every conversation: session, vad, llm and client (the bus)
are light; STT and TTS are shared model services, ``stt.pool_size`` / ``tts.pool_size``
of each, placed by Ray resources (``ray.model_resource``, ``ray.num_gpus``), so a remote
GPU node takes them with the same config. Each conversation is pinned to the least
loaded member of each pool. The device stages (mic, player, avatar) run on the driver's
node, where the sound card and the display are; they serve the one voice conversation.

A conversation costs no process: ``open_conversation`` tells every stage it exists
(``ConversationSpec``), ``close_conversation`` releases what they keep of it. Its
events reach subscribers through the client stage (``subscribe``): nothing polls.
"""
from __future__ import annotations

import copy
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.config import Config
from pipeline.flow.bus_events import BusEvent
from pipeline.flow.routes import POOLED, ConversationSpec
from pipeline.runtime.ray_init import init_ray

SERVICES = ("session", "vad", "llm", "client")  # light, one each, serving every conversation
DEVICES = ("mic", "player")  # the voice conversation's sound devices (and the avatar)
VERSION = "0.2.0"


@dataclass
class Subscription:
    """A conversation's event stream: iterate it (``for ev in sub``) or ``async for``."""

    sub_id: str
    session_id: str
    gen: Any  # Ray's ObjectRefGenerator of BusEvents

    def __iter__(self) -> Iterator[BusEvent]:
        for ref in self.gen:
            yield ray.get(ref)

    async def __aiter__(self):
        async for ref in self.gen:
            yield await ref


class Engine:
    def __init__(self, cfg: Config, log_dir: str | Path | None = None) -> None:
        self.cfg = copy.deepcopy(cfg)
        if not self.cfg.engine.run_id:  # names what this run shares between processes (the playback clock)
            self.cfg.engine.run_id = uuid.uuid4().hex[:12]
        self.log_dir = Path(log_dir) if log_dir else None
        self.actors: dict[str, Any] = {}
        self.pools: dict[str, list[Any]] = {}
        self.llm_server = None
        self.base_url = ""
        self.timings: dict[str, float] = {}
        self.avatar_status: dict[str, Any] = {}
        self.conversations: dict[str, ConversationSpec] = {}
        self.voices: list[str] = []
        self._lock = threading.Lock()
        self.errors_reported = 0  # the voice conversation's errors a talk has reported (each once)

    # ------------------------------------------------------------ lifecycle
    def start(self, devices: bool = True) -> "Engine":
        """Start the stages and models (``devices``: also the mic, the player and, with
        ``avatar.enabled``, the avatar)."""
        from actors.client import ClientActor
        from actors.llm import LLMActor
        from actors.session import SessionActor
        from actors.stt import STTActor
        from actors.tts import TTSActor
        from actors.vad import VADActor

        t = time.perf_counter()
        base_url = self.cfg.llm.base_url
        if not base_url:
            from models.llm_server import EmbeddedLLMServer

            self.llm_server = EmbeddedLLMServer(self.cfg, self.log_dir / "llm-server.log" if self.log_dir else None)
            base_url = self.llm_server.start()
            self.timings["llm_server_start_s"] = time.perf_counter() - t
        self.base_url = base_url
        self.timings["ray_start_s"] = init_ray(self.cfg)["start_s"]
        here = {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                      soft=False)}
        t1 = time.perf_counter()
        classes = {"session": SessionActor, "vad": VADActor, "llm": LLMActor, "client": ClientActor}
        for name in SERVICES:
            args = (self.cfg, base_url) if name == "llm" else (self.cfg,)
            self.actors[name] = classes[name].options(**here).remote(*args)
        model_opts = self._model_placement() or here
        for name, cls, size in (("stt", STTActor, self.cfg.stt.pool_size), ("tts", TTSActor, self.cfg.tts.pool_size)):
            self.pools[name] = [cls.options(**model_opts).remote(self.cfg, i) for i in range(size)]
        if devices:
            self._start_devices(here)
        targets = {**self.actors, **self.pools}
        handles = list(self.actors.values()) + [h for pool in self.pools.values() for h in pool]
        ray.get([h.connect.remote(targets) for h in handles])
        ready = ray.get([h.ready.remote() for h in handles])
        self.timings["actors_ready_s"] = time.perf_counter() - t1
        self.timings.update({f"{r['stage'].replace('#0', '')}_setup_s": r["setup_s"] for r in ready})
        self.voices = ray.get(self.pools["tts"][0].voices.remote())
        ray.get(self.actors["session"].describe.remote(self.info(), self.voices))
        if devices:  # the device stages serve the voice conversation: it exists with them (an avatar
            self.open_conversation(self.voice_session, audio_out="player")  # that fails says so in it)
        if "avatar" in self.actors:  # after every setup: a failure is an error event the session takes
            t2 = time.perf_counter()
            self.avatar_status = ray.get(self.actors["avatar"].started.remote())
            self.timings["avatar_start_wait_s"] = time.perf_counter() - t2
        self.timings["start_s"] = time.perf_counter() - t
        return self

    def _model_placement(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.cfg.ray.model_resource:
            opts["resources"] = {self.cfg.ray.model_resource: 0.001}
        if self.cfg.ray.num_gpus:
            opts["num_gpus"] = self.cfg.ray.num_gpus
        return opts

    def _start_devices(self, here: dict[str, Any]) -> None:
        from actors.mic import MicActor
        from actors.player import PlayerActor

        self.actors["mic"] = MicActor.options(**here).remote(self.cfg)
        self.actors["player"] = PlayerActor.options(**here).remote(self.cfg)
        if self.cfg.avatar.enabled:
            from actors.avatar import AvatarActor

            # the window goes where the display is (the driver's DISPLAY), beside the player's clock
            self.actors["avatar"] = AvatarActor.options(**here).remote(self.cfg, os.environ.get("DISPLAY", ""))

    def info(self) -> dict[str, Any]:
        """What the engine runs (no secrets): for ``info`` and the servers' health answers."""
        from urllib.parse import urlparse

        u = urlparse(self.base_url)
        return {"name": "Kokoro Engine", "version": VERSION, "llm_endpoint": f"{u.scheme}://{u.netloc}{u.path}",
                "llm_model": self.cfg.llm.model or "(the server's first)", "embedded_llm": self.llm_server is not None,
                "stt_model": self.cfg.stt.model or "whisper-tiny.en", "tts_model": self.cfg.tts.model or "kokoro-82m",
                "voice": self.cfg.tts.voice, "pools": {k: len(v) for k, v in self.pools.items()}}

    def shutdown(self) -> None:
        for name, timeout in (("avatar", 10), ("player", 5)):  # the window process; the shared clock
            if name in self.actors:
                try:
                    ray.get(self.actors[name].release.remote(), timeout=timeout)
                except Exception:
                    pass
        for a in list(self.actors.values()) + [h for pool in self.pools.values() for h in pool]:
            try:
                ray.kill(a)
            except Exception:
                pass
        self.actors, self.pools, self.conversations = {}, {}, {}
        if self.llm_server is not None:
            self.llm_server.stop()
            self.llm_server = None

    def __enter__(self) -> "Engine":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def named_handles(self) -> dict[str, Any]:
        """Every stage actor by name (pool members as "stt", "stt#1", ...)."""
        out = dict(self.actors)
        for name, pool in self.pools.items():
            out.update({name if i == 0 else f"{name}#{i}": h for i, h in enumerate(pool)})
        return out

    def _handles(self) -> list[Any]:
        return list(self.actors.values()) + [h for pool in self.pools.values() for h in pool]

    # ------------------------------------------------------------ conversations
    def open_conversation(self, session_id: str | None = None, audio_out: str = "client") -> str:
        """Open (or, with the same id, return) a conversation; returns its id."""
        with self._lock:
            if session_id and session_id in self.conversations:
                return session_id
            sid = session_id or uuid.uuid4().hex[:16]
            members = {name: self._least_loaded(name) for name in POOLED}
            spec = self.conversations[sid] = ConversationSpec(sid, audio_out, members)
        ray.get([h.open_conversation.remote(spec) for h in self._handles()])
        return sid

    def _least_loaded(self, pool: str) -> int:
        load = [0] * len(self.pools[pool])
        for spec in self.conversations.values():
            load[spec.members.get(pool, 0)] += 1
        return min(range(len(load)), key=load.__getitem__)

    def close_conversation(self, session_id: str) -> bool:
        with self._lock:
            if self.conversations.pop(session_id, None) is None:
                return False
        ray.get([h.close_conversation.remote(session_id) for h in self._handles()])
        return True

    def send_input(self, session_id: str, message: dict[str, Any]) -> dict[str, Any]:
        return ray.get(self.actors["session"].send_input.remote(session_id, message))

    def subscribe(self, session_id: str) -> Subscription:
        """The conversation's events from now on (the first is a marker that it is in place)."""
        sub_id = uuid.uuid4().hex
        gen = self.actors["client"].subscribe.options(num_returns="streaming").remote(session_id, sub_id)
        return Subscription(sub_id, session_id, gen)

    def unsubscribe(self, sub: Subscription) -> None:
        try:
            self.actors["client"].unsubscribe.remote(sub.sub_id)
        except Exception:
            pass

    def played(self, session_id: str, response_id: int, samples: int) -> None:
        self.actors["client"].played.remote(session_id, response_id, samples)

    # ------------------------------------------------------------ the voice conversation
    @property
    def voice_session(self) -> str:
        return self.cfg.engine.session_id

    def start_voice(self) -> dict[str, Any]:
        """The hands-free conversation on the sound devices (the one ``run`` holds)."""
        from pipeline.audio.devices import check_devices

        inp, outp = check_devices(self.cfg.audio.input_device, self.cfg.audio.output_device)
        sid = self.open_conversation(self.voice_session, audio_out="player")
        ray.get(self.actors["player"].open_device.remote(int(outp["default_samplerate"]), sid))
        started = ray.get(self.actors["mic"].start_device.remote(sid))
        return {"session_id": sid, "input": inp["name"], "output": outp["name"], **started}

    def stop_voice(self) -> None:
        for name, method in (("mic", "stop"), ("player", "close")):
            if name in self.actors:
                try:
                    ray.get(getattr(self.actors[name], method).remote(), timeout=5)
                except Exception:
                    pass

    # ------------------------------------------------------------ queries
    def snapshot(self, session_id: str | None = None) -> dict[str, Any]:
        return ray.get(self.actors["session"].snapshot.remote(session_id or self.voice_session))

    def stats(self) -> dict[str, Any]:
        handles = self._handles()
        return {s["stage"]: s for s in ray.get([h.stats.remote() for h in handles])}

    def avatar_state(self) -> dict[str, Any] | None:
        """The character (name, current_expression, mood, is_speaking); None without an avatar."""
        avatar = self.actors.get("avatar")
        return ray.get(avatar.state.remote()) if avatar is not None else None

    def talk(self, input_wav: str, output_wav: str, **kw: Any):
        """One turn from a file, the reply heard written to a WAV (see pipeline.runtime.talk)."""
        from pipeline.runtime.talk import talk

        return talk(self, input_wav, output_wav, **kw)
