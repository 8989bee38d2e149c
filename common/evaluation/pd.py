"""PD anomaly evaluation (docs/design.md 4.1; PD paper sections 2.2 and 3.3).

Voxel error maps -> abnormality threshold tau (the q-quantile of the errors of a pool of reference controls)
-> per-ROI % of abnormal voxels ``A(R) = 100 * #{v in R : e(v) > tau} / #R`` (R restricted to the brain
within the analysed slab) -> per-ROI ROC over test controls vs patients, AUC with a bootstrap interval,
and the g-mean operating point chosen on the test set (as the paper) and out of sample (nested).

Only the error values at the brain voxels of the slab are kept per subject (:class:`ErrorBank`, about
1.4 MB per subject on the 1.5 mm grid), so a few hundred subjects fit in memory; everything downstream
works on that (N, V) matrix. Functions take plain masks, so they work on any grid (the tests use a tiny
one); :func:`run_pd_evaluation` also accepts an :class:`~common.atlases.Atlas` or a grid name.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.atlases import Atlas, load_atlas
from common.data._jsonio import write_json_atomic, write_text_atomic
from common.data.slab import analysed_slab
from common.evaluation.paper_values import PD_PAPER_SOURCE, pd_paper_gmean
from common.evaluation.reporting import log_summary
from common.metrics.classification import roc_summary

__all__ = [
    "GROUPS",
    "NUCLEI_MODES",
    "ROW_FIELDS",
    "TEST_CONTROLS",
    "ErrorBank",
    "PDEvaluation",
    "PDEvaluationSettings",
    "aggregate_splits",
    "brain_slab_mask",
    "compute_pd_evaluation",
    "control_threshold",
    "evaluate_rois",
    "format_detection_table",
    "format_pd_summary",
    "format_roi_table",
    "pd_roi_masks",
    "percent_abnormal",
    "plot_pd_figures",
    "roi_info",
    "run_pd_evaluation",
    "write_pd_tables",
    "write_split_aggregates",
]

logger = logging.getLogger(__name__)

#: Subject groups; patients are the positive class (label 1).
GROUPS = ("control", "patient")
#: ``reference_ids`` value that makes the test set's own controls the reference pool (optimistic; flagged).
TEST_CONTROLS = "test_controls"
#: How PD nuclei enter the ROI list: L|R unions (as the paper's figure), each side, or both.
NUCLEI_MODES = ("bilateral", "sides", "both")
#: Scalar columns of a per-ROI result row, in CSV order (``roc`` holds the curve, JSON only).
ROW_FIELDS = (
    "roi", "group", "approximate", "n_voxels", "n_controls", "n_patients", "threshold",
    "auc", "auc_ci_low", "auc_ci_high",
    "paper_threshold", "paper_sensitivity", "paper_specificity", "paper_gmean",
    "nested_sensitivity", "nested_specificity", "nested_gmean",
    "mean_abnormal_controls", "mean_abnormal_patients",
)
_AGG_METRICS = ("auc", "paper_gmean", "nested_gmean", "paper_sensitivity", "paper_specificity",
                "nested_sensitivity", "nested_specificity")


# --------------------------------------------------------------------------------------------- masks


def brain_slab_mask(brain: np.ndarray | Atlas, slab: slice | None = None, n_slices: int = 40) -> np.ndarray:
    """Brain voxels of the analysed slab (a slice on the last axis; default :func:`analysed_slab`)."""
    brain = np.asarray(brain.brain if isinstance(brain, Atlas) else brain, dtype=bool)
    if brain.ndim != 3:
        raise ValueError(f"the brain mask must be 3-D, got shape {brain.shape}")
    slab = analysed_slab(brain, n_slices) if slab is None else slab
    mask = np.zeros_like(brain)
    mask[..., slab] = brain[..., slab]
    if not mask.any():
        raise ValueError(f"no brain voxel in the slab {slab}")
    return mask


def pd_roi_masks(atlas: Atlas, nuclei: str = "bilateral") -> dict[str, np.ndarray]:
    """The PD paper's ROIs: whole brain, the 8 macro regions, and the PD nuclei (see :data:`NUCLEI_MODES`)."""
    if nuclei not in NUCLEI_MODES:
        raise ValueError(f"nuclei must be one of {NUCLEI_MODES}, got {nuclei!r}")
    masks = atlas.roi_masks(("macro",))
    regions = list(dict.fromkeys(r["region"] for r in atlas.rois if r["group"] == "nuclei"))
    for region in regions:
        if nuclei in ("bilateral", "both"):
            masks[region] = atlas.region_mask(region)
        if nuclei in ("sides", "both"):
            masks.update({n: atlas.mask(n) for n in atlas.names("nuclei") if _region_of(atlas, n) == region})
    return masks


def _region_of(atlas: Atlas, name: str) -> str | None:
    return next((r["region"] for r in atlas.rois if r["name"] == name), None)


def roi_info(atlas: Atlas | None, names: Iterable[str]) -> dict[str, dict]:
    """``{name: {"group", "approximate"}}`` from the atlas table; a region (L|R union) is approximate if a
    side is. Unknown names (custom masks) get None for both."""
    table = atlas.rois if atlas is not None else []
    out = {}
    for name in names:
        if name == "whole_brain":
            out[name] = {"group": "whole_brain", "approximate": False}
            continue
        parts = [r for r in table if r["name"] == name] or [r for r in table if r["region"] == name]
        out[name] = ({"group": parts[0]["group"], "approximate": any(r["approximate"] for r in parts)}
                     if parts else {"group": None, "approximate": None})
    return out


# ----------------------------------------------------------------------------------------- error bank


def _as_numpy(x) -> np.ndarray:
    """numpy view of an array, torch tensor or MetaTensor (moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        x = x.numpy()
    return np.asarray(x)


class ErrorBank:
    """Per-subject error values at the voxels of ``mask`` (brain within the slab), as an (N, V) float32 matrix.

    Rows live in a buffer that doubles when full, so adding one subject copies one V-vector, not the bank.
    """

    def __init__(self, mask: np.ndarray, slab: slice | None = None, capacity: int = 16):
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.ndim != 3 or not mask.any():
            raise ValueError(f"mask must be a non-empty 3-D boolean array, got dtype {mask.dtype}, shape {mask.shape}")
        self.mask = mask
        self.slab = slab
        self.voxels = np.flatnonzero(mask)  # flat indices (C order) of the kept voxels
        self.ids: list[str] = []
        self.groups: list[str] = []
        self._row = {}
        self._buffer = np.empty((max(1, capacity), self.voxels.size), np.float32)

    @classmethod
    def for_brain(cls, brain: np.ndarray | Atlas, n_slices: int = 40, capacity: int = 16) -> ErrorBank:
        """A bank for the analysed slab of ``brain`` (a mask or an atlas)."""
        brain = np.asarray(brain.brain if isinstance(brain, Atlas) else brain, dtype=bool)
        slab = analysed_slab(brain, n_slices)
        return cls(brain_slab_mask(brain, slab), slab=slab, capacity=capacity)

    @classmethod
    def from_maps(cls, mask: np.ndarray, error_maps: Mapping, groups: Mapping[str, str],
                  ids: Iterable[str] | None = None, slab: slice | None = None) -> ErrorBank:
        """A bank of ``ids`` (default: all of ``error_maps``) taken from full-grid maps."""
        ids = list(error_maps) if ids is None else list(dict.fromkeys(ids))
        missing = [i for i in ids if i not in error_maps or i not in groups]
        if missing:
            raise KeyError(f"no error map or group for {len(missing)} subject(s): {_preview(missing)}")
        bank = cls(mask, slab=slab, capacity=len(ids))
        for sid in ids:
            bank.add(sid, groups[sid], error_maps[sid])
        return bank

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, subject_id) -> bool:
        return str(subject_id) in self._row

    @property
    def n_voxels(self) -> int:
        return int(self.voxels.size)

    @property
    def values(self) -> np.ndarray:
        """(N, V) float32 view of the stored errors (rows in insertion order); a later ``add`` may reallocate,
        so take the view again after adding."""
        return self._buffer[: len(self.ids)]

    @property
    def labels(self) -> np.ndarray:
        """1 for patients, 0 for controls, in row order."""
        return np.array([g == "patient" for g in self.groups], dtype=np.int64)

    def add(self, subject_id, group: str, error_map) -> None:
        """Store one subject's error map: (X, Y, Z) or (1, X, Y, Z) on the mask's grid; array or tensor."""
        subject_id = str(subject_id)
        if subject_id in self._row:
            raise ValueError(f"subject {subject_id!r} was already added to the error bank")
        if group not in GROUPS:
            raise ValueError(f"subject {subject_id!r}: group must be one of {GROUPS}, got {group!r}")
        error = _as_numpy(error_map)
        if error.ndim == self.mask.ndim + 1 and error.shape[0] == 1:
            error = error[0]
        if error.shape != self.mask.shape:
            raise ValueError(f"subject {subject_id!r}: error map of shape {error.shape}, expected {self.mask.shape} "
                             "(the grid of the brain mask), optionally with one leading channel")
        values = error.reshape(-1)[self.voxels]
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"subject {subject_id!r}: {int(bad.sum())} NaN/Inf error value(s) inside the brain slab")
        n = len(self.ids)
        if n == self._buffer.shape[0]:
            grown = np.empty((2 * n, self.voxels.size), np.float32)
            grown[:n] = self._buffer
            self._buffer = grown
        self._buffer[n] = values
        self._row[subject_id] = n
        self.ids.append(subject_id)
        self.groups.append(group)

    def with_values(self, values: np.ndarray) -> ErrorBank:
        """A bank of the same subjects and voxels holding other per-voxel scores ((N, V), e.g. z-scores)."""
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (len(self), self.n_voxels):
            raise ValueError(f"values of shape {values.shape}, expected {(len(self), self.n_voxels)}")
        bank = ErrorBank(self.mask, slab=self.slab, capacity=1)
        bank.voxels, bank.ids, bank.groups, bank._row = self.voxels, list(self.ids), list(self.groups), dict(self._row)
        bank._buffer = np.ascontiguousarray(values)
        return bank

    def rows(self, ids: Iterable[str]) -> np.ndarray:
        """Row indices of ``ids``; a KeyError names the ones not in the bank."""
        ids = [str(i) for i in ids]
        missing = [i for i in ids if i not in self._row]
        if missing:
            raise KeyError(f"{len(missing)} subject(s) not in the error bank: {_preview(missing)}")
        return np.array([self._row[i] for i in ids], dtype=np.int64)

    def columns(self, roi_mask: np.ndarray) -> np.ndarray:
        """Column indices of the bank voxels inside ``roi_mask`` (a full-grid boolean mask)."""
        roi_mask = np.asarray(roi_mask)
        if roi_mask.shape != self.mask.shape:
            raise ValueError(f"ROI mask of shape {roi_mask.shape} does not match the grid {self.mask.shape}")
        return np.flatnonzero(roi_mask.astype(bool, copy=False).reshape(-1)[self.voxels])


def _preview(items: Sequence, n: int = 8) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


# ------------------------------------------------------------------------------ threshold and scores


def control_threshold(bank: ErrorBank, reference_ids: Iterable[str], q: float = 0.98, per_roi: bool = False,
                      roi_masks: Mapping[str, np.ndarray] | None = None) -> float | dict[str, float]:
    """Abnormality threshold tau: the ``q``-quantile (numpy's default linear interpolation) of the errors of the
    reference controls, pooled over all their brain-slab voxels, or per ROI (``per_roi=True``).

    The pool is the caller's choice (training controls, a calibration set, or the test controls); it must
    hold controls only, since patients would raise tau towards their own errors.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in the open interval (0, 1), got {q}")
    reference_ids = [str(i) for i in reference_ids]
    if not reference_ids:
        raise ValueError("the reference pool is empty: pass the ids of the control subjects that define tau")
    repeated = sorted({i for i in reference_ids if reference_ids.count(i) > 1})
    if repeated:
        raise ValueError(f"the reference pool lists subject(s) more than once: {_preview(repeated)}")
    try:
        rows = bank.rows(reference_ids)
    except KeyError as err:
        raise KeyError(f"reference pool: {err.args[0]}; the reference controls' error maps must be collected too "
                       "(e.g. run them through the evaluator)") from None
    patients = [i for i, r in zip(reference_ids, rows) if bank.groups[r] != "control"]
    if patients:
        raise ValueError(f"the reference pool must hold controls only; it contains {len(patients)} patient(s): "
                         f"{_preview(patients)}")
    if not per_roi:
        pool = bank.values[rows].reshape(-1)  # fancy indexing copied it: quantile may work in place
        return float(np.quantile(pool, q, overwrite_input=True))
    if not roi_masks:
        raise ValueError("per_roi=True needs roi_masks")
    taus = {}
    for name, roi in roi_masks.items():
        cols = bank.columns(roi)
        if cols.size == 0:
            raise ValueError(f"ROI {name!r} has no voxel in the brain slab: no per-ROI threshold")
        taus[name] = float(np.quantile(bank.values[np.ix_(rows, cols)].reshape(-1), q, overwrite_input=True))
    return taus


def percent_abnormal(bank: ErrorBank, roi_masks: Mapping[str, np.ndarray], tau: float | Mapping[str, float],
                     ids: Iterable[str] | None = None, chunk: int = 32) -> np.ndarray:
    """(N, R) % of abnormal voxels, ``100 * #{v in R : e(v) > tau} / #R``, R restricted to the bank's mask.

    Rows follow ``ids`` (default: the bank's order), columns ``roi_masks``. A global tau counts abnormal voxels
    for all ROIs at once with a (subjects x voxels) @ (voxels x ROIs) product of 0/1 float32 matrices (exact
    for counts below 2**24); a per-ROI tau compares each ROI's columns with its own tau. Subjects are
    processed in chunks of ``chunk`` to bound the temporary memory.
    """
    names = list(roi_masks)
    if not names:
        raise ValueError("no ROI masks given")
    columns = [bank.columns(roi_masks[n]) for n in names]
    sizes = np.array([c.size for c in columns])
    if (sizes == 0).any():
        empty = [n for n, s in zip(names, sizes) if not s]
        raise ValueError(f"ROI(s) without any voxel in the brain slab: {_preview(empty)}")
    rows = np.arange(len(bank)) if ids is None else bank.rows(ids)
    per_roi = isinstance(tau, Mapping)
    if per_roi:
        missing = [n for n in names if n not in tau]
        if missing:
            raise KeyError(f"per-ROI tau lacks ROI(s): {_preview(missing)}")
        taus = [_finite_tau(tau[n], n) for n in names]
    else:
        tau = _finite_tau(tau)
        indicator = np.zeros((bank.n_voxels, len(names)), np.float32)
        for j, cols in enumerate(columns):
            indicator[cols, j] = 1.0
    counts = np.empty((rows.size, len(names)), np.float64)
    values = bank.values
    for start in range(0, rows.size, chunk):
        block = values[rows[start:start + chunk]]
        if per_roi:
            for j, (cols, t) in enumerate(zip(columns, taus)):
                counts[start:start + chunk, j] = np.count_nonzero(block[:, cols] > t, axis=1)
        else:
            counts[start:start + chunk] = (block > tau).astype(np.float32) @ indicator
    return 100.0 * counts / sizes


def _finite_tau(value, name: str | None = None) -> np.float32:
    """tau as the float32 ``t`` with ``v > t  <=>  v > tau`` for every float32 ``v``.

    numpy compares a float32 array with a Python float in float32 (NEP 50), i.e. against tau *rounded*;
    rounding down instead keeps the comparison exact for a tau given in float64.
    """
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"tau{f' of ROI {name!r}' if name else ''} must be finite, got {value}")
    t32 = np.float32(value)
    return np.nextafter(t32, np.float32(-np.inf)) if float(t32) > value else t32


# ------------------------------------------------------------------------------------- ROI statistics


def evaluate_rois(table: np.ndarray, labels, roi_names: Sequence[str], roi_voxels: Sequence[int],
                  n_bootstrap: int = 2000, seed: int = 0, confidence: float = 0.95,
                  roi_meta: Mapping[str, dict] | None = None, thresholds: Mapping[str, float] | float | None = None
                  ) -> list[dict]:
    """One row per ROI (column of ``table`` (N, R)): AUC with bootstrap CI, the paper's and the nested g-mean
    operating points, mean % abnormal per group, and the ROC curve (``roc``).

    Every ROI uses the same bootstrap seed, so the intervals of different ROIs come from the same resamples.
    """
    table = np.asarray(table, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    roi_names, roi_voxels = list(roi_names), list(roi_voxels)
    if table.ndim != 2 or table.shape[0] != labels.size or table.shape[1] != len(roi_names) or \
            len(roi_voxels) != len(roi_names):
        raise ValueError(f"table (N, R) = {table.shape} must match {labels.size} labels, {len(roi_names)} ROI names "
                         f"and {len(roi_voxels)} voxel counts")
    roi_meta = roi_meta or {}
    rows = []
    for j, name in enumerate(roi_names):
        summary = roc_summary(table[:, j], labels, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
        paper, nested = summary["paper"], summary["nested"] or {}
        meta = roi_meta.get(name, {})
        tau = thresholds.get(name) if isinstance(thresholds, Mapping) else thresholds
        rows.append({
            "roi": name, "group": meta.get("group"), "approximate": meta.get("approximate"),
            "n_voxels": int(roi_voxels[j]), "n_controls": summary["n_controls"], "n_patients": summary["n_patients"],
            "threshold": None if tau is None else float(tau),
            "auc": summary["auc"], "auc_ci_low": summary["auc_ci"][0], "auc_ci_high": summary["auc_ci"][1],
            "paper_threshold": paper["threshold"], "paper_sensitivity": paper["sensitivity"],
            "paper_specificity": paper["specificity"], "paper_gmean": paper["gmean"],
            "nested_sensitivity": nested.get("sensitivity"), "nested_specificity": nested.get("specificity"),
            "nested_gmean": nested.get("gmean"),
            "mean_abnormal_controls": float(table[~labels, j].mean()),
            "mean_abnormal_patients": float(table[labels, j].mean()),
            "roc": {"fpr": summary["fpr"], "tpr": summary["tpr"], "thresholds": summary["thresholds"]},
        })
    return rows


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def format_roi_table(rows: Sequence[dict], confidence: float = 0.95) -> str:
    """Readable per-ROI table: ROI, voxels in the slab, AUC [CI], g-mean on the test set (paper) and nested."""
    width = max([len("ROI")] + [len(r["roi"]) + 2 for r in rows])
    ci = f"{round(100 * confidence)}% CI"
    lines = [f"{'ROI':<{width}} {'voxels':>7}  {'AUC':>5} {'[' + ci + ']':<12}  {'g-mean paper':>12}  {'nested':>6}"]
    for r in rows:
        name = r["roi"] + (" *" if r.get("approximate") else "")
        lines.append(f"{name:<{width}} {r['n_voxels']:>7}  {_fmt(r['auc'], '.3f'):>5} "
                     f"[{_fmt(r['auc_ci_low'], '.2f')}, {_fmt(r['auc_ci_high'], '.2f')}]  "
                     f"{_fmt(r['paper_gmean'], '.3f'):>12}  {_fmt(r['nested_gmean'], '.3f'):>6}")
    if any(r.get("approximate") for r in rows):
        lines.append("* approximate ROI (no offline atlas has it; see regions.toml)")
    return "\n".join(lines)


def format_detection_table(rows: Sequence[dict], fprs: Sequence[float]) -> str:
    """Readable detection table: voxel AUROC / AP, Dice and achieved test FPR at each calibrated FPR, oracle Dice,
    subject AUROC / AP with their intervals."""
    from common.evaluation.detection import _pct

    width = max([len("ROI")] + [len(r["roi"]) + 1 for r in rows])
    head = f"{'ROI':<{width}} {'vAUROC':>6} {'vAP':>6}"
    for f in fprs:
        head += f" {'Dice@' + _pct(f) + '%':>9} {'FPR@' + _pct(f) + '%':>8}"
    head += f" {'Dice*':>6}  {'subject AUROC [CI]':<19} {'subject AP [CI]':<19}"
    lines = ["detection (thresholds calibrated on held-out controls; Dice* = oracle threshold)", head]
    for r in rows:
        line = f"{r['roi']:<{width}} {_fmt(r['voxel_auroc'], '.3f'):>6} {_fmt(r['voxel_ap'], '.3f'):>6}"
        for f in fprs:
            p = _pct(f)
            line += f" {_fmt(r[f'dice_fpr{p}'], '.3f'):>9} {_fmt(r[f'test_fpr{p}'], '.4f'):>8}"
        line += (f" {_fmt(r['oracle_dice'], '.3f'):>6}  {_fmt(r['subject_auroc'], '.3f')} "
                 f"[{_fmt(r['subject_auroc_ci_low'], '.2f')}, {_fmt(r['subject_auroc_ci_high'], '.2f')}]"
                 f"{'':<4} {_fmt(r['subject_ap'], '.3f')} "
                 f"[{_fmt(r['subject_ap_ci_low'], '.2f')}, {_fmt(r['subject_ap_ci_high'], '.2f')}]")
        lines.append(line)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ file output


def _jsonable(obj):
    """Plain JSON types; NaN/Inf become None (the JSON writer refuses them)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, slice):
        return [obj.start, obj.stop]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)
                         for v in _jsonable(list(row))])
    return write_text_atomic(path, buf.getvalue())


# ----------------------------------------------------------------------------------------- the pipeline


def _resolve_atlas(atlas) -> Atlas | None:
    if atlas is None or isinstance(atlas, Atlas):
        return atlas
    return load_atlas(atlas)


@dataclass(frozen=True)
class PDEvaluationSettings:
    """How one PD evaluation runs: threshold, slab, statistics, labels and outputs (see :func:`run_pd_evaluation`).

    One object instead of a dozen arguments passed from handler to pipeline; the bundle configs keep naming the
    fields one by one (the handler builds it from its keyword arguments).
    """

    q: float = 0.98
    per_roi_threshold: bool = False
    n_slices: int = 40
    n_bootstrap: int = 2000
    seed: int = 0
    confidence: float = 0.95
    model_name: str = "pd_ae"
    nuclei: str = "bilateral"
    split: Any = None
    figures: bool = True
    verbose: bool = True
    fprs: tuple[float, ...] | None = None
    scoring: str = "raw"

    def __post_init__(self):
        if not 0.0 < self.q < 1.0:
            raise ValueError(f"q must be in the open interval (0, 1), got {self.q}")
        if self.nuclei not in NUCLEI_MODES:
            raise ValueError(f"nuclei must be one of {NUCLEI_MODES}, got {self.nuclei!r}")
        if self.fprs is not None:
            object.__setattr__(self, "fprs", tuple(float(f) for f in self.fprs))

    @property
    def title(self) -> str:
        return self.model_name + (f", split {self.split}" if self.split is not None else "")


@dataclass
class PDEvaluation:
    """What :func:`compute_pd_evaluation` found: the per-ROI rows, the (subjects, ROIs) % abnormal table and
    the detection rows, with the inputs that produced them; ``summary`` is the JSON document."""

    bank: ErrorBank
    test_ids: list[str]
    test_groups: list[str]
    reference_ids: list[str]
    names: list[str]
    meta: dict[str, dict]
    tau: float | dict[str, float]
    table: np.ndarray
    rows: list[dict]
    detection: list[dict] | None
    fprs: tuple[float, ...] | None
    summary: dict


def _pd_bank(error_maps, groups, test_ids, reference_ids, atlas, brain, n_slices) -> ErrorBank:
    """The bank of brain-slab errors: the one given (checked against the slab), or one built from the maps."""
    if isinstance(error_maps, ErrorBank):
        bank = error_maps
        if brain is not None or atlas is not None:
            expected = brain_slab_mask(brain if brain is not None else atlas.brain, bank.slab, n_slices)
            if expected.shape != bank.mask.shape or not np.array_equal(expected, bank.mask):
                raise ValueError("the error bank's mask differs from the brain slab of the atlas/brain given "
                                 f"(n_slices={n_slices}); build the bank with ErrorBank.for_brain(...), or pass "
                                 "atlas=None with roi_masks for a bank on another grid")
        return bank
    if groups is None:
        raise ValueError("groups ({id: 'control' | 'patient'}) are required with a mapping of error maps")
    if brain is None and atlas is None:
        raise ValueError("give an atlas (or a brain mask) to define the brain slab")
    brain_ = np.asarray(brain if brain is not None else atlas.brain, dtype=bool)
    slab = analysed_slab(brain_, n_slices)
    wanted = None
    if test_ids is not None:
        pool = () if isinstance(reference_ids, str) else (reference_ids or ())
        wanted = list(dict.fromkeys([*map(str, pool), *map(str, test_ids)]))
    return ErrorBank.from_maps(brain_slab_mask(brain_, slab), {str(k): v for k, v in error_maps.items()},
                               {str(k): v for k, v in groups.items()}, ids=wanted, slab=slab)


def compute_pd_evaluation(bank: ErrorBank, test_ids: Iterable[str] | None, reference_ids: Iterable[str] | str | None,
                          roi_masks: Mapping[str, np.ndarray], atlas: Atlas | None = None,
                          settings: PDEvaluationSettings = PDEvaluationSettings(), *,
                          threshold: float | Mapping[str, float] | None = None,
                          ground_truth: Mapping[str, np.ndarray] | None = None) -> PDEvaluation:
    """The statistics of :func:`run_pd_evaluation`, on arrays only: no file, figure or output."""
    pool_is_test_controls = isinstance(reference_ids, str)  # == TEST_CONTROLS, checked by the caller
    reference_ids = [] if pool_is_test_controls else [str(i) for i in (reference_ids or ())]
    if test_ids is None:
        ref = set(reference_ids)
        test_ids = [i for i in bank.ids if i not in ref]
    test_ids = list(dict.fromkeys(str(i) for i in test_ids))
    test_rows = bank.rows(test_ids)
    if pool_is_test_controls:
        reference_ids = [i for i, r in zip(test_ids, test_rows) if bank.groups[r] == "control"]
    labels = np.array([bank.groups[r] == "patient" for r in test_rows])
    if labels.all() or not labels.any():
        raise ValueError(f"the test set needs controls and patients; it has {int((~labels).sum())} control(s) and "
                         f"{int(labels.sum())} patient(s)")
    overlap = sorted(set(reference_ids) & set(test_ids))
    if overlap:
        logger.warning("%d reference control(s) are also test subjects: tau is tuned on the test set", len(overlap))

    # --- ROIs within the slab
    roi_masks = {"whole_brain": bank.mask, **roi_masks} if "whole_brain" not in roi_masks else dict(roi_masks)
    voxels = {n: int(bank.columns(m).size) for n, m in roi_masks.items()}
    skipped = [n for n, v in voxels.items() if v == 0]
    if skipped:
        logger.warning("ROI(s) without voxels in the analysed slab, left out: %s", ", ".join(skipped))
    roi_masks = {n: m for n, m in roi_masks.items() if voxels[n] > 0}
    names = list(roi_masks)
    meta = roi_info(atlas, names)

    # --- tau, scores, statistics
    s = settings
    if threshold is not None:
        if isinstance(threshold, Mapping):
            missing = [n for n in names if n not in threshold]
            if missing:
                raise KeyError(f"the given per-ROI threshold lacks ROI(s): {_preview(missing)}")
            tau = {n: float(threshold[n]) for n in names}
        else:
            tau = float(threshold)
        source = "given"
    else:
        tau = control_threshold(bank, reference_ids, s.q, per_roi=s.per_roi_threshold, roi_masks=roi_masks)
        source = "reference_pool"
    table = percent_abnormal(bank, roi_masks, tau, ids=test_ids)
    rows = evaluate_rois(table, labels, names, [voxels[n] for n in names], n_bootstrap=s.n_bootstrap, seed=s.seed,
                         confidence=s.confidence, roi_meta=meta, thresholds=tau)

    detection, fprs = None, s.fprs
    if reference_ids and not overlap:
        from common.evaluation.detection import DEFAULT_FPRS, detection_rows

        fprs = tuple(DEFAULT_FPRS if fprs is None else fprs)
        detection = detection_rows(bank, test_ids, reference_ids, roi_masks, percent_abnormal=table,
                                   ground_truth=ground_truth, fprs=fprs, n_bootstrap=s.n_bootstrap, seed=s.seed,
                                   confidence=s.confidence)

    test_groups = [bank.groups[r] for r in test_rows]
    summary = {
        "model": s.model_name, "split": s.split,
        "grid": atlas.grid.name if atlas is not None else None,
        "n_slices": s.n_slices, "slab": bank.slab, "n_brain_slab_voxels": bank.n_voxels,
        "scoring": s.scoring,
        "q": s.q, "threshold_mode": "per_roi" if isinstance(tau, Mapping) else "global",
        "threshold_source": source, "threshold": tau,
        "reference_pool": {"ids": reference_ids, "n": len(reference_ids), "overlaps_test": overlap},
        "test": {"ids": test_ids, "n_controls": int((~labels).sum()), "n_patients": int(labels.sum())},
        "n_bootstrap": s.n_bootstrap, "confidence": s.confidence, "seed": s.seed,
        "nested": "leave-one-out: each test subject's g-mean threshold is chosen on the other test subjects",
        "skipped_rois": skipped,
        "rois": rows,
        "subjects": [{"id": i, "group": g, "percent_abnormal": dict(zip(names, t))}
                     for i, g, t in zip(test_ids, test_groups, table.tolist())],
    }
    summary["metrics"] = {f"{r['roi']}_{k}": r[k] for r in rows for k in ("auc", "paper_gmean", "nested_gmean")}
    summary["detection"] = detection
    if detection is not None:
        summary["metrics"].update({f"{r['roi']}_{k}": r[k] for r in detection for k in ("voxel_ap", "voxel_auroc")})
    return PDEvaluation(bank, test_ids, test_groups, reference_ids, names, meta, tau, table, rows, detection, fprs,
                        summary)


def write_pd_tables(ev: PDEvaluation, out_dir: str | os.PathLike, settings: PDEvaluationSettings) -> dict[str, Path]:
    """``roi_results.csv``, ``percent_abnormal.csv`` and ``detection.csv`` (each atomically)."""
    out_dir = Path(out_dir)
    model = settings.model_name
    files = {
        "roi_results": _write_csv(out_dir / "roi_results.csv", ["model", *ROW_FIELDS],
                                  ([model, *(r[f] for f in ROW_FIELDS)] for r in ev.rows)),
        "percent_abnormal": _write_csv(out_dir / "percent_abnormal.csv", ["id", "group", *ev.names],
                                       ([i, g, *t] for i, g, t in zip(ev.test_ids, ev.test_groups, ev.table.tolist()))),
    }
    if ev.detection is not None:
        from common.evaluation.detection import detection_fields

        fields = detection_fields(ev.fprs)
        files["detection"] = _write_csv(out_dir / "detection.csv", ["model", "scoring", *fields],
                                        ([model, settings.scoring, *(r[f] for f in fields)] for r in ev.detection))
    return files


def plot_pd_figures(ev: PDEvaluation, fig_dir: str | os.PathLike, settings: PDEvaluationSettings,
                    showcase: Mapping | None = None) -> dict[str, Path]:
    """The ROC curves, g-mean bars and % abnormal heat map (and the reconstruction showcase) of one evaluation."""
    from common.visualize import pd as viz

    fig_dir, title, tau = Path(fig_dir), settings.title, ev.tau
    files = {
        "roc_curves": viz.plot_roc_curves(ev.rows, fig_dir / "roc_curves.png", title=title),
        "gmean_bars": viz.plot_gmean_bars(ev.rows, fig_dir / "gmean_bars.png", title=title),
        "percent_abnormal_heatmap": viz.plot_percent_abnormal_heatmap(
            ev.table, ev.test_groups, ev.names, fig_dir / "percent_abnormal_heatmap.png", ids=ev.test_ids,
            title=title, approximate={n: bool(ev.meta[n]["approximate"]) for n in ev.names}),
    }
    if showcase is not None:
        files["reconstruction_showcase"] = viz.plot_reconstruction_showcase(
            showcase, fig_dir / "reconstruction_showcase.png", mask=ev.bank.mask,
            tau=None if isinstance(tau, Mapping) else tau, title=settings.model_name)
    return files


def format_pd_summary(ev: PDEvaluation, settings: PDEvaluationSettings) -> str:
    """The summary a run reports: tau and its pool, the test set, the per-ROI and detection tables."""
    tau, result = ev.tau, ev.summary
    tau_text = (f"per-ROI tau (whole brain {tau['whole_brain']:.4g})" if isinstance(tau, Mapping)
                else f"tau = {tau:.4g}")
    pool = (f"q = {settings.q} of {len(ev.reference_ids)} reference controls"
            if result["threshold_source"] == "reference_pool" else "given")
    return (f"PD evaluation of {settings.title}: {tau_text} ({pool}); test set "
            f"{result['test']['n_controls']} controls, {result['test']['n_patients']} patients\n"
            f"{format_roi_table(ev.rows, settings.confidence)}"
            + ("\n" + format_detection_table(ev.detection, ev.fprs) if ev.detection is not None else ""))


def run_pd_evaluation(error_maps: Mapping | ErrorBank, groups: Mapping[str, str] | None = None,
                      test_ids: Iterable[str] | None = None, reference_ids: Iterable[str] | None = None,
                      atlas: Atlas | str | None = "spm1p5", out_dir: str | os.PathLike | None = "pd_evaluation",
                      settings: PDEvaluationSettings | None = None, *, showcase: Mapping | None = None,
                      threshold: float | Mapping[str, float] | None = None,
                      roi_masks: Mapping[str, np.ndarray] | None = None, brain: np.ndarray | None = None,
                      ground_truth: Mapping[str, np.ndarray] | None = None, **options) -> dict:
    """The whole PD evaluation of one model on one split: :func:`compute_pd_evaluation`, then its files
    (:func:`write_pd_tables`, :func:`plot_pd_figures`, ``pd_evaluation.json``) and its summary (logged).

    ``error_maps``: ``{id: (X, Y, Z) error map}`` (with ``groups``: ``{id: "control" | "patient"}``) or an
    :class:`ErrorBank` already restricted to the brain slab. ``test_ids`` (default: every subject not in the
    reference pool) are scored; ``reference_ids`` are the controls whose errors define tau (training
    controls by default in the bundles, or a calibration set). A reference pool that overlaps the test set
    (``reference_ids="test_controls"``: the test set's own controls) is allowed and flagged. ``threshold`` skips
    the pool and uses a tau computed elsewhere.
    ROIs: ``roi_masks`` if given, else :func:`pd_roi_masks` of ``atlas`` (``nuclei`` mode); the brain mask:
    ``brain`` if given, else the atlas's. ROIs with no voxel in the slab are left out (logged, listed).

    ``settings`` (:class:`PDEvaluationSettings`), or its fields as keyword ``options`` (``q=0.98, n_slices=40,
    ...``; options override the fields of ``settings``).

    Writes to ``out_dir`` (None: nothing written, e.g. on a rank other than 0): ``pd_evaluation.json`` (settings,
    tau, reference pool, per-ROI rows with ROC curves, per-subject scores), ``roi_results.csv``,
    ``percent_abnormal.csv`` and, with ``figures``, ``figures/{roc_curves,gmean_bars,percent_abnormal_heatmap}.png``
    (+ ``reconstruction_showcase.png`` when ``showcase`` = ``{"image": (2,X,Y,Z), "reconstruction": (2,X,Y,Z),
    "error": (X,Y,Z), "id": str}``).

    Detection metrics (:mod:`common.evaluation.detection`) are added as ``detection.csv`` and ``result["detection"]``
    when the reference pool is disjoint from the test set: voxel thresholds at the false-positive rates ``fprs``
    (default 1 % and 5 %) set on the reference controls, and, given ``ground_truth`` (``{id: bool (V,)}`` at the
    bank's voxels), voxel AUROC/AP and Dice. ``scoring`` only names what the bank holds ("raw", "zscore").
    """
    settings = dataclasses.replace(settings or PDEvaluationSettings(), **options)
    atlas = _resolve_atlas(atlas)
    if isinstance(reference_ids, str) and reference_ids != TEST_CONTROLS:
        raise ValueError(f"reference_ids must be a list of subject ids or {TEST_CONTROLS!r}, got {reference_ids!r}")
    bank = _pd_bank(error_maps, groups, test_ids, reference_ids, atlas, brain, settings.n_slices)
    if roi_masks is None:
        if atlas is None:
            raise ValueError("give roi_masks or an atlas")
        roi_masks = pd_roi_masks(atlas, settings.nuclei)
    ev = compute_pd_evaluation(bank, test_ids, reference_ids, roi_masks, atlas, settings, threshold=threshold,
                               ground_truth=ground_truth)
    result = ev.summary
    if out_dir is None:
        result["files"] = {}
        return result
    out_dir = Path(out_dir)
    files = {"json": out_dir / "pd_evaluation.json", **write_pd_tables(ev, out_dir, settings)}
    if settings.figures:
        files.update(plot_pd_figures(ev, out_dir / "figures", settings, showcase))
    result["files"] = {k: str(v) for k, v in files.items()}
    write_json_atomic(files["json"], _jsonable(result))
    log_summary(format_pd_summary(ev, settings) + f"\nresults in {out_dir}", settings.verbose, logger)
    return result


# ----------------------------------------------------------------------------------- across splits


def aggregate_splits(results: Sequence[Mapping], ddof: int = 1) -> list[dict]:
    """Per model and ROI over splits: mean and sd (``ddof``; None with one split) of AUC, g-mean (paper and
    nested) and their sensitivity/specificity, and the best split (highest paper g-mean, as the paper reports).

    ``results``: :func:`run_pd_evaluation` return values or their ``pd_evaluation.json`` files, loaded; a
    result's ``split`` (else its position in ``results``) names it.
    """
    if not results:
        raise ValueError("no results to aggregate")
    by_model: dict[str, list[Mapping]] = {}
    for k, res in enumerate(results):
        split = res.get("split")
        by_model.setdefault(res.get("model") or "model", []).append({**res, "split": k if split is None else split})
    out = []
    for model, runs in by_model.items():
        roi_names = list(dict.fromkeys(r["roi"] for run in runs for r in run["rois"]))
        lookup = [{r["roi"]: r for r in run["rois"]} for run in runs]
        for roi in roi_names:
            present = [(run["split"], rows[roi]) for run, rows in zip(runs, lookup) if roi in rows]
            first = present[0][1]
            row = {"model": model, "roi": roi, "group": first.get("group"), "approximate": first.get("approximate"),
                   "n_voxels": first.get("n_voxels"), "n_splits": len(present)}
            for metric in _AGG_METRICS:
                vals = np.array([np.nan if r.get(metric) is None else r[metric] for _, r in present], np.float64)
                n = int(np.isfinite(vals).sum())
                row[f"{metric}_mean"] = float(np.nanmean(vals)) if n else None
                row[f"{metric}_sd"] = float(np.nanstd(vals, ddof=ddof)) if n > ddof else None
            best = int(np.nanargmax([np.nan if r.get("paper_gmean") is None else r["paper_gmean"] for _, r in present]))
            split, best_row = present[best]
            row.update({"best_split": split, "best_paper_gmean": best_row.get("paper_gmean"),
                        "best_nested_gmean": best_row.get("nested_gmean"), "best_auc": best_row.get("auc")})
            published = pd_paper_gmean(model, roi)  # the paper's g-mean beside ours, labelled, never mixed in
            row.update({"published_paper_gmean_mean": None if published is None else published[0] / 100,
                        "published_paper_gmean_sd": None if published is None else published[1] / 100,
                        "published_source": None if published is None else PD_PAPER_SOURCE})
            out.append(row)
    return out


def write_split_aggregates(rows: Sequence[Mapping], out_dir: str | os.PathLike, metric: str = "paper_gmean",
                           figure: bool = True) -> dict[str, str]:
    """Write :func:`aggregate_splits` rows as ``split_aggregates.{csv,json}`` and a Fig. 4 style
    ``figures/model_comparison_<metric>.png`` (all models side by side, mean +- sd)."""
    out_dir = Path(out_dir)
    header = list(dict.fromkeys(k for r in rows for k in r))
    files = {"csv": _write_csv(out_dir / "split_aggregates.csv", header, ([r.get(k) for k in header] for r in rows)),
             "json": write_json_atomic(out_dir / "split_aggregates.json", _jsonable({"rows": list(rows)}))}
    if figure:
        from common.visualize.pd import plot_model_comparison

        files["figure"] = plot_model_comparison(rows, out_dir / "figures" / f"model_comparison_{metric}.png",
                                                metric=metric)
    return {k: str(v) for k, v in files.items()}
