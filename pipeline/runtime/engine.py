"""Build the stage actors, wire them, and run turns through them.

    mic -> vad -> stt -> session -> llm -> tts -> player -> avatar (optional: avatar.enabled)
                          ^ events from every stage, taps from the avatar; control fans out from here

Stages that touch the user's devices (mic, player) and the cheap ones (vad,
session, and llm, which is only an HTTP client) run on the node of the
driver; STT and TTS may go to a remote GPU node (``ray.model_resource``) with
the same config.
"""
from __future__ import annotations

import copy
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.config import Config
from pipeline.runtime.ray_init import init_ray

STAGES = ("session", "mic", "vad", "stt", "llm", "tts", "player")
MODEL_STAGES = ("stt", "tts")


@dataclass
class TurnResult:
    transcript: str = ""
    reply: str = ""
    events: dict[str, float] = field(default_factory=dict)  # seconds since the first input sample
    info: dict[str, Any] = field(default_factory=dict)
    state: str = "none"
    errors: list[str] = field(default_factory=list)
    history: list[dict[str, str]] = field(default_factory=list)  # as the next LLM request sends it
    turns: list[dict[str, Any]] = field(default_factory=list)  # every turn of the talk, times relative
    marks: dict[str, float] = field(default_factory=dict)  # barge_in_speech_start..., same clock
    false_interruptions: int = 0
    # the avatar's [t, mouth_open] at display times, same clock as events; None without an avatar
    mouth_track: list[list[float]] | None = None
    t0: float = 0.0  # wall time of the first input sample: what every relative time counts from

    @property
    def had_turn(self) -> bool:
        return bool(self.transcript.strip())


class Engine:
    def __init__(self, cfg: Config, log_dir: str | Path | None = None) -> None:
        self.cfg = copy.deepcopy(cfg)
        if not self.cfg.engine.run_id:  # names what this run shares between processes (the playback clock)
            self.cfg.engine.run_id = uuid.uuid4().hex[:12]
        self.log_dir = Path(log_dir) if log_dir else None
        self.actors: dict[str, Any] = {}
        self.llm_server = None
        self.timings: dict[str, float] = {}
        self.avatar_status: dict[str, Any] = {}
        self._errors_reported = 0  # talk() reports each engine error once, in the first talk after it

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "Engine":
        from actors.llm import LLMActor
        from actors.mic import MicActor
        from actors.player import PlayerActor
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
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        model_opts: dict[str, Any] = {}
        if self.cfg.ray.model_resource:
            model_opts["resources"] = {self.cfg.ray.model_resource: 0.001}
        classes = {"session": SessionActor, "mic": MicActor, "vad": VADActor, "stt": STTActor, "llm": LLMActor,
                   "tts": TTSActor, "player": PlayerActor}
        t1 = time.perf_counter()
        for name in STAGES:
            opts = model_opts if name in MODEL_STAGES and model_opts else {"scheduling_strategy": here}
            args = (self.cfg, base_url) if name == "llm" else (self.cfg,)
            self.actors[name] = classes[name].options(**opts).remote(*args)
        if self.cfg.avatar.enabled:
            from actors.avatar import AvatarActor

            # the window goes where the display is (the driver's DISPLAY), beside the player's clock
            self.actors["avatar"] = AvatarActor.options(scheduling_strategy=here).remote(
                self.cfg, os.environ.get("DISPLAY", ""))
        ray.get([a.connect.remote(self.actors) for a in self.actors.values()])
        ready = ray.get([a.ready.remote() for a in self.actors.values()])
        self.timings["actors_ready_s"] = time.perf_counter() - t1
        self.timings.update({f"{r['stage']}_setup_s": r["setup_s"] for r in ready})
        if "avatar" in self.actors:  # after every setup: a failure is an error event the session takes
            t2 = time.perf_counter()
            self.avatar_status = ray.get(self.actors["avatar"].started.remote())
            self.timings["avatar_start_wait_s"] = time.perf_counter() - t2
        self.timings["start_s"] = time.perf_counter() - t
        return self

    def shutdown(self) -> None:
        if "avatar" in self.actors:
            try:  # closes the window process
                ray.get(self.actors["avatar"].release.remote(), timeout=10)
            except Exception:
                pass
        if "player" in self.actors:
            try:  # removes the shared playback clock; a kill would leave it in /dev/shm
                ray.get(self.actors["player"].release.remote(), timeout=5)
            except Exception:
                pass
        for a in self.actors.values():
            try:
                ray.kill(a)
            except Exception:
                pass
        self.actors = {}
        if self.llm_server is not None:
            self.llm_server.stop()
            self.llm_server = None

    def __enter__(self) -> "Engine":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # ------------------------------------------------------------ queries
    def snapshot(self) -> dict[str, Any]:
        return ray.get(self.actors["session"].snapshot.remote())

    def stats(self) -> dict[str, Any]:
        return {n: s for n, s in zip(self.actors, ray.get([a.stats.remote() for a in self.actors.values()]))}

    def avatar_state(self) -> dict[str, Any] | None:
        """The character (name, current_expression, mood, is_speaking); None without an avatar."""
        avatar = self.actors.get("avatar")
        return ray.get(avatar.state.remote()) if avatar is not None else None

    # ------------------------------------------------------------ one turn from a file
    def talk(self, input_wav: str, output_wav: str, realtime: bool = True, timeout: float = 120.0,
             barge_in: str | None = None, barge_in_at: float = 1.5,
             simulate_echo: bool | None = None, capture_dir: str | None = None) -> TurnResult:
        """Feed ``input_wav`` as the mic, write the reply heard to ``output_wav``.

        ``barge_in``: a second file mixed into the mic ``barge_in_at`` s after the
        first reply sample is heard; the talk then also waits for its turn.
        With an avatar the result has its ``mouth_track``; ``capture_dir``: its frames
        are captured there too (raw, for avatar/video.py).
        """
        mic, player = self.actors["mic"], self.actors["player"]
        avatar = self.actors.get("avatar")
        earlier = {t["response_id"] for t in self.snapshot()["turns"]}  # turns of previous talks
        ray.get(player.open_wav.remote(str(output_wav), 24000, realtime))
        if avatar is not None and capture_dir:
            ray.get(avatar.capture.remote(str(capture_dir)))
        info = ray.get(mic.start_file.remote(str(input_wav), realtime, barge_in, barge_in_at, simulate_echo))
        t0 = info["t0"]
        deadline = time.monotonic() + timeout + info["duration"]
        snap: dict[str, Any] = {}
        timed_out = False
        try:
            while time.monotonic() < deadline:
                snap = self.snapshot()
                snap["turns"] = turns = [t for t in snap["turns"] if t["response_id"] not in earlier]
                if snap["globals"].get("input_started", 0) < t0:
                    snap["globals"] = {}  # the mic's input_started has not landed yet
                if barge_in and "barge_in_started" not in snap["globals"] and any(
                        "first_reply_sample_out" in t["events"] for t in turns):
                    time.sleep(0.1)  # the barge-in is still to come
                    continue
                if turns and all(t["finished"] for t in turns) and "input_done" in snap["globals"]:
                    break
                if not turns and "input_done" in snap["globals"]:
                    break  # the whole input went by without speech
                time.sleep(0.1)  # events carry their own timestamps: polling fast buys nothing
            else:
                timed_out = True
        finally:
            ray.get(mic.stop.remote())
            ray.get(player.close.remote())
            track = None
            if avatar is not None:
                # the frames up to now (the last reply sample is heard at most a block after
                # its event); then the capture, if any, is closed
                track = ray.get(avatar.mouth_track.remote(t0, time.time() + 0.05))
                if capture_dir:
                    ray.get(avatar.capture.remote(None))
        res = _result(snap, t0)
        res.errors = res.errors[self._errors_reported:]  # an earlier talk said those (an avatar that failed)
        self._errors_reported += len(res.errors)
        if timed_out:
            res.errors.append(f"turn did not finish within {timeout:.0f} s")
        res.t0 = t0
        if track is not None:
            res.mouth_track = [[round(t - t0, 4), round(m, 4)] for t, m in track]
        return res


def _result(snap: dict[str, Any], t0: float) -> TurnResult:
    """The talk's answer: its first spoken turn up front, every turn in ``turns``."""
    rel = lambda ev: {k: round(v - t0, 4) for k, v in ev.items()}  # noqa: E731
    res = TurnResult(errors=list(snap.get("errors", [])), history=snap.get("history", []),
                     false_interruptions=snap.get("false_interruptions", 0),
                     marks=rel({k: v for k, v in snap.get("globals", {}).items() if k.startswith("barge_in")}))
    res.turns = [{**t, "events": rel(t["events"])} for t in snap.get("turns", [])]
    for t in res.turns:  # the player's chunk times too: one clock for everything a talk reports
        t["info"] = {**t["info"], "chunks": [{**c, **rel({k: c[k] for k in ("t_start", "t_end") if k in c})}
                                             for c in t["info"].get("chunks", [])]}
    if not res.turns:
        return res
    # the turn answering the input file: its last spoken one from before any barge-in
    cut = res.marks.get("barge_in_started", float("inf"))
    spoken = [t for t in res.turns if t["transcript"].strip()
              and t["events"].get("user_speech_started", t["events"].get("transcript_final", 0)) < cut]
    turn = spoken[-1] if spoken else res.turns[-1]
    res.transcript, res.reply, res.state = turn["transcript"], turn["reply"], turn["state"]
    res.events, res.info = turn["events"], turn["info"]
    return res
