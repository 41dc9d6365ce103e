"""The session token of kokoro-engine serve: where it comes from (seed 002 §1, §2.4).

In order of preference:
1. ``--token-stdin``: one line ``{"token": "<token>"}`` on stdin, from the app that launched us;
2. ``KOKORO_ENGINE_TOKEN`` in the environment, removed from ``os.environ`` at once so that no
   process we start (Ray's, the embedded llama server, tools) inherits it;
3. neither: a fresh 256-bit token in a 0600 file in the data dir, for a user who starts the
   server by hand; we say where the file is, never what it holds.

A token never goes on a command line, in a query string, in a log line or in a response.
"""
from __future__ import annotations

import json
import os
import secrets
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, MutableMapping

ENV_VAR = "KOKORO_ENGINE_TOKEN"
TOKEN_FILE = "token"
MIN_LEN = 16
# RFC 7230 "tchar": a token must fit in an Authorization header and be one
# Sec-WebSocket-Protocol entry (the subprotocol way of passing it)
TCHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class Token:
    value: str
    source: str  # "stdin", "env" or "file"
    path: Path | None = None  # the file it was written to (source "file")

    def __repr__(self) -> str:  # a traceback or a debug print never shows it
        return f"Token(source={self.source!r}, path={self.path!r})"


def check_token(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise TokenError(f"{where}: the token must be a non-empty string")
    if len(value) < MIN_LEN:
        raise TokenError(f"{where}: the token is too short ({len(value)} characters; at least {MIN_LEN}, "
                         "e.g. 64 hex digits from secrets.token_hex(32))")
    bad = sorted({c for c in value if c not in TCHARS})
    if bad:
        raise TokenError(f"{where}: the token may hold only letters, digits and !#$%&'*+-.^_`|~ "
                         f"(it travels in an HTTP header and a Sec-WebSocket-Protocol entry); "
                         f"it has {len(bad)} other character(s)")
    return value


def read_stdin_token(stream: IO[str]) -> str:
    """One line ``{"token": "..."}``; anything else is a TokenError that does not quote it."""
    line = stream.readline()
    if not line.strip():
        raise TokenError('--token-stdin: expected one line {"token": "<token>"} on stdin, got nothing')
    try:
        obj = json.loads(line)
    except ValueError:
        raise TokenError('--token-stdin: the line on stdin is not JSON; expected {"token": "<token>"}') from None
    if not isinstance(obj, dict) or "token" not in obj:
        raise TokenError('--token-stdin: expected a JSON object with a "token" key, {"token": "<token>"}')
    return check_token(obj["token"], "--token-stdin")


def take_env_token(environ: MutableMapping[str, str]) -> str | None:
    """The env var's value, removed from ``environ`` whatever it holds (checked later)."""
    return environ.pop(ENV_VAR, None)


def write_token_file(directory: Path) -> tuple[str, Path]:
    """A fresh 256-bit token in ``directory``/token, mode 0600, replaced atomically (a reader
    never sees half a token, and a file left with looser modes is not reused)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_hex(32)
    fd, tmp = tempfile.mkstemp(prefix=".token-", dir=directory)  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(value + "\n")
        path = directory / TOKEN_FILE
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return value, path


def remove_token_file(token: Token) -> None:
    """Invalidate a generated token at shutdown (seed 002 §2.4: one token per run): the file
    goes, unless another run has written its own token there since."""
    if token.path is None:
        return
    try:
        if token.path.read_text().strip() == token.value:
            token.path.unlink()
    except OSError:
        pass


def bootstrap(from_stdin: bool, stdin: IO[str], env_value: str | None, directory: Path) -> Token:
    """The run's token (see the module doc); ``env_value`` is what take_env_token removed."""
    if from_stdin:
        return Token(read_stdin_token(stdin), "stdin")
    if env_value is not None:
        return Token(check_token(env_value, ENV_VAR), "env")
    value, path = write_token_file(directory)
    return Token(value, "file", path)
