"""Detection benchmark: effect-size ladders on synthetic PD cohorts, every model beside the normative baseline.

``python -m common benchmark detection [--quick] --out DIR`` answers "what does each model detect, and from which
effect size on?" (docs/benchmark.md):

1. Per generator seed, one cohort: controls, and the same patients (same anatomy, same noise) carrying each rung
   of the ladder: effect sizes x texture (smooth / patchy) x location (deep nuclei / white matter). Controls do
   not depend on the rung, so each model is trained or fitted once per seed, on that seed's training controls.
2. Each model's anomaly maps are computed once per subject (pd_ae and pd_sae through their bundles' own network,
   preprocessing, inferer and post-processing; the baseline through :class:`~common.normative.NormativeModel`)
   and kept as brain-slab vectors; both raw errors and error z-maps are derived from the same maps.
3. Each rung is evaluated on the test controls and that rung's patients with thresholds set on the calibration
   controls: subject AUROC/AP per ROI, voxel AUROC/AP against the planted change, calibrated Dice, achieved FPR.
4. Subject scores are pooled over seeds per model x rung x ROI for the headline subject AUROC with a bootstrap
   interval; the minimum detectable effect is the smallest effect whose pooled interval lies above 0.5 from there on.

Outputs: ``DIR/detection.csv`` (long format: one row per model x cohort x ROI x metric, with intervals),
``DIR/mde.csv``, ``DIR/detection.md`` (the headline tables), ``DIR/figures/detection_<metric>.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from common.paths import models_dir

__all__ = ["LadderSettings", "run_detection_benchmark"]

#: ROIs of the headline tables (every PD ROI is in detection.csv).
HEADLINE_ROIS = ("whole_brain", "white_matter", "planted_nuclei", "putamen", "sn")
#: Metrics drawn against effect size.
FIGURE_METRICS = ("subject_auroc", "voxel_ap", "dice_fpr1", "test_fpr1")


@dataclass(frozen=True)
class LadderSettings:
    """Everything that defines a benchmark run; written to ``DIR/settings.json``."""

    seeds: tuple[int, ...] = (0, 1, 2)
    effects: tuple[float, ...] = (0.025, 0.05, 0.10, 0.20)
    textures: tuple[str, ...] = ("smooth", "patchy")
    locations: tuple[str, ...] = ("nuclei", "white_matter")
    patchy_heterogeneity: float = 3.0
    n_controls: int = 20
    n_patients: int = 10
    n_val: int = 3
    n_calib: int = 4
    models: tuple[str, ...] = ("pd_ae", "pd_sae", "normative")
    scorings: tuple[str, ...] = ("raw", "zscore")
    pd_ae: dict = field(default_factory=lambda: {"epochs": 30})
    pd_sae: dict = field(default_factory=lambda: {"epochs": 10, "pairs_per_epoch": 45_000})
    q: float = 0.98
    n_slices: int = 40
    n_bootstrap: int = 1000

    @classmethod
    def quick(cls, **overrides) -> LadderSettings:
        """A ladder that runs in minutes on 2 cores: one seed, 3 effects, fewer patients, shorter schedules."""
        base = {"seeds": (0,), "effects": (0.05, 0.10, 0.20), "n_controls": 16, "n_patients": 4,
                "pd_ae": {"epochs": 15}, "pd_sae": {"epochs": 4, "pairs_per_epoch": 20_000}}
        return cls(**{**base, **overrides})

    def rungs(self) -> list[tuple[str, str, float]]:
        return [(loc, tex, eff) for loc in self.locations for tex in self.textures for eff in self.effects]


def _rung_id(location: str, texture: str, effect: float) -> str:
    return f"{'nuc' if location == 'nuclei' else 'wm'}-{texture}-e{round(1000 * effect):03d}"


# ------------------------------------------------------------------------------------------- cohorts


def make_ladder_cohort(out: Path, settings: LadderSettings, seed: int, progress: bool = True) -> Path:
    """One seed's cohort: controls plus each patient once per rung (ids ``<patient>-<rung>``), with the rung as
    ``ladder`` in each patient's dataset.json entry. Reused when it exists with the same settings."""
    from common.atlases import load_atlas
    from common.data.dataset_json import write_dataset
    from common.data.synthetic.base import SubjectSpec, draw_subjects, write_cohort
    from common.data.synthetic.pd import PDCohortConfig, PDTemplate, render_pd_subject, save_pd_subject

    atlas = load_atlas("spm1p5")
    grid = atlas.grid
    base = PDCohortConfig(n_controls=settings.n_controls, n_patients=settings.n_patients, seed=seed)
    people = draw_subjects(base.n_controls, base.n_patients, seed, base.age_mean, base.age_sd, base.female_fraction)
    configs: dict[str, PDCohortConfig] = {}
    subjects: list[SubjectSpec] = [p for p in people if p.group == "control"]
    for location, texture, effect in settings.rungs():
        rung = _rung_id(location, texture, effect)
        configs[rung] = replace(base, effect_size=effect, locations=location,
                                heterogeneity=settings.patchy_heterogeneity if texture == "patchy" else 0.0)
        subjects += [replace(p, id=f"{p.id}-{rung}") for p in people if p.group == "patient"]
    rung_of = {s.id: s.id.split("-", 2)[2] for s in subjects if s.group == "patient"}
    template: list[PDTemplate] = []
    inputs = {"kind": "pd_detection_ladder", "version": 1, "seed": seed,
              "rungs": {r: asdict(c) for r, c in configs.items()},
              "atlas": json.loads((atlas.folder / "manifest.json").read_text())["inputs"]}

    def render(subject: SubjectSpec, folder: Path) -> dict:
        if not template:
            template.append(PDTemplate(atlas))
        rung = rung_of.get(subject.id)
        entry = save_pd_subject(folder, subject, render_pd_subject(template[0], configs[rung] if rung else base,
                                                                   subject), grid)
        if rung:
            entry["effect"]["ladder"] = rung
        return entry

    def write_json(folder: Path, entries: list[dict]) -> None:
        write_dataset(folder / "dataset.json", name=f"PD detection ladder, seed {seed}", grid=grid.name,
                      modality=["FA", "MD"], subjects=entries,
                      description="Synthetic PD DTI controls and the same patients at each rung of an effect-size "
                                  "ladder (common.app.benchmark).",
                      extra={"generator": {"module": "common.app.benchmark", "seed": seed}})

    folder, _ = write_cohort(out, inputs, subjects, render, write_json, desc=f"ladder cohort, seed {seed}",
                             progress=progress, overwrite=True)
    return folder / "dataset.json"


# ------------------------------------------------------------------------------------- anomaly maps


def _bundle_error_maps(bundle: str, root: Path, overrides: Mapping, subjects: Sequence[Mapping], bank,
                       progress: bool) -> None:
    """Add each subject's raw error map to ``bank``, computed with the bundle's own evaluate config pieces (network
    with the trained weights, preprocessing, inferer, post-processing), one subject at a time."""
    import torch
    from monai.bundle import ConfigParser
    from monai.inferers import SliceInferer
    from tqdm.auto import tqdm

    from common.app.experiment import bundle_configs
    from common.bundle_support import load_weights

    configs = bundle_configs(bundle)
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "evaluate.json")])
    parser.update({**overrides, "bundle_root": str(root)})
    device = parser.get_parsed_content("device")
    network = load_weights(parser.get_parsed_content("network"), models_dir(root) / "model.pt", map_location=device)
    network.eval()
    preprocessing = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    postprocessing = parser.get_parsed_content("postprocessing")
    # A slice-wise inferer's output on an axial slice depends on that slice alone: only the analysed slab is
    # reconstructed (a third of the volume), the rest of the map stays 0 and is never read from the bank.
    slab = bank.slab if isinstance(inferer, SliceInferer) and bank.slab is not None else slice(None)
    with torch.no_grad():
        for subject in tqdm(subjects, desc=f"{bundle}: error maps", unit="subject", disable=not progress):
            item = preprocessing(dict(subject))
            image = item["image"]
            pred = torch.zeros_like(image.as_tensor() if hasattr(image, "as_tensor") else image)
            pred[..., slab] = inferer(image[None, ..., slab].to(device), network)[0].cpu()
            item["pred"] = pred
            bank.add(subject["id"], subject["group"], postprocessing(item)["error"])


def _normative_maps(root: Path, fit_subjects, subjects, bank, progress: bool) -> None:
    from common.atlases import load_atlas
    from common.data.volumes import load_subject_volumes
    from common.normative import NormativeModel

    atlas = load_atlas("spm1p5")
    model = NormativeModel(atlas.brain, spacing=atlas.grid.spacing, tail="both", channel_names=["FA", "MD"])
    volumes = load_subject_volumes(fit_subjects, "spm1p5", ["FA", "MD"], keep=lambda i, v: v, progress=progress,
                                   desc="normative: reference controls")
    model.fit(np.stack(volumes))
    del volumes
    model.save(models_dir(root) / "normative", affine=atlas.grid.affine)
    maps = load_subject_volumes(subjects, "spm1p5", ["FA", "MD"], keep=lambda i, v: model.score(v),
                                progress=progress, desc="normative: scoring")
    for subject, zmap in zip(subjects, maps):
        bank.add(subject["id"], subject["group"], zmap)


# ------------------------------------------------------------------------------------------ the run


def run_detection_benchmark(out: str | Path, settings: LadderSettings | None = None, quick: bool = False,
                            progress: bool = True) -> dict:
    """Run the ladder (resumable: cohorts, trained models and per-seed results are reused); returns the rows."""
    from common.app.experiment import _run_workflow, bundle_configs
    from common.atlases import load_atlas
    from common.data import pool_subjects, read_dataset, split_subjects
    from common.evaluation.detection import load_ground_truth, standardise_bank
    from common.evaluation.pd import ErrorBank, pd_roi_masks

    settings = settings or (LadderSettings.quick() if quick else LadderSettings())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folder_settings = _merge_folder_settings(out, settings)
    atlas = load_atlas("spm1p5")
    roi_masks = pd_roi_masks(atlas)
    roi_masks["planted_nuclei"] = np.logical_or.reduce([atlas.region_mask(r) for r in ("sn", "putamen", "gpi", "stn")])
    timings: dict[str, float] = {}
    for seed in settings.seeds:
        seed_dir = out / f"seed_{seed}"
        todo = [m for m in settings.models if _read_model_results(seed_dir / m, m, settings, seed) is None]
        if not todo:
            continue  # every model of this seed was evaluated by an earlier run into this folder
        start = time.perf_counter()
        dataset_json = make_ladder_cohort(out / "cohorts" / f"seed_{seed}", settings, seed, progress)
        timings[f"cohort_seed{seed}"] = time.perf_counter() - start
        split = (0, None, 1, settings.n_val, seed, settings.n_calib)
        fit_pool = pool_subjects(dataset_json, ["train", "val"], *split)
        calib = split_subjects(dataset_json, "calib", *split)
        test = split_subjects(dataset_json, "test", *split)
        patients = split_subjects(dataset_json, "patients", *split)
        groups = read_dataset(dataset_json, check_files=False)
        ladder = {s["id"]: s["effect"]["ladder"] for s in groups.subjects if s["group"] == "patient"}
        truth_bank = ErrorBank.for_brain(atlas.brain, settings.n_slices)
        truth = load_ground_truth(patients, truth_bank, "spm1p5")
        for model in todo:
            t0 = time.perf_counter()
            root = seed_dir / model
            needed = (fit_pool if model != "normative" else []) + calib + test + patients
            bank = ErrorBank.for_brain(atlas.brain, settings.n_slices, capacity=len(needed))
            if model == "normative":
                _normative_maps(root, fit_pool, needed, bank, progress)
                variants = {"zscore": bank}
            else:
                overrides = {"dataset_dir": str(dataset_json.parent), "split_index": 0, "n_splits": 1,
                             "split_seed": seed, "seed": seed, "n_val": settings.n_val, "n_calib": settings.n_calib,
                             "progress": progress, "num_workers": 0, **getattr(settings, model)}
                if not (models_dir(root) / "train_summary.json").is_file():
                    _run_workflow([bundle_configs(model) / "train.json"], "train", {**overrides,
                                                                                   "bundle_root": str(root)})
                _bundle_error_maps(model, root, overrides, needed, bank, progress)
                variants = {s: (bank if s == "raw" else standardise_bank(bank, [x["id"] for x in fit_pool]))
                            for s in settings.scorings}
            for scoring, scored in variants.items():
                name = model if model == "normative" else f"{model}/{scoring}"
                _evaluate_rungs(scored, name, settings, calib, test, patients, ladder, truth, roi_masks, atlas, seed,
                                root / "eval" / scoring)
            timings[f"{model}_seed{seed}"] = time.perf_counter() - t0
    # The tables cover every model x seed evaluated into this folder (this run's and earlier runs'), read back
    # from the per-rung files, so a resumed or incremental run gives the same numbers as one uninterrupted run.
    per_seed_rows, pooled_scores = [], {}
    for seed in folder_settings.seeds:
        for model in folder_settings.models:
            found = _read_model_results(out / f"seed_{seed}" / model, model, folder_settings, seed)
            if found is None:
                continue
            rows, scores = found
            per_seed_rows += rows
            for key, value in scores.items():
                pooled_scores.setdefault(key, []).append(value)
    pooled_rows = _pooled_subject_rows(pooled_scores, settings)
    rows = per_seed_rows + pooled_rows
    mde = _minimum_detectable_effects(pooled_rows)
    files = _write_outputs(out, rows, mde, folder_settings, timings)
    return {"rows": rows, "mde": mde, "files": files, "timings": timings}


#: Settings a run into an existing folder may change: which seeds and models it adds. The others define the
#: ladder, and results made with other values must not be pooled with this run's.
_PER_RUN_FIELDS = ("seeds", "models")


def _merge_folder_settings(out: Path, settings: LadderSettings) -> LadderSettings:
    """Refuse a folder whose ladder was run with other settings; record the union of seeds and models run into it
    (``settings.json``) and return it."""
    from common.data._jsonio import write_json_atomic
    from common.errors import SettingsError

    path = out / "settings.json"
    merged = settings
    if path.is_file():
        old = json.loads(path.read_text())
        new = json.loads(json.dumps(asdict(settings)))
        differ = [k for k in sorted(set(old) | set(new)) if k not in _PER_RUN_FIELDS and old.get(k) != new.get(k)]
        if differ:
            raise SettingsError("--out", f"{out} holds a ladder run with other settings ("
                                + "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in differ)
                                + "): choose another --out, or delete that folder")
        merged = replace(settings, seeds=tuple(dict.fromkeys([*old.get("seeds", []), *settings.seeds])),
                         models=tuple(dict.fromkeys([*old.get("models", []), *settings.models])))
    write_json_atomic(path, asdict(merged))
    return merged


def _evaluate_rungs(bank, model: str, settings: LadderSettings, calib, test, patients, ladder, truth, roi_masks,
                    atlas, seed: int, out_dir: Path) -> None:
    """Each rung on test controls + its patients, written under ``out_dir/<rung>/`` by ``run_pd_evaluation``."""
    from common.evaluation.pd import run_pd_evaluation

    calib_ids = [s["id"] for s in calib]
    test_ids = [s["id"] for s in test]
    for location, texture, effect in settings.rungs():
        rung = _rung_id(location, texture, effect)
        rung_patients = [s["id"] for s in patients if ladder[s["id"]] == rung]
        run_pd_evaluation(bank, None, test_ids + rung_patients, calib_ids, atlas, out_dir / rung,
                          q=settings.q, n_slices=settings.n_slices, n_bootstrap=settings.n_bootstrap,
                          seed=seed, model_name=model, roi_masks=roi_masks, figures=False, verbose=False,
                          ground_truth={i: truth[i] for i in rung_patients if i in truth},
                          scoring="zscore" if model.endswith("zscore") or model == "normative" else "raw")


def _read_model_results(root: Path, model: str, settings: LadderSettings, seed: int) -> tuple[list, dict] | None:
    """Long rows and subject scores of one model x seed, read from every rung's ``detection.csv`` and
    ``percent_abnormal.csv``; None when any rung is missing (the model x seed is then evaluated again)."""
    import csv

    def number(text: str) -> float | None:
        return None if text == "" else float(text)

    rows, scores = [], {}
    for scoring in (("zscore",) if model == "normative" else settings.scorings):
        name = model if model == "normative" else f"{model}/{scoring}"
        for location, texture, effect in settings.rungs():
            rung_dir = root / "eval" / scoring / _rung_id(location, texture, effect)
            detection, percent = rung_dir / "detection.csv", rung_dir / "percent_abnormal.csv"
            if not (detection.is_file() and percent.is_file()):
                return None
            cohort = {"model": name, "seed": seed, "location": location, "texture": texture, "effect": effect}
            with detection.open(newline="") as f:
                for det in csv.DictReader(f):
                    for metric in ("voxel_auroc", "voxel_ap", "dice_fpr1", "dice_fpr5", "oracle_dice"):
                        rows.append({**cohort, "roi": det["roi"], "metric": metric, "value": number(det[metric])})
                    for metric in ("test_fpr1", "test_fpr5", "subject_auroc", "subject_ap"):
                        rows.append({**cohort, "roi": det["roi"], "metric": metric, "value": number(det[metric]),
                                     "ci_low": number(det[f"{metric}_ci_low"]),
                                     "ci_high": number(det[f"{metric}_ci_high"])})
            with percent.open(newline="") as f:
                subjects = list(csv.DictReader(f))
            labels = np.array([s["group"] == "patient" for s in subjects])
            for roi in subjects[0].keys() - {"id", "group"}:
                values = np.array([float(s[roi]) for s in subjects])
                scores[(name, location, texture, effect, roi)] = (values, labels)
    return rows, scores


def _pooled_subject_rows(pooled: Mapping, settings: LadderSettings) -> list[dict]:
    """Subject AUROC/AP per model x rung x ROI with the subjects of every seed together (seed = "pooled")."""
    from common.metrics.voxel import subject_auroc_ap

    rows = []
    for (model, location, texture, effect, roi), parts in pooled.items():
        values = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        s = subject_auroc_ap(values, labels, n_bootstrap=settings.n_bootstrap, seed=0)
        cohort = {"model": model, "seed": "pooled", "location": location, "texture": texture, "effect": effect,
                  "roi": roi}
        rows.append({**cohort, "metric": "subject_auroc", "value": s["auroc"], "ci_low": s["auroc_ci_low"],
                     "ci_high": s["auroc_ci_high"]})
        rows.append({**cohort, "metric": "subject_ap", "value": s["average_precision"], "ci_low": s["ap_ci_low"],
                     "ci_high": s["ap_ci_high"]})
    return rows


def _minimum_detectable_effects(pooled_rows: Sequence[Mapping]) -> list[dict]:
    from common.metrics.voxel import minimum_detectable_effect

    groups: dict[tuple, list] = {}
    for r in pooled_rows:
        if r["metric"] == "subject_auroc":
            groups.setdefault((r["model"], r["location"], r["texture"], r["roi"]), []).append(r)
    out = []
    for (model, location, texture, roi), rs in groups.items():
        effects = [r["effect"] for r in rs]
        lows = [np.nan if r["ci_low"] is None else r["ci_low"] for r in rs]
        out.append({"model": model, "location": location, "texture": texture, "roi": roi,
                    "mde": minimum_detectable_effect(effects, lows)})
    return out


def _mean_over_seeds(rows: Sequence[Mapping], metric: str) -> dict[tuple, float]:
    acc: dict[tuple, list] = {}
    for r in rows:
        if r["metric"] == metric and r["seed"] != "pooled" and r["value"] is not None:
            acc.setdefault((r["model"], r["location"], r["texture"], r["effect"], r["roi"]), []).append(r["value"])
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _write_outputs(out: Path, rows, mde, settings: LadderSettings, timings) -> dict:
    import csv
    import io

    from common.data._jsonio import write_json_atomic, write_text_atomic

    fields = ("model", "seed", "location", "texture", "effect", "roi", "metric", "value", "ci_low", "ci_high")

    def csv_text(fieldnames, records) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(fieldnames)
        for r in records:
            writer.writerow(["" if r.get(f) is None else (f"{r[f]:.6g}" if isinstance(r.get(f), float) else r[f])
                             for f in fieldnames])
        return buf.getvalue()

    files = {"csv": str(write_text_atomic(out / "detection.csv", csv_text(fields, rows))),
             "mde": str(write_text_atomic(out / "mde.csv", csv_text(("model", "location", "texture", "roi", "mde"),
                                                                    mde))),
             "timings": str(write_json_atomic(out / "timings.json", _merged_timings(out / "timings.json", timings)))}
    files["markdown"] = str(write_text_atomic(out / "detection.md", format_ladder(rows, mde, settings)))
    from common.visualize.detection import plot_ladder

    for metric in FIGURE_METRICS:
        files[f"figure_{metric}"] = str(plot_ladder(rows, metric, out / "figures" / f"detection_{metric}.png"))
    print(format_ladder(rows, mde, settings))
    return files


def _merged_timings(path: Path, timings: Mapping[str, float]) -> dict[str, float]:
    """Earlier runs' timings into this folder, updated with this run's (seconds, one decimal)."""
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    return {**earlier, **{k: round(v, 1) for k, v in timings.items()}}


def format_ladder(rows: Sequence[Mapping], mde: Sequence[Mapping], settings: LadderSettings) -> str:
    """Markdown: per location x texture, subject AUROC [CI] (pooled over seeds) and voxel AP (mean over seeds) per
    model x effect in the headline ROIs, then the minimum detectable effects."""
    auroc = {(r["model"], r["location"], r["texture"], r["effect"], r["roi"]): r for r in rows
             if r["metric"] == "subject_auroc" and r["seed"] == "pooled"}
    vap = _mean_over_seeds(rows, "voxel_ap")
    models = list(dict.fromkeys(r["model"] for r in rows))
    seeds: dict[str, list] = {}
    for r in rows:
        if r["seed"] != "pooled" and r["seed"] not in seeds.setdefault(r["model"], []):
            seeds[r["model"]].append(r["seed"])
    lines = [f"# Detection ladder: {settings.n_controls} controls ({settings.n_calib} calibration, {settings.n_val} "
             f"validation), {settings.n_patients} patients per rung and seed", "",
             "Seeds: " + "; ".join(f"{m} {', '.join(map(str, s))}" for m, s in seeds.items()) + ".", "",
             "Subject AUROC [95 % CI] pooled over seeds / voxel AP (mean over seeds); thresholds calibrated on "
             "held-out controls.", ""]
    for location in settings.locations:
        for texture in settings.textures:
            rois = [r for r in HEADLINE_ROIS if r != ("planted_nuclei" if location == "white_matter" else "")]
            lines += [f"## change in {location.replace('_', ' ')}, {texture}", "",
                      "| model | ROI | " + " | ".join(f"{100 * e:g} %" for e in settings.effects) + " |",
                      "|---|---|" + "---|" * len(settings.effects)]
            for model in models:
                for roi in rois:
                    cells = []
                    for e in settings.effects:
                        a = auroc.get((model, location, texture, e, roi))
                        v = vap.get((model, location, texture, e, roi))
                        cells.append("n/a" if a is None or a["value"] is None else
                                     f"{a['value']:.2f} [{a['ci_low']:.2f}, {a['ci_high']:.2f}] / "
                                     + ("n/a" if v is None else f"{v:.3f}"))
                    lines.append(f"| {model} | {roi} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## Minimum detectable effect (smallest effect whose pooled subject-AUROC CI stays above 0.5)", "",
              "| model | location | texture | " + " | ".join(HEADLINE_ROIS) + " |",
              "|---|---|---|" + "---|" * len(HEADLINE_ROIS)]
    table = {(m["model"], m["location"], m["texture"], m["roi"]): m["mde"] for m in mde}
    for model in models:
        for location in settings.locations:
            for texture in settings.textures:
                cells = [table.get((model, location, texture, roi)) for roi in HEADLINE_ROIS]
                lines.append(f"| {model} | {location} | {texture} | "
                             + " | ".join("-" if c is None else f"{100 * c:g} %" for c in cells) + " |")
    return "\n".join(lines) + "\n"
