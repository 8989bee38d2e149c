"""The cohort description file: a MONAI Decathlon-style ``dataset.json`` with one entry per subject.

Example (paths relative to the file's folder; ``image`` is a string for one channel or a list)::

    {"name": "synthetic PD DTI cohort", "tensorImageSize": "3D", "grid": "spm1p5",
     "modality": {"0": "FA", "1": "MD"}, "numTraining": 2,
     "training": [
       {"id": "sub-0001", "group": "control", "image": ["sub-0001/sub-0001_FA.nii.gz", "sub-0001/sub-0001_MD.nii.gz"],
        "age": 61.2, "sex": "F"},
       {"id": "sub-0002", "group": "patient", "image": [...], "age": 58.0, "sex": "M",
        "anomaly": "sub-0002/sub-0002_effect.nii.gz"}]}

The file stays readable by ``monai.data.load_decathlon_datalist(path, False, "training")``. On top of that
this module checks what the bundles rely on (grid, modalities, groups, unique ids, one file per channel,
age/sex types, files present) and reports every problem found in one error, so a user fixes them in one go.
"""

from __future__ import annotations

import copy
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.data._jsonio import format_problems, read_json, write_json_atomic
from common.data.nifti import MODALITIES, check_header, check_same_grid, get_modality, load_checked
from common.errors import InputDataError
from common.grids import Grid, get_grid

__all__ = [
    "GROUPS",
    "SEXES",
    "CohortDataset",
    "ValidationReport",
    "read_dataset",
    "write_dataset",
    "validate_dataset",
]

GROUPS = ("control", "patient")
SEXES = ("F", "M")

_TOP_ORDER = ("name", "description", "reference", "licence", "tensorImageSize", "grid", "modality", "numTraining")
_SUBJECT_ORDER = ("id", "group", "image", "anomaly", "age", "sex")
_RESERVED = {"name", "description", "tensorImageSize", "grid", "modality", "numTraining", "training"}


@dataclass
class CohortDataset:
    """A parsed dataset.json: subjects carry ABSOLUTE paths; ``image`` is always a list (one per channel)."""

    path: Path
    root: Path
    name: str
    grid: Grid
    modalities: list[str]
    subjects: list[dict]
    meta: dict = field(default_factory=dict)
    """Other top-level keys (description, reference, licence, ...), kept as written."""

    @property
    def ids(self) -> list[str]:
        return [s["id"] for s in self.subjects]

    @property
    def controls(self) -> list[dict]:
        return [s for s in self.subjects if s["group"] == "control"]

    @property
    def patients(self) -> list[dict]:
        return [s for s in self.subjects if s["group"] == "patient"]

    @property
    def groups(self) -> dict[str, str]:
        """Subject id -> group (``control`` / ``patient``)."""
        return {s["id"]: s["group"] for s in self.subjects}

    def select(self, ids: Sequence[str] | None = None) -> list[dict]:
        """Subjects with the given ids, in that order (all subjects when ``ids`` is None)."""
        if ids is None:
            return list(self.subjects)
        return [self.subject(i) for i in ids]

    def subject(self, subject_id: str) -> dict:
        for s in self.subjects:
            if s["id"] == subject_id:
                return s
        raise KeyError(f"no subject {subject_id!r} in {self.path}")

    def datalist(self, keys: Sequence[str] | None = None, ids: Iterable[str] | None = None) -> list[dict]:
        """MONAI-style list of dicts (copies), e.g. for ``CacheDataset``.

        ``keys``: subject keys to keep besides ``id`` (default all; a subject without a key simply lacks it,
        so use ``allow_missing_keys`` in transforms). ``ids``: these subjects in this order (e.g. one part
        of a split), default all.
        """
        if ids is None:
            subjects = self.subjects
        else:
            ids, by_id = list(ids), {s["id"]: s for s in self.subjects}
            unknown = [i for i in ids if i not in by_id]
            if unknown:
                raise KeyError(f"no subject {', '.join(map(repr, unknown))} in {self.path}")
            subjects = [by_id[i] for i in ids]
        return [copy.deepcopy({k: v for k, v in s.items() if keys is None or k == "id" or k in keys}) for s in subjects]


# ----------------------------------------------------------------------------------------------------------- checks


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_modalities(value: Any, problems: list[str]) -> list[str] | None:
    """``{"0": "FA", "1": "MD"}`` -> ``["FA", "MD"]`` (canonical names), or None after recording problems."""
    if not isinstance(value, dict) or not value:
        problems.append('"modality" must map channel indices to names, e.g. {"0": "FA", "1": "MD"}')
        return None
    if sorted(value) != [str(i) for i in range(len(value))]:
        problems.append(f'"modality" keys must be "0".."{len(value) - 1}", got {sorted(value)}')
        return None
    names = []
    for i in range(len(value)):
        try:
            names.append(get_modality(value[str(i)]).name)
        except ValueError:
            problems.append(f"unknown modality {value[str(i)]!r} for channel {i}; known: {', '.join(MODALITIES)}")
    return names if len(names) == len(value) else None


def subject_problems(
    subject: Any, position: int, modalities: Sequence[str] | None, require_image: bool = True
) -> list[str]:
    """Problems of one training entry, each prefixed with the subject id (or its position if it has none).

    ``modalities=None`` skips the channel count; ``require_image=False`` suits splits, which need no files.
    """
    if not isinstance(subject, dict):
        return [f"training[{position}] is not an object"]
    sid = subject.get("id")
    label = sid if isinstance(sid, str) and sid else f"training[{position}]"
    problems = []
    for key in ("id", "group", "image") if require_image else ("id", "group"):
        if key not in subject:
            problems.append(f"missing required key {key!r}")
    if "id" in subject and not (isinstance(sid, str) and sid.strip()):
        problems.append(f"id must be a non-empty string, got {sid!r}")
    group = subject.get("group")
    if "group" in subject and group not in GROUPS:
        problems.append(f"unknown group {group!r}; allowed: {', '.join(GROUPS)}")
    if "image" in subject:
        image = subject["image"]
        files = [image] if isinstance(image, str) else image
        if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
            problems.append(f"image must be a path or a list of paths, got {image!r}")
        elif modalities is not None and len(files) != len(modalities):
            problems.append(f"{len(files)} image file(s) for {len(modalities)} modalities ({', '.join(modalities)})")
    anomaly = subject.get("anomaly")
    if anomaly is not None and not (isinstance(anomaly, str) and anomaly):
        problems.append(f"anomaly must be a path, got {anomaly!r}")
    age = subject.get("age")
    if age is not None and not (_is_number(age) and age >= 0):
        problems.append(f"age must be a non-negative number (years), got {age!r}")
    sex = subject.get("sex")
    if sex is not None and sex not in SEXES:
        problems.append(f"sex must be one of {', '.join(SEXES)}, got {sex!r}")
    return [f"{label}: {p}" for p in problems]


def cohort_problems(subjects: Sequence[dict]) -> list[str]:
    """Problems of the cohort as a whole (ids unique, at least one control); entries assumed well-formed."""
    problems = []
    counts = Counter(s.get("id") for s in subjects if isinstance(s, dict))
    duplicates = sorted(str(i) for i, n in counts.items() if n > 1)
    if duplicates:
        problems.append(f"duplicate subject ids: {', '.join(duplicates)}")
    if subjects and not any(isinstance(s, dict) and s.get("group") == "control" for s in subjects):
        problems.append("no control subjects (group 'control'): the models are trained on controls only")
    return problems


def _resolve(root: Path, rel: str) -> str:
    return os.path.normpath(rel if os.path.isabs(rel) else os.path.join(root, rel))


# ------------------------------------------------------------------------------------------------------------ read


def read_dataset(path: str | os.PathLike, check_files: bool = True) -> CohortDataset:
    """Parse and check a dataset.json; raise one InputDataError listing every problem found.

    With ``check_files`` every referenced image and anomaly file must exist (contents are checked by
    :func:`validate_dataset`).
    """
    path = Path(path).absolute()
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise InputDataError(path, f"the top level must be a JSON object, got {type(doc).__name__}")

    problems = [f"missing required key {k!r}" for k in ("grid", "modality", "training") if k not in doc]
    grid = None
    if "grid" in doc:
        try:
            grid = get_grid(doc["grid"])
        except (ValueError, TypeError) as err:
            problems.append(str(err))
    modalities = _parse_modalities(doc["modality"], problems) if "modality" in doc else None
    training = doc.get("training", [])
    if not isinstance(training, list) or not training:
        if "training" in doc:
            problems.append('"training" must be a non-empty list of subjects')
        training = []
    if "numTraining" in doc and doc["numTraining"] != len(training):
        problems.append(f'"numTraining" is {doc["numTraining"]!r} but "training" lists {len(training)} subjects')
    for i, subject in enumerate(training):
        problems += subject_problems(subject, i, modalities)
    problems += cohort_problems(training)
    if problems:
        raise InputDataError(path, format_problems(problems))

    root = path.parent
    subjects = []
    for entry in training:
        s = {k: v for k, v in entry.items() if not (k in ("anomaly", "age", "sex") and v is None)}
        s["image"] = [_resolve(root, f) for f in ([s["image"]] if isinstance(s["image"], str) else s["image"])]
        if "anomaly" in s:
            s["anomaly"] = _resolve(root, s["anomaly"])
        subjects.append(s)
    if check_files:
        for s in subjects:
            for f in s["image"] + ([s["anomaly"]] if "anomaly" in s else []):
                if not os.path.isfile(f):
                    problems.append(f"{s['id']}: file not found: {f}")
        if problems:
            raise InputDataError(path, format_problems(problems))

    meta = {k: v for k, v in doc.items() if k not in ("name", "grid", "modality", "numTraining", "training")}
    return CohortDataset(
        path=path,
        root=root,
        name=str(doc.get("name") or root.name),
        grid=grid,
        modalities=modalities,
        subjects=subjects,
        meta=meta,
    )


# ----------------------------------------------------------------------------------------------------------- write


def _relative(root: Path, file: str) -> str:
    """Paths under the dataset folder are written relative to it (a portable dataset), others as given."""
    if os.path.isabs(file):
        rel = os.path.relpath(file, root)
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            file = rel
    return Path(file).as_posix()


def write_dataset(
    path: str | os.PathLike,
    *,
    name: str,
    grid: str | Grid,
    modality: Sequence[str],
    subjects: Sequence[dict],
    description: str = "",
    extra: dict | None = None,
) -> Path:
    """Write a dataset.json (atomically) after the same checks :func:`read_dataset` applies, files aside.

    Output is stable: subjects sorted by id, keys in a fixed order, so the same cohort gives the same bytes.
    ``extra`` adds top-level keys (``reference``, ``licence``, ...).
    """
    path = Path(path).absolute()
    root = path.parent
    grid_name = grid.name if isinstance(grid, Grid) else get_grid(grid).name
    modalities = [get_modality(m).name for m in modality]
    extra = dict(extra or {})
    clash = sorted(_RESERVED & set(extra))
    if clash:
        raise ValueError(f"extra must not set reserved keys: {', '.join(clash)}")

    # Accept pathlib paths from generators; the checks and the JSON want strings.
    subjects = [
        {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in s.items()} if isinstance(s, dict) else s
        for s in subjects
    ]
    for s in subjects:
        if isinstance(s, dict) and isinstance(s.get("image"), (list, tuple)):
            s["image"] = [os.fspath(f) if isinstance(f, os.PathLike) else f for f in s["image"]]
    problems = []
    for i, subject in enumerate(subjects):
        problems += subject_problems(subject, i, modalities)
    problems += cohort_problems(subjects)
    if not subjects:
        problems.append("no subjects")
    if problems:
        raise InputDataError(path, "refusing to write an invalid dataset: " + format_problems(problems))

    training = []
    for subject in sorted(subjects, key=lambda s: s["id"]):
        s = {k: v for k, v in subject.items() if v is not None}
        files = [s["image"]] if isinstance(s["image"], str) else list(s["image"])
        files = [_relative(root, os.fspath(f)) for f in files]
        s["image"] = files[0] if len(files) == 1 else files
        if "anomaly" in s:
            s["anomaly"] = _relative(root, os.fspath(s["anomaly"]))
        ordered = {k: s[k] for k in _SUBJECT_ORDER if k in s}
        ordered.update({k: s[k] for k in sorted(s) if k not in ordered})
        training.append(ordered)

    fields = {
        **extra,
        "name": name,
        "description": description,
        "tensorImageSize": "3D",
        "grid": grid_name,
        "modality": {str(i): m for i, m in enumerate(modalities)},
        "numTraining": len(training),
    }
    doc = {k: fields[k] for k in _TOP_ORDER if k in fields}
    doc.update({k: fields[k] for k in sorted(fields) if k not in doc})
    doc["training"] = training
    return write_json_atomic(path, doc)


# -------------------------------------------------------------------------------------------------------- validate


@dataclass
class ValidationReport:
    """Summary of a successful :func:`validate_dataset` run."""

    n_subjects: int
    n_files: int
    data_checked: bool
    value_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    """(min, max) over the cohort per modality (data checks only): shows at a glance e.g. a mis-scaled MD."""


def validate_dataset(
    dataset: CohortDataset | str | os.PathLike,
    check_data: bool = True,
    progress: bool = True,
    allow_resample: bool = False,
) -> ValidationReport:
    """Check every file of the cohort against its grid and modality; raise ONE InputDataError listing all.

    ``check_data=False`` checks headers only (NIfTI, 3D, type, shape, affine): cheap, no voxel is read.
    Anomaly maps are checked as modality ``ANOMALY``.
    """
    from tqdm.auto import tqdm

    if not isinstance(dataset, CohortDataset):
        dataset = read_dataset(dataset, check_files=False)
    problems: list[str] = []
    ranges: dict[str, list[float]] = {}
    n_files = 0
    for s in tqdm(dataset.subjects, desc="validating", unit="subject", disable=not progress):
        channels = [(f"image[{c}]", f, m) for c, (f, m) in enumerate(zip(s["image"], dataset.modalities, strict=True))]
        if "anomaly" in s:
            channels.append(("anomaly", s["anomaly"], "ANOMALY"))
        n_before = len(problems)
        for key, file, modality in channels:
            n_files += 1
            try:
                if check_data:
                    data, _ = load_checked(file, dataset.grid, modality, allow_resample=allow_resample)
                    lo, hi = ranges.setdefault(modality, [math.inf, -math.inf])
                    ranges[modality] = [min(lo, float(data.min())), max(hi, float(data.max()))]
                else:
                    check_header(file, dataset.grid, allow_resample=allow_resample)
            except InputDataError as err:
                problems.append(f"{s['id']} {key} ({modality}): {err}")
        # Files each on the grid share it; only resampled channels can disagree, so check those (a file that
        # failed its own checks would just repeat its problem here).
        if len(s["image"]) > 1 and len(problems) == n_before:
            try:
                check_same_grid(s["image"])
            except InputDataError as err:
                problems.append(f"{s['id']}: {err}")
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise InputDataError(
            dataset.path,
            f"{len(problems)} {noun} in {n_files} files of {len(dataset.subjects)} subjects:\n"
            + "\n".join(f"  - {p}" for p in problems),
        )
    return ValidationReport(
        n_subjects=len(dataset.subjects),
        n_files=n_files,
        data_checked=check_data,
        value_ranges={m: (lo, hi) for m, (lo, hi) in ranges.items()},
    )
