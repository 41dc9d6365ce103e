"""kokoro-engine talk: one full voice turn from a WAV, the reply written to a WAV (or a video).

A test rig reuses ``run_talk`` with a source of its own (tests/rigs/talk.py mixes a
barge-in and an echo into the input).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from pipeline.conversation.metrics import REPORTED_EVENTS


def add_arguments(t) -> None:
    t.add_argument("--input", required=True, help="the user's speech (any rate/channels)")
    t.add_argument("--output", required=True, help="where to write the spoken reply (WAV)")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.add_argument("--fast", action="store_true", help="feed input as fast as possible, not at real-time pace")
    t.add_argument("--timeout", type=float, default=120.0)
    t.add_argument("--avatar", action="store_true",
                   help="run the Live2D avatar headless during the talk (an Xvfb of its own without DISPLAY); "
                        "--json then reports mouth_track")
    t.add_argument("--video", metavar="OUT.mp4",
                   help="as --avatar, and write the reply as a video: the avatar's frames at their display "
                        "times with the reply audio (ffmpeg; without it the PNG frames are kept)")


def _frames_dir(video: str) -> Path:
    """Where talk --video captures the avatar's frames: OUT_frames/ beside OUT.mp4, emptied
    of an earlier capture's files."""
    d = Path(video).parent / f"{Path(video).stem}_frames"
    if d.is_dir():
        for f in [*d.glob("frames.*"), *d.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png")]:
            f.unlink()
    return d


def _make_video(res, wav: str, frames: Path, out: str) -> dict:
    """The talk's captured frames + its reply WAV -> OUT.mp4 on the WAV's clock (avatar/video.py)."""
    import shutil

    from avatar import video

    chunks = [c for c in res.info.get("chunks", []) if c.get("sample_start") is not None]
    if not chunks or not video.read_capture(frames):
        shutil.rmtree(frames, ignore_errors=True)
        return {"error": "no reply was heard: no video" if not chunks else "the avatar captured no frames (see errors)"}
    duration, rate = video.wav_duration(wav)
    c = chunks[0]  # chunk times are relative to the talk's t0; sample_start is the WAV's own position
    t_wav0 = res.t0 + c["t_start"] - c["sample_start"] / rate
    if not shutil.which("ffmpeg"):
        n = video.write_pngs(frames, t_wav0, t_wav0 + duration)
        return {"error": f"ffmpeg is not installed: no {out}; the reply's {n} avatar frames are PNGs in "
                         f"{frames} (display times in frames.jsonl)", "frames_dir": str(frames), "no_ffmpeg": True}
    try:
        info = video.write_mp4(frames, wav, t_wav0, out)
    except RuntimeError as e:
        return {"error": f"video: {e}", "frames_dir": str(frames)}
    shutil.rmtree(frames, ignore_errors=True)
    return info


def _start_xvfb():
    """An X server for a headless avatar when there is no display (None: none needed or none there)."""
    if not sys.platform.startswith("linux") or os.environ.get("DISPLAY"):
        return None
    from avatar.settings import AvatarError
    from avatar.xvfb import Xvfb

    try:
        xvfb = Xvfb()
        xvfb.start()
        return xvfb
    except AvatarError as e:  # the avatar then reports "no display" and the talk goes on
        print(f"warning: {e}", file=sys.stderr)
        return None


def run_talk(args, cfg, make_source: Callable[[], Any] | None = None, barge_in: bool = False) -> int:
    """``make_source``: the mic's source (default: the input file); ``barge_in``: the source mixes
    one in, and the report says when it started and how soon the reply went silent."""
    from pipeline.audio.convert import AudioFormatError, load_audio
    from pipeline.runtime.engine import Engine

    try:
        load_audio(args.input)  # fail early, before starting models, on a bad input
    except AudioFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if (args.avatar or args.video) and args.fast:
        print("error: --avatar/--video need the reply played in real time (drop --fast): the mouth follows "
              "the playback clock", file=sys.stderr)
        return 2
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    log_dir = Path(".cache/logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    xvfb = frames = None
    if args.avatar or args.video:
        cfg.avatar.enabled, cfg.avatar.headless = True, True
        xvfb = _start_xvfb()
        if args.video:
            frames = _frames_dir(args.video)
    engine = Engine(cfg, log_dir)
    try:
        engine.start()
        source = make_source() if make_source else args.input
        res = engine.talk(source, args.output, realtime=not args.fast, timeout=args.timeout,
                          capture_dir=str(frames) if frames else None, waits_for_barge_in=barge_in)
        stats = engine.stats()
        endpoint = engine.info()["llm_endpoint"]
    finally:
        engine.shutdown()
        if xvfb is not None:
            xvfb.stop()
    video = _make_video(res, args.output, frames, args.video) if args.video else None
    out = report(res, args.output, engine.timings, stats, barge_in)
    if video is not None:
        out["video"] = video
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_report(res, out, args.output, video)
    if video and "error" in video:
        print(f"error: {video['error']}", file=sys.stderr)
    llm_failed = any(t["state"] == "failed" for t in res.turns)
    if llm_failed:
        print(f"error: no reply: the LLM endpoint {endpoint} did not answer", file=sys.stderr)
        return 5
    if not res.had_turn:
        return 0
    ok_states = ("done", "interrupted") if barge_in else ("done",)
    video_failed = bool(video and "error" in video and not video.get("no_ffmpeg"))  # no ffmpeg: PNGs, said
    return 0 if res.state in ok_states and not res.errors and not video_failed else 1


def report(res, output: str, timings: dict[str, float], stats: dict[str, Any], barge_in: bool) -> dict[str, Any]:
    """The talk as one JSON object (``--json``)."""
    out: dict[str, Any] = {
        "transcript": res.transcript, "reply": res.reply, "state": res.state,
        "events": {k: res.events[k] for k in REPORTED_EVENTS if k in res.events},
        "stages": {k: v for k, v in res.info.items() if k != "chunks"},
        "chunks": res.info.get("chunks", []), "errors": res.errors, "output": str(output),
        "startup": {k: round(v, 3) for k, v in timings.items()},
        "dropped_stale": {k: v.get("dropped_stale", 0) for k, v in stats.items()},
        "false_interruptions": res.false_interruptions,
        "turns": [{k: t[k] for k in ("response_id", "priority", "transcript", "reply", "heard", "state", "events")}
                  for t in res.turns],
        # the conversation as the next LLM request would send it
        "history": res.history}
    if res.mouth_track is not None:  # [t, mouth_open] at display times, on the events' clock
        out["mouth_track"] = res.mouth_track
    ev = res.events
    if barge_in:
        start = res.marks.get("barge_in_speech_start")
        stopped = ev.get("reply_audio_stopped")  # last non-silent sample of the reply heard
        out["barge_in_speech_start"] = start
        out["reply_audio_stopped"] = stopped
        if start is not None and stopped is not None:
            out["barge_in_to_silence_s"] = round(stopped - start, 4)
    if "first_reply_sample_out" in ev and "user_speech_stopped" in ev:
        end_audio = res.info.get("speech_end_audio")
        out["latency"] = {
            "endpoint_detect_to_first_audio_s": round(ev["first_reply_sample_out"] - ev["user_speech_stopped"], 4),
            # true speech end (in the input stream) -> first reply sample heard
            "voice_to_voice_s": round(ev["first_reply_sample_out"] - end_audio, 4) if end_audio is not None
            else None,
        }
    return out


def print_report(res, out: dict[str, Any], output: str, video: dict | None) -> None:
    ev = res.events
    if not res.had_turn:
        print("no speech heard in the input: no turn, no reply")
    else:
        print(f"you:   {res.transcript}")
        print(f"reply: {res.reply}")
        print("latency (s since the first input sample):")
        for k in REPORTED_EVENTS:
            if k in ev:
                print(f"  {k:24} {ev[k]:7.3f}")
        if "latency" in out:
            print(f"  voice-to-voice (speech end -> first reply sample): {out['latency']['voice_to_voice_s']} s")
        print(f"reply audio: {output}")
        if video and "output" in video:
            print(f"reply video: {video['output']} ({video['duration_s']:.2f} s, {video['frames']} frames)")
    for e in res.errors:
        print(f"error: {e}", file=sys.stderr)
