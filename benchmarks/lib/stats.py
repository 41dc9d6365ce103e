"""Rounded summaries of measured values, as the benchmarks' JSON holds them."""
from __future__ import annotations

from typing import Any

import numpy as np


def pct(values: list[float], qs=(50, 95), mean: bool = True, maximum: bool = False) -> dict[str, Any]:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    out: dict[str, Any] = {"n": int(v.size)}
    if v.size == 0:
        return out
    for q in qs:
        out[f"p{q}"] = round(float(np.percentile(v, q)), 4)
    if mean:
        out["mean"] = round(float(v.mean()), 4)
    if maximum:
        out["max"] = round(float(v.max()), 4)
    return out


def r4(x: Any) -> Any:
    return None if x is None else round(float(x), 4)
