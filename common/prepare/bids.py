"""Find the scans of a BIDS folder, read ``participants.tsv``, and write the prepared cohort's ``dataset.json``.

Only what ``prepare`` needs of BIDS: ``sub-*/[ses-*/]dwi/*_dwi.nii.gz`` with its ``.bval``/``.bvec``,
``sub-*/[ses-*/]pet/*_pet.nii.gz`` with its ``.json`` sidecar, and an optional ``anat/*_T1w.nii.gz`` of the same
subject and session. Every problem found is reported in one :class:`~common.errors.InputDataError` naming the file.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from common.data._jsonio import format_problems
from common.errors import InputDataError

__all__ = ["KINDS", "BidsScan", "find_scans", "read_participants", "write_dataset_json"]

#: What ``find_scans`` looks for: the folder, the image suffix and the sidecars that must sit beside the image.
KINDS = {"dwi": ("dwi", "_dwi.nii.gz", ("bval", "bvec")), "pet": ("pet", "_pet.nii.gz", ("json",))}

_CONTROL = {"control", "controls", "hc", "cn", "nc", "healthy", "healthy control", "normal"}
_PATIENT = {"patient", "patients", "pd", "ad", "mci", "dementia", "case"}
_SEX = {"f": "F", "female": "F", "w": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}
_MISSING = {"", "n/a", "na", "nan"}


@dataclass(frozen=True)
class BidsScan:
    """One subject/session's input: the DWI or PET image, its sidecars and the optional T1w."""

    subject: str  # "sub-01"
    session: str | None  # "ses-01" or None
    image: Path
    t1w: Path | None
    sidecars: dict = field(default_factory=dict)  # {"bval": Path, "bvec": Path} or {"json": Path}

    @property
    def key(self) -> str:
        """The output id (folder and file prefix, the dataset.json id): ``sub-01`` or ``sub-01_ses-01``."""
        return self.subject if self.session is None else f"{self.subject}_{self.session}"


def _sidecar(image: Path, suffix: str, ext: str) -> Path:
    return image.with_name(image.name[: -len(suffix)] + suffix.replace(".nii.gz", f".{ext}"))


def _t1w(folder: Path) -> Path | None:
    """The subject/session's T1w (``anat/*_T1w.nii.gz``); the first in name order when there are several runs."""
    found = sorted((folder / "anat").glob("*_T1w.nii.gz")) if (folder / "anat").is_dir() else []
    return found[0] if found else None


def find_scans(bids_dir: str | os.PathLike, kind: str) -> list[BidsScan]:
    """Every ``kind`` ("dwi" | "pet") scan under ``bids_dir``, sorted by key; missing sidecars are reported.

    A subject/session with several runs gives one scan per run only when their keys differ; two images that would
    write the same output raise, since a silent choice would prepare the wrong scan."""
    if kind not in KINDS:
        raise ValueError(f"unknown scan kind {kind!r}; expected one of {', '.join(KINDS)}")
    root = Path(bids_dir)
    if not root.is_dir():
        raise InputDataError(root, "not a folder (expected a BIDS dataset: sub-*/[ses-*/]" f"{kind}/...)")
    folder_name, suffix, sidecars = KINDS[kind]
    scans, problems, seen = [], [], {}
    for subject_dir in sorted(p for p in root.glob("sub-*") if p.is_dir()):
        session_dirs = sorted(p for p in subject_dir.glob("ses-*") if p.is_dir()) or [subject_dir]
        for session_dir in session_dirs:
            session = session_dir.name if session_dir != subject_dir else None
            for image in sorted((session_dir / folder_name).glob(f"*{suffix}")):
                found = {ext: _sidecar(image, suffix, ext) for ext in sidecars}
                missing = [str(p) for p in found.values() if not p.is_file()]
                if missing:
                    problems.append(f"{image}: no {' / '.join(missing)} beside it")
                    continue
                scan = BidsScan(subject_dir.name, session, image, _t1w(session_dir) or _t1w(subject_dir), found)
                if scan.key in seen:
                    problems.append(f"{image}: a second {kind} scan of {scan.key} (after {seen[scan.key]}); "
                                    "keep one run per subject and session")
                    continue
                seen[scan.key] = image
                scans.append(scan)
    if problems:
        raise InputDataError(root, format_problems(problems))
    if not scans:
        raise InputDataError(root, f"no {kind} scans found (expected sub-*/[ses-*/]{folder_name}/*{suffix})")
    return scans


def _group(value: str, path: Path, subject: str) -> str:
    v = value.strip().lower()
    if v in _CONTROL:
        return "control"
    if v in _PATIENT:
        return "patient"
    raise InputDataError(path, f"{subject}: unknown group {value!r}; use control (or HC, CN) or patient "
                               "(or PD, AD)")


def read_participants(bids_dir: str | os.PathLike) -> dict[str, dict]:
    """``participants.tsv`` -> ``{participant_id: {"group", "age", "sex"}}`` (only the values present).

    The group column may be called ``group`` or ``diagnosis``; ``n/a`` means unknown. An empty dict when the file
    is absent."""
    path = Path(bids_dir) / "participants.tsv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    out = {}
    for i, row in enumerate(rows, start=2):
        sid = (row.get("participant_id") or "").strip()
        if not sid:
            raise InputDataError(path, f"line {i}: no participant_id")
        info: dict = {}
        group = row.get("group", row.get("diagnosis"))
        if group is not None and group.strip().lower() not in _MISSING:
            info["group"] = _group(group, path, sid)
        age = (row.get("age") or "").strip()
        if age.lower() not in _MISSING:
            try:
                info["age"] = float(age)
            except ValueError:
                raise InputDataError(path, f"{sid}: age {age!r} is not a number") from None
            if not math.isfinite(info["age"]) or info["age"] < 0:
                raise InputDataError(path, f"{sid}: age {age!r} is not a non-negative number")
        sex = (row.get("sex") or "").strip().lower()
        if sex not in _MISSING:
            if sex not in _SEX:
                raise InputDataError(path, f"{sid}: sex {row['sex']!r} is not F or M")
            info["sex"] = _SEX[sex]
        out[sid] = info
    return out


def subject_record(scan: BidsScan, participants: dict[str, dict], default_group: str | None,
                   bids_dir: str | os.PathLike) -> dict:
    """The dataset.json fields of ``scan`` taken from ``participants.tsv``: id, group, age, sex.

    A subject without a group takes ``default_group``; with neither, an InputDataError names participants.tsv."""
    info = dict(participants.get(scan.subject, {}))
    if "group" not in info:
        if default_group is None:
            raise InputDataError(Path(bids_dir) / "participants.tsv",
                                 f"no group for {scan.subject}: add a group column (control / patient) or pass "
                                 "--default_group")
        info["group"] = default_group
    return {"id": scan.key, **info}


def write_dataset_json(out: str | os.PathLike, records: list[dict], modalities: list[str], grid: str,
                       bids_dir: str | os.PathLike, name: str) -> Path:
    """``out/dataset.json`` of the prepared subjects (``records``: id, group, image paths relative to ``out``, age,
    sex, and any extra keys such as ``qc``), in the format :mod:`common.data.dataset_json` reads."""
    from common.data.dataset_json import write_dataset

    return write_dataset(
        Path(out) / "dataset.json", name=name, grid=grid, modality=modalities, subjects=records,
        description=f"prepared by python -m common prepare from the BIDS dataset {Path(bids_dir).resolve()}",
        extra={"prepared_from": str(Path(bids_dir).resolve())},
    )
