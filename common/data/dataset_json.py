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
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.data._jsonio import format_problems, read_json, write_json_atomic
from common.errors import InputDataError
from common.grids import Grid, get_grid
from common.nifti import MODALITIES, check_header, check_same_grid, get_modality, load_checked

__all__ = [
    "GROUPS",
    "SEXES",
    "SUBJECT_ID_PATTERN",
    "CohortDataset",
    "ValidationReport",
    "check_subjects",
    "order_channels",
    "output_stem",
    "read_dataset",
    "validate_dataset",
    "write_dataset",
]

GROUPS = ("control", "patient")
SEXES = ("F", "M")

_TOP_ORDER = ("name", "description", "reference", "licence", "tensorImageSize", "grid", "modality", "numTraining")
_SUBJECT_ORDER = ("id", "group", "image", "anomaly", "age", "sex")
SUBJECT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Allowed subject ids: 1-128 ASCII letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit.

Ids name output folders and files (``<output_dir>/<id>/<id>_error.nii.gz``), so an id must be one safe path
component: no ``/`` or ``\\`` (``site1/sub-01`` and ``site2/sub-01`` would write into one ``sub-01``
folder), no leading dot (``..``, hidden files), no spaces or characters a shell or another OS mangles."""

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
        name = value[str(i)]
        if not isinstance(name, str):
            problems.append(f'"modality" channel {i} must be a modality name (a string), got {_brief(name)}')
            continue
        try:
            names.append(get_modality(name).name)
        except ValueError:
            problems.append(f"unknown modality {name!r} for channel {i}; known: {', '.join(MODALITIES)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f'"modality" names {", ".join(repeated)} more than once: each channel is a different modality')
        return None
    return names if len(names) == len(value) else None


def _brief(value: Any, limit: int = 60) -> str:
    """``value``'s JSON type and a shortened repr, for type errors in hand-edited files."""
    kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)
    text = repr(value)
    return f"{kind} ({text if len(text) <= limit else text[: limit - 3] + '...'})"


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
    elif "id" in subject and not SUBJECT_ID_PATTERN.fullmatch(sid):
        problems.append(
            f"id {sid!r} is not a safe file name: ids name the output files, so use 1-128 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit (no '/', spaces or leading dot)"
        )
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
    problems += output_collisions(s.get("id") for s in subjects if isinstance(s, dict))
    if subjects and not any(isinstance(s, dict) and s.get("group") == "control" for s in subjects):
        problems.append("no control subjects (group 'control'): the models are trained on controls only")
    return problems


def output_stem(subject_id: str) -> str:
    """The file-name stem MONAI's ``SaveImage`` derives from a subject id through
    :func:`common.transforms.subject_output_name` (which appends ``.nii.gz`` so the writer's extension stripping
    removes only that): the id itself. Any other formatter must keep this true for :func:`output_collisions`."""
    name = os.path.basename(f"{subject_id}.nii.gz")
    name, ext = os.path.splitext(name)  # what monai.data.utils.create_file_basename does
    if ext == ".gz":
        name, ext = os.path.splitext(name)
    return name


def output_collisions(ids: Iterable[Any]) -> list[str]:
    """Problems for distinct ids whose output names coincide: same :func:`output_stem`, or stems equal up to
    case (one file on the case-insensitive file systems of macOS and Windows)."""
    by_name: dict[str, list[str]] = {}
    for sid in dict.fromkeys(i for i in ids if isinstance(i, str) and i):
        by_name.setdefault(output_stem(sid).casefold(), []).append(sid)
    return [
        f"subject ids {', '.join(group)} give one output name {output_stem(group[0])!r} (outputs are named after "
        "the id, and file names that differ only in case collide on macOS and Windows): rename them"
        for group in by_name.values()
        if len(group) > 1
    ]


def order_channels(subject: dict, available: Sequence[str], wanted: Sequence[str], source: Any = None) -> dict:
    """A copy of ``subject`` whose ``image`` lists one file per ``wanted`` modality, in that order, taken by
    name from ``available`` (the dataset's ``modality`` mapping, parallel to ``image``).

    Channels are never taken by position: a dataset listing MD first gives the same (FA, MD) input as one
    listing FA first. A wanted modality the dataset lacks raises InputDataError naming ``source``.
    """
    wanted = [get_modality(m).name for m in wanted]
    available = [get_modality(m).name for m in available]
    missing = [m for m in wanted if m not in available]
    if missing:
        raise InputDataError(
            source,
            f"the run needs modalities {', '.join(wanted)} but the dataset's \"modality\" mapping lists "
            f"{', '.join(available)}: no {', '.join(missing)} channel",
        )
    out = dict(subject)
    out["image"] = [subject["image"][available.index(m)] for m in wanted]
    return out


def _resolve(root: Path, rel: str) -> str:
    return os.path.normpath(rel if os.path.isabs(rel) else os.path.join(root, rel))


# ------------------------------------------------------------------------------------------------------------ read


def read_dataset(
    path: str | os.PathLike, check_files: bool = True, modalities: Sequence[str] | None = None
) -> CohortDataset:
    """Parse and check a dataset.json; raise one InputDataError listing every problem found.

    With ``check_files`` every referenced image and anomaly file must exist (contents are checked by
    :func:`validate_dataset`). With ``modalities`` (a bundle's ``["FA", "MD"]``) each subject's ``image`` is
    reordered to those channels by name (:func:`order_channels`), and ``.modalities`` is that list.
    """
    path = Path(path).absolute()
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise InputDataError(path, f"the top level must be a JSON object, got {type(doc).__name__}")

    problems = [f"missing required key {k!r}" for k in ("grid", "modality", "training") if k not in doc]
    grid = None
    for key, kind, example in (("name", str, '"my cohort"'), ("grid", str, '"spm1p5"')):
        if key in doc and not isinstance(doc[key], kind):
            problems.append(f'"{key}" must be a string such as {example}, got {_brief(doc[key])}')
    if "numTraining" in doc and (not isinstance(doc["numTraining"], int) or isinstance(doc["numTraining"], bool)):
        problems.append(f'"numTraining" must be an integer, got {_brief(doc["numTraining"])}')
    if isinstance(doc.get("grid"), str):
        try:
            grid = get_grid(doc["grid"])
        except (ValueError, TypeError) as err:
            problems.append(str(err))
    dataset_modalities = _parse_modalities(doc["modality"], problems) if "modality" in doc else None
    training = doc.get("training", [])
    if not isinstance(training, list) or not training:
        if "training" in doc:
            problems.append(f'"training" must be a non-empty list of subjects, got {_brief(training)}')
        training = []
    if isinstance(doc.get("numTraining"), int) and doc["numTraining"] != len(training):
        problems.append(f'"numTraining" is {doc["numTraining"]!r} but "training" lists {len(training)} subjects')
    for i, subject in enumerate(training):
        problems += subject_problems(subject, i, dataset_modalities)
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

    if modalities is not None:
        wanted = [modalities] if isinstance(modalities, str) else list(modalities)
        subjects = [order_channels(s, dataset_modalities, wanted, path) for s in subjects]
        dataset_modalities = [get_modality(m).name for m in wanted]

    meta = {k: v for k, v in doc.items() if k not in ("name", "grid", "modality", "numTraining", "training")}
    return CohortDataset(
        path=path,
        root=root,
        name=str(doc.get("name") or root.name),
        grid=grid,
        modalities=dataset_modalities,
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
    if not isinstance(dataset, CohortDataset):
        dataset = read_dataset(dataset, check_files=False)
    return check_subjects(dataset.subjects, dataset.grid, dataset.modalities, what=None, source=dataset.path,
                          check_data=check_data, progress=progress, allow_resample=allow_resample)


def check_subjects(
    subjects: Sequence[dict],
    grid: str | Grid,
    modalities: Sequence[str],
    what: str | None = "the run's input",
    source: str | os.PathLike | None = None,
    check_data: bool = True,
    progress: bool = False,
    allow_resample: bool = False,
    loader: Any = None,
) -> ValidationReport:
    """Check every file a run will read, before it starts; raise ONE InputDataError listing every problem.

    What a run calls first (inference, evaluation, the experiment driver), so a NaN in the 3rd subject or a
    truncated patient file stops it before the first map is written or the first epoch trained. Checks: ids
    unique with unique output names (:func:`output_collisions`), then each ``image`` file as ``modalities``
    (in channel order, as :func:`order_channels` arranged them) and each ``anomaly`` as ``ANOMALY`` with
    :func:`~common.nifti.load_checked` (grid, dimensions, finite values, range, degenerate and swapped
    maps), or with ``loader(image_files)`` when given (e.g. ``LoadPETImage``, which also takes Clinica's grid).
    ``what`` names the run in the message; ``source`` (the dataset.json) leads it.

    Cost: one extra read per file (a 1.5 mm FA or MD map, ~0.1 s); the bundles' inference and evaluation
    read each volume again when they reach it, which is what refusing before the first output costs.
    """
    from tqdm.auto import tqdm

    grid = get_grid(grid)
    modalities = [modalities] if isinstance(modalities, str) else list(modalities)
    subjects = list(subjects)
    counts = Counter(s.get("id") for s in subjects if isinstance(s, dict))
    problems: list[str] = [f"subject {i} listed {n} times" for i, n in counts.items() if n > 1]
    problems += output_collisions(counts)
    ranges: dict[str, list[float]] = {}
    n_files = 0
    for s in tqdm(subjects, desc="validating", unit="subject", disable=not progress):
        n_before = len(problems)
        if loader is not None:
            n_files += len(s["image"])
            try:
                loader(s["image"])
            except InputDataError as err:
                problems.append(f"{s['id']} image: {err}")
            channels = [("anomaly", s["anomaly"], "ANOMALY")] if "anomaly" in s else []
        elif len(s["image"]) != len(modalities):
            problems.append(f"{s['id']}: {len(s['image'])} image file(s) for {len(modalities)} modalities "
                            f"({', '.join(modalities)})")
            channels = []
        else:
            channels = [(f"image[{c}]", f, m) for c, (f, m) in enumerate(zip(s["image"], modalities, strict=True))]
            if "anomaly" in s:
                channels.append(("anomaly", s["anomaly"], "ANOMALY"))
        for key, file, modality in channels:
            n_files += 1
            try:
                if check_data:
                    data, _ = load_checked(file, grid, modality, allow_resample=allow_resample)
                    lo, hi = ranges.setdefault(modality, [math.inf, -math.inf])
                    ranges[modality] = [min(lo, float(data.min())), max(hi, float(data.max()))]
                else:
                    check_header(file, grid, allow_resample=allow_resample)
            except InputDataError as err:
                problems.append(f"{s['id']} {key} ({modality}): {err}")
        # Files each on the grid share it; only resampled channels can disagree, so check those (a file that
        # failed its own checks would just repeat its problem here).
        if loader is None and len(s["image"]) > 1 and len(problems) == n_before:
            try:
                check_same_grid(s["image"])
            except InputDataError as err:
                problems.append(f"{s['id']}: {err}")
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        where = f" of {what}" if what else ""
        raise InputDataError(
            source,
            f"{len(problems)} {noun} in {n_files} files of {len(subjects)} subjects{where}"
            + (" (nothing was run)" if what else "") + ":\n"
            + "\n".join(f"  - {p}" for p in problems),
        )
    return ValidationReport(
        n_subjects=len(subjects),
        n_files=n_files,
        data_checked=check_data,
        value_ranges={m: (lo, hi) for m, (lo, hi) in ranges.items()},
    )
