"""What both synthetic cohorts share: demographics, per-subject seeding, NIfTI writing, and writing a
whole cohort atomically (a temporary folder renamed into place, so an interrupted run leaves nothing)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from common.cache import build_atomically, manifest_is_current
from common.grids import Grid

__all__ = ["ANATOMY_STREAM", "DISEASE_STREAM", "SubjectSpec", "draw_subjects", "save_nifti", "subject_rng",
           "write_cohort"]


@dataclass(frozen=True)
class SubjectSpec:
    """Who a synthetic subject is; everything else about it is drawn from ``subject_rng(seed, index)``."""

    index: int
    id: str
    group: str  # "control" | "patient"
    age: float
    sex: str  # "F" | "M"


#: Random streams of a subject: its normal variability, and its disease effect (patients only). Separate
#: streams mean a patient is exactly its control twin plus the planted change, which the tests check.
ANATOMY_STREAM, DISEASE_STREAM = 0, 1


def subject_rng(seed: int, index: int, stream: int = ANATOMY_STREAM) -> np.random.Generator:
    """An independent stream per subject: a subject does not change when the cohort size changes."""
    return np.random.default_rng([int(seed), int(index), int(stream)])


def draw_subjects(n_controls: int, n_patients: int, seed: int, age_mean: float, age_sd: float,
                  female_fraction: float, age_range: tuple[float, float] = (40.0, 90.0)) -> list[SubjectSpec]:
    """Controls then patients, ids ``sub-0001``...; ages normal (clipped), sex with the given F proportion
    (an exact count per group, randomly placed, so small cohorts keep the proportion)."""
    if n_controls < 1:
        raise ValueError("a cohort needs at least one control subject")
    if n_patients < 0:
        raise ValueError("n_patients must be >= 0")
    rng = np.random.default_rng([int(seed), 10**6])
    subjects: list[SubjectSpec] = []
    for group, n in (("control", n_controls), ("patient", n_patients)):
        ages = np.clip(rng.normal(age_mean, age_sd, n), *age_range).round(1)
        n_female = round(female_fraction * n)
        sexes = np.array(["F"] * n_female + ["M"] * (n - n_female))
        rng.shuffle(sexes)
        for age, sex in zip(ages, sexes):
            index = len(subjects)
            subjects.append(SubjectSpec(index, f"sub-{index + 1:04d}", group, float(age), str(sex)))
    return subjects


def save_nifti(path: Path, data: np.ndarray, grid: Grid, description: str = "") -> None:
    """Float32 NIfTI on ``grid`` with MNI qform/sform codes (gzip level 1: fast, still small)."""
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), grid.affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(grid.affine, code=4)
    img.set_sform(grid.affine, code=4)
    if description:
        img.header["descrip"] = description[:79].encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def write_cohort(out: str | Path, inputs: dict, subjects: list[SubjectSpec],
                 render: Callable[[SubjectSpec, Path], dict], write_json: Callable[[Path, list[dict]], None],
                 desc: str, progress: bool = True, overwrite: bool = False) -> tuple[Path, float]:
    """Render every subject into a temporary folder, write dataset.json, then move it to ``out``.

    ``render(subject, folder)`` writes one subject's files and returns its dataset.json entry (relative
    paths). Returns the cohort folder and the seconds per subject. An existing cohort built from the same
    ``inputs`` is reused; a different one is replaced only with ``overwrite``.
    """
    out = Path(out)
    if manifest_is_current(out, inputs):
        return out, 0.0
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and holds something else; pass --overwrite to replace it")
    timing = {}

    def build(tmp: Path) -> dict:
        start = time.perf_counter()
        entries = [render(s, tmp) for s in tqdm(subjects, desc=desc, unit="subject", disable=not progress)]
        write_json(tmp, entries)
        timing["per_subject"] = (time.perf_counter() - start) / len(subjects)
        return {"seconds_per_subject": round(timing["per_subject"], 3)}

    build_atomically(out, inputs, build)
    return out, timing["per_subject"]
