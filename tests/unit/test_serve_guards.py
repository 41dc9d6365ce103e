"""kokoro-engine serve's guards as pure functions: token comparison, the WebSocket handshake's
credentials, the bind rule, the Host check, and the log redaction."""
from __future__ import annotations

import logging
import sys

import pytest

from pipeline.api.auth import (BEARER_MARKER, Handshake, bearer_of, decide_handshake, parse_subprotocols,
                               tokens_match)
from pipeline.api.exposure import ExposureError, HostPolicy, bind_address, check_bind, split_host
from pipeline.api.logs import REDACTED, RedactFilter

TOKEN = "0123456789abcdef" * 4
WRONG = "f" * 64


# ------------------------------------------------------------------ tokens
def test_tokens_match():
    assert tokens_match(TOKEN, TOKEN)
    assert not tokens_match(WRONG, TOKEN)
    assert not tokens_match(TOKEN[:-1], TOKEN)
    assert not tokens_match("", TOKEN)
    assert not tokens_match(None, TOKEN)
    assert not tokens_match("é" * 64, TOKEN)  # non-ASCII does not raise


@pytest.mark.parametrize("value,expected", [
    (f"Bearer {TOKEN}", TOKEN), (f"bearer {TOKEN}", TOKEN), (f"  Bearer   {TOKEN} ", TOKEN),
    (f"Basic {TOKEN}", None), ("Bearer", None), ("Bearer ", None), (TOKEN, None), ("", None),
])
def test_bearer_of(value, expected):
    assert bearer_of(value) == expected


# ------------------------------------------------------------------ the WebSocket handshake
def test_parse_subprotocols_joins_repeated_and_comma_separated_headers():
    assert parse_subprotocols(["bearer, abc", "chat ,x,, "]) == ["bearer", "abc", "chat", "x"]
    assert parse_subprotocols([]) == []


@pytest.mark.parametrize("authorization,offers,expected", [
    # (a) the header
    (f"Bearer {TOKEN}", [], Handshake("ok")),
    (f"Bearer {TOKEN}", ["chat"], Handshake("ok")),  # an unknown protocol is not selected
    (f"Bearer {WRONG}", [], "deny"),
    (f"Basic {TOKEN}", [], "deny"),
    ("", [], "deny"),  # a header that is there counts, even empty
    # (b) the subprotocol marker: selected, the token never is
    (None, [BEARER_MARKER, TOKEN], Handshake("ok", BEARER_MARKER)),
    (None, ["chat", BEARER_MARKER, TOKEN], Handshake("ok", BEARER_MARKER)),
    (f"Bearer {TOKEN}", [BEARER_MARKER, TOKEN], Handshake("ok", BEARER_MARKER)),
    (None, [BEARER_MARKER, WRONG], "deny"),
    (None, [BEARER_MARKER], "deny"),
    (None, [TOKEN, BEARER_MARKER], "deny"),  # the token must come after the marker
    (f"Bearer {WRONG}", [BEARER_MARKER, TOKEN], "deny"),  # every credential given must be right
    (f"Bearer {TOKEN}", [BEARER_MARKER, WRONG], "deny"),
    # a token offered alone: refused, since it could only be echoed or left unselected
    (None, [TOKEN], "deny"),
    (f"Bearer {TOKEN}", [TOKEN], "deny"),
    # (c) nothing in the handshake: the first message decides
    (None, [], Handshake("first_message")),
    (None, ["chat"], Handshake("first_message")),
    (None, [WRONG], Handshake("first_message")),  # not the token: just an unknown protocol
])
def test_decide_handshake(authorization, offers, expected):
    got = decide_handshake(authorization, offers, TOKEN)
    if expected == "deny":
        assert got.outcome == "deny" and got.subprotocol is None and got.reason
        assert TOKEN not in got.reason and WRONG not in got.reason
    else:
        assert got == expected


# ------------------------------------------------------------------ the bind rule
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_binds_without_allow_remote(host):
    check_bind(host, allow_remote=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1"])
def test_other_addresses_need_allow_remote(host):
    with pytest.raises(ExposureError, match="--allow-remote"):
        check_bind(host, allow_remote=False)
    check_bind(host, allow_remote=True)


@pytest.mark.parametrize("host", ["example.com", "evil.example", "", "127.0.0.1:80"])
def test_host_must_be_an_address(host):
    with pytest.raises(ExposureError, match="IP address"):
        check_bind(host, allow_remote=True)


def test_localhost_binds_ipv4_loopback():
    assert bind_address("localhost") == "127.0.0.1"
    assert bind_address("::1") == "::1"


# ------------------------------------------------------------------ the Host header
@pytest.mark.parametrize("value,name", [
    ("127.0.0.1", "127.0.0.1"), ("127.0.0.1:8765", "127.0.0.1"), ("LOCALHOST:1", "localhost"),
    ("localhost.", "localhost"), ("[::1]", "::1"), ("[::1]:8765", "::1"), ("evil.example:80", "evil.example"),
    ("::1", None), ("[::1", None), ("[evil]:80", None), ("localhost:http", None), ("localhost:", None), ("", None),
])
def test_split_host(value, name):
    assert split_host(value) == name


@pytest.mark.parametrize("value,ok", [
    ("127.0.0.1:8765", True), ("localhost", True), ("localhost:9000", True), ("[::1]:8765", True),
    ("[0:0:0:0:0:0:0:1]", True),  # the same address, written out
    ("evil.example", False), ("evil.example:8765", False), ("localhost.evil.example", False),
    ("127.0.0.2", False), ("192.168.1.5:8765", False), ("[::1]x", False), (None, False), ("", False),
])
def test_loopback_policy(value, ok):
    assert HostPolicy.for_bind("127.0.0.1", allow_remote=False).allows(value) is ok


def test_remote_policy_adds_the_bound_address_only():
    p = HostPolicy.for_bind("192.168.1.5", allow_remote=True)
    assert p.allows("192.168.1.5:8765") and p.allows("localhost:8765")
    assert not p.allows("192.168.1.6:8765") and not p.allows("evil.example")


def test_wildcard_policy_admits_addresses_never_names():
    p = HostPolicy.for_bind("0.0.0.0", allow_remote=True)
    assert p.allows("192.168.1.5:8765") and p.allows("[fe80::1]:8765") and p.allows("localhost")
    assert not p.allows("evil.example:8765") and not p.allows("my-desktop.lan")


# ------------------------------------------------------------------ log redaction
def _record(msg, *args, exc_info=None):
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args or None, exc_info)


def test_redact_filter_removes_the_token_and_query_strings():
    f = RedactFilter(TOKEN)
    rec = _record('%s - "%s %s HTTP/1.1" %d', "127.0.0.1:5", "GET", f"/status?token={TOKEN}&a=1", 401)
    assert f.filter(rec)
    msg = rec.getMessage()
    assert TOKEN not in msg and "token=" not in msg
    assert msg == f'127.0.0.1:5 - "GET /status?{REDACTED} HTTP/1.1" 401'
    ws = _record('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", f"/ws?access_token={TOKEN}")
    f.filter(ws)
    assert ws.getMessage() == f'127.0.0.1:5 - "WebSocket /ws?{REDACTED}" [accepted]'
    plain = _record("handler saw %s in a message", TOKEN)
    f.filter(plain)
    assert plain.getMessage() == f"handler saw {REDACTED} in a message"


def test_redact_filter_covers_tracebacks():
    try:
        raise ValueError(f"bad {TOKEN}")
    except ValueError:
        rec = _record("failed", exc_info=sys.exc_info())
    RedactFilter(TOKEN).filter(rec)
    text = logging.Formatter().format(rec)
    assert "ValueError: bad " + REDACTED in text and TOKEN not in text
