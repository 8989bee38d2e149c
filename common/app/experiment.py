"""The PD experiment driver: per seeded control split, train a bundle, evaluate it, then aggregate.

``python -m common experiment pd --bundle pd_ae --splits 10`` reproduces the PD paper's protocol (10 splits,
retrain per split, mean +- sd and the best split per ROI). Each split lives in ``<out>/split_XX`` as a bundle
root (``models/``, ``logs/``, ``eval/``); a split whose evaluation JSON exists is skipped and a split whose
training finished is not retrained, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from common.app.baseline import BASELINE_NAME
from common.bundle_support import require_writable_dir
from common.evaluation.fingerprint import prepare_splits
from common.evaluation.pd import aggregate_splits, write_split_aggregates
from common.paths import bundle_dir, eval_dir, experiment_dir, models_dir, split_root

__all__ = [
    "PAPER_SCALE",
    "PD_BUNDLES",
    "PD_MODELS",
    "PD_PROTOCOLS",
    "PET_PAPER_SPLIT",
    "SHORT_SCHEDULE",
    "bundle_configs",
    "compare_experiments",
    "paper_pet_splits",
    "pd_protocol",
    "record_timing",
    "run_pd_experiment",
    "run_pet_experiment",
    "short_schedule_overrides",
    "write_protocol",
]

PD_BUNDLES = ("pd_ae", "pd_sae")
#: Models the PD protocol runs: the two bundles and the voxel-wise z-score baseline.
PD_MODELS = (*PD_BUNDLES, BASELINE_NAME)


def bundle_configs(bundle: str, bundles_dir: str | Path | None = None) -> Path:
    """The ``configs`` folder of a bundle (the repository's copy unless ``bundles_dir`` is given)."""
    configs = bundle_dir(bundle, bundles_dir) / "configs"
    if not (configs / "train.json").is_file():
        raise FileNotFoundError(f"no bundle {bundle!r} at {configs.parent} (expected configs/train.json)")
    return configs


def _run_workflow(config_files, workflow_type: str, overrides: Mapping) -> None:
    from monai.bundle import ConfigWorkflow

    configs = Path(config_files[0]).parent
    workflow = ConfigWorkflow(config_file=[str(c) for c in config_files], workflow_type=workflow_type,
                              meta_file=str(configs / "metadata.json"), logging_file=str(configs / "logging.conf"),
                              **overrides)
    workflow.initialize()
    missing = workflow.check_properties()
    if missing:
        raise RuntimeError(f"{configs}: the {workflow_type} workflow lacks required ids {missing}")
    workflow.run()
    workflow.finalize()


def _train_then_evaluate(configs: Path, root: Path, overrides: Mapping, label: str) -> None:
    """Train the bundle into ``root`` unless a finished training is there (``train_summary.json``), then run
    its evaluate config: the resumable unit of every experiment driver. The wall times of both go to
    ``<root>/timing.json`` (what the paper-size extrapolation reads)."""
    timing = {}
    if (models_dir(root) / "train_summary.json").is_file():
        print(f"{label}: trained earlier, evaluating")
    else:
        print(f"{label}: training")
        start = time.perf_counter()
        _run_workflow([configs / "train.json"], "train", overrides)
        timing["train_s"] = time.perf_counter() - start
    print(f"{label}: evaluating")
    start = time.perf_counter()
    _run_workflow([configs / "train.json", configs / "evaluate.json"], "infer", overrides)
    timing["evaluate_s"] = time.perf_counter() - start
    record_timing(root, timing)


def record_timing(root: Path, timing: Mapping) -> Path:
    """Merge ``timing`` (seconds, and the epochs run) into ``<root>/timing.json``: a resumed split keeps the
    training time of the run that trained it."""
    from common.data._jsonio import write_json_atomic

    path = Path(root) / "timing.json"
    merged = {**(json.loads(path.read_text()) if path.is_file() else {}), **timing}
    summary = models_dir(root) / "train_summary.json"
    if summary.is_file():
        merged["epochs"] = json.loads(summary.read_text()).get("epochs")
    return write_json_atomic(path, merged)


def _fit_then_evaluate_baseline(root: Path, settings: Mapping, label: str) -> None:
    """The baseline's counterpart of :func:`_train_then_evaluate`: fit on the split's controls, evaluate."""
    from common.app.baseline import evaluate_normative_split
    from common.data.synthetic import default_cohort

    print(f"{label}: fitting the normative baseline and evaluating")
    start = time.perf_counter()
    dataset_dir = Path(settings.get("dataset_dir") or default_cohort("pd").parent)
    keys = ("n_splits", "n_val", "n_calib", "split_seed", "seed", "reference_pool", "q", "n_slices", "n_bootstrap",
            "fprs", "progress", "robust", "smoothing_mm", "splits_file")
    kwargs = {k: settings[k] for k in keys if k in settings}
    if "quantile" in settings:
        kwargs["q"] = settings["quantile"]
    evaluate_normative_split(dataset_dir / "dataset.json", root, settings["split_index"], **kwargs)
    record_timing(root, {"evaluate_s": time.perf_counter() - start})


def _check_experiment_input(configs: Path, settings: Mapping, splits: int, bundle: str) -> None:
    """Before the first split is trained: every file of the cohort is read and checked (a truncated patient
    file fails now, not after training), and the splits are counted. Identical splits are refused (unless one
    split is asked for); fewer distinct ones than asked are printed."""
    import warnings

    from common.data import check_subjects, make_splits, read_dataset, require_distinct_splits

    # the baseline has no bundle config: it reads the PD grid and channels
    config = json.loads((configs / "train.json").read_text()) if configs else {"grid": "spm1p5",
                                                                              "modalities": ["FA", "MD"]}
    grid = settings.get("grid", config.get("grid"))
    modalities = settings.get("modalities", config.get("modalities", ["PET"]))
    dataset_dir = settings.get("dataset_dir")
    if dataset_dir is None:
        from common.data.synthetic import default_cohort

        dataset_json = default_cohort("pd")
    else:
        dataset_json = Path(dataset_dir) / "dataset.json"
    dataset = read_dataset(dataset_json, modalities=modalities)
    if not settings.get("splits_file"):
        with warnings.catch_warnings():  # reported below, in the run's own words
            warnings.simplefilter("ignore")
            manifest = make_splits(dataset, n_splits=splits, n_val=settings.get("n_val", 0),
                                   seed=settings.get("split_seed", 0), n_calib=settings.get("n_calib", 0))
        n_distinct = require_distinct_splits(manifest, dataset.path)
        if n_distinct < splits:
            print(f"[{bundle}] warning: only {n_distinct} of {splits} splits are distinct ({manifest['n_controls']} "
                  "controls are too few for that many distinct bootstrap draws); the sd over splits understates "
                  "the variability")
    check_subjects(dataset.subjects, grid, modalities, what=f"the {bundle} experiment", source=dataset.path,
                   progress=bool(settings.get("progress", False)))


#: The PD protocol's defaults: this project's (held-out calibration controls set the thresholds), the paper's at
#: its size (``--paper``: 15 test controls of 56, and validation + calibration controls carved from the paper's 41
#: training ones), and the paper's exact split (``--paper --exact_split``: 41 train / 15 test, no validation, the
#: thresholds from the training controls as the paper sets them).
PD_PROTOCOLS = {
    "default": {"splits": 10, "n_val": 3, "n_calib": 4, "reference_pool": "calib"},
    "paper": {"splits": 10, "n_val": 3, "n_calib": 6, "reference_pool": "calib"},
    "paper_exact": {"splits": 10, "n_val": 0, "n_calib": 0, "reference_pool": "train"},
}
#: Settings the exact split fixes: any other value contradicts it.
_EXACT_FIXED = ("n_val", "n_calib", "reference_pool")


def pd_protocol(paper: bool = False, exact_split: bool = False, **explicit) -> tuple[str, dict]:
    """The protocol's name and its settings (``splits``, ``n_val``, ``n_calib``, ``reference_pool``): the
    protocol's defaults with the explicitly given (non-None) values on top. Refuses ``exact_split`` without
    ``paper`` and explicit values that contradict the exact split, naming the flag."""
    from common.errors import SettingsError

    if exact_split and not paper:
        raise SettingsError("--exact_split", "is the paper's 41/15 split: use it with --paper true")
    name = "paper_exact" if exact_split else "paper" if paper else "default"
    settings = dict(PD_PROTOCOLS[name])
    for key, value in explicit.items():
        if value is None:
            continue
        if name == "paper_exact" and key in _EXACT_FIXED and value != settings[key]:
            raise SettingsError(f"--{key}", f"the paper's exact split fixes it to {settings[key]!r}, got {value!r}")
        settings[key] = value
    return name, settings


def run_pd_experiment(bundle: str = "pd_ae", dataset_dir: str | None = None, out: str | Path | None = None,
                      splits: int | None = None, seed: int = 0, n_val: int | None = None, epochs: int | None = None,
                      overrides: Mapping | None = None, bundles_dir: str | Path | None = None,
                      progress: bool = True, n_calib: int | None = None, reference_pool: str | None = None,
                      scoring: str | None = None, overwrite: bool = False, paper: bool = False,
                      exact_split: bool = False) -> dict:
    """Train and evaluate ``bundle`` on ``splits`` control splits; returns the aggregated rows and paths.

    ``bundle``: ``pd_ae``, ``pd_sae`` or ``normative`` (the voxel-wise z-score baseline, fitted instead of
    trained; :mod:`common.app.baseline`). ``dataset_dir`` defaults to the embedded synthetic PD cohort;
    ``epochs`` overrides the bundle's schedule (the paper's by default); ``overrides`` go to both configs (e.g.
    ``{"batch_size": 20}``). Each split holds ``n_calib`` calibration controls that training never sees; the
    thresholds come from ``reference_pool`` (``"calib"``, or ``"train"``: the paper's pool, whose errors the model
    has fitted, so its threshold is biased low). ``scoring`` (``"zscore"``/``"raw"``) overrides the bundle's.
    A split whose stored fingerprint differs (other data or settings) is refused before any work unless
    ``overwrite`` (:mod:`common.evaluation.fingerprint`).

    ``paper``: the paper's protocol at its size (:data:`PD_PROTOCOLS`): the paper-size synthetic cohort unless
    ``dataset_dir``, 10 splits with 15 test controls, the bundle's paper schedule; ``exact_split`` adds the paper's
    41/15 split without validation or calibration controls. Explicit ``splits`` / ``epochs`` run it at a reduced
    scale, which ``<out>/protocol.json`` and every table label.
    """
    if bundle not in PD_MODELS:
        raise ValueError(f"unknown PD model {bundle!r}; expected one of {PD_MODELS}")
    protocol, chosen = pd_protocol(paper, exact_split, splits=splits, n_val=n_val, n_calib=n_calib,
                                   reference_pool=reference_pool)
    splits, n_val, n_calib, reference_pool = (chosen[k] for k in ("splits", "n_val", "n_calib", "reference_pool"))
    if paper and dataset_dir is None:
        from common.data.synthetic import default_cohort

        dataset_dir = str(default_cohort("pd", progress=progress, paper_size=True).parent)
    configs = None if bundle == BASELINE_NAME else bundle_configs(bundle, bundles_dir)
    out = Path(out or experiment_dir(None, bundle))
    common = {"split_seed": seed, "n_splits": splits, "n_val": n_val, "seed": seed, "progress": progress,
              "n_calib": int(n_calib), "reference_pool": reference_pool,
              **({"scoring": scoring} if scoring is not None else {}),
              **({"dataset_dir": str(dataset_dir)} if dataset_dir else {}), **(overrides or {})}
    if epochs is not None:
        common["epochs"] = int(epochs)
    _check_experiment_input(configs, common, splits, bundle)
    require_writable_dir(out, "the experiment's --out")
    plans = [(split_root(out, i), {**common, "split_index": i, "bundle_root": str(split_root(out, i))})
             for i in range(splits)]
    prepare_splits(configs, plans, overwrite=overwrite)  # refuses changed data or settings before any work
    write_protocol(out, "pd", bundle, protocol, common, configs)
    results, timings = [], []
    for index, (root, split_overrides) in enumerate(plans):
        result_file = eval_dir(root, index) / "pd_evaluation.json"
        if result_file.is_file():
            print(f"[{bundle}] split {index}: done earlier, reusing {result_file}")
        else:
            start = time.perf_counter()
            if configs is None:
                _fit_then_evaluate_baseline(root, split_overrides, f"[{bundle}] split {index}/{splits}")
            else:
                _train_then_evaluate(configs, root, split_overrides, f"[{bundle}] split {index}/{splits}")
            timings.append(time.perf_counter() - start)
        results.append(json.loads(result_file.read_text()))
    rows = aggregate_splits(results)
    paths = write_split_aggregates(rows, out)
    summary = {"bundle": bundle, "splits": splits, "out": str(out), "rows": rows, "paths": paths,
               "seconds_per_split": (sum(timings) / len(timings)) if timings else None}
    _print_aggregate(bundle, rows, splits)
    return summary


#: The papers' sizes, against which ``protocol.json`` labels a run's scale.
PAPER_SCALE = {
    "pd": {"n_controls": 56, "n_patients": 129, "splits": 10,
           "epochs": {"pd_ae": 160, "pd_sae": 30, BASELINE_NAME: None}, "pairs_per_epoch": 300000},
    "pet": {"n_controls": 301, "n_patients": 311, "train": 237, "val": 34, "test": 30, "epochs": 300,
            "batch_size": 24, "learning_rate": 1e-5},
}


def _split_sizes(dataset_dir: str | None, kind: str, settings: Mapping) -> dict:
    """Controls per part of split 0 and the patients, read from the split the bundles use."""
    from common.data import read_dataset, split_subjects
    from common.data.synthetic import default_cohort

    dataset_json = Path(dataset_dir) / "dataset.json" if dataset_dir else default_cohort(kind, progress=False)
    dataset = read_dataset(dataset_json, check_files=False)
    sizes = {"n_controls": sum(s["group"] == "control" for s in dataset.subjects),
             "n_patients": sum(s["group"] == "patient" for s in dataset.subjects)}
    for part in ("train", "val", "calib", "test"):
        n = {"val": settings.get("n_val", 0), "calib": settings.get("n_calib", 0)}.get(part)
        sizes[part] = 0 if n == 0 else len(split_subjects(
            dataset_json, part, settings.get("split_index", 0), settings.get("splits_file") or None,
            settings.get("n_splits", 10), settings.get("n_val", 0), settings.get("split_seed", 0),
            settings.get("n_calib", 0)))
    return {"dataset": str(dataset_json), **sizes}


def _scale_label(kind: str, model: str, record: Mapping) -> str:
    """``paper size``, or ``reduced (...)`` naming each setting below the paper's."""
    paper = PAPER_SCALE[kind]
    below = []
    for key in ("n_controls", "n_patients", "splits", "train", "val", "test"):
        if key in paper and key in record and record[key] is not None and record[key] != paper[key]:
            below.append(f"{key} {record[key]} (paper {paper[key]})")
    paper_epochs = paper["epochs"].get(model) if isinstance(paper["epochs"], dict) else paper["epochs"]
    if paper_epochs is not None and record.get("epochs") != paper_epochs:
        below.append(f"epochs {record.get('epochs')} (paper {paper_epochs})")
    if model == "pd_sae" and record.get("pairs_per_epoch") not in (None, paper["pairs_per_epoch"]):
        below.append(f"pairs_per_epoch {record['pairs_per_epoch']} (paper {paper['pairs_per_epoch']})")
    for key in ("batch_size", "learning_rate"):  # another schedule (ad_vae3d's short CPU recipe)
        if key in paper and record.get(key) is not None and record[key] != paper[key]:
            below.append(f"{key} {record[key]:g} (paper {paper[key]:g})")
    return "paper size" if not below else "reduced: " + ", ".join(below)


def write_protocol(out: Path, kind: str, model: str, protocol: str, settings: Mapping,
                   configs: Path | None) -> dict:
    """``<out>/protocol.json``: the protocol run (its name, cohort and split sizes, splits, epochs) and its scale
    against the paper's, so no table of it can pass for a paper-size result."""
    from common.data._jsonio import write_json_atomic

    config = json.loads((configs / "train.json").read_text()) if configs else {}
    record = {"kind": kind, "model": model, "protocol": protocol,
              **_split_sizes(settings.get("dataset_dir"), kind, settings),
              "splits": settings.get("n_splits") if kind == "pd" else 1,
              "epochs": settings.get("epochs", config.get("epochs")),
              "pairs_per_epoch": settings.get("pairs_per_epoch", config.get("pairs_per_epoch")),
              "batch_size": settings.get("batch_size", config.get("batch_size")),
              "learning_rate": settings.get("learning_rate", config.get("learning_rate")),
              "reference_pool": settings.get("reference_pool"), "seed": settings.get("seed")}
    record["scale"] = _scale_label(kind, model, record)
    path = Path(out) / "protocol.json"
    if not path.is_file() or json.loads(path.read_text()) != json.loads(json.dumps(record)):
        write_json_atomic(path, record)  # an identical rerun leaves the folder untouched
    print(f"[{model}] protocol {protocol}, {record['scale']}; split: {record['train']} train / {record['val']} "
          f"validation / {record['calib']} calibration / {record['test']} test controls, {record['n_patients']} "
          "patients")
    return record


#: ad_vae3d's short CPU schedule (bundles/ad_vae3d/docs/README.md, "Short CPU schedule"): the paper's architecture
#: and loss, trained for minutes instead of hours; a config overlay merged after ``train.json``.
SHORT_SCHEDULE = "train_short.json"


def short_schedule_overrides(bundles_dir: str | Path | None = None) -> dict:
    """ad_vae3d's ``configs/train_short.json`` as overrides for :func:`run_pet_experiment` (``python -m common
    experiment pet --short_schedule True``, the demo): the ids it sets, exactly as ``--config_file
    "['train.json','train_short.json']"`` merges them after ``train.json``. Read from the file, so the bundle
    and the drivers share one recipe."""
    from monai.bundle import ConfigParser

    return dict(ConfigParser.load_config_file(bundle_configs("ad_vae3d", bundles_dir) / SHORT_SCHEDULE))


#: The AD paper's split of its 301 controls: one fold of an 8-fold cross-validation, 237 train / 34 validation /
#: 30 test (here a seeded, age- and sex-balanced draw of those sizes, written to ``<out>/splits.json``).
PET_PAPER_SPLIT = {"n_splits": 8, "n_test": 30, "n_val": 34}


def paper_pet_splits(dataset_json: Path, out: Path, seed: int = 0) -> Path:
    """``<out>/splits.json``: the AD paper's split sizes (:data:`PET_PAPER_SPLIT`) drawn on ``dataset_json``;
    an existing file of the same draw is kept (a resumed run reads the split it trained on)."""
    from common.data import make_splits, read_splits, write_splits

    path = Path(out) / "splits.json"
    manifest = make_splits(dataset_json, seed=seed, **PET_PAPER_SPLIT)
    if path.is_file() and read_splits(path, dataset_json) == json.loads(json.dumps(manifest)):
        return path
    return write_splits(manifest, path)


def run_pet_experiment(dataset_dir: str | None = None, out: str | Path | None = None, split: int = 0,
                       seed: int = 0, n_splits: int = 10, n_val: int = 3, epochs: int | None = None,
                       learning_rate: float | None = None, overrides: Mapping | None = None,
                       bundles_dir: str | Path | None = None, progress: bool = True, overwrite: bool = False,
                       paper: bool = False) -> dict:
    """Train ad_vae3d on one control split and run the simulation-based PET evaluation (AD paper), both through
    the bundle's configs; returns the evaluation summary.

    ``dataset_dir`` defaults to the embedded synthetic PET cohort; ``epochs`` / ``learning_rate`` override the
    paper's schedule (300 epochs, 1e-5); ``overrides`` go to both configs (e.g. ``{"batch_size": 8,
    "degrees": [0, 30, 70]}``). ``<out>/split_XX`` is the bundle root (``models/``, ``logs/``,
    ``eval/split_<i>/``); finished training or evaluation is reused, so a killed run resumes; a split made from
    other data or settings is refused before any work unless ``overwrite``.

    ``paper``: the AD paper's protocol at its size: the paper-size synthetic cohort (301 CN / 311 AD) unless
    ``dataset_dir``, and its 237 / 34 / 30 control split (:func:`paper_pet_splits`); the schedule stays the
    bundle's (the paper's 300 epochs) unless ``epochs`` etc. reduce it, which ``<out>/protocol.json`` labels.
    """
    configs = bundle_configs("ad_vae3d", bundles_dir)
    out = Path(out or experiment_dir(None, "ad_vae3d"))
    root = split_root(out, split)
    require_writable_dir(out, "the experiment's --out")
    splits_file = {}
    if paper:
        if dataset_dir is None:
            from common.data.synthetic import default_cohort

            dataset_dir = str(default_cohort("pet", progress=progress, paper_size=True).parent)
        splits_file = {"splits_file": str(paper_pet_splits(Path(dataset_dir) / "dataset.json", out, seed)),
                       "n_splits": PET_PAPER_SPLIT["n_splits"]}
        n_val = PET_PAPER_SPLIT["n_val"]
    settings = {"split_index": split, "split_seed": seed, "n_splits": n_splits, "n_val": n_val, "seed": seed,
                "progress": progress, "bundle_root": str(root),
                **({"dataset_dir": str(dataset_dir)} if dataset_dir else {}),
                **({"epochs": int(epochs)} if epochs is not None else {}),
                **({"learning_rate": float(learning_rate)} if learning_rate is not None else {}), **(overrides or {}),
                **splits_file}
    prepare_splits(configs, [(root, settings)], overwrite=overwrite)  # refuses changed data or settings
    write_protocol(out, "pet", "ad_vae3d", "paper" if paper else "default", settings, configs)
    summary_file = eval_dir(root, split) / "summary.json"
    if summary_file.is_file():
        print(f"[ad_vae3d] split {split}: evaluated earlier, reusing {summary_file}")
        return json.loads(summary_file.read_text())
    _train_then_evaluate(configs, root, settings, f"[ad_vae3d] split {split}")
    return json.loads(summary_file.read_text())


def _print_aggregate(bundle: str, rows, splits: int) -> None:
    def fmt(mean, sd):
        if mean is None:
            return "   n/a       "
        return f"{mean:.3f} +- {sd:.3f}" if sd is not None else f"{mean:.3f}        "

    print(f"\n{bundle}: {splits} split(s), mean +- sd over splits (best split's paper g-mean)")
    print(f"{'ROI':<20}{'voxels':>8}  {'AUC':<15} {'g-mean paper':<15} {'g-mean nested':<15} best")
    for r in rows:
        name = r["roi"] + (" *" if r.get("approximate") else "")
        best = "" if r.get("best_paper_gmean") is None else f"{r['best_paper_gmean']:.3f} (split {r['best_split']})"
        print(f"{name:<20}{r.get('n_voxels') or 0:>8}  {fmt(r.get('auc_mean'), r.get('auc_sd')):<15} "
              f"{fmt(r.get('paper_gmean_mean'), r.get('paper_gmean_sd')):<15} "
              f"{fmt(r.get('nested_gmean_mean'), r.get('nested_gmean_sd')):<15} {best}")
    for r in rows:
        if r.get("published_paper_gmean_mean") is not None:
            print(f"{r['published_source']}: {r['roi']} g-mean {r['published_paper_gmean_mean']:.3f} +- "
                  f"{r['published_paper_gmean_sd']:.3f} (10 splits of 41/15 controls vs 129 patients)")




def compare_experiments(runs, out: str | Path = "outputs/experiments/compare") -> dict:
    """Put experiments of several models (e.g. pd_ae and pd_sae folders of :func:`run_pd_experiment`) side by
    side per ROI: one table (``split_aggregates.csv/json``) and a paper Fig. 4 style figure, mean +- sd over
    each model's splits."""
    if isinstance(runs, (str, Path)):
        runs = [r for r in str(runs).split(",") if r]
    rows = []
    for run in runs:
        path = Path(run) / "split_aggregates.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run `python -m common experiment pd --out {run}` first")
        rows.extend(json.loads(path.read_text())["rows"])
    models = list(dict.fromkeys(r["model"] for r in rows))
    if len(models) < 2:
        raise ValueError(f"need experiments of at least two models to compare, got {models}")
    from common.visualize.pd import plot_model_comparison

    out = Path(out)
    paths = write_split_aggregates(rows, out, metric="paper_gmean")  # the table, and Fig. 4 of the paper's g-mean
    for metric in ("nested_gmean", "auc"):
        paths[f"figure_{metric}"] = str(plot_model_comparison(rows, out / "figures" / f"model_comparison_{metric}.png",
                                                              metric=metric))
    _print_comparison(rows, models)
    return {"models": models, "rows": rows, "paths": paths}


def _print_comparison(rows, models) -> None:
    def cell(r, metric):
        if r is None or r.get(f"{metric}_mean") is None:
            return "n/a"
        sd = r.get(f"{metric}_sd")
        return f"{r[f'{metric}_mean']:.3f}" + (f"+-{sd:.3f}" if sd is not None else "")

    by = {(r["model"], r["roi"]): r for r in rows}
    rois = list(dict.fromkeys(r["roi"] for r in rows))
    metrics = ("auc", "paper_gmean", "nested_gmean")
    print("\nper ROI, mean +- sd over splits: " + " | ".join(f"{m}: {', '.join(models)}" for m in metrics))
    print(f"{'ROI':<18}" + "".join(f"{m + ' ' + model:>26}" for m in metrics for model in models))
    for roi in rois:
        print(f"{roi:<18}" + "".join(f"{cell(by.get((model, roi)), m):>26}" for m in metrics for model in models))
    published = [(r["model"], r["roi"], r["published_paper_gmean_mean"], r["published_paper_gmean_sd"]) for r in rows
                 if r.get("published_paper_gmean_mean") is not None]
    if published:
        from common.evaluation.paper_values import PD_PAPER_SOURCE, PD_PROTOCOL_DIFFERENCES

        print(f"\n{PD_PAPER_SOURCE}, g-mean (threshold on the test set), mean +- sd over 10 splits: "
              + "; ".join(f"{m} {roi} {mean:.3f}+-{sd:.3f}" for m, roi, mean, sd in published))
        print("protocol differences: " + " | ".join(PD_PROTOCOL_DIFFERENCES))
