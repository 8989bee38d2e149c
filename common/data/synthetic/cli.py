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


class SynthCommands:
    """Write a synthetic cohort (deterministic for a seed); an existing identical cohort is reused."""

    def pd(self, out: str = "outputs/cohorts/pd", n_controls: int = 20, n_patients: int = 20, seed: int = 0,
           effect_size: float = 0.05, heterogeneity: float = 0.0, paper_size: bool = False, overwrite: bool = False,
           progress: bool = True, locations: str = "mixed", nuclei: str = "sn,putamen,gpi,stn"):
        """PD DTI cohort (FA, MD on the 1.5 mm grid). --paper_size gives the paper's 56 controls / 129 patients;
        --heterogeneity H makes patients' changes patchy at the voxel scale (0: smooth); --locations puts the
        changes in white-matter blobs and nuclei (mixed), the nuclei only or the white matter only; --nuclei lists
        the nuclei that may change (e.g. --nuclei putamen: one deep nucleus)."""
        from common.data.synthetic.pd import PDCohortConfig, make_pd_cohort

        targets = tuple(n.strip() for n in (nuclei.split(",") if isinstance(nuclei, str) else nuclei) if n.strip())
        kwargs = {"seed": seed, "effect_size": effect_size, "heterogeneity": heterogeneity, "locations": locations,
                  "target_nuclei": targets}
        cfg = PDCohortConfig.paper_size(**kwargs) if paper_size else PDCohortConfig(n_controls, n_patients, **kwargs)
        folder, seconds = make_pd_cohort(out, cfg, progress=progress, overwrite=overwrite)
        _summary(folder, seconds)

    def pet(self, out: str = "outputs/cohorts/pet", n_controls: int = 20, n_patients: int = 10, seed: int = 0,
            degree_min: float = 15.0, degree_max: float = 35.0, paper_size: bool = False, overwrite: bool = False,
            progress: bool = True):
        """FDG PET cohort (SUVR on the 2 mm grid), AD patients at 15-35 % hypometabolism by default."""
        from common.data.synthetic.pet import PETCohortConfig, make_pet_cohort

        kwargs = {"seed": seed, "degree_range": (float(degree_min), float(degree_max))}
        cfg = PETCohortConfig.paper_size(**kwargs) if paper_size else PETCohortConfig(n_controls, n_patients, **kwargs)
        folder, seconds = make_pet_cohort(out, cfg, progress=progress, overwrite=overwrite)
        _summary(folder, seconds)
