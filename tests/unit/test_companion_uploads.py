"""seed 001 file_upload: checked before it is decoded, stored where the client cannot choose."""
from __future__ import annotations

import base64
import stat

import pytest

from pipeline.api.companion import uploads
from pipeline.conversation.inputs import InputError, describe_input


def upload(data: bytes | str, name: str = "notes.txt", ftype: str = "text/plain", **kw) -> dict:
    b64 = data if isinstance(data, str) else base64.b64encode(data).decode()
    return {"type": "file_upload", "fileName": name, "fileType": ftype, "fileSize": kw.pop("size", None), "data": b64,
            **kw}


def test_a_text_file_is_stored_0600_and_its_text_offered(tmp_path):
    out = uploads.store_upload(upload(b"My cat is called Miso.\n"), tmp_path, "conv-1")
    path = tmp_path / "uploads" / "conv-1"
    [stored] = list(path.iterdir())
    assert stored.read_bytes() == b"My cat is called Miso.\n" and str(stored) == out["stored_path"]
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert "data" not in out and out["fileSize"] == 23
    assert "Miso" in describe_input("file_upload", out)


def test_names_never_choose_the_folder(tmp_path):
    out = uploads.store_upload(upload(b"x", name="../../etc/passwd"), tmp_path, "../escape")
    p = tmp_path / "uploads"
    assert out["stored_path"].startswith(str(p)) and out["fileName"] == "passwd"
    assert [d.name for d in p.iterdir()] == ["escape"]
    assert uploads.safe_name("...") == "upload" and uploads.safe_name(".bashrc") == "bashrc"


def test_an_image_is_offered_as_a_data_url(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
    out = uploads.store_upload(upload(png, name="cat.png", ftype="image/png"), tmp_path, "c")
    assert out["image_url"] == "data:image/png;base64," + base64.b64encode(png).decode()


def test_the_100_mb_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    decoded = []
    monkeypatch.setattr(uploads.base64, "b64decode", lambda *a, **k: decoded.append(1))
    with pytest.raises(InputError) as e:  # what it says it is
        uploads.store_upload(upload("aGk=", size=101 * 2**20), tmp_path, "c")
    assert e.value.code == "file_too_large"
    big = "A" * (uploads.MAX_BYTES * 4 // 3 + 8)  # what it is
    with pytest.raises(InputError) as e:
        uploads.store_upload(upload(big), tmp_path, "c")
    assert e.value.code == "file_too_large" and decoded == []
    assert not (tmp_path / "uploads").exists()


def test_bad_base64_is_a_clear_error(tmp_path):
    with pytest.raises(InputError) as e:
        uploads.store_upload(upload("not base64 at all!"), tmp_path, "c")
    assert e.value.code == "invalid_base64"
