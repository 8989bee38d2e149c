"""Release zips of the bundles: self-contained, reproducible, and downloadable with ``monai.bundle download``.

A MONAI bundle zip only carries what is inside its folder, while the configs import this package
(``$import common``). A release therefore holds, under one top folder named after the bundle (the layout
``monai.bundle download`` extracts), the bundle's own files (configs, docs, LICENSE, ``scripts/`` if any) and
a copy of ``common/`` (its ``.py`` files and package data, as ``pip`` would install it). Python puts the
working folder first on ``sys.path``, so run from the extracted bundle folder the configs import that copy,
not another ``common`` installed in the environment.

Reproducible: the same inputs give the same bytes. Entries are sorted, every entry has the same timestamp
(1980-01-01, the ZIP epoch) and permissions (0644), no directory entries or extra fields, deflate level 9.
Links are dereferenced (a zip of links would not extract on another machine), and followed only when they
resolve inside the folder being released: a link out of it (a patient's NIfTI, a key, another bundle), a
dangling link or a link loop is refused, naming the link and its target, before any zip is written. Generated folders
(``models/``, ``logs/``, ``eval/``), ``__pycache__`` and hidden files are left out.

Weights: ``models/model.pt`` is embedded when it is at most ``max_embedded_mb`` (``models/train_summary.json``,
which says which epoch the weights are, always is); a larger one is copied beside the zip as a release asset
``<bundle>_v<version>_model.pt`` and listed in the zip's ``large_files.json`` (model-zoo format: path, url,
hash_val, hash_type sha256), which ``python -m monai.bundle download_large_files`` reads. Without trained
weights the release carries none: train it after download.

Trust: a bundle's configs are code (MONAI evaluates their ``$`` expressions), so a zip is run only when its
sha256 is the published one: :func:`verify_release` (``python -m common release --verify ZIP --sha256 HEX``).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import stat
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from common.cache import sha256_file
from common.data._jsonio import atomic_path, write_bytes_atomic
from common.errors import InputDataError
from common.paths import BUNDLES_DIR, PACKAGE_DIR

__all__ = ["DEFAULT_BUNDLES_DIR", "PACKAGE_PATTERNS", "Release", "build_release", "build_releases", "check_bundle",
           "release_entries", "verify_release"]

#: Files of ``common/`` that a release vendors: the sources and the package data of pyproject.toml.
PACKAGE_PATTERNS = ("*.py", "*.toml")
#: Folders a run writes into a bundle; never released (weights are handled on their own).
GENERATED_DIRS = ("models", "logs", "eval", "outputs", "runs")
#: The ZIP format's earliest date: every entry carries it, so the bytes do not depend on file times.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
WEIGHTS = "models/model.pt"
WEIGHTS_SIDECARS = ("models/train_summary.json",)  # small, and says which epoch the weights are
LARGE_FILES = "large_files.json"
DEFAULT_BUNDLES_DIR = BUNDLES_DIR
_VERSION = re.compile(r"^\d+\.\d+\.\d+([.+-][0-9A-Za-z.+-]+)?$")


@dataclass(frozen=True)
class Release:
    bundle: str
    version: str
    path: Path
    size: int
    sha256: str
    weights: str  # "embedded", "listed in large_files.json", or "none"
    asset: Path | None = None  # the weights file to publish beside the zip, when listed


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__pycache__"


def _check_link(path: Path, root_real: str) -> None:
    """Refuse ``path`` if it is a link that dangles, loops or resolves outside ``root_real``: a release copies a
    link's target into the zip, so a link out of the bundle would publish whatever it points at."""
    if not path.is_symlink():
        return
    target = os.readlink(path)
    try:
        real = os.path.realpath(path, strict=True)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputDataError(path, f"symbolic link loop (-> {target}): a release cannot follow it") from None
        raise InputDataError(path, f"dangling symbolic link (-> {target}, which does not exist)") from None
    if os.path.commonpath([real, root_real]) != root_real:
        raise InputDataError(path, f"symbolic link to {real}, outside {root_real}: a release follows links only "
                                   "inside the folder it releases (it would copy the target into the zip); "
                                   "copy the file in or remove the link")


def _check_inside(path: Path, root: Path) -> None:
    """:func:`_check_link` for ``path`` and every folder between ``root`` and it."""
    root_real = os.path.realpath(root)
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        _check_link(current, root_real)


def _walk_files(root: Path, skip_top: tuple[str, ...] = ()) -> dict[str, Path]:
    """Relative POSIX path -> file under ``root``, following links that stay inside ``root`` (each real folder
    once, no cycles); any other link is refused (:func:`_check_link`)."""
    files: dict[str, Path] = {}
    seen: set[str] = set()
    root_real = os.path.realpath(root)
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        rel_folder = Path(folder).relative_to(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if _visible(d) and not (rel_folder == Path(".") and d in skip_top))
        for name in dirs:
            _check_link(Path(folder) / name, root_real)
        for name in names:
            if not _visible(name) or name.endswith((".pyc", ".pyo")):
                continue
            path = Path(folder) / name
            _check_link(path, root_real)
            files[(rel_folder / name).as_posix()] = path
    return files


def read_version(bundle_dir: Path) -> str:
    """The bundle's version from ``configs/metadata.json``, checked to be a version listed in its changelog."""
    from common.data._jsonio import read_json

    meta_path = bundle_dir / "configs" / "metadata.json"
    meta = read_json(meta_path)
    version = meta.get("version") if isinstance(meta, dict) else None
    if not isinstance(version, str) or not _VERSION.match(version):
        raise InputDataError(meta_path, f"'version' must be a version string like '0.1.0', got {version!r}")
    if version not in (meta.get("changelog") or {}):
        raise InputDataError(meta_path, f"version {version} has no entry in 'changelog'")
    return version


def _check_weights(path: Path) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, pickle with code, ...
        raise InputDataError(path, f"not loadable as weights (torch.load weights_only=True): {err}") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputDataError(path, "not a state_dict of tensors")


def _listed_large_files(bundle_dir: Path) -> list[dict]:
    """Entries of the bundle's own ``large_files.json`` (model-zoo format), checked; [] without one."""
    path = bundle_dir / LARGE_FILES
    if not path.is_file():
        return []
    from common.data._jsonio import read_json

    listed = read_json(path)
    items = listed.get("large_files") if isinstance(listed, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) and {"path", "url"} <= i.keys() for i in items):
        raise InputDataError(path, 'expected {"large_files": [{"path", "url", "hash_val", "hash_type"}, ...]}')
    return items


def check_bundle(bundle_dir: str | os.PathLike) -> str:
    """Fail before anything is written when the folder is not a releasable bundle (layout, version, weights
    that do not load); returns its version."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise InputDataError(bundle_dir, "no such bundle folder")
    for rel in ("configs/metadata.json", "configs/inference.json", "LICENSE", "docs/README.md"):
        if not (bundle_dir / rel).is_file():
            raise InputDataError(bundle_dir / rel, "missing: a released bundle needs it (model-zoo layout)")
    version = read_version(bundle_dir)
    for rel in (WEIGHTS, *WEIGHTS_SIDECARS, LARGE_FILES):  # read outside the walk: links checked here
        if os.path.lexists(bundle_dir / rel):
            _check_inside(bundle_dir / rel, bundle_dir)
    release_entries(bundle_dir)  # every link of the bundle and of the vendored package, before any zip
    _listed_large_files(bundle_dir)
    if (bundle_dir / WEIGHTS).is_file():
        _check_weights(bundle_dir / WEIGHTS)
    return version


def release_entries(bundle_dir: Path, package_dir: Path | None = None) -> dict[str, Path]:
    """Archive name -> source file of a release, weights excluded: the bundle's files and the vendored package."""
    bundle_dir = Path(bundle_dir)
    package_dir = Path(package_dir or PACKAGE_DIR)
    name = bundle_dir.name
    # a "common" folder in the bundle would be shadowed by (or shadow) the vendored copy: leave it out
    own = _walk_files(bundle_dir, skip_top=(*GENERATED_DIRS, package_dir.name))
    entries = {f"{name}/{rel}": path for rel, path in own.items()}
    vendored = _walk_files(package_dir)
    for rel, path in vendored.items():
        if any(Path(rel).match(p) for p in PACKAGE_PATTERNS):
            entries[f"{name}/{package_dir.name}/{rel}"] = path
    return entries


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for arcname in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
            info.create_system = 3  # Unix, so the permissions below are honoured
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, entries[arcname], compresslevel=9)
    return buffer.getvalue()


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def build_release(bundle: str, out: str | os.PathLike = "dist", bundles_dir: str | os.PathLike | None = None,
                  max_embedded_mb: float = 50.0, weights_base_url: str | None = None) -> Release:
    """Write ``<out>/<bundle>_v<version>.zip`` (see the module docstring) and return what was written.

    ``weights_base_url``: where the weights asset of a bundle whose ``models/model.pt`` is larger than
    ``max_embedded_mb`` will be published (``large_files.json`` gets ``<url>/<asset name>``); default the
    ``file://`` address of ``out``, which works on this machine only.
    """
    bundle_dir = Path(bundles_dir or DEFAULT_BUNDLES_DIR) / bundle
    return _build(bundle_dir, check_bundle(bundle_dir), Path(out).resolve(), max_embedded_mb, weights_base_url)


def _build(bundle_dir: Path, version: str, out: Path, max_embedded_mb: float, weights_base_url: str | None) -> Release:
    bundle = bundle_dir.name
    entries = release_entries(bundle_dir)
    contents = {arc: path.read_bytes() for arc, path in entries.items()}

    # the bundle's own large_files.json (files hosted elsewhere) is rewritten with the weights' entry, if any
    contents.pop(f"{bundle}/{LARGE_FILES}", None)
    large = [item for item in _listed_large_files(bundle_dir) if item["path"] != WEIGHTS]
    weights, asset = bundle_dir / WEIGHTS, None
    if weights.is_file():
        for rel in WEIGHTS_SIDECARS:
            if (bundle_dir / rel).is_file():
                contents[f"{bundle}/{rel}"] = (bundle_dir / rel).read_bytes()
        if weights.stat().st_size <= max_embedded_mb * 2**20:
            mode = "embedded"
            contents[f"{bundle}/{WEIGHTS}"] = weights.read_bytes()
        else:
            mode = "listed in large_files.json"
            asset = out / f"{bundle}_v{version}_model.pt"
            base = (weights_base_url or out.as_uri()).rstrip("/")
            large.append({"path": WEIGHTS, "url": f"{base}/{asset.name}", "hash_val": sha256_file(weights),
                          "hash_type": "sha256"})
    else:
        mode = "none"
    if large:
        contents[f"{bundle}/{LARGE_FILES}"] = (json.dumps({"large_files": large}, indent=4) + "\n").encode()

    data = _zip_bytes(contents)
    if asset is not None:
        _copy_atomic(weights, asset)
    path = out / f"{bundle}_v{version}.zip"
    write_bytes_atomic(path, data)
    return Release(bundle, version, path, len(data), hashlib.sha256(data).hexdigest(), mode, asset)


def build_releases(bundles: str | list[str] | tuple[str, ...] | None = None, out: str | os.PathLike = "dist",
                   bundles_dir: str | os.PathLike | None = None, max_embedded_mb: float = 50.0,
                   weights_base_url: str | None = None, quiet: bool = False) -> list[Release]:
    """Release several bundles (default: every bundle folder with ``configs/metadata.json``); all are checked
    before the first zip is written. Prints each zip's path, size and sha256."""
    root = Path(bundles_dir or DEFAULT_BUNDLES_DIR)
    if bundles is None:
        names = (sorted(p.name for p in root.iterdir() if (p / "configs" / "metadata.json").is_file())
                 if root.is_dir() else [])
        if not names:
            raise InputDataError(root, "no bundle found (folders with configs/metadata.json)")
    else:
        names = [b.strip() for b in (bundles.split(",") if isinstance(bundles, str) else bundles) if str(b).strip()]
    versions = {name: check_bundle(root / name) for name in names}
    releases = []
    for name in names:
        release = _build(root / name, versions[name], Path(out).resolve(), max_embedded_mb, weights_base_url)
        releases.append(release)
        if not quiet:
            print(f"{release.path}  {release.size / 2**20:.2f} MiB  sha256 {release.sha256}  "
                  f"(v{release.version}, weights: {release.weights})")
            if release.asset is not None:
                print(f"  publish {release.asset} at the url in large_files.json "
                      f"({'--weights_base_url' if weights_base_url else 'a file:// url: pass --weights_base_url'})")
    sys.stdout.flush()
    return releases


def verify_release(zip_path: str | os.PathLike, sha256: str | None) -> str:
    """Check a downloaded release against the sha256 published with it, before running its configs (they are
    code); then that it is a readable zip. Returns the digest; raises InputDataError naming the file, with both
    digests on a mismatch."""
    zip_path = Path(zip_path)
    expected = str(sha256 or "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise InputDataError(None, f"--sha256 must be the 64 hex digits published with the release, got {sha256!r}")
    if not zip_path.is_file():
        raise InputDataError(zip_path, "file not found" if not zip_path.exists() else "is not a file")
    actual = sha256_file(zip_path)
    if actual != expected:
        raise InputDataError(zip_path, f"sha256 mismatch: expected {expected}, got {actual}; do not run it")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise InputDataError(zip_path, f"not a readable zip ({err})") from None
    if bad is not None:
        raise InputDataError(zip_path, f"corrupt zip: entry {bad} fails its CRC check")
    return actual
