"""One turn from a WAV: the voice conversation fed from a file, its reply written to a WAV.

The talk subscribes to the conversation's events (turns as they change, the input's
start and end, a rig's barge-in marks) and returns once every turn it started is over
and the input is done: nothing polls. Times in the result are seconds since the first
input sample.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from pipeline.audio.sources import AudioSource, FileSource
from pipeline.flow.bus_events import InputMark, TurnUpdated


@dataclass
class TurnResult:
    transcript: str = ""
    reply: str = ""
    events: dict[str, float] = field(default_factory=dict)  # seconds since the first input sample
    info: dict[str, Any] = field(default_factory=dict)
    state: str = "none"
    errors: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)  # as the next LLM request sends it
    turns: list[dict[str, Any]] = field(default_factory=list)  # every turn of the talk, times relative
    marks: dict[str, float] = field(default_factory=dict)  # barge_in_speech_start..., same clock
    false_interruptions: int = 0
    # the avatar's [t, mouth_open] at display times, same clock as events; None without an avatar
    mouth_track: list[list[float]] | None = None
    t0: float = 0.0  # wall time of the first input sample: what every relative time counts from

    @property
    def had_turn(self) -> bool:
        return bool(self.transcript.strip())


def talk(engine, input_wav: str | AudioSource, output_wav: str, realtime: bool = True, timeout: float = 120.0,
         capture_dir: str | None = None, waits_for_barge_in: bool = False) -> TurnResult:
    """Feed ``input_wav`` (a path, or a source: a test rig's room around a file) as the mic of
    the voice conversation, write the reply heard to ``output_wav``.

    ``waits_for_barge_in``: the source mixes in a barge-in once the reply is heard; the talk
    then also waits for its turn. With an avatar the result has its ``mouth_track``;
    ``capture_dir``: its frames are captured there too (raw, for avatar/video.py).
    """
    sid = engine.open_conversation(engine.voice_session, audio_out="player")
    mic, player = engine.actors["mic"], engine.actors["player"]
    avatar = engine.actors.get("avatar")
    source = input_wav if isinstance(input_wav, AudioSource) else FileSource(
        str(input_wav), realtime, engine.cfg.audio.trailing_silence_ms)
    ray.get(player.open_wav.remote(str(output_wav), 24000, source.realtime, sid))
    if avatar is not None and capture_dir:
        ray.get(avatar.capture.remote(str(capture_dir)))
    sub = engine.subscribe(sid)
    events: queue.Queue = queue.Queue()
    pump = threading.Thread(target=_pump, args=(sub, events), name="talk-events", daemon=True)
    pump.start()
    events.get(timeout=30)  # the subscription is in place: nothing of this talk is missed
    info = ray.get(mic.start.remote(source, sid))
    t0 = info["t0"]
    deadline = time.monotonic() + timeout + info["duration"]
    turns: dict[int, dict[str, Any]] = {}
    marks: dict[str, float] = {}
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            try:
                ev = events.get(timeout=left)
            except queue.Empty:
                continue
            if isinstance(ev, TurnUpdated):
                turns[ev.turn["turn_id"]] = ev.turn
            elif isinstance(ev, InputMark):
                if ev.name == "input_started":
                    marks = {}
                marks[ev.name] = ev.t
                if "speech_onset" in ev.data:
                    marks["barge_in_speech_start"] = ev.data["speech_onset"]
            if _finished(turns, marks, waits_for_barge_in):
                break
    finally:
        engine.unsubscribe(sub)
        ray.get(mic.stop.remote())
        ray.get(player.close.remote())
        track = None
        if avatar is not None:
            # the frames up to now (the last reply sample is heard at most a block after
            # its event); then the capture, if any, is closed
            track = ray.get(avatar.mouth_track.remote(t0, time.time() + 0.05))
            if capture_dir:
                ray.get(avatar.capture.remote(None))
    snap = engine.snapshot(sid)
    res = _result(list(turns.values()), marks, snap, t0)
    # the conversation's errors since the last talk: those of this one, and any from before it
    # (an avatar that failed at the engine's start), each reported once
    res.errors = list(snap.get("errors", []))[engine.errors_reported:]
    engine.errors_reported = len(snap.get("errors", []))
    if timed_out:
        res.errors.append(f"turn did not finish within {timeout:.0f} s")
    if track is not None:
        res.mouth_track = [[round(t - t0, 4), round(m, 4)] for t, m in track]
    return res


def _pump(sub, out: queue.Queue) -> None:
    try:
        for ev in sub:
            out.put(ev)
    except Exception:  # the subscription ended (the engine is shutting down)
        pass


def _finished(turns: dict[int, dict], marks: dict[str, float], barge_in: bool) -> bool:
    if "input_done" not in marks:
        return False
    spoken = [t for t in turns.values() if t["source"] == "user_speech"]
    if barge_in and "barge_in_started" not in marks and any(
            "first_reply_sample_out" in t["events"] for t in spoken):
        return False  # the barge-in is still to come
    return all(t["finished"] for t in turns.values())


def _result(turns: list[dict[str, Any]], marks: dict[str, float], snap: dict[str, Any], t0: float) -> TurnResult:
    """The talk's answer: its first spoken turn up front, every turn in ``turns``."""
    rel = lambda ev: {k: round(v - t0, 4) for k, v in ev.items()}  # noqa: E731
    turns = sorted(turns, key=lambda t: t["turn_id"])
    res = TurnResult(history=snap.get("history", []), false_interruptions=snap.get("false_interruptions", 0),
                     marks=rel({k: v for k, v in marks.items() if k.startswith("barge_in")}), t0=t0)
    res.turns = [{**t, "events": rel(t["events"])} for t in turns]
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
