"""``python -m common experiment reproduction``: the papers' tables beside this project's, from finished runs.

Reads the folders of ``experiment pd`` (one per model: pd_ae, pd_sae and the normative baseline) and of
``experiment pet``, and writes one markdown report (docs/reproduction.md is made from it):

- each run's protocol and scale (``protocol.json``: a reduced run is labelled as such in every table), its
  measured times (``split_XX/timing.json``) and the time the paper-size protocol would take at that speed;
- PD: whole-brain and white-matter g-mean (mean +- sd over splits) beside the paper's, per-ROI AUC, and the
  models compared split by split (a paired test over the splits: the splits are the same controls for every
  model, so the differences are paired);
- PET: the simulation-based evaluation's report, which prints the paper's values beside each of its tables.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from common.app.experiment import PAPER_SCALE
from common.paths import eval_dir

__all__ = ["extrapolated_seconds", "paired_comparison", "pd_split_metrics", "reproduction_report",
           "write_reproduction_report"]

#: Headline PD metrics: the paper reports whole-brain and white-matter g-means.
PD_HEADLINE = (("whole_brain", "paper_gmean"), ("white_matter", "paper_gmean"), ("whole_brain", "auc"),
               ("white_matter", "auc"))


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is the run finished?")
    return json.loads(path.read_text())


def _split_folders(run: Path) -> list[Path]:
    return sorted(p for p in Path(run).glob("split_[0-9][0-9]") if p.is_dir())


def pd_split_metrics(run: str | Path) -> dict[int, dict[str, float]]:
    """``{split index: {"<roi>_<metric>": value}}`` of a PD experiment folder's finished splits."""
    out = {}
    for folder in _split_folders(Path(run)):
        index = int(folder.name.split("_")[1])
        result = eval_dir(folder, index) / "pd_evaluation.json"
        if result.is_file():
            out[index] = {k: v for k, v in _read(result)["metrics"].items() if v is not None}
    return out


def paired_comparison(a: Mapping[int, Mapping], b: Mapping[int, Mapping], key: str) -> dict:
    """Model a minus model b on ``key`` over the splits both finished: mean difference, its sd, and two paired
    tests (Wilcoxon signed-rank, exact for small n; paired t). p is None below 3 splits (no test is possible)."""
    from scipy import stats

    splits = sorted(s for s in set(a) & set(b) if key in a[s] and key in b[s])
    diff = np.array([a[s][key] - b[s][key] for s in splits], dtype=float)
    row = {"n": len(splits), "mean_diff": float(diff.mean()) if len(diff) else None,
           "sd_diff": float(diff.std(ddof=1)) if len(diff) > 1 else None, "wilcoxon_p": None, "ttest_p": None}
    if len(diff) >= 3 and np.any(diff != 0):
        row["wilcoxon_p"] = float(stats.wilcoxon(diff).pvalue)
        if np.ptp(diff) > 1e-9 * max(1.0, float(np.abs(diff).max())):  # constant differences: t undefined
            row["ttest_p"] = float(stats.ttest_1samp(diff, 0.0).pvalue)
    return row


def extrapolated_seconds(protocol: Mapping, timings: Sequence[Mapping]) -> dict:
    """Measured seconds per epoch, per training and per evaluation (means over the splits that trained), and the
    paper-size protocol's time at that speed: paper splits x (paper epochs x epoch time, scaled by the paper's
    pairs per epoch for pd_sae, + evaluation time, scaled by the paper's number of subjects evaluated)."""
    kind, model = protocol["kind"], protocol["model"]
    paper = PAPER_SCALE[kind]
    trained = [t for t in timings if t.get("train_s") and t.get("epochs")]
    evaluated = [t["evaluate_s"] for t in timings if t.get("evaluate_s")]
    epoch_s = float(np.mean([t["train_s"] / t["epochs"] for t in trained])) if trained else None
    evaluate_s = float(np.mean(evaluated)) if evaluated else None
    paper_epochs = paper["epochs"].get(model) if isinstance(paper["epochs"], dict) else paper["epochs"]
    # an epoch's cost grows with the training set (slices, volumes) or, for pd_sae, the pairs drawn per epoch
    if model == "pd_sae" and protocol.get("pairs_per_epoch"):
        epoch_scale = paper["pairs_per_epoch"] / protocol["pairs_per_epoch"]
    else:
        paper_train = paper.get("train", 41)
        epoch_scale = paper_train / protocol["train"] if protocol.get("train") else 1.0
    n_eval = protocol.get("test", 0) + protocol.get("n_patients", 0)
    paper_eval = paper.get("test", 15) + paper["n_patients"]
    eval_scale = paper_eval / n_eval if n_eval else 1.0
    splits = paper.get("splits", 1)
    total = None
    if evaluate_s is not None and (epoch_s is not None or paper_epochs is None):
        train_part = 0.0 if paper_epochs is None else paper_epochs * epoch_s * epoch_scale
        total = splits * (train_part + evaluate_s * eval_scale)
    return {"epoch_s": epoch_s, "train_s": float(np.mean([t["train_s"] for t in trained])) if trained else None,
            "evaluate_s": evaluate_s, "paper_epochs": paper_epochs, "paper_splits": splits, "paper_total_s": total}


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _num(value, digits: int = 1, scale: float = 1.0) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value * scale:.{digits}f}"


def _mean_sd(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    if not values:
        return "n/a"
    arr = np.asarray(values, dtype=float) * scale
    return f"{arr.mean():.{digits}f}" + (f" ± {arr.std(ddof=1):.{digits}f}" if len(arr) > 1 else "")


def _run_timings(run: Path) -> list[dict]:
    return [_read(f / "timing.json") for f in _split_folders(run) if (f / "timing.json").is_file()]


def _finished_splits(protocol: Mapping, run: Path) -> int:
    """Splits whose evaluation is written (a run stopped early has fewer than it planned)."""
    name = "pd_evaluation.json" if protocol["kind"] == "pd" else "summary.json"
    return sum((eval_dir(f, int(f.name.split("_")[1])) / name).is_file() for f in _split_folders(run))


def _protocol_lines(name: str, run: Path) -> tuple[dict, list[str]]:
    protocol = _read(run / "protocol.json")
    times = extrapolated_seconds(protocol, _run_timings(run))
    finished, planned = _finished_splits(protocol, run), protocol.get("splits") or 1
    scale = protocol["scale"] + (f"; {finished} of {planned} splits finished" if finished < planned else "")
    line = (f"| {name} | {protocol['protocol']} | {scale} | {protocol['train']}/{protocol['val']}/"
            f"{protocol['calib']}/{protocol['test']} vs {protocol['n_patients']} | {protocol.get('epochs') or '–'} | "
            f"{_num(times['epoch_s'])} | {_hours(times['train_s'])} | {_hours(times['evaluate_s'])} | "
            f"{_hours(times['paper_total_s'])} |")
    return protocol, [line]


def reproduction_report(pd_runs: Mapping[str, str | Path] | None = None, pet_run: str | Path | None = None,
                        hardware: str = "2-core CPU") -> str:
    """The markdown report of the finished runs (``pd_runs``: model name -> ``experiment pd`` folder)."""
    from common.evaluation.paper_values import PD_PAPER_SOURCE, pd_paper_gmean

    lines = [f"Measured on: {hardware}. Times are wall-clock per split; the last column extrapolates the paper-size "
             "protocol from the measured speed (epoch time scaled by the paper's training-set size or pairs per "
             "epoch, evaluation time by the paper's number of evaluated subjects).", "",
             "| run | protocol | scale | split (train/val/calib/test vs patients) | epochs | s per epoch | train per "
             "split | evaluation per split | paper-size protocol at this speed |",
             "|---|---|---|---|---|---|---|---|---|"]
    metrics: dict[str, dict] = {}
    for name, run in (pd_runs or {}).items():
        _, protocol_lines = _protocol_lines(name, Path(run))
        lines += protocol_lines
        metrics[name] = pd_split_metrics(run)
    if pet_run is not None:
        lines += _protocol_lines("ad_vae3d", Path(pet_run))[1]
    if metrics:
        lines += ["", "### PD: g-mean and AUC, mean ± sd over splits (%)", "",
                  "| model | splits | whole-brain g-mean | paper | white-matter g-mean | paper | whole-brain AUC | "
                  "white-matter AUC |", "|---|---|---|---|---|---|---|---|"]
        for name, per_split in metrics.items():
            cells = []
            for roi, metric in PD_HEADLINE:
                cells.append(_mean_sd([m[f"{roi}_{metric}"] for m in per_split.values() if f"{roi}_{metric}" in m],
                                      scale=100))
                published = pd_paper_gmean(name, roi) if metric == "paper_gmean" else None
                if metric == "paper_gmean":
                    cells.append(f"{published[0]:.1f} ± {published[1]:.1f}" if published else "–")
            lines.append(f"| {name} | {len(per_split)} | " + " | ".join(cells) + " |")
        lines += ["", f"The paper columns: {PD_PAPER_SOURCE}. Its g-mean puts the operating point on the test set "
                  "(here `paper_gmean`, the same rule); AUC needs no operating point.", ""]
        rois = sorted({k[: -len("_auc")] for m in metrics.values() for s in m.values() for k in s
                       if k.endswith("_auc")})
        lines += ["### PD: per-ROI AUC, mean ± sd over splits", "",
                  "| ROI | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for roi in rois:
            lines.append(f"| {roi} | " + " | ".join(
                _mean_sd([s[f"{roi}_auc"] for s in m.values() if f"{roi}_auc" in s], digits=3)
                for m in metrics.values()) + " |")
        names = list(metrics)
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        if pairs:
            lines += ["", "### PD: models compared over the same splits (paired)", "",
                      "| comparison | metric | splits | mean difference | sd | Wilcoxon p | paired t p |",
                      "|---|---|---|---|---|---|---|"]
            for a, b in pairs:
                for roi, metric in PD_HEADLINE:
                    row = paired_comparison(metrics[a], metrics[b], f"{roi}_{metric}")
                    lines.append(f"| {a} − {b} | {roi} {metric} | {row['n']} | {_num(row['mean_diff'], 3)} | "
                                 f"{_num(row['sd_diff'], 3)} | {_num(row['wilcoxon_p'], 3)} | "
                                 f"{_num(row['ttest_p'], 3)} |")
            lines += ["", "p is n/a below 3 splits: a paired test needs at least 3."]
    if pet_run is not None:
        from common.evaluation.pet import format_pet_summary

        folder = _split_folders(Path(pet_run))[0]
        summary = _read(eval_dir(folder, int(folder.name.split("_")[1])) / "summary.json")
        lines += ["", "### AD (PET): the simulation-based evaluation, with the paper's values beside", "", "```",
                  format_pet_summary(summary), "```"]
    return "\n".join(lines) + "\n"


def write_reproduction_report(out: str | Path, pd_runs: Mapping[str, str | Path] | None = None,
                              pet_run: str | Path | None = None, hardware: str = "2-core CPU") -> Path:
    """Write :func:`reproduction_report` to ``out`` (atomically) and print it."""
    from common.data._jsonio import write_text_atomic

    text = reproduction_report(pd_runs, pet_run, hardware)
    print(text)
    return write_text_atomic(out, text)
