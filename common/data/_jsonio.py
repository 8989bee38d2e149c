"""JSON files the user edits by hand (dataset.json, splits): precise read errors and atomic writes."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from common.errors import InputDataError

__all__ = [
    "MAX_JSON_BYTES",
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def format_problems(problems: list[str], what: str = "problem") -> str:
    """One problem as is; several as a count line followed by one indented line each."""
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} {what}s:\n" + "\n".join(f"  - {p}" for p in problems)
