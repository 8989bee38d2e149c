"""Fingerprints of experiment splits: a resumed run reuses a split's outputs only when nothing changed.

An experiment split (``<out>/split_XX``, a bundle root) is resumable: finished training and evaluation are
reused. Without a record of what produced them, a re-run into the same ``--out`` with another dataset, epochs,
seed or n_val would silently return the old results. :func:`split_fingerprint` records what decides a split's
results: the settings the driver passes to the configs, the sha256 of the bundle's config files, and the dataset
(dataset.json's sha256, the subjects' ids and groups, each file's size and modification time; hashing every
image would cost seconds per subject on each resume). It is stored as ``<split root>/fingerprint.json`` before a
split starts; :func:`prepare_splits` compares it on a re-run and refuses, naming the differences, before any
work, unless ``overwrite`` asks to recompute the split from scratch.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.data._jsonio import format_problems, read_json, write_json_atomic
from common.errors import InputDataError

__all__ = ["FINGERPRINT", "as_flag", "clear_split", "fingerprint_differences", "prepare_splits", "split_fingerprint"]

FINGERPRINT = "fingerprint.json"
_VERSION = 1
#: Settings that do not change a split's results: display, where the split lives, data-loading parallelism.
#: ``n_splits`` neither: split i is drawn from SeedSequence(seed).spawn(...)[i], whatever the number of splits,
#: so an experiment can be extended from 5 to 10 splits and keep the first five.
IGNORED_SETTINGS = frozenset({"progress", "bundle_root", "num_workers", "n_splits"})
_SHOWN = 5  # file names listed per kind of change


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """Settings as JSON stores them (tuples become lists, paths strings), so a stored copy compares equal."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _dataset_inputs(config_file: Path, overrides: Mapping) -> tuple[Path, str]:
    """``dataset_json`` and ``splits_file`` as the train config resolves them with these overrides (its default
    dataset included), so the fingerprint sees exactly the files the run will read."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser.update(dict(overrides))
    return Path(parser.get_parsed_content("dataset_json")), str(parser.get_parsed_content("splits_file") or "")


def _file_state(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def dataset_fingerprint(dataset_json: str | os.PathLike, splits_file: str | os.PathLike | None = None) -> dict:
    """dataset.json's sha256, subject id -> group, and every file it names -> [size, mtime_ns] (None: missing)."""
    from common.data.dataset_json import read_dataset

    dataset_json = Path(dataset_json)
    if not dataset_json.is_file():
        raise InputDataError(dataset_json, "file not found (the experiment's dataset)")
    dataset = read_dataset(dataset_json, check_files=False)
    files: dict[str, list[int] | None] = {}
    for subject in dataset.subjects:
        for key, value in subject.items():
            paths = value if key == "image" else [value] if key in ("anomaly", "mask") and value else []
            for path in paths:
                files[os.path.relpath(path, dataset.root)] = _file_state(Path(path))
    return {
        "dataset_json": str(dataset_json.resolve()),
        "sha256": _sha256(dataset_json),
        "subjects": {s["id"]: s["group"] for s in dataset.subjects},
        "files": dict(sorted(files.items())),
        "splits_file": {"path": str(splits_file), "sha256": _sha256(Path(splits_file))} if splits_file else None,
    }


def split_fingerprint(configs: str | os.PathLike | None, overrides: Mapping,
                      config_names: Sequence[str] = ("train.json", "evaluate.json")) -> dict:
    """What decides a split's results: the driver's settings (``overrides``, less :data:`IGNORED_SETTINGS`),
    the sha256 of the config files the split runs, and :func:`dataset_fingerprint` of its dataset.
    ``configs`` None: a model without a bundle (the normative baseline), on ``dataset_dir`` or the PD demo cohort."""
    if configs is None:
        from common.data.synthetic import default_cohort

        dataset_dir = overrides.get("dataset_dir")
        dataset_json = Path(dataset_dir) / "dataset.json" if dataset_dir else default_cohort("pd")
        splits_file = str(overrides.get("splits_file") or "")
    else:
        configs = Path(configs)
        dataset_json, splits_file = _dataset_inputs(configs / config_names[0], overrides)
    return {
        "version": _VERSION,
        "settings": _jsonable({k: v for k, v in sorted(overrides.items()) if k not in IGNORED_SETTINGS}),
        "configs": {} if configs is None else {name: _sha256(configs / name) for name in config_names},
        "dataset": dataset_fingerprint(dataset_json, splits_file or None),
    }


def _listed(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(Path(n).name for n in names[:_SHOWN])
    return shown + (", ..." if len(names) > _SHOWN else "")


def fingerprint_differences(old: Mapping, new: Mapping) -> list[str]:
    """Human-readable differences between two fingerprints, e.g. ``epochs: 30 -> 20`` or
    ``dataset: 3 files changed (sub-03_FA.nii.gz, ...)``; [] when they are the same."""
    if old.get("version") != new.get("version"):
        return [f"fingerprint format {old.get('version')} -> {new.get('version')}"]
    diffs = []
    before, after = old.get("settings", {}), new.get("settings", {})
    for key in sorted(set(before) | set(after)):
        if before.get(key, "<default>") != after.get(key, "<default>"):
            diffs.append(f"{key}: {before.get(key, '(bundle default)')} -> {after.get(key, '(bundle default)')}")
    for name in sorted(set(old.get("configs", {})) | set(new.get("configs", {}))):
        a, b = old.get("configs", {}).get(name), new.get("configs", {}).get(name)
        if a != b:
            diffs.append(f"configs/{name} changed (sha256 {str(a)[:12]} -> {str(b)[:12]})")
    a, b = old.get("dataset", {}), new.get("dataset", {})
    if a.get("dataset_json") != b.get("dataset_json"):
        diffs.append(f"dataset: {a.get('dataset_json')} -> {b.get('dataset_json')}")
    elif a.get("sha256") != b.get("sha256"):
        diffs.append(f"dataset: {Path(str(b.get('dataset_json'))).name} changed")
    subjects_a, subjects_b = a.get("subjects", {}), b.get("subjects", {})
    for what, ids in (("added", set(subjects_b) - set(subjects_a)), ("removed", set(subjects_a) - set(subjects_b))):
        if ids:
            diffs.append(f"dataset: {len(ids)} subject(s) {what} ({_listed(ids)})")
    regrouped = sorted(i for i in set(subjects_a) & set(subjects_b) if subjects_a[i] != subjects_b[i])
    if regrouped:
        diffs.append(f"dataset: {len(regrouped)} subject(s) changed group ("
                     + ", ".join(f"{i}: {subjects_a[i]} -> {subjects_b[i]}" for i in regrouped[:_SHOWN]) + ")")
    files_a, files_b = a.get("files", {}), b.get("files", {})
    changed = [f for f in set(files_a) & set(files_b) if files_a[f] != files_b[f]]
    for what, names in (("changed", changed), ("added", set(files_b) - set(files_a)),
                        ("no longer listed", set(files_a) - set(files_b))):
        if names:
            diffs.append(f"dataset: {len(names)} file(s) {what} ({_listed(names)})")
    if a.get("splits_file") != b.get("splits_file"):
        before_file, after_file = (a.get("splits_file") or {}).get("path"), (b.get("splits_file") or {}).get("path")
        diffs.append(f"splits file: {before_file} -> {after_file} (or its content)")
    return diffs


def _outputs(root: Path) -> list[str]:
    """What a run left in a split root besides its fingerprint."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name != FINGERPRINT)


def clear_split(root: str | os.PathLike) -> None:
    """Remove a split's outputs: renamed aside first (one atomic step, so a reader or a killed run never sees a
    half-deleted split), then deleted. Leftovers of an earlier interrupted clear are deleted too."""
    root = Path(root)
    for stale in root.parent.glob(f".{root.name}.removing-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if not root.exists():
        return
    aside = root.with_name(f".{root.name}.removing-{os.getpid()}-{secrets.token_hex(4)}")
    os.replace(root, aside)
    shutil.rmtree(aside)


def as_flag(value: Any, name: str) -> bool:
    """A yes/no option as the command line delivers it: Python Fire passes ``--overwrite true`` as the string
    'true' (and 'false' would be truthy), so words are read here; anything else is refused."""
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if str(value).strip().lower() in words:
        return words[str(value).strip().lower()]
    raise InputDataError(None, f"{name} must be true or false, got {value!r}")


def _stored(root: Path) -> Any:
    try:
        return read_json(root / FINGERPRINT)
    except InputDataError:
        return None


def prepare_splits(configs: str | os.PathLike | None, splits: Sequence[tuple[str | os.PathLike, Mapping]],
                   overwrite: bool = False) -> list[dict]:
    """Check every split of a run (``(root, overrides)`` pairs) before any work and record its fingerprint.

    A split root holding outputs is reused only when its stored fingerprint equals the new one; otherwise an
    :class:`InputDataError` names the split, the differences and the two ways on (``--overwrite true`` or
    another ``--out``), and nothing is changed. With ``overwrite`` every split root is cleared first
    (:func:`clear_split`). Returns the fingerprints.
    """
    overwrite = as_flag(overwrite, "--overwrite")
    plans = [(Path(root), split_fingerprint(configs, overrides)) for root, overrides in splits]
    refused = []
    for root, fingerprint in plans:
        outputs = _outputs(root)
        if overwrite or not outputs:
            continue
        stored_file = root / FINGERPRINT
        if not stored_file.is_file():
            refused.append((root, [f"outputs ({', '.join(outputs)}) of a run without {FINGERPRINT}: "
                                   "cannot tell which settings and data made them"]))
            continue
        try:
            stored = read_json(stored_file)
        except InputDataError as err:
            refused.append((root, [f"{FINGERPRINT} unreadable ({err.problem})"]))
            continue
        diffs = fingerprint_differences(stored if isinstance(stored, dict) else {}, fingerprint)
        if diffs:
            refused.append((root, diffs))
    if refused:
        root, diffs = refused[0]
        others = [r.name for r, _ in refused[1:]]
        message = (f"holds results of another run: {format_problems(diffs, 'difference')}"
                   + (f"\n(also: {', '.join(others)})" if others else "")
                   + "\nPass --overwrite true to recompute from scratch, or another --out.")
        raise InputDataError(root, message)
    for root, fingerprint in plans:
        if overwrite:
            clear_split(root)
        elif _stored(root) == fingerprint:
            continue  # an identical re-run leaves the split untouched
        write_json_atomic(root / FINGERPRINT, fingerprint)
    return [fingerprint for _, fingerprint in plans]
