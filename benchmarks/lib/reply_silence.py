"""The silences inside a heard reply, from the output signal, and which of them the text implies.

A reply is heard from its first loud 10 ms frame to its last. A silent run is 50 ms or more of
frames below ``threshold_db`` under the reply's loudest frame. A run inside one chunk's audio is
the voice's own pause (Kokoro put it there for a comma or a sentence end): the text implies it.
A run at a seam between two chunks is the pipeline's; the text implies at most 0.3 s there after
a sentence end, 0.15 s after a clause end, nothing mid-clause. What is left over is a stall.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio.convert import read_wav

FRAME_S = 0.01
MIN_RUN_S = 0.05
SENTENCE_PAUSE_S = 0.3
CLAUSE_PAUSE_S = 0.15


def implied_pause(text_before: str) -> float:
    t = text_before.rstrip().rstrip("\"')]*")
    if t.endswith((".", "!", "?", "…")):
        return SENTENCE_PAUSE_S
    if t.endswith((",", ";", ":", "—", "–")):
        return CLAUSE_PAUSE_S
    return 0.0


def silent_runs(x: np.ndarray, rate: int, threshold_db: float = -35.0) -> tuple[list[tuple[int, int]], int, int]:
    """([(start, end) sample of each silent run inside the reply], first loud, last loud sample)."""
    hop = int(rate * FRAME_S)
    n = len(x) // hop
    if n == 0:
        return [], 0, 0
    rms = np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(axis=1)) + 1e-9
    loud = 20 * np.log10(rms / rms.max()) > threshold_db
    idx = np.flatnonzero(loud)
    if len(idx) == 0:
        return [], 0, 0
    first, last = idx[0], idx[-1]
    runs, start = [], None
    for i in range(first, last + 1):
        if not loud[i] and start is None:
            start = i
        elif loud[i] and start is not None:
            if (i - start) * FRAME_S >= MIN_RUN_S:
                runs.append((start * hop, i * hop))
            start = None
    return runs, first * hop, (last + 1) * hop


def reply_silences(wav: str | Path, chunks: list[dict[str, Any]], threshold_db: float = -35.0) -> dict[str, Any]:
    """The reply's silences and stalls. ``chunks``: the player's chunks of this reply, with their
    ``sample_start``/``sample_end`` in the WAV and their text."""
    pcm, rate = read_wav(wav)
    runs, first, last = silent_runs(pcm.astype(np.float64), rate, threshold_db)
    seams = []  # (end of chunk k, start of chunk k+1, text of chunk k)
    cs = sorted((c for c in chunks if c.get("sample_start") is not None), key=lambda c: c["sample_start"])
    for a, b in zip(cs, cs[1:]):
        seams.append((a.get("sample_end") or b["sample_start"], b["sample_start"], a.get("text", "")))
    out_runs, stalls = [], []
    for s, e in runs:
        # a seam inside the run (its chunk ends within it or just after: Kokoro pads ~0.1 s)
        seam = next((sm for sm in seams if s - 0.02 * rate <= sm[0] <= e + 0.15 * rate or s <= sm[1] <= e), None)
        length = (e - s) / rate
        implied = length if seam is None else implied_pause(seam[2])
        stall = max(0.0, length - implied)
        out_runs.append({"t_s": round((s - first) / rate, 3), "silence_s": round(length, 3),
                         "at_seam": seam is not None, "after": seam[2][-30:] if seam else None,
                         "stall_s": round(stall, 3)})
        stalls.append(stall)
    return {"heard_s": round((last - first) / rate, 3), "chunks": len(cs),
            "longest_silence_s": round(max((r["silence_s"] for r in out_runs), default=0.0), 3),
            "longest_stall_s": round(max(stalls, default=0.0), 3), "stall_total_s": round(sum(stalls), 3),
            "runs": out_runs}
