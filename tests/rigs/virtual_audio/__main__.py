"""``python -m tests.rigs.virtual_audio up`` holds the devices until Ctrl-C; ``probe PLAN``
is the probe subprocess the rig starts itself."""
from __future__ import annotations

import sys
import time

from tests.rigs.virtual_audio.devices import VirtualAudio
from tests.rigs.virtual_audio.probe_process import run_plan
from tests.rigs.virtual_audio.pulse import BUS_MONITOR, MIC_SOURCE, SPEAKER


def _up_main(rate: int) -> int:
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job ignores it by default
        signal.signal(sig, lambda *_: sys.exit(0))
    with VirtualAudio(rate=rate) as va:
        print(f"virtual audio up ({'own server' if va.started_server else 'existing server'}): default sink "
              f"{SPEAKER}, default source {MIC_SOURCE}, both sides on {BUS_MONITOR}. Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.rigs.virtual_audio")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe", help="(internal) run a probe plan")
    p.add_argument("plan")
    u = sub.add_parser("up", help="start the virtual devices and hold them until Ctrl-C")
    u.add_argument("--rate", type=int, default=48000)
    a = ap.parse_args(argv)
    if a.cmd == "probe":
        return run_plan(a.plan)
    return _up_main(a.rate)


if __name__ == "__main__":
    sys.exit(main())
