"""seed 001 ``file_upload``: a base64 file, at most 100 MB, stored under the data dir.

The size is checked before the payload is decoded (from ``fileSize`` and from the base64
length), the name is reduced to a safe file name (no folders, no dot files: a client never
chooses where it lands), and the file is written 0600 under
``<data dir>/uploads/<conversation>/``. What the next reply is offered of it: the text of a
text file (the first 20000 characters), or an image as a data URL for a vision LLM.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import uuid
from pathlib import Path
from typing import Any

from pipeline.conversation.inputs import TEXT_FILE_MAX_CHARS, InputError

MAX_BYTES = 100 * 1024 * 1024  # seed 001: "Base64 encoded, 100MB limit"
IMAGE_MAX_BYTES = 10 * 1024 * 1024  # larger images are stored but not sent to the LLM
TEXT_TYPES = (".txt", ".md", ".csv", ".json", ".log", ".py", ".js", ".ts", ".html", ".xml", ".yaml", ".yml",
              ".toml", ".ini", ".srt")
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp"}


def safe_name(name: str) -> str:
    base = re.split(r"[\\/]", name)[-1]
    base = re.sub(r"[^\w.\- ]", "_", base).strip(" .")
    return (base or "upload")[:120]


def decoded_size(b64: str) -> int:
    """The size of what ``b64`` decodes to, without decoding it."""
    n = len(b64.rstrip("="))
    return n * 3 // 4


def store_upload(msg: dict[str, Any], data_dir: Path, session_id: str) -> dict[str, Any]:
    """The message to send on: the file stored, ``data`` replaced by what the reply is offered."""
    data = msg.get("data") or ""
    if data.startswith("data:"):  # a data URL: the payload after the comma
        data = data.split(",", 1)[-1]
    declared = msg.get("fileSize")
    if isinstance(declared, int) and declared > MAX_BYTES:
        raise InputError("file_too_large", f"file_upload is limited to 100 MB; fileSize says {declared} bytes")
    if decoded_size(data) > MAX_BYTES:
        raise InputError("file_too_large", f"file_upload is limited to 100 MB; the data is "
                                           f"{decoded_size(data)} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("invalid_base64", "file_upload.data is not valid base64") from None
    name = safe_name(msg["fileName"])
    folder = data_dir / "uploads" / safe_name(session_id)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{uuid.uuid4().hex[:8]}-{name}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    out = {k: v for k, v in msg.items() if k != "data"}
    out.update(fileName=name, fileSize=len(raw), stored_path=str(path))
    ext, ftype = Path(name).suffix.lower(), str(msg.get("fileType") or "")
    if ftype.startswith("text/") or ext in TEXT_TYPES:
        out["content_text"] = raw[:TEXT_FILE_MAX_CHARS * 4].decode("utf-8", errors="replace")[:TEXT_FILE_MAX_CHARS]
    elif (ftype.startswith("image/") or ext in IMAGE_TYPES) and len(raw) <= IMAGE_MAX_BYTES:
        mime = ftype if ftype.startswith("image/") else IMAGE_TYPES.get(ext, "image/png")
        out["image_url"] = f"data:{mime};base64,{data}"
    return out
