"""Where generated artefacts (atlases, synthetic cohorts) are cached, and how a cache entry is validated.

The cache root is ``$BRAIN_ANOMALY_CACHE`` when set, else ``~/.cache/brain-anomaly-bundles``. Each entry is
a folder with a ``manifest.json`` recording the inputs that produced it (package versions, parameters)
and the sha256 of every file, so a stale or damaged entry is detected and rebuilt. Entries are written
into a temporary sibling folder and renamed into place, so an interrupted build leaves nothing behind
and two processes building the same entry do not corrupt each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["build_atomically", "cache_root", "manifest_is_current", "read_manifest", "sha256_file"]

MANIFEST = "manifest.json"


def cache_root() -> Path:
    """The folder that holds all cached artefacts (created on demand)."""
    root = os.environ.get("BRAIN_ANOMALY_CACHE") or os.path.join(Path.home(), ".cache", "brain-anomaly-bundles")
    return Path(root)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest of a cache entry, or None if it is missing or unreadable."""
    try:
        with open(Path(folder) / MANIFEST) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def manifest_is_current(folder: str | os.PathLike, inputs: dict, verify_hashes: bool = True) -> bool:
    """True when the entry exists, was built from exactly ``inputs`` and its files match their sha256."""
    manifest = read_manifest(folder)
    # The manifest holds the inputs as JSON: compare like with like (tuples come back as lists).
    if manifest is None or manifest.get("inputs") != json.loads(json.dumps(inputs)):
        return False
    for rel, digest in manifest.get("files", {}).items():
        path = Path(folder) / rel
        if not path.is_file():
            return False
        if verify_hashes and sha256_file(path) != digest:
            return False
    return True


def build_atomically(folder: str | os.PathLike, inputs: dict, build: Callable[[Path], dict | None]) -> Path:
    """Run ``build(tmp_folder)`` and move its result to ``folder`` with a manifest.

    ``build`` writes its files into the folder it is given and may return extra manifest fields. The
    manifest lists every file written with its sha256. An existing ``folder`` is replaced.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the entry should read like any folder
    try:
        extra = build(tmp) or {}
        files = {
            p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        manifest = {"inputs": inputs, "files": files, **extra}
        with open(tmp / MANIFEST, "w") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old / folder.name)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            # Another process finished the same entry first: keep theirs if it is current.
            if not manifest_is_current(folder, inputs, verify_hashes=False):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
