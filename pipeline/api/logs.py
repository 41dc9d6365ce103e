"""Logging for kokoro-engine serve: everything to stderr, nothing secret in it.

The token never reaches a log by construction; ``RedactFilter`` is the last line of defence:
on every handler, it replaces the token (in the message and a traceback) and drops query
strings from logged paths (uvicorn logs "GET /x?..." and "WebSocket /ws?..." lines; the
server never reads a query-string token, but a client may still send one).
"""
from __future__ import annotations

import logging
import re
import sys

REDACTED = "[redacted]"
_QUERY = re.compile(r"(/[^\s\"'?]*)\?[^\s\"']*")


class RedactFilter(logging.Filter):
    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def redact(self, text: str) -> str:
        if self.secret:
            text = text.replace(self.secret, REDACTED)
        return _QUERY.sub(rf"\1?{REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose args do not fit its format: keep what can be kept
            message = f"{record.msg} {record.args}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def setup_logging(secret: str, level: str = "INFO") -> RedactFilter:
    """One stderr handler on the root logger (uvicorn's loggers propagate to it), redacting."""
    redact = RedactFilter(secret)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(redact)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    return redact


def redact_every_handler(redact: RedactFilter) -> None:
    """Add the filter to handlers that libraries installed on their own loggers (Ray does, at
    ray.init), which records reach without passing the root's."""
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in lg.handlers:
            if redact not in h.filters:
                h.addFilter(redact)
