"""Live2D model settings files (.model.json, Cubism 2; .model3.json, Cubism 3+): read and check.

Pure Python, no live2d import. The native runtime aborts the whole process on a
missing or malformed file (a C++ ``terminate``, a segfault on a bad .moc), so
everything it would open is checked here first.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


class AvatarError(ValueError):
    """A model, window or store problem the user can act on (never a crash)."""


SETTINGS_SUFFIXES = (".model3.json", ".model.json")
PLAIN_V2_NAME = "model.json"  # many Cubism 2 models use this bare name


def settings_version(path: str | Path) -> int | None:
    """Cubism generation by file name: 3 for *.model3.json, 2 for *.model.json / model.json."""
    name = Path(path).name.lower()
    if name.endswith(".model3.json"):
        return 3
    if name.endswith(".model.json") or name == PLAIN_V2_NAME:
        return 2
    return None


def find_settings(folder: Path) -> list[Path]:
    """Settings files under ``folder`` (any depth), shallowest first; macOS resource forks skipped."""
    found = [p for p in folder.rglob("*") if p.is_file() and settings_version(p)
             and "__MACOSX" not in p.parts and not p.name.startswith("._")]
    return sorted(found, key=lambda p: (len(p.relative_to(folder).parts), str(p)))


@dataclass
class ModelSettings:
    path: Path  # the settings file
    cubism: int  # 2 or 3
    moc: str
    textures: list[str]
    expressions: dict[str, str] = field(default_factory=dict)  # name -> file
    motions: dict[str, list[str]] = field(default_factory=dict)  # group -> files
    hit_areas: list[tuple[str, str]] = field(default_factory=list)  # (name, drawable id)
    physics: str = ""
    pose: str = ""
    lipsync_ids: list[str] = field(default_factory=list)  # Cubism 3 "LipSync" group
    eyeblink_ids: list[str] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        n = self.path.name
        for s in SETTINGS_SUFFIXES:
            if n.lower().endswith(s):
                return n[: -len(s)]
        return self.path.parent.name

    def referenced_files(self) -> list[str]:
        """Every file the runtime will open, relative to ``home``."""
        files = [self.moc, *self.textures, *self.expressions.values()]
        for group in self.motions.values():
            files.extend(group)
        files.extend(f for f in (self.physics, self.pose) if f)
        return files


def _str(v, what: str, path: Path) -> str:
    if not isinstance(v, str) or not v:
        raise AvatarError(f"{path}: {what} must be a non-empty string (got {v!r})")
    return v


def read_settings(path: str | Path) -> ModelSettings:
    """Parse a settings file; AvatarError names the file and what is wrong."""
    p = Path(path)
    version = settings_version(p)
    if version is None:
        raise AvatarError(f"{p}: not a Live2D settings file (expected *.model.json or *.model3.json)")
    if not p.is_file():
        raise AvatarError(f"model settings file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AvatarError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise AvatarError(f"{p}: expected a JSON object at the top")
    return _read_v3(p, data) if version == 3 else _read_v2(p, data)


def _read_v2(p: Path, d: dict) -> ModelSettings:
    tex = d.get("textures")
    if not isinstance(tex, list) or not tex:
        raise AvatarError(f"{p}: 'textures' must be a non-empty list")
    s = ModelSettings(p, 2, _str(d.get("model"), "'model' (the .moc file)", p),
                      [_str(t, "each texture", p) for t in tex])
    for e in d.get("expressions") or []:
        if isinstance(e, dict):
            s.expressions[_str(e.get("name"), "expression 'name'", p)] = _str(e.get("file"), "expression 'file'", p)
    for group, entries in (d.get("motions") or {}).items():
        s.motions[group] = [_str(m.get("file"), f"motion file in {group!r}", p) for m in entries or []
                            if isinstance(m, dict)]
    for h in d.get("hit_areas") or []:
        if isinstance(h, dict) and h.get("name") and h.get("id"):
            s.hit_areas.append((str(h["name"]), str(h["id"])))
    s.physics = d.get("physics") or ""
    s.pose = d.get("pose") or ""
    return s


def _read_v3(p: Path, d: dict) -> ModelSettings:
    refs = d.get("FileReferences")
    if not isinstance(refs, dict):
        raise AvatarError(f"{p}: 'FileReferences' missing")
    tex = refs.get("Textures")
    if not isinstance(tex, list) or not tex:
        raise AvatarError(f"{p}: 'FileReferences.Textures' must be a non-empty list")
    s = ModelSettings(p, 3, _str(refs.get("Moc"), "'FileReferences.Moc' (the .moc3 file)", p),
                      [_str(t, "each texture", p) for t in tex])
    for e in refs.get("Expressions") or []:
        if isinstance(e, dict):
            s.expressions[_str(e.get("Name"), "expression 'Name'", p)] = _str(e.get("File"), "expression 'File'", p)
    for group, entries in (refs.get("Motions") or {}).items():
        s.motions[group] = [_str(m.get("File"), f"motion File in {group!r}", p) for m in entries or []
                            if isinstance(m, dict)]
    for h in d.get("HitAreas") or []:
        if isinstance(h, dict) and h.get("Name") and h.get("Id"):
            s.hit_areas.append((str(h["Name"]), str(h["Id"])))
    s.physics = refs.get("Physics") or ""
    s.pose = refs.get("Pose") or ""
    for g in d.get("Groups") or []:
        if isinstance(g, dict) and g.get("Target", "Parameter") == "Parameter":
            ids = [str(i) for i in g.get("Ids") or []]
            if g.get("Name") == "LipSync":
                s.lipsync_ids = ids
            elif g.get("Name") == "EyeBlink":
                s.eyeblink_ids = ids
    return s


def _inside(home: Path, rel: str) -> Path:
    target = (home / rel).resolve()
    if not target.is_relative_to(home.resolve()):
        raise AvatarError(f"{home}: {rel!r} points outside the model folder")
    return target


def check_files(s: ModelSettings) -> None:
    """Everything the settings reference exists inside the model folder; moc and textures
    look like what they claim. Raises AvatarError naming the first problem."""
    missing = [rel for rel in s.referenced_files() if not _inside(s.home, rel).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise AvatarError(f"{s.path}: referenced file missing: {missing[0]}{more}")
    moc = _inside(s.home, s.moc)
    head = moc.read_bytes()[:8]
    if s.cubism == 2 and not head.startswith(b"moc"):
        raise AvatarError(f"{moc}: not a Cubism 2 .moc file (bad header)")
    if s.cubism == 3 and (not head.startswith(b"MOC3") or moc.stat().st_size < 64):
        raise AvatarError(f"{moc}: not a Cubism 3+ .moc3 file (bad header)")
    for rel in s.textures:
        t = _inside(s.home, rel)
        with open(t, "rb") as f:
            sig = f.read(8)
        if sig != b"\x89PNG\r\n\x1a\n":
            raise AvatarError(f"{t}: texture is not a PNG image")
    json_motions = [m for group in s.motions.values() for m in group if m.lower().endswith(".json")]
    for kind, files in (("expression", s.expressions.values()), ("physics", [s.physics] if s.physics else []),
                        ("pose", [s.pose] if s.pose else []), ("motion", json_motions)):
        for rel in files:
            try:
                json.loads(_inside(s.home, rel).read_text(encoding="utf-8-sig"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise AvatarError(f"{s.home / rel}: {kind} file is not valid JSON ({e})") from None
