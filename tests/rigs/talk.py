"""``kokoro-engine talk`` in a simulated room: a barge-in and open speakers mixed into the input.

    python -m tests.rigs.talk --input Q.wav --output R.wav --barge-in B.wav [--barge-in-at 1.5] [--echo] [--json]

Everything ``talk`` takes, plus:
* ``--barge-in B.wav``: B is mixed into the mic ``--barge-in-at`` s after the first reply
  sample is heard; the JSON then adds ``barge_in_speech_start``, ``reply_audio_stopped``
  (the last non-silent reply sample heard) and ``barge_in_to_silence_s``;
* ``--echo``: the engine's own output leaks back into the mic (``--echo-gain-db``,
  ``--echo-delay-ms``: -6 dB, 50 ms), as open speakers would.
"""
from __future__ import annotations

import argparse
import sys

from pipeline.cli.main import _common
from pipeline.cli.talk import add_arguments, run_talk
from pipeline.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.rigs.talk", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    _common(ap)
    ap.add_argument("--barge-in", metavar="B.wav", help="speech mixed into the mic while the engine replies")
    ap.add_argument("--barge-in-at", type=float, default=1.5, metavar="S",
                    help="seconds after the first reply sample is heard (default 1.5)")
    ap.add_argument("--echo", action="store_true", help="mix the engine's own output back into the mic")
    ap.add_argument("--echo-gain-db", type=float, default=-6.0)
    ap.add_argument("--echo-delay-ms", type=float, default=50.0)
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    def room():
        from pipeline.audio.sources import FileSource
        from tests.rigs.room import SimulatedRoom

        return SimulatedRoom(FileSource(args.input, not args.fast, cfg.audio.trailing_silence_ms), echo=args.echo,
                             echo_gain_db=args.echo_gain_db, echo_delay_ms=args.echo_delay_ms,
                             barge_in=args.barge_in, barge_in_at=args.barge_in_at)

    return run_talk(args, cfg, make_source=room, barge_in=bool(args.barge_in))


if __name__ == "__main__":
    sys.exit(main())
