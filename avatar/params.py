"""Parameter names across Cubism generations, and the per-model ``kokoro.json`` override.

Code asks for logical names (``mouth_open``, ``eye_l_open``, ``angle_x`` ...); a model
names the same parameter ``PARAM_MOUTH_OPEN_Y`` (Cubism 2) or ``ParamMouthOpenY``
(Cubism 3+). ``kokoro.json`` beside the settings file fixes models that use other
names or ranges::

    {"params": {"mouth_open": "PARAM_MOUTH_A"}, "mouth_max": 2.0,
     "expressions": {"happy": "f05"}, "motions": {"happy": ["tap_body", 0]},
     "hit_areas": {"head": "D_REF.HEAD"}}
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from avatar.settings import AvatarError

OVERRIDE_FILE = "kokoro.json"

# logical name -> (Cubism 2 id, Cubism 3 id): the standard ids of both SDKs
STANDARD: dict[str, tuple[str, str]] = {
    "mouth_open": ("PARAM_MOUTH_OPEN_Y", "ParamMouthOpenY"),
    "mouth_form": ("PARAM_MOUTH_FORM", "ParamMouthForm"),
    "eye_l_open": ("PARAM_EYE_L_OPEN", "ParamEyeLOpen"),
    "eye_r_open": ("PARAM_EYE_R_OPEN", "ParamEyeROpen"),
    "eye_l_smile": ("PARAM_EYE_L_SMILE", "ParamEyeLSmile"),
    "eye_r_smile": ("PARAM_EYE_R_SMILE", "ParamEyeRSmile"),
    "eye_ball_x": ("PARAM_EYE_BALL_X", "ParamEyeBallX"),
    "eye_ball_y": ("PARAM_EYE_BALL_Y", "ParamEyeBallY"),
    "angle_x": ("PARAM_ANGLE_X", "ParamAngleX"),
    "angle_y": ("PARAM_ANGLE_Y", "ParamAngleY"),
    "angle_z": ("PARAM_ANGLE_Z", "ParamAngleZ"),
    "brow_l_y": ("PARAM_BROW_L_Y", "ParamBrowLY"),
    "brow_r_y": ("PARAM_BROW_R_Y", "ParamBrowRY"),
    "brow_l_x": ("PARAM_BROW_L_X", "ParamBrowLX"),
    "brow_r_x": ("PARAM_BROW_R_X", "ParamBrowRX"),
    "brow_l_angle": ("PARAM_BROW_L_ANGLE", "ParamBrowLAngle"),
    "brow_r_angle": ("PARAM_BROW_R_ANGLE", "ParamBrowRAngle"),
    "brow_l_form": ("PARAM_BROW_L_FORM", "ParamBrowLForm"),
    "brow_r_form": ("PARAM_BROW_R_FORM", "ParamBrowRForm"),
    "body_angle_x": ("PARAM_BODY_ANGLE_X", "ParamBodyAngleX"),
    "body_angle_y": ("PARAM_BODY_ANGLE_Y", "ParamBodyAngleY"),
    "body_angle_z": ("PARAM_BODY_ANGLE_Z", "ParamBodyAngleZ"),
    "breath": ("PARAM_BREATH", "ParamBreath"),
    "cheek": ("PARAM_TERE", "ParamCheek"),  # blush: renamed in Cubism 3
    "hair_front": ("PARAM_HAIR_FRONT", "ParamHairFront"),
    "hair_side": ("PARAM_HAIR_SIDE", "ParamHairSide"),
    "hair_back": ("PARAM_HAIR_BACK", "ParamHairBack"),
}
_BY_REAL = {real: logical for logical, pair in STANDARD.items() for real in pair}
_V2_ID = re.compile(r"^PARAM(_[A-Z0-9]+)+$")
_V3_ID = re.compile(r"^Param([A-Z][a-z0-9]*)+$")


def v2_to_v3(name: str) -> str:
    """PARAM_EYE_L_OPEN -> ParamEyeLOpen (standard table first, then word by word)."""
    if name in _BY_REAL:
        return STANDARD[_BY_REAL[name]][1]
    if not _V2_ID.match(name):
        return name
    return "".join(w.capitalize() for w in name.split("_"))


def v3_to_v2(name: str) -> str:
    """ParamBrowLY -> PARAM_BROW_L_Y (standard table first, then word by word)."""
    if name in _BY_REAL:
        return STANDARD[_BY_REAL[name]][0]
    if not _V3_ID.match(name):
        return name
    return "_".join(w.upper() for w in re.findall(r"[A-Z][a-z0-9]*", name))


def logical_name(real: str) -> str | None:
    """The logical name of a standard id of either generation, or None."""
    return _BY_REAL.get(real)


@dataclass
class ModelOverrides:
    """What ``kokoro.json`` says about one model (all optional)."""
    params: dict[str, str] = field(default_factory=dict)  # logical -> real id
    mouth_max: float | None = None  # value of a fully open mouth (None: the parameter's max)
    expressions: dict[str, str] = field(default_factory=dict)  # emotion -> expression name
    motions: dict[str, tuple[str, int]] = field(default_factory=dict)  # emotion -> (group, index)
    hit_areas: dict[str, str] = field(default_factory=dict)  # area name -> drawable id (added/replaced)


def _str_map(v, key: str, path: Path) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) and x for k, x in v.items()):
        raise AvatarError(f"{path}: {key!r} must map names to non-empty strings")
    return dict(v)


def parse_overrides(data: object, path: Path = Path(OVERRIDE_FILE)) -> ModelOverrides:
    if not isinstance(data, dict):
        raise AvatarError(f"{path}: expected a JSON object")
    unknown = set(data) - {"params", "mouth_max", "expressions", "motions", "hit_areas"}
    if unknown:
        raise AvatarError(f"{path}: unknown key(s) {sorted(unknown)} "
                          "(known: params, mouth_max, expressions, motions, hit_areas)")
    o = ModelOverrides()
    if "params" in data:
        o.params = _str_map(data["params"], "params", path)
    if "mouth_max" in data:
        m = data["mouth_max"]
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m <= 100:
            raise AvatarError(f"{path}: 'mouth_max' must be a number > 0 (got {m!r})")
        o.mouth_max = float(m)
    if "expressions" in data:
        o.expressions = _str_map(data["expressions"], "expressions", path)
    if "hit_areas" in data:
        o.hit_areas = _str_map(data["hit_areas"], "hit_areas", path)
    for emotion, spec in (data.get("motions") or {}).items():
        ok = (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], str)
              and isinstance(spec[1], int) and not isinstance(spec[1], bool) and spec[1] >= 0)
        if not ok:
            raise AvatarError(f"{path}: motions[{emotion!r}] must be [group, index] (got {spec!r})")
        o.motions[emotion] = (spec[0], spec[1])
    return o


def load_overrides(settings_path: str | Path) -> ModelOverrides:
    """``kokoro.json`` beside the settings file, or no overrides when there is none."""
    path = Path(settings_path).parent / OVERRIDE_FILE
    if not path.is_file():
        return ModelOverrides()
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AvatarError(f"{path}: not valid JSON ({e})") from None
    return parse_overrides(data, path)


class ParamMap:
    """Logical parameter names -> the ids one model uses.

    ``available`` (the model's parameter ids, when known) lets a name written in the
    other generation's style still be found; ``lipsync_ids`` (Cubism 3 settings'
    "LipSync" group) names the mouth when the model does not use the standard id.
    """

    def __init__(self, cubism: int, available: Iterable[str] | None = None,
                 overrides: ModelOverrides | None = None, lipsync_ids: Iterable[str] = ()) -> None:
        if cubism not in (2, 3):
            raise ValueError(f"cubism must be 2 or 3, got {cubism}")
        self.cubism = cubism
        self.available = set(available) if available is not None else None
        self.overrides = overrides or ModelOverrides()
        self.lipsync_ids = list(lipsync_ids)

    def _has(self, real: str) -> bool:
        return self.available is None or real in self.available

    def name(self, logical: str) -> str | None:
        """The model's id for ``logical`` (or for an id given directly), None if it has none."""
        if logical in self.overrides.params:
            return self.overrides.params[logical]
        if logical in STANDARD:
            v2, v3 = STANDARD[logical]
            mine, other = (v2, v3) if self.cubism == 2 else (v3, v2)
        else:  # a real id of either generation
            mine = v2_to_v3(logical) if self.cubism == 3 else v3_to_v2(logical)
            other = logical
        if logical == "mouth_open" and self.lipsync_ids and not (self.available and mine in self.available):
            return self.lipsync_ids[0]
        for cand in (mine, other):
            if self._has(cand):
                return cand
        return None

    def resolve(self, values: dict[str, float]) -> dict[str, float]:
        """{logical or real name: value} -> {model id: value}; names the model lacks are dropped."""
        out: dict[str, float] = {}
        for k, v in values.items():
            real = self.name(k)
            if real is not None:
                out[real] = float(v)
        return out
