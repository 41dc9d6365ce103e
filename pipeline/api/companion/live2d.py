"""seed 001's ``live2d`` commands for a client's model (from its ``model_info``).

An emotion cue in a reply ("[happy]") becomes the commands that show it on the client's
model: its expression (``expressionIndex`` into the model's expressions, and the name),
a motion (``group``, ``index``), or, for a model with no expression for it, the face
parameters that show it (``parameter_batch``). The maps are ``avatar.emotion``'s: the
same cue looks the same in the engine's own window and in a front end.
"""
from __future__ import annotations

import re
from typing import Any

from avatar.emotion import ExpressionMap, split_emotions
from avatar.params import STANDARD

# what an emotion does to a face that has no expression for it (logical parameter -> value)
EMOTION_PARAMS: dict[str, dict[str, float]] = {
    "neutral": {"mouth_form": 0.0, "eye_l_smile": 0.0, "eye_r_smile": 0.0, "brow_l_y": 0.0, "brow_r_y": 0.0},
    "happy": {"mouth_form": 1.0, "eye_l_smile": 1.0, "eye_r_smile": 1.0},
    "excited": {"mouth_form": 1.0, "eye_l_smile": 0.6, "eye_r_smile": 0.6, "brow_l_y": 0.5, "brow_r_y": 0.5},
    "surprised": {"eye_l_open": 1.2, "eye_r_open": 1.2, "brow_l_y": 0.8, "brow_r_y": 0.8},
    "shy": {"cheek": 1.0, "eye_ball_y": -0.5},
    "thinking": {"eye_ball_x": 0.5, "eye_ball_y": 0.5, "brow_l_y": 0.3},
    "sad": {"mouth_form": -1.0, "brow_l_y": -0.5, "brow_r_y": -0.5},
    "scared": {"mouth_form": -0.5, "brow_l_y": 0.6, "brow_r_y": 0.6, "eye_l_open": 1.1, "eye_r_open": 1.1},
    "angry": {"mouth_form": -0.8, "brow_l_angle": -1.0, "brow_r_angle": -1.0},
}
_V3 = re.compile(r"^Param[A-Z]")


def _names(items: Any) -> list[str]:
    """Names from a list of strings or of objects with a name/id (model_info varies by SDK)."""
    out = []
    for it in items if isinstance(items, list) else []:
        name = it.get("name") or it.get("Name") or it.get("id") or it.get("Id") if isinstance(it, dict) else it
        if isinstance(name, str) and name:
            out.append(name)
    return out


class ModelView:
    """The client's model as its ``model_info`` describes it (empty: no model_info yet)."""

    def __init__(self, model_info: dict[str, Any] | None = None) -> None:
        info = model_info if isinstance(model_info, dict) else {}
        self.known = bool(info)
        self.expressions = _names(info.get("expressions"))
        motions = info.get("motions") if isinstance(info.get("motions"), dict) else {}
        self.motions = {str(g): (m if isinstance(m, int) else len(m) if isinstance(m, list) else 1)
                        for g, m in motions.items()}
        self.params = set(_names(info.get("parameters")))
        self.param_map = {k: v for k, v in (info.get("paramMap") or {}).items()
                          if isinstance(k, str) and isinstance(v, str)} if isinstance(info.get("paramMap"), dict) else {}
        self.map = ExpressionMap.build(self.expressions, self.motions, model_name=str(info.get("name", "")))
        self.v3 = not self.params or any(_V3.match(p) for p in self.params)

    def param_id(self, logical: str) -> str | None:
        """The model's id of a logical parameter (its paramMap first), or None if it has none."""
        if logical in self.param_map:
            return self.param_map[logical]
        pair = STANDARD.get(logical)
        if pair is None:
            return None
        real = pair[1] if self.v3 else pair[0]
        return real if not self.params or real in self.params else None

    def cue(self, emotion: str) -> list[dict[str, Any]]:
        """The commands that show ``emotion`` on this model."""
        expr, motion = self.map.lookup(emotion)
        out: list[dict[str, Any]] = []
        if expr is not None:
            out.append({"type": "live2d", "action": "expression", "expressionIndex": self.expressions.index(expr),
                        "expression": expr})
        elif not self.known:  # nothing known of the model: by name, as the seed allows
            out.append({"type": "live2d", "action": "expression", "expression": emotion})
        else:
            batch = [{"id": pid, "value": v} for name, v in EMOTION_PARAMS.get(emotion, {}).items()
                     if (pid := self.param_id(name)) is not None]
            if batch:
                out.append({"type": "live2d", "action": "parameter_batch", "parameters": batch})
        if motion is not None:
            out.append({"type": "live2d", "action": "motion", "group": motion[0], "index": motion[1]})
        return out

    def mouth_closed(self) -> dict[str, Any] | None:
        """A reply was cut: the mouth closes at once, whatever the client's lip-sync still holds."""
        pid = self.param_id("mouth_open")
        return {"type": "live2d", "action": "parameter", "parameterId": pid, "value": 0} if pid else None

    def timeline(self, text: str) -> list[dict[str, Any]]:
        """seed 001's audio timeline for a chunk: each cue at the percentage of the chunk's audio
        where its words are spoken (the words spread evenly over the audio, as heard_text does)."""
        clean, cues = split_emotions(text)
        out = []
        for pos, emotion in cues:
            commands = self.cue(emotion)
            if commands:
                out.append({"timing": round(100.0 * pos / max(1, len(clean)), 1), "commands": commands})
        return out
