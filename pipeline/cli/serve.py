"""kokoro-engine serve: the engine behind a local HTTP + WebSocket server (pipeline/api).

Order matters: the token leaves the environment first (nothing we start inherits it), stdout
is claimed for the one ready line, the address is checked and bound, the engine starts, and
only then does the server accept clients and print the ready line. SIGTERM/SIGINT: the open
WebSockets are told and closed, uvicorn stops, the engine and Ray stop, exit 0.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from typing import Any, Iterator, TextIO

from pipeline.api.session_token import ENV_VAR, Token, TokenError, bootstrap, remove_token_file, take_env_token
from pipeline.config import Config, data_dir


def add_parser(sub: Any) -> argparse.ArgumentParser:
    s = sub.add_parser("serve", help="the engine as a local HTTP + WebSocket server (token required)")
    s.add_argument("--host", help="address to bind (default server.host: 127.0.0.1); another than loopback "
                                  "needs --allow-remote")
    s.add_argument("--port", type=int, help="port (default server.port: 8765); 0 picks a free one, which "
                                            "the ready line on stdout names")
    s.add_argument("--token-stdin", action="store_true",
                   help='read the session token as one line {"token": "<token>"} on stdin (else '
                        f'${ENV_VAR}, else a generated one in a 0600 file in the data dir)')
    s.add_argument("--mic", action="store_true", help="also run the voice conversation on this machine's mic")
    s.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than loopback (reachable from the network, token only, no TLS)")
    return s


def claim_stdout() -> TextIO:
    """stdout carries one line, the ready line. Everything else printed in this process
    (libraries' banners, C code, child processes that inherit fd 1) goes to stderr."""
    sys.stdout.flush()
    ready_fd = os.dup(1)  # not inheritable (PEP 446): children never get it
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(ready_fd, "w")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _ray_leaves_sigterm_alone() -> Iterator[None]:
    """ray.init (Ray 2.60, pinned) installs a SIGTERM handler that exits wherever the start is:
    a SIGTERM in the middle of ray.init then left Ray's agents running, orphaned, after the
    clean-up (seen here). Our deferring handler stays in place instead."""
    try:
        import ray._private.utils as ray_utils
    except ImportError:
        yield
        return
    original = getattr(ray_utils, "set_sigterm_handler", None)
    if original is None:
        yield
        return
    ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = original


def start_engine(engine: Any, **kw: Any) -> bool:
    """``engine.start()``; False: a SIGTERM/SIGINT came meanwhile, and the engine, started, is
    to be stopped at once. The signal is remembered, not raised: an exception in the middle of
    the start (Ray half up) leaves processes that its clean-up does not know of. A second
    signal is raised (stop at once, whatever is left)."""
    signals: list[int] = []

    def defer(signum: int, frame: Any) -> None:
        signals.append(signum)
        if len(signals) > 1:
            raise KeyboardInterrupt
        _say("stopping once the engine has started (signal again to stop at once)")

    previous = {sig: signal.signal(sig, defer) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with _ray_leaves_sigterm_alone():
            engine.start(**kw)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return not signals


def start_voice(engine: Any) -> bool:
    """--mic: the voice conversation on this machine's sound devices; without one, say so and
    serve text only."""
    from pipeline.audio.devices import AudioDeviceError

    try:
        started = engine.start_voice()
    except AudioDeviceError as e:
        _say(f"warning: --mic: {e}; serving text only")
        return False
    _say(f"--mic: listening on {started['input']!r}, speaking on {started['output']!r} "
         f"(join it with /ws?session={started['session_id']})")
    return True


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds as Ctrl-C does: through every clean-up below


def cmd_serve(args: argparse.Namespace, cfg: Config) -> int:
    env_token = take_env_token(os.environ)  # first of all: no process started below may inherit it
    ready_out = claim_stdout()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    from pipeline.api.exposure import ExposureError, bind_address, check_bind, is_loopback

    host = args.host if args.host is not None else cfg.server.host
    port = args.port if args.port is not None else cfg.server.port
    allow_remote = args.allow_remote or cfg.server.allow_remote
    try:
        check_bind(host, allow_remote)
        if not 0 <= port <= 65535:
            raise ExposureError(f"--port {port}: must be 0..65535 (0: a free port)")
    except ExposureError as e:
        _say(f"error: {e}")
        return 2
    if not is_loopback(host):
        _say(f"warning: --allow-remote: listening on {host}, reachable from the network; anyone who reaches "
             "it needs only the token, which travels unencrypted (no TLS)")
    try:
        token = bootstrap(args.token_stdin, sys.stdin, env_token, data_dir(cfg))
    except (TokenError, OSError) as e:
        _say(f"error: {e}")
        return 2
    if args.token_stdin and env_token is not None:
        _say(f"warning: both --token-stdin and ${ENV_VAR} given: using stdin's; the variable was removed")
    if token.path is not None:
        _say(f"no token given (--token-stdin or ${ENV_VAR}): generated one in {token.path} (mode 0600); "
             "clients read it from there. It is removed when the server stops")
    from pipeline.api.logs import setup_logging
    from pipeline.api.server import bind_socket

    redact = setup_logging(token.value, cfg.engine.log_level)
    try:
        try:
            sock = bind_socket(bind_address(host), port)
        except OSError as e:
            _say(f"error: cannot listen on {host}:{port}: {e.strerror or e}")
            return 2
        try:
            return _serve(args, cfg, token, sock, host, allow_remote, redact, ready_out)
        finally:
            sock.close()
    except KeyboardInterrupt:  # before the engine existed
        _say("interrupted")
        return 0
    finally:
        remove_token_file(token)


def _serve(args, cfg, token: Token, sock, host: str, allow_remote: bool, redact, ready_out: TextIO) -> int:
    from pipeline.api.app import create_app
    from pipeline.api.exposure import HostPolicy
    from pipeline.api.hub import Hub
    from pipeline.api.logs import redact_every_handler
    from pipeline.api.server import ShellServer, uvicorn_config
    from pipeline.api.state import ShellState
    from pipeline.config import cors_origins
    from pipeline.runtime.engine import Engine
    from pipeline.runtime.ray_init import shutdown_ray

    log_dir = data_dir(cfg) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    engine = Engine(cfg, log_dir)
    try:
        if not start_engine(engine, devices=args.mic):  # the sound devices' stages only for --mic
            return 0
        redact_every_handler(redact)  # Ray added handlers of its own
        shell = ShellState(token.value, Hub(engine), cfg.server.ws_auth_timeout_s, mic_requested=args.mic)
        if args.mic:
            shell.voice_active = start_voice(engine)
        app = create_app(shell, HostPolicy.for_bind(host, allow_remote), cors_origins(cfg))
        bound_host, bound_port = sock.getsockname()[:2]

        def ready() -> None:
            line = {"event": "ready", "host": bound_host, "port": bound_port, "pid": os.getpid(),
                    "version": shell.version, "token_source": token.source}
            if token.path is not None:
                line["token_file"] = str(token.path)
            ready_out.write(json.dumps(line) + "\n")
            ready_out.flush()
            _say(f"serving on {bound_host} port {bound_port}")

        # uvicorn takes SIGTERM/SIGINT over while it serves, and gives them back after
        server = ShellServer(uvicorn_config(app, cfg.server.ws_max_message_mb), ready, shell.sessions.close_all)
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # a second signal while the engine started, or one before uvicorn ran
        _say("interrupted: stopping the engine")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # the clean-up runs to its end
            signal.signal(sig, signal.SIG_IGN)
        engine.shutdown()
        shutdown_ray()
        _say("stopped")
    return 0
