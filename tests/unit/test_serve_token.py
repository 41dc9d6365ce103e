"""kokoro-engine serve's session token: stdin JSON, the environment variable, a generated file."""
from __future__ import annotations

import io
import os
import stat

import pytest

from pipeline.api.session_token import (ENV_VAR, Token, TokenError, bootstrap, check_token, read_stdin_token,
                                        remove_token_file, take_env_token, write_token_file)

GOOD = "0123456789abcdef" * 4


def test_stdin_line_gives_the_token():
    assert read_stdin_token(io.StringIO('{"token": "%s"}\n' % GOOD)) == GOOD


def test_stdin_reads_only_the_first_line():
    stream = io.StringIO('{"token": "%s"}\nmore input\n' % GOOD)
    assert read_stdin_token(stream) == GOOD
    assert stream.read() == "more input\n"  # left for whoever reads stdin next


@pytest.mark.parametrize("line,why", [
    ("", "got nothing"),
    ("\n", "got nothing"),
    (GOOD + "\n", "not JSON"),  # the bare token, not the JSON line
    ('["%s"]\n' % GOOD, "JSON object"),
    ('{"tok": "%s"}\n' % GOOD, '"token" key'),
    ('{"token": 12345678901234567890}\n', "non-empty string"),
    ('{"token": ""}\n', "non-empty string"),
    ('{"token": null}\n', "non-empty string"),
    ('{"token": "short"}\n', "too short"),
    ('{"token": "%s"}\n' % (GOOD[:20] + " " + GOOD[20:]), "may hold only"),  # no header/subprotocol fit
    ('{"token": "%s"}\n' % (GOOD + ",x"), "may hold only"),
])
def test_bad_stdin_is_a_clear_error(line, why):
    with pytest.raises(TokenError, match=why) as e:
        read_stdin_token(io.StringIO(line))
    assert GOOD not in str(e.value)  # the error never quotes what it was given


def test_env_token_is_removed_from_the_environment(monkeypatch):
    monkeypatch.setenv(ENV_VAR, GOOD)
    assert take_env_token(os.environ) == GOOD
    assert ENV_VAR not in os.environ
    assert take_env_token(os.environ) is None


def test_bootstrap_prefers_stdin_then_env():
    stdin = io.StringIO('{"token": "%s"}\n' % GOOD)
    other = "f" * 64
    assert bootstrap(True, stdin, other, directory=None) == Token(GOOD, "stdin")
    assert bootstrap(False, io.StringIO(), other, directory=None) == Token(other, "env")


def test_bad_env_token_is_refused():
    with pytest.raises(TokenError, match=ENV_VAR):
        bootstrap(False, io.StringIO(), "", directory=None)


def test_generated_token_file_is_private_and_the_token_is_not_printed(tmp_path, capsys):
    d = tmp_path / "data"
    tok = bootstrap(False, io.StringIO(), None, d)
    assert tok.source == "file" and tok.path == d / "token"
    assert len(tok.value) == 64 and int(tok.value, 16) >= 0  # 256 bits as hex
    assert tok.path.read_text().strip() == tok.value
    assert stat.S_IMODE(tok.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    out = capsys.readouterr()
    assert tok.value not in out.out + out.err
    assert tok.value not in repr(tok) and tok.value not in str(tok)
    assert [p.name for p in d.iterdir()] == ["token"]  # no temporary file left


def test_each_run_gets_a_new_token_and_a_loose_old_file_is_replaced(tmp_path):
    old = tmp_path / "token"
    old.write_text("x" * 64)
    old.chmod(0o644)
    value, path = write_token_file(tmp_path)
    assert path == old and value != "x" * 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert write_token_file(tmp_path)[0] != value


def test_remove_token_file_leaves_another_runs_token(tmp_path):
    tok = bootstrap(False, io.StringIO(), None, tmp_path)
    other = bootstrap(False, io.StringIO(), None, tmp_path)  # a second server wrote its own since
    remove_token_file(tok)
    assert other.path.exists()
    remove_token_file(other)
    assert not other.path.exists()


def test_check_token_accepts_hex_and_base64url():
    assert check_token(GOOD, "x") == GOOD
    assert check_token("Ab-_" * 8, "x") == "Ab-_" * 8
