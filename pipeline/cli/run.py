"""kokoro-engine run: the hands-free conversation on the sound devices, until Ctrl-C.

A client of the same core as ``serve --mic``: it opens the voice conversation, subscribes
to its events and shows each change of state as it comes.
"""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path


def cmd_run(args, cfg) -> int:
    from pipeline.audio.devices import AudioDeviceError, check_devices

    try:
        check_devices(cfg.audio.input_device, cfg.audio.output_device)
    except AudioDeviceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    from pipeline.cli.run_display import RunDisplay
    from pipeline.flow.bus_events import Closed, Notice, TurnUpdated
    from pipeline.runtime.engine import Engine

    engine = Engine(cfg, Path(".cache/logs"))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        engine.start()
        sub = engine.subscribe(engine.voice_session)
        started = engine.start_voice()
        if not started["delivering"]:  # the mic thread keeps trying and reports what failed
            print(f"no audio from {started['input']!r} yet; waiting for it", file=sys.stderr, flush=True)
        print(f"listening on {started['input']!r}, speaking on {started['output']!r}; Ctrl-C to stop", flush=True)
        display = RunDisplay(sys.stdout)

        def show() -> None:
            for ev in sub:
                if isinstance(ev, TurnUpdated):
                    display.turn(ev.turn)
                elif isinstance(ev, Notice):
                    display.notice(ev.level, ev.message)
                elif isinstance(ev, Closed):
                    break

        threading.Thread(target=show, name="run-display", daemon=True).start()
        stop.wait()
        engine.unsubscribe(sub)
    finally:
        engine.stop_voice()
        engine.shutdown()
    return 0
