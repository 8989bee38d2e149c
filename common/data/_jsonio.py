"""JSON files the user edits by hand (dataset.json, splits): precise read errors and atomic writes."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common.errors import InputDataError

__all__ = [
    "MAX_JSON_BYTES",
    "atomic_path",
    "format_problems",
    "read_json",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]


MAX_JSON_BYTES = 64 * 1024 * 1024
"""Largest JSON file read (64 MiB): a dataset.json of 100,000 subjects is ~20 MB; anything bigger is not one of
ours and would only exhaust memory."""


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a syntax error names the line and column, since these files are edited by hand.

    Hostile files fail with an InputDataError too: over :data:`MAX_JSON_BYTES`, or nested so deep that the
    parser hits Python's recursion limit (``[[[[...]]]]`` 100,000 deep raises RecursionError otherwise).
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError(path, "file not found")
    if not path.is_file():
        raise InputDataError(path, "is not a file")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise InputDataError(path, f"{size} bytes is too large for a JSON file here (limit {MAX_JSON_BYTES} bytes)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputDataError(path, f"not a UTF-8 text file (byte {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputDataError(path, f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except RecursionError:
        raise InputDataError(path, "JSON nested too deeply to parse (arrays or objects inside each other "
                                   "thousands of levels deep)") from None


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON via a temporary sibling and ``os.replace``.

    A reader (or a crash) never sees a half-written file. The temporary file is created with the usual
    0o666 & ~umask permissions, unlike ``tempfile.mkstemp`` (0o600), so shared datasets stay readable.
    """
    path = Path(path)
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return write_text_atomic(path, text)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_bytes_atomic` of ``text`` in UTF-8 (newlines kept as given)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write via a temporary sibling and ``os.replace``: readers never see a half-written file, and an
    interrupted write leaves the old file (or nothing) behind."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    return Path(path)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary sibling of ``path`` for a writer that wants a file name (``savefig``, ``nib.save``,
    ``shutil.copyfile``); on leaving the block it is synced and renamed onto ``path``, on an error removed.

    The name is ``.<name>.<pid>.<hex>.tmp<suffix>``: ``suffix`` keeps writers that read the format from the
    extension (``".nii.gz"``, ``".png"``) working, and the pid lets a later run tell a dead writer's leftovers
    (:func:`common.handlers.checkpoint.remove_stale_temporaries`) from a live one's.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def format_problems(problems: list[str], what: str = "problem") -> str:
    """One problem as is; several as a count line followed by one indented line each."""
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} {what}s:\n" + "\n".join(f"  - {p}" for p in problems)
