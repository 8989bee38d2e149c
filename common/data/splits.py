"""Seeded, age- and sex-balanced splits of the controls (the PD paper's protocol, scaled to any cohort).

The paper draws 10 bootstrap splits of its 56 controls into 41 train / 15 test, balanced for age and sex,
retrains per split and reports mean +- sd. Here, per split:

1. the test size is ``max(2, round(n_controls * 15 / 56))`` unless given;
2. the number of test subjects per sex is the cohort's proportion apportioned to integers (largest
   remainder), so the test F/M fraction is as close to the cohort's as integers allow;
3. ``n_candidates`` sex-stratified random test sets are drawn at once (vectorised) and the one whose mean age
   is closest to the rest's is kept; optional validation controls, then optional calibration controls, are
   carved from the rest the same way.

Calibration controls (``n_calib``) are healthy subjects that training never sees, neither as training data nor
for checkpoint selection: anomaly thresholds set on them are unbiased, unlike thresholds set on the training
controls, whose errors the model has fitted (docs/evaluation.md).

Patients never enter training: they are listed in every split under ``patients`` (evaluation set =
``test`` + ``patients``). Each split has its own random stream from ``SeedSequence(seed).spawn``, so split
``i`` is the same whatever ``n_splits`` is, and streams of different seeds do not overlap.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.data._jsonio import format_problems, read_json, write_json_atomic
from common.data.dataset_json import CohortDataset, cohort_problems, read_dataset, subject_problems
from common.errors import InputDataError

__all__ = [
    "PAPER_N_CONTROLS",
    "PAPER_N_TEST",
    "SPLIT_PARTS",
    "check_splits",
    "default_n_test",
    "make_splits",
    "pool_subjects",
    "read_splits",
    "require_distinct_splits",
    "split_subjects",
    "union_subjects",
    "write_splits",
]

PAPER_N_CONTROLS = 56
PAPER_N_TEST = 15
PARTS = ("train", "val", "calib", "test", "patients")
_SEX_CODES = {"F": 0, "M": 1}  # anything else (missing) -> 2, its own stratum


def default_n_test(n_controls: int) -> int:
    """The paper's 15 of 56 test controls scaled to ``n_controls`` (at least 2), rounding half up."""
    return max(2, math.floor(n_controls * PAPER_N_TEST / PAPER_N_CONTROLS + 0.5))


def _apportion(total: int, sizes: np.ndarray) -> np.ndarray:
    """Integer quotas summing to ``total`` proportional to ``sizes`` (largest remainder, ties to the first)."""
    exact = total * sizes / sizes.sum()
    quotas = np.floor(exact).astype(int)
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[: total - quotas.sum()]] += 1
    return quotas


def _balanced_subset(
    rng: np.random.Generator, pool: np.ndarray, k: int, ages: np.ndarray, sexes: np.ndarray, n_candidates: int
) -> np.ndarray:
    """Pick ``k`` of ``pool`` (indices): sex-stratified, the best age match among ``n_candidates`` draws."""
    chosen = np.zeros((n_candidates, pool.size), dtype=bool)
    codes = sexes[pool]
    strata = np.unique(codes)
    quotas = _apportion(k, np.array([np.count_nonzero(codes == c) for c in strata]))
    rows = np.arange(n_candidates)[:, None]
    for code, quota in zip(strata, quotas, strict=True):
        members = np.flatnonzero(codes == code)
        if quota == 0:
            continue
        # the `quota` smallest of i.i.d. uniform keys: a uniformly random subset per candidate row
        keys = rng.random((n_candidates, members.size))
        picked = np.argpartition(keys, quota - 1, axis=1)[:, :quota]
        chosen[rows, members[picked]] = True
    age = ages[pool]
    known = np.isfinite(age).astype(float)  # float: a bool @ bool product would be a logical OR
    age0 = np.where(known > 0, age, 0.0)
    weights = chosen.astype(float)
    n_in, sum_in = weights @ known, weights @ age0
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.abs(sum_in / n_in - (age0.sum() - sum_in) / (known.sum() - n_in))
    gap = np.nan_to_num(gap, nan=0.0)  # no ages on one side: nothing to balance
    return pool[chosen[int(np.argmin(gap))]]


def _mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return round(float(values.mean()), 3) if values.size else None


def _female_fraction(sexes: np.ndarray) -> float | None:
    known = sexes[sexes < 2]
    return round(float(np.mean(known == 0)), 4) if known.size else None


def make_splits(
    dataset_or_subjects: CohortDataset | str | os.PathLike | Sequence[dict],
    n_splits: int = 10,
    n_test: int | None = None,
    n_val: int = 0,
    seed: int = 0,
    n_candidates: int = 256,
    n_calib: int = 0,
) -> dict:
    """The split manifest (a JSON-ready dict) of the controls of a dataset (or a list of subject dicts).

    Subjects need ``id`` and ``group``; ``age`` and ``sex`` are balanced where present (without either,
    the draw is plain random). Raises InputDataError when the cohort has too few controls.
    """
    if isinstance(dataset_or_subjects, CohortDataset):
        source, subjects = str(dataset_or_subjects.path), dataset_or_subjects.subjects
    elif isinstance(dataset_or_subjects, (str, os.PathLike)):
        dataset = read_dataset(dataset_or_subjects, check_files=False)
        source, subjects = str(dataset.path), dataset.subjects
    else:
        source, subjects = None, list(dataset_or_subjects)
        problems = [p for i, s in enumerate(subjects) for p in subject_problems(s, i, None, require_image=False)]
        problems += cohort_problems(subjects)
        if problems:
            raise InputDataError(None, "invalid subjects: " + format_problems(problems))
    if n_splits < 1 or n_candidates < 1 or n_val < 0 or n_calib < 0 or seed < 0:
        raise ValueError("n_splits and n_candidates must be >= 1, n_val, n_calib and seed >= 0")

    controls = sorted((s for s in subjects if s["group"] == "control"), key=lambda s: s["id"])
    patients = sorted(s["id"] for s in subjects if s["group"] == "patient")
    ids = np.array([s["id"] for s in controls])
    ages = np.array([s["age"] if s.get("age") is not None else np.nan for s in controls], dtype=float)
    sexes = np.array([_SEX_CODES.get(s.get("sex"), 2) for s in controls])
    n = len(controls)
    n_test = default_n_test(n) if n_test is None else int(n_test)
    n_train = n - n_test - n_val - n_calib
    if n_test < 1 or n_train < 1:
        raise InputDataError(
            source,
            f"too few controls: {n} controls cannot give {n_test} test + {n_val} validation + {n_calib} calibration "
            f"controls and still leave at least one for training (need at least {n_test + n_val + n_calib + 1})",
        )

    splits = []
    for index, child in enumerate(np.random.SeedSequence(seed).spawn(n_splits)):
        rng = np.random.default_rng(child)
        everyone = np.arange(n)
        test = _balanced_subset(rng, everyone, n_test, ages, sexes, n_candidates)
        rest = np.setdiff1d(everyone, test)
        val = _balanced_subset(rng, rest, n_val, ages, sexes, n_candidates) if n_val else np.array([], int)
        rest = np.setdiff1d(rest, val)
        calib = _balanced_subset(rng, rest, n_calib, ages, sexes, n_candidates) if n_calib else np.array([], int)
        train = np.setdiff1d(rest, calib)
        split = {
            "index": index,
            "train": sorted(ids[train].tolist()),
            "val": sorted(ids[val].tolist()),
            "calib": sorted(ids[calib].tolist()),
            "test": sorted(ids[test].tolist()),
            "patients": list(patients),
            "train_age_mean": _mean(ages[train]),
            "test_age_mean": _mean(ages[test]),
            "train_female_fraction": _female_fraction(sexes[train]),
            "test_female_fraction": _female_fraction(sexes[test]),
        }
        if n_val:
            split["val_age_mean"] = _mean(ages[val])
        if n_calib:
            split["calib_age_mean"] = _mean(ages[calib])
        splits.append(split)

    n_distinct = len({(tuple(s["train"]), tuple(s["val"]), tuple(s.get("calib", [])), tuple(s["test"]))
                      for s in splits})
    if n_distinct < n_splits:
        warnings.warn(_few_distinct(n_distinct, n_splits, n, n_test, n_val), stacklevel=2)
    return {
        "dataset": source,
        "method": (
            f"controls split {n_train} train / {n_val} val / {n_calib} calib / {n_test} test per split; test (then "
            f"val, then calib) chosen "
            f"as the best age match among {n_candidates} sex-stratified random draws; patients in every test"
        ),
        "seed": int(seed),
        "n_splits": int(n_splits),
        "n_candidates": int(n_candidates),
        "n_controls": n,
        "n_patients": len(patients),
        "n_train": n_train,
        "n_val": int(n_val),
        "n_calib": int(n_calib),
        "n_test": n_test,
        "n_distinct_splits": n_distinct,
        "cohort_age_mean": _mean(ages),
        "cohort_female_fraction": _female_fraction(sexes),
        "splits": splits,
    }


def _few_distinct(n_distinct: int, n_splits: int, n: int, n_test: int, n_val: int) -> str:
    return (
        f"only {n_distinct} of {n_splits} splits are distinct: {n} controls split {n - n_test - n_val} train / "
        f"{n_val} val / {n_test} test give too few distinct age- and sex-balanced draws (each split keeps the "
        "best age match, so small cohorts keep drawing the same one); the spread over splits understates "
        "the real variability. Use fewer splits or more controls"
    )


def require_distinct_splits(manifest: dict, source: str | os.PathLike | None = None) -> int:
    """The manifest's number of distinct splits; InputDataError when ``n_splits > 1`` and every split is the
    same (a mean +- sd over copies of one split would report sd 0). Pass ``--splits 1`` for one split."""
    splits = manifest["splits"]
    n_distinct = len({(tuple(s["train"]), tuple(s.get("val", [])), tuple(s.get("calib", [])), tuple(s["test"]))
                      for s in splits})
    if len(splits) > 1 and n_distinct == 1:
        raise InputDataError(
            source or manifest.get("dataset"),
            f"all {len(splits)} splits are identical: {manifest['n_controls']} controls "
            f"({manifest['n_train']} train / {manifest['n_val']} val / {manifest['n_test']} test) are too few for "
            "distinct bootstrap draws. Run one split (--splits 1), fewer validation controls, or more controls",
        )
    return n_distinct


def check_splits(
    manifest: dict, dataset: CohortDataset | str | os.PathLike | None = None, path: str | os.PathLike | None = None
) -> None:
    """Raise one InputDataError listing every leak: a subject in two parts of a split, a patient in train or
    val, or (given the dataset) an id the dataset does not know. ``path`` names the manifest in the error."""
    if dataset is not None and not isinstance(dataset, CohortDataset):
        dataset = read_dataset(dataset, check_files=False)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), list) or not manifest["splits"]:
        raise InputDataError(path, 'a split manifest is an object with a non-empty "splits" list')
    groups = {s["id"]: s["group"] for s in dataset.subjects} if dataset is not None else None
    problems = []
    for position, split in enumerate(manifest["splits"]):
        index = split.get("index", position) if isinstance(split, dict) else position
        if not isinstance(split, dict) or not all(isinstance(split.get(p, []), list) for p in PARTS):
            problems.append(f"split {index}: must be an object whose parts {', '.join(PARTS)} are lists of ids")
            continue
        for part in ("train", "test"):
            if not split.get(part):
                problems.append(f"split {index}: empty {part} part")
        seen: dict[str, str] = {}
        for part in PARTS:
            for sid in split.get(part, []):
                if sid in seen:
                    where = f"twice in {part}" if seen[sid] == part else f"in both {seen[sid]} and {part}"
                    problems.append(f"leaked subject {sid} {where} of split {index}")
                    continue
                seen[sid] = part
                if groups is None:
                    continue
                if sid not in groups:
                    problems.append(f"unknown subject {sid} in {part} of split {index} (not in {dataset.path.name})")
                elif groups[sid] == "patient" and part in ("train", "val", "calib"):
                    problems.append(f"patient {sid} in {part} of split {index}: only controls may be trained on")
    if problems:
        raise InputDataError(path, format_problems(problems))


def write_splits(manifest: dict, path: str | os.PathLike) -> Path:
    """Check the manifest (no leaks) and write it atomically as JSON."""
    check_splits(manifest, path=path)
    return write_json_atomic(path, manifest)


def read_splits(path: str | os.PathLike, dataset: CohortDataset | str | os.PathLike | None = None) -> dict[str, Any]:
    """Read a split manifest and check it (against ``dataset`` when given)."""
    manifest = read_json(path)
    check_splits(manifest, dataset, path=path)
    return manifest


#: Parts of a split a workflow can ask for; "evaluation" = test controls + patients.
SPLIT_PARTS = ("train", "val", "calib", "test", "patients", "evaluation")


def split_subjects(
    dataset_json: str | os.PathLike,
    part: str,
    split_index: int = 0,
    splits_file: str | os.PathLike | None = None,
    n_splits: int = 10,
    n_val: int = 0,
    seed: int = 0,
    n_calib: int = 0,
    modalities: Sequence[str] | None = None,
) -> list[dict]:
    """Subjects (dataset entries with absolute paths) of one part of one split: what a bundle trains,
    validates or evaluates on. With ``modalities`` each ``image`` lists those channels in that order, taken by
    name (:func:`~common.data.dataset_json.order_channels`).

    The split comes from ``splits_file`` when given (checked for leaks against the dataset), else it is
    drawn with :func:`make_splits` from ``n_splits``, ``n_val`` and ``seed`` (deterministic, nothing written).
    """
    if part not in SPLIT_PARTS:
        raise ValueError(f"unknown split part {part!r}; expected one of {SPLIT_PARTS}")
    dataset = read_dataset(dataset_json, modalities=modalities)
    if splits_file:
        manifest = read_splits(splits_file, dataset)
    else:
        with warnings.catch_warnings():  # one split is used here; the experiment driver reports distinctness
            warnings.simplefilter("ignore")
            manifest = make_splits(dataset, n_splits=max(n_splits, split_index + 1), n_val=n_val, seed=seed,
                                   n_calib=n_calib)
    if not 0 <= split_index < len(manifest["splits"]):
        raise InputDataError(splits_file, f"split {split_index} requested, the manifest has {len(manifest['splits'])}")
    split = manifest["splits"][split_index]
    ids = split["test"] + split["patients"] if part == "evaluation" else split.get(part, [])
    if not ids and part in ("train", "val", "calib"):
        setting = {"train": "fewer test/val/calib controls", "val": "n_val >= 1", "calib": "n_calib >= 1"}[part]
        raise InputDataError(
            splits_file or dataset.path,
            f"split {split_index} has no {part} controls (set {setting}, or a splits file with '{part}')",
        )
    return [dataset.subject(i) for i in ids]


def pool_subjects(
    dataset_json: str | os.PathLike,
    parts: str | Sequence[str],
    split_index: int = 0,
    splits_file: str | os.PathLike | None = None,
    n_splits: int = 10,
    n_val: int = 0,
    seed: int = 0,
    n_calib: int = 0,
    modalities: Sequence[str] | None = None,
) -> list[dict]:
    """The subjects of one or several parts of a split (e.g. ``["train", "val"]``), each once, in part order:
    the reference pools of an evaluation (the controls that set a threshold or standardise the scores)."""
    parts = [parts] if isinstance(parts, str) else list(parts)
    if len(parts) > 1 and not splits_file:
        # a pool of several parts keeps the others when a drawn split has none of one (train + val without
        # validation controls: the PD paper's 41/15 split); a pool of that one part alone still fails, naming it
        counts = {"val": n_val, "calib": n_calib}
        parts = [p for p in parts if counts.get(p, 1) > 0]
    return union_subjects(*(split_subjects(dataset_json, part, split_index, splits_file, n_splits, n_val, seed, n_calib,
                                           modalities) for part in parts))


def union_subjects(*groups: Sequence[dict]) -> list[dict]:
    """Subjects of several lists, each id once, first occurrence kept: what an evaluator must run."""
    seen: dict[str, dict] = {}
    for group in groups:
        for subject in group:
            seen.setdefault(subject["id"], subject)
    return list(seen.values())
