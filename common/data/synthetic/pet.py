"""Synthetic FDG PET cohort: SUVR images on the ClinicaDL 2 mm grid (stand-in for ADNI).

Uptake is grey-matter dominant with regional modulation (striatum, thalamus and occipital cortex high,
temporal cortex lower), white matter at about a third of grey matter, little in CSF and a faint scalp.
Each subject gets an age effect, a global dose/scanner scale (cancelled by SUVR normalisation), a smooth
regional field (sd 4 %), a smooth random deformation (1.5 mm RMS), Poisson-like noise and an 8 mm FWHM
resolution. The image is divided by its mean uptake in cerebellum + pons (as Clinica's ``pet-linear``).
AD subjects carry hypometabolism in the AD pattern at an individual degree drawn from 15-35 %, made with
:class:`common.transforms.SimulateHypometabolism` (docs/design.md section 4.2) on the template before the
deformation, so it follows the subject's anatomy; its reduction map is the subject's ``anomaly`` map.
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
from common.transforms.hypometabolism import SimulateHypometabolism

__all__ = ["GM_UPTAKE", "PETCohortConfig", "PETTemplate", "make_pet_cohort", "render_pet_subject"]

#: Relative grey-matter FDG uptake per region (1 elsewhere in grey matter).
GM_UPTAKE = {"occipital": 1.15, "parietal": 1.05, "frontal": 1.05, "temporal": 0.92, "cingulate_insular": 1.0,
             "cerebellum": 0.7, "putamen": 1.25, "caudate": 1.1, "thalamus": 1.15}
WM_UPTAKE, CSF_UPTAKE, SCALP_UPTAKE = 0.3, 0.05, 0.12
FWHM_MM = 8.0


@dataclass(frozen=True)
class PETCohortConfig:
    """Parameters of the PET cohort; every one is recorded in the cohort's manifest."""

    n_controls: int = 20
    n_patients: int = 10
    seed: int = 0
    degree_range: tuple[float, float] = (15.0, 35.0)
    pattern: str = "ad"
    age_mean: float = 73.0
    age_sd: float = 7.0
    female_fraction: float = 0.5
    deformation_mm: float = 1.5
    noise_sd: float = 0.35
    sigma_mm: float = 5.0

    @classmethod
    def paper_size(cls, **overrides) -> PETCohortConfig:
        """The AD paper's cohort: 301 cognitively normal subjects and 311 AD patients."""
        return cls(**{"n_controls": 301, "n_patients": 311, **overrides})


class PETTemplate:
    """Population uptake map, head mask and SUVR reference region of the 2 mm grid (built once)."""

    def __init__(self, atlas: Atlas):
        self.atlas = atlas
        brain = atlas.brain
        gm_gain = np.ones(atlas.grid.shape, np.float32)
        for region, gain in GM_UPTAKE.items():
            gm_gain[atlas.region_mask(region)] = gain
        gm_gain = ndimage.gaussian_filter(gm_gain, 1.0)
        uptake = atlas.gm * gm_gain + atlas.wm * WM_UPTAKE + atlas.csf * CSF_UPTAKE
        spacing = atlas.grid.spacing[0]
        head = ndimage.binary_dilation(brain, iterations=round(8.0 / spacing))
        scalp = ndimage.gaussian_filter((head & ~brain).astype(np.float32), 1.0) * SCALP_UPTAKE
        self.uptake = (uptake * brain + scalp * ~brain).astype(np.float32)
        self.head = ndimage.gaussian_filter(head.astype(np.float32), 1.0)
        self.cortex = (atlas.gm * brain).astype(np.float32)
        self.reference = atlas.mask("cerebellum") | atlas.mask("pons")
        self.centre_vox = np.argwhere(brain).mean(0)


def render_pet_subject(t: PETTemplate, cfg: PETCohortConfig, subject: SubjectSpec,
                       simulator: SimulateHypometabolism | None = None) -> dict:
    """SUVR image and (for patients) the hypometabolism reduction map of one subject."""
    rng = subject_rng(cfg.seed, subject.index)
    grid = t.atlas.grid
    spacing = grid.spacing[0]
    fields = smooth_random_fields(rng, grid.shape, spacing, 4, correlation_mm=30.0)
    age_gain = 1.0 - 0.002 * (subject.age - 73.0) * t.cortex  # cortical decline with age
    image = t.uptake * age_gain * np.exp(0.04 * fields[3]) * rng.lognormal(0.0, 0.1)
    info: dict = {}
    reduction = np.zeros_like(image)
    if subject.group == "patient":
        degree = float(subject_rng(cfg.seed, subject.index, DISEASE_STREAM).uniform(*cfg.degree_range))
        simulator = SimulateHypometabolism(cfg.pattern, degree=degree, sigma_mm=cfg.sigma_mm, grid=grid.name) \
            if simulator is None else simulator
        reduction = simulator.reduction_map(image, degree)
        image = simulator(image, degree)
        info = {"pattern": cfg.pattern, "degree": round(degree, 2)}
    displacement = misregistration(rng, fields[:3], spacing, cfg.deformation_mm, t.centre_vox)
    image, reduction, head = warp(np.stack([image, reduction, t.head]), displacement)
    noise = rng.standard_normal(grid.shape, dtype=np.float32) * np.float32(cfg.noise_sd)
    image = image + noise * np.sqrt(np.clip(image, 0, None)) * (head > 0.05)
    image = ndimage.gaussian_filter(image, FWHM_MM / (2.0 * np.sqrt(2.0 * np.log(2.0))) / spacing)
    image = np.clip(image, 0, None)
    suvr = image / image[t.reference].mean()
    return {"PET": suvr.astype(np.float32), "anomaly": np.clip(reduction, 0, 1), "info": info}


def make_pet_cohort(out: str | Path, cfg: PETCohortConfig = PETCohortConfig(), progress: bool = True,
                    overwrite: bool = False) -> tuple[Path, float]:
    """Write the cohort (NIfTI + dataset.json) to ``out``; returns the folder and seconds per subject."""
    from common.data.dataset_json import write_dataset

    atlas = load_atlas("clinicadl2")
    grid = atlas.grid
    subjects = draw_subjects(cfg.n_controls, cfg.n_patients, cfg.seed, cfg.age_mean, cfg.age_sd, cfg.female_fraction)
    inputs = {"kind": "ad_pet", "version": 1, "config": {**cfg.__dict__, "degree_range": list(cfg.degree_range)},
              "atlas": json.loads((atlas.folder / "manifest.json").read_text())["inputs"]}
    state: dict = {}

    def render(subject: SubjectSpec, folder: Path) -> dict:
        if not state:
            state["template"] = PETTemplate(atlas)
            state["simulator"] = SimulateHypometabolism(atlas.mask(cfg.pattern), sigma_mm=cfg.sigma_mm, grid=grid.name)
        maps = render_pet_subject(state["template"], cfg, subject, state["simulator"])
        rel = Path(subject.id)
        entry = {"id": subject.id, "group": subject.group, "age": subject.age, "sex": subject.sex,
                 "image": str(rel / f"{subject.id}_pet.nii.gz")}
        save_nifti(folder / entry["image"], maps["PET"], grid, "synthetic FDG PET SUVR (cerebellum+pons)")
        if subject.group == "patient":
            entry["anomaly"] = str(rel / f"{subject.id}_anomaly.nii.gz")
            save_nifti(folder / entry["anomaly"], maps["anomaly"], grid, "fractional uptake reduction")
            entry["hypometabolism"] = maps["info"]
        return entry

    def write_json(folder: Path, entries: list[dict]) -> None:
        write_dataset(
            folder / "dataset.json", name="synthetic FDG PET cohort (CN / AD)", grid=grid.name, modality=["PET"],
            subjects=entries,
            description=("Synthetic FDG PET SUVR images (reference: cerebellum + pons) on the ClinicaDL 2 mm grid, "
                         "made by common.data.synthetic.pet; 'control' = cognitively normal, 'patient' = AD with "
                         "simulated hypometabolism whose reduction maps are given as 'anomaly'."),
            extra={"generator": {"module": "common.data.synthetic.pet", "config": inputs["config"]}},
        )

    return write_cohort(out, inputs, subjects, render, write_json, desc="FDG PET cohort", progress=progress,
                        overwrite=overwrite)
