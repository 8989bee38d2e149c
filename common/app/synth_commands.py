"""``python -m common synth pd|pet``: write a synthetic cohort as NIfTI files + dataset.json."""

from __future__ import annotations

from collections import Counter


def _summary(folder, seconds_per_subject: float) -> None:
    from common.data.dataset_json import read_dataset

    ds = read_dataset(folder / "dataset.json")
    groups = Counter(s["group"] for s in ds.subjects)
    ages = [s["age"] for s in ds.subjects]
    females = sum(s["sex"] == "F" for s in ds.subjects)
    timing = f"{seconds_per_subject:.2f} s per subject" if seconds_per_subject else "already up to date"
    print(f"{ds.name}: {groups['control']} controls, {groups['patient']} patients, age "
          f"{sum(ages) / len(ages):.1f} (range {min(ages):.0f}-{max(ages):.0f}), {females} F / "
          f"{len(ages) - females} M; {timing}")
    print(f"dataset.json: {folder / 'dataset.json'}")


def synth_pd(out: str, n_controls: int, n_patients: int, seed: int, effect_size: float, heterogeneity: float,
             paper_size: bool, overwrite: bool, progress: bool, locations: str = "mixed",
             nuclei: str = "sn,putamen,gpi,stn", fixed_change: bool = False) -> None:
    """``synth pd``: the PD DTI cohort (FA, MD on the 1.5 mm grid); flags documented in ``common.app.commands``."""
    from common.data.synthetic.pd import PDCohortConfig, make_pd_cohort

    targets = tuple(n.strip() for n in (nuclei.split(",") if isinstance(nuclei, str) else nuclei) if n.strip())
    kwargs = {"seed": seed, "effect_size": effect_size, "heterogeneity": heterogeneity, "locations": locations,
              "target_nuclei": targets, "fixed_change": fixed_change}
    cfg = PDCohortConfig.paper_size(**kwargs) if paper_size else PDCohortConfig(n_controls, n_patients, **kwargs)
    folder, seconds = make_pd_cohort(out, cfg, progress=progress, overwrite=overwrite)
    _summary(folder, seconds)


def synth_pet(out: str, n_controls: int, n_patients: int, seed: int, degree_min: float, degree_max: float,
              paper_size: bool, overwrite: bool, progress: bool) -> None:
    """``synth pet``: the FDG PET cohort (SUVR on the 2 mm grid); flags documented in ``common.app.commands``."""
    from common.data.synthetic.pet import PETCohortConfig, make_pet_cohort

    kwargs = {"seed": seed, "degree_range": (float(degree_min), float(degree_max))}
    cfg = PETCohortConfig.paper_size(**kwargs) if paper_size else PETCohortConfig(n_controls, n_patients, **kwargs)
    folder, seconds = make_pet_cohort(out, cfg, progress=progress, overwrite=overwrite)
    _summary(folder, seconds)
