"""Synthetic de novo Parkinson's DTI cohort: FA and MD maps on the SPM 1.5 mm grid (stand-in for PPMI).

Anatomy comes from the atlas (ICBM152 tissue maps, AAL3/HCPEx nuclei). A population FA/MD template is
made once from the tissue maps; each subject is that template with
- an age effect (FA -0.25 %/year, MD +0.3 %/year around 61 years),
- a global scale (scanner variation, sd 2 %) and a smooth regional intensity field (sd 3 %, ~25 mm),
- a smooth random deformation (1.5 mm RMS, a few mm at most) plus a head-size scaling (sd 1 %): the
  residual misregistration of maps that were already non-linearly normalised to MNI,
- Gaussian noise, then smoothing (sigma 0.6 voxel) as spatial normalisation leaves it.
Patients also carry spatially structured changes: FA decreased and MD increased by a subject-specific
fraction (``effect_size`` x U(0.5, 1.5), default 5 %) in white-matter blobs of varying number and size and
in a random subset of SN, putamen, GPi and STN (one or both sides). The change map (fraction, in [0, 1]) is
saved as the subject's ground-truth ``anomaly`` map.
With ``heterogeneity`` h > 0 the change is also patchy at the voxel scale: it is multiplied by
max(0, 1 + h * f), f a unit-variance random field with ~1.5 mm correlation (foci of free-water increase
and fibre loss rather than a uniform shift). Its mean stays about the same, but it changes the local
texture, which a position-agnostic patch model (pd_sae) can notice and a smooth change cannot give it.
Controls do not depend on h (patients' changes use their own random stream).

Scaling to [0, 1] as the PD paper does: FA is dimensionless in [0, 1] and kept; MD is divided by
``MD_MAX_MM2_PER_S`` (3.5e-3 mm^2/s, just above free water at body temperature, 3.0e-3) and clipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from common.atlases import Atlas, load_atlas
from common.data.synthetic.base import (
    DISEASE_STREAM,
    SubjectSpec,
    draw_subjects,
    save_nifti,
    subject_rng,
    write_cohort,
)
from common.data.synthetic.deform import misregistration, smooth_random_fields, warp
from common.nifti import MD_MAX_MM2_PER_S

__all__ = [
    "PD_LOCATIONS",
    "PD_TARGET_REGIONS",
    "PDCohortConfig",
    "PDTemplate",
    "make_pd_cohort",
    "render_pd_subject",
    "save_pd_subject",
]

#: Regions where patients' changes are planted (besides white-matter blobs).
PD_TARGET_REGIONS = ("sn", "putamen", "gpi", "stn")
#: Where a cohort's patients carry their changes (``PDCohortConfig.locations``).
PD_LOCATIONS = ("mixed", "nuclei", "white_matter")

# Tissue FA / MD (mm^2/s) of the population template.
FA_GM, FA_CSF, FA_WM_SUPERFICIAL, FA_WM_DEEP = 0.17, 0.06, 0.30, 0.62
MD_GM, MD_WM, MD_CSF = 0.85e-3, 0.72e-3, 3.0e-3
#: Deep-nucleus FA / MD, which tissue maps alone would get wrong (iron-rich nuclei).
NUCLEI_FA_MD = {
    "putamen": (0.20, 0.72e-3), "caudate": (0.16, 0.75e-3), "gpe": (0.30, 0.70e-3), "gpi": (0.34, 0.70e-3),
    "thalamus": (0.33, 0.74e-3), "sn": (0.50, 0.72e-3), "rn": (0.48, 0.70e-3), "stn": (0.40, 0.72e-3),
}


@dataclass(frozen=True)
class PDCohortConfig:
    """Parameters of the PD cohort; every one is recorded in the cohort's manifest."""

    n_controls: int = 20
    n_patients: int = 20
    seed: int = 0
    effect_size: float = 0.05
    age_mean: float = 61.0
    age_sd: float = 9.0
    female_fraction: float = 0.4
    deformation_mm: float = 1.5
    noise_sd: float = 0.05
    smoothing_vox: float = 0.6
    heterogeneity: float = 0.0
    #: Where patients' changes go: "mixed" (white-matter blobs and nuclei), "nuclei" or "white_matter" only.
    locations: str = "mixed"
    #: Nuclei eligible for a change (each drawn with probability 0.75; with locations="nuclei" at least one).
    target_nuclei: tuple[str, ...] = PD_TARGET_REGIONS
    #: The same change in every patient: exactly ``effect_size`` at full strength in each affected structure, and
    #: both sides of each affected nucleus (default: severity x U(0.5, 1.5), structure x U(0.6, 1.0), random sides).
    #: A controlled check of one effect size, e.g. "15 % in the putamen" (docs/benchmark.md).
    fixed_change: bool = False

    def __post_init__(self):
        if self.locations not in PD_LOCATIONS:
            raise ValueError(f"locations must be one of {PD_LOCATIONS}, got {self.locations!r}")
        unknown = [r for r in self.target_nuclei if r not in PD_TARGET_REGIONS]
        if unknown or not self.target_nuclei:
            raise ValueError(f"target_nuclei must be a non-empty subset of {PD_TARGET_REGIONS}, "
                             f"got {self.target_nuclei}")
        object.__setattr__(self, "target_nuclei", tuple(self.target_nuclei))

    @classmethod
    def paper_size(cls, **overrides) -> PDCohortConfig:
        """The PD paper's cohort: 56 controls, 129 patients."""
        return cls(**{"n_controls": 56, "n_patients": 129, **overrides})


class PDTemplate:
    """Population FA / MD maps and the masks used to plant patients' changes (built once per cohort)."""

    def __init__(self, atlas: Atlas):
        self.atlas = atlas
        gm, wm, csf, brain = atlas.gm, atlas.wm, atlas.csf, atlas.brain
        # Deep white matter (far from grey matter) has the highest FA: corpus callosum, internal capsule.
        core = wm > 0.5
        depth_mm = ndimage.distance_transform_edt(core, sampling=atlas.grid.spacing)
        depth = np.clip(depth_mm / 6.0, 0.0, 1.0)
        # A fixed fine texture stands in for fibre-bundle structure (same for every subject: anatomy).
        texture = ndimage.gaussian_filter(np.random.default_rng(1234).standard_normal(gm.shape).astype(np.float32), 1.2)
        texture /= texture.std()
        fa_wm = FA_WM_SUPERFICIAL + (FA_WM_DEEP - FA_WM_SUPERFICIAL) * depth + 0.04 * texture
        total = np.maximum(gm + wm + csf, 1e-6)
        fa = (gm * FA_GM + wm * fa_wm + csf * FA_CSF) / total
        md = (gm * MD_GM + wm * MD_WM + csf * MD_CSF) / total
        for region, (fa_n, md_n) in NUCLEI_FA_MD.items():
            m = ndimage.gaussian_filter(atlas.region_mask(region).astype(np.float32), 0.7)
            fa = fa * (1 - m) + fa_n * m
            md = md * (1 - m) + md_n * m
        self.fa = np.clip(fa * brain, 0, 1).astype(np.float32)
        self.md = np.clip(md / MD_MAX_MM2_PER_S * brain, 0, 1).astype(np.float32)
        self.brain = brain.astype(np.float32)
        self.wm_core = (wm > 0.6) & brain
        self.wm_voxels = np.argwhere(self.wm_core)
        self.target_masks = {
            f"{r}_{side}": ndimage.gaussian_filter(atlas.mask(f"{r}_{side}").astype(np.float32), 0.5)
            for r in PD_TARGET_REGIONS for side in "LR"
        }
        self.centre_vox = np.argwhere(brain).mean(0)


def _effect_map(t: PDTemplate, rng: np.random.Generator, severity: float, locations: str = "mixed",
                target_nuclei: tuple[str, ...] = PD_TARGET_REGIONS, fixed: bool = False) -> tuple[np.ndarray, dict]:
    """Relative change map in [0, severity]: white-matter blobs and/or a random subset of target nuclei.

    The default ("mixed", all four nuclei) draws exactly what earlier versions drew, so cohorts stay identical.
    ``fixed``: every structure at full strength and both sides of each affected nucleus (the same random draws are
    made, so the choice of structures does not change).
    """
    shape = t.brain.shape
    spacing = t.atlas.grid.spacing[0]
    effect = np.zeros(shape, np.float32)
    n_blobs = int(rng.integers(2, 7)) if locations != "nuclei" else 0
    for centre in t.wm_voxels[rng.integers(0, len(t.wm_voxels), n_blobs)]:
        sigma = rng.uniform(5.0, 14.0) / spacing
        lo = np.maximum(centre - int(3 * sigma), 0)
        hi = np.minimum(centre + int(3 * sigma) + 1, shape)
        axes = [np.arange(a, b, dtype=np.float32) - c for a, b, c in zip(lo, hi, centre)]
        blob = np.exp(-0.5 * sum(np.square(g) for g in np.meshgrid(*axes, indexing="ij", sparse=True)) / sigma**2)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        strength = rng.uniform(0.6, 1.0)
        effect[box] = np.maximum(effect[box], (1.0 if fixed else strength) * blob * t.wm_core[box])
    affected = []
    if locations == "white_matter":
        return severity * effect, {"wm_blobs": n_blobs, "nuclei": affected}

    def plant(region: str) -> None:
        nonlocal effect
        sides = [s for s in "LR" if rng.random() < 0.6] or [str(rng.choice(["L", "R"]))]
        for side in "LR" if fixed else sides:
            strength = rng.uniform(0.6, 1.0)
            effect = np.maximum(effect, (1.0 if fixed else strength) * t.target_masks[f"{region}_{side}"])
            affected.append(f"{region}_{side}")

    for region in target_nuclei:  # draws interleaved region by region, as the original cohorts were made
        if rng.random() < 0.75:
            plant(region)
    if locations == "nuclei" and not affected:  # a nuclei-only patient must carry a change somewhere
        plant(str(rng.choice(list(target_nuclei))))
    return severity * effect, {"wm_blobs": n_blobs, "nuclei": affected}


def _patchiness(rng: np.random.Generator, shape: tuple[int, ...], heterogeneity: float) -> np.ndarray:
    """Multiplicative field max(0, 1 + h * f), f smoothed white noise (sigma 1 voxel) rescaled to unit sd."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 1.0)
    field /= field.std()
    return np.maximum(0.0, 1.0 + np.float32(heterogeneity) * field)


def render_pd_subject(t: PDTemplate, cfg: PDCohortConfig, subject: SubjectSpec) -> dict[str, np.ndarray | dict]:
    """FA, MD (scaled) and, for patients, the change map of one subject, in subject space."""
    rng = subject_rng(cfg.seed, subject.index)
    grid = t.atlas.grid
    spacing = grid.spacing[0]
    fields = smooth_random_fields(rng, grid.shape, spacing, 5, correlation_mm=25.0)
    fa_gain = (1 - 0.0025 * (subject.age - 61.0)) * rng.normal(1.0, 0.02) * np.exp(0.03 * fields[3])
    md_gain = (1 + 0.003 * (subject.age - 61.0)) * rng.normal(1.0, 0.02) * np.exp(0.03 * fields[4])
    fa, md = t.fa * fa_gain, t.md * md_gain
    info: dict = {}
    if subject.group == "patient":
        disease_rng = subject_rng(cfg.seed, subject.index, DISEASE_STREAM)
        spread = disease_rng.uniform(0.5, 1.5)
        severity = cfg.effect_size * (1.0 if cfg.fixed_change else spread)
        effect, info = _effect_map(t, disease_rng, severity, cfg.locations, cfg.target_nuclei, cfg.fixed_change)
        if cfg.heterogeneity > 0:
            effect = effect * _patchiness(disease_rng, effect.shape, cfg.heterogeneity)
        info["severity"] = round(float(severity), 4)
        fa, md = fa * (1 - effect), md * (1 + effect)
    else:
        effect = np.zeros_like(fa)
    displacement = misregistration(rng, fields[:3], spacing, cfg.deformation_mm, t.centre_vox)
    fa, md, brain, effect = warp(np.stack([fa, md, t.brain, effect]), displacement)
    inside = brain > 0.5
    noisy = np.stack([fa, md]) + rng.standard_normal((2, *grid.shape), dtype=np.float32) * np.float32(cfg.noise_sd)
    noisy *= inside
    smoothed = [ndimage.gaussian_filter(c, cfg.smoothing_vox) * inside for c in noisy]
    return {
        "FA": np.clip(smoothed[0], 0, 1),
        "MD": np.clip(smoothed[1], 0, 1),
        "anomaly": np.clip(effect, 0, 1) * inside,
        "info": info,
    }


def save_pd_subject(folder: Path, subject: SubjectSpec, maps: dict, grid) -> dict:
    """Write one rendered subject's FA, MD (and, for a patient, its change map) under ``folder/<id>/``; returns
    its dataset.json entry with paths relative to ``folder``."""
    rel = Path(subject.id)
    entry = {"id": subject.id, "group": subject.group, "age": subject.age, "sex": subject.sex,
             "image": [str(rel / f"{subject.id}_FA.nii.gz"), str(rel / f"{subject.id}_MD.nii.gz")]}
    save_nifti(folder / entry["image"][0], maps["FA"], grid, "synthetic FA")
    save_nifti(folder / entry["image"][1], maps["MD"], grid, f"synthetic MD / {MD_MAX_MM2_PER_S} mm2/s")
    if subject.group == "patient":
        entry["anomaly"] = str(rel / f"{subject.id}_anomaly.nii.gz")
        save_nifti(folder / entry["anomaly"], maps["anomaly"], grid, "relative FA decrease / MD increase")
        entry["effect"] = maps["info"]
    return entry


def make_pd_cohort(out: str | Path, cfg: PDCohortConfig = PDCohortConfig(), progress: bool = True,
                   overwrite: bool = False) -> tuple[Path, float]:
    """Write the cohort (NIfTI + dataset.json) to ``out``; returns the folder and seconds per subject.

    Reuses ``out`` when it already holds the cohort of the same configuration.
    """
    from common.data.dataset_json import write_dataset

    atlas = load_atlas("spm1p5")
    grid = atlas.grid
    subjects = draw_subjects(cfg.n_controls, cfg.n_patients, cfg.seed, cfg.age_mean, cfg.age_sd, cfg.female_fraction)
    inputs = {"kind": "pd_dti", "version": 1, "config": cfg.__dict__,
              "atlas": json.loads((atlas.folder / "manifest.json").read_text())["inputs"]}
    template: list[PDTemplate] = []

    def render(subject: SubjectSpec, folder: Path) -> dict:
        if not template:
            template.append(PDTemplate(atlas))
        return save_pd_subject(folder, subject, render_pd_subject(template[0], cfg, subject), grid)

    def write_json(folder: Path, entries: list[dict]) -> None:
        write_dataset(
            folder / "dataset.json", name="synthetic de novo PD DTI cohort", grid=grid.name, modality=["FA", "MD"],
            subjects=entries,
            description=("Synthetic FA and MD maps (MD scaled by 1/3.5e-3 mm^2/s) on the SPM 1.5 mm MNI grid, "
                         "made by common.data.synthetic.pd; patients carry planted FA decreases / MD increases "
                         "whose maps are given as 'anomaly'."),
            extra={"generator": {"module": "common.data.synthetic.pd", "config": cfg.__dict__}},
        )

    return write_cohort(out, inputs, subjects, render, write_json, desc="PD DTI cohort", progress=progress,
                        overwrite=overwrite)
