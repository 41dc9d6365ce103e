"""Small synthetic Live2D model folders for the avatar tests (they pass the file checks;
only the real npm models load in the runtime)."""
from __future__ import annotations

import json
from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def make_v2(folder: Path, name: str = "tiny", expressions: int = 2, moc: bytes = b"moc\x09" + b"\0" * 60) -> Path:
    """A Cubism 2 layout: NAME.model.json, moc/NAME.moc, a texture, expressions, a motion."""
    (folder / "moc").mkdir(parents=True, exist_ok=True)
    (folder / "exp").mkdir(exist_ok=True)
    (folder / "mtn").mkdir(exist_ok=True)
    (folder / "moc" / f"{name}.moc").write_bytes(moc)
    (folder / "moc" / "texture_00.png").write_bytes(PNG)
    exps = []
    for i in range(expressions):
        (folder / "exp" / f"f{i:02d}.exp.json").write_text('{"type": "Live2D Expression"}')
        exps.append({"name": f"f{i:02d}", "file": f"exp/f{i:02d}.exp.json"})
    (folder / "mtn" / "idle_00.mtn").write_text("# Live2D Animator Motion Data\n")
    settings = {"type": "Live2D Model Setting", "name": name, "model": f"moc/{name}.moc",
                "textures": ["moc/texture_00.png"], "expressions": exps,
                "hit_areas": [{"name": "head", "id": "D_REF.HEAD"}],
                "motions": {"idle": [{"file": "mtn/idle_00.mtn"}]}}
    path = folder / f"{name}.model.json"
    path.write_text(json.dumps(settings))
    return path


def make_v3(folder: Path, name: str = "tiny3", moc: bytes = b"MOC3\x03" + b"\0" * 123) -> Path:
    """A Cubism 3 layout: NAME.model3.json, NAME.moc3, a texture, an expression, LipSync group."""
    (folder / "tex").mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.moc3").write_bytes(moc)
    (folder / "tex" / "texture_00.png").write_bytes(PNG)
    (folder / "smile.exp3.json").write_text('{"Type": "Live2D Expression", "Parameters": []}')
    (folder / "idle.motion3.json").write_text('{"Version": 3, "Curves": []}')
    settings = {"Version": 3, "FileReferences": {
        "Moc": f"{name}.moc3", "Textures": ["tex/texture_00.png"],
        "Expressions": [{"Name": "smile", "File": "smile.exp3.json"}],
        "Motions": {"Idle": [{"File": "idle.motion3.json"}]}},
        "Groups": [{"Target": "Parameter", "Name": "LipSync", "Ids": ["ParamMouthOpenY"]},
                   {"Target": "Parameter", "Name": "EyeBlink", "Ids": ["ParamEyeLOpen", "ParamEyeROpen"]}],
        "HitAreas": [{"Id": "HitAreaHead", "Name": "Head"}]}
    path = folder / f"{name}.model3.json"
    path.write_text(json.dumps(settings))
    return path
