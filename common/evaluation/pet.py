"""Simulation-based evaluation of anomaly detection on FDG PET (AD paper sections 2.2 and 3; docs/design.md 4.2).

The healthy test images are loaded once (validated). Hypometabolism is simulated in memory,
``x' = x * (1 - d/100 * G_sigma(M))`` by :class:`~common.transforms.SimulateHypometabolism`, one per mask, so
each smoothed mask ``G_sigma(M)`` is computed once for all subjects and degrees.
Every input is min-max normalised with ITS HEALTHY image's min and max (a simulated image normalised on its
own would change scale whenever the maximum lies in the mask) and reconstructed in batches under
``torch.no_grad``. Four analyses:

(a) degree sweep in one mask (paper Fig. 1): per subject and degree, MSE(input, reconstruction) normalised by
    the mean MSE on the healthy inputs; a t-test of each degree against the healthy inputs with a Bonferroni
    correction over the degrees tested; the first significant degree; the effective reduction in the mask.
(b) six dementias at one degree (paper Table 1): MSE, MAE, PSNR, SSIM between the healthy original and the
    reconstruction of the simulated image, whole image / inside the mask / brain outside it (``brain & ~mask``),
    SSIM between the reconstructions of the healthy and the simulated image, and healthiness.
(c) test controls vs patients (paper Table 2): MSE, MAE, PSNR, SSIM between input and reconstruction.
(d) beyond the paper: voxel-level AUROC and average precision of the anomaly map ``|input - reconstruction|``
    against the binary simulated mask, over brain voxels.

Against a baseline (when ``train_subjects`` are given): a voxel-wise normative model (lower tail: hypometabolism,
:class:`common.normative.NormativeModel`) fitted on the split's training controls' normalised PET, the very inputs
the VAE learnt from, and scored on every image the VAE is scored on. Both models then get, in (d), AUROC and AP;
with held-out healthy ``calibration_subjects`` (the split's validation controls in the bundle), voxel thresholds
at fixed false-positive rates (1 %, 5 %) set on them, the Dice of each simulated mask at those thresholds next to
the best Dice any threshold could reach (``oracle``: chosen with the answer), and the false-positive rate those
thresholds actually reach on the unsimulated test controls (bootstrap CI over subjects); and at subject level,
CN vs AD and simulated vs healthy at each degree, AUROC / AP (bootstrap CIs) of the mean anomaly score inside the
sweep (AD) mask. The degree sweep reports both the paired and the two-sample (Welch) t-test, since the paper
does not say which it used, and every table that mirrors one of the paper's carries its numbers side by side
(:mod:`common.evaluation.paper_values`), labelled ``paper (real ADNI)``.

Healthiness (Hassanaly et al., MELBA 2024) is the mean uptake inside the mask over the mean uptake in the rest
of the brain, computed in SUVR (reconstructions mapped back with the healthy image's min and max).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm.auto import tqdm

from common.data._jsonio import write_json_atomic
from common.errors import InputDataError
from common.evaluation import paper_values
from common.evaluation.pd import _jsonable, _write_csv
from common.evaluation.reporting import log_summary
from common.grids import get_grid
from common.metrics.image import SSIMMoments, mae, mse, psnr, ssim_by_region, ssim_map
from common.transforms.hypometabolism import DEMENTIA_PATTERNS, SimulateHypometabolism

__all__ = [
    "BASELINE_NAME",
    "DEFAULT_DEGREES",
    "DEFAULT_FPRS",
    "REGIONS",
    "T_TESTS",
    "PETEvaluation",
    "PETEvaluationSettings",
    "PETSimulationEvaluator",
    "compute_pet_tables",
    "degree_statistics",
    "effective_reduction",
    "format_pet_summary",
    "group_statistics",
    "healthiness",
    "plot_pet_figures",
    "run_pet_evaluation",
    "ssim_by_region",
    "voxel_detection",
    "write_pet_tables",
]

logger = logging.getLogger(__name__)

#: Degrees of hypometabolism of the paper's sweep (%, 0 = the healthy image): 9 comparisons.
DEFAULT_DEGREES = (0, 5, 10, 15, 20, 25, 30, 40, 50, 70)
#: Where the dementia metrics are computed: whole image, inside the mask, brain outside the mask.
REGIONS = ("image", "mask", "outside")
#: t-tests of a degree against the healthy inputs. Paired by default: the same subjects are reconstructed at
#: every degree, so the between-subject spread of the baseline error cancels out.
T_TESTS = ("paired", "welch")
_IMAGE_METRICS = ("mse", "mae", "psnr", "ssim")
#: False-positive rates at which voxel thresholds are calibrated on held-out healthy controls.
DEFAULT_FPRS = (0.01, 0.05)
#: Name of the voxel-wise normative baseline in the outputs' ``model`` column.
BASELINE_NAME = "normative"


# ------------------------------------------------------------------------------------------------ building blocks


def healthiness(image: np.ndarray, mask: np.ndarray, brain: np.ndarray) -> float:
    """Mean uptake inside ``mask`` over mean uptake in the rest of the brain (``brain & ~mask``).

    A healthy pattern gives the population's usual ratio; hypometabolism in the mask lowers it.
    """
    mask, brain = np.asarray(mask, bool), np.asarray(brain, bool)
    inside, rest = mask & brain, brain & ~mask
    if not inside.any() or not rest.any():
        raise ValueError("healthiness needs brain voxels both inside and outside the mask")
    return float(np.mean(image[inside], dtype=np.float64) / np.mean(image[rest], dtype=np.float64))


def effective_reduction(healthy: np.ndarray, simulated: np.ndarray, mask: np.ndarray) -> float:
    """Measured fractional loss of mean uptake inside ``mask``: ``1 - mean(x'[M]) / mean(x[M])``.

    The smoothing of the mask makes it lower than the nominal degree (about 21 % for a nominal 30 % in the AD
    mask): the simulation's real severity.
    """
    mask = np.asarray(mask, bool)
    return float(1.0 - np.mean(simulated[mask], dtype=np.float64) / np.mean(healthy[mask], dtype=np.float64))


def voxel_detection(anomaly: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """AUROC and average precision of voxel scores ``anomaly`` against binary ``labels`` (sklearn).

    Tied scores count half in the AUROC, so a constant map gives exactly 0.5 (and AP = prevalence).
    """
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return float("nan"), float("nan")
    return float(roc_auc_score(labels, anomaly)), float(average_precision_score(labels, anomaly))


def _bonferroni(p: float, m: int) -> float:
    return float(min(1.0, p * m)) if np.isfinite(p) else float("nan")


def degree_statistics(mse_by_degree: np.ndarray, degrees: Sequence[float], test: str = "paired",
                      alpha: float = 0.05) -> tuple[list[dict], float | None]:
    """Per degree > 0, the t-test of its MSE against the healthy inputs' (``degrees[0]`` must be 0).

    ``mse_by_degree``: (subjects, degrees). Two-sided tests (scipy ``ttest_rel`` for ``paired``, ``ttest_ind``
    with ``equal_var=False`` for ``welch``); Bonferroni over the ``len(degrees) - 1`` comparisons, capped at 1.
    Returns the rows and the first degree whose corrected p-value is below ``alpha`` with a higher mean MSE
    than the healthy inputs (None when no degree is).
    """
    if test not in T_TESTS:
        raise ValueError(f"test must be one of {T_TESTS}, got {test!r}")
    values = np.asarray(mse_by_degree, np.float64)
    if values.ndim != 2 or values.shape[1] != len(degrees) or float(degrees[0]) != 0.0:
        raise ValueError("mse_by_degree must be (subjects, degrees) with degrees[0] == 0 (the healthy inputs)")
    m = len(degrees) - 1
    healthy = values[:, 0]
    baseline = healthy.mean()
    rows, first = [], None
    for j in range(len(degrees)):
        row = {"degree": float(degrees[j]), "n": int(values.shape[0]), "mse_mean": float(values[:, j].mean()),
               "mse_sd": float(values[:, j].std(ddof=1)) if values.shape[0] > 1 else float("nan"),
               "mse_normalised_mean": float(values[:, j].mean() / baseline) if baseline > 0 else float("nan"),
               "mse_normalised_sd": (float(values[:, j].std(ddof=1) / baseline)
                                     if baseline > 0 and values.shape[0] > 1 else float("nan")),
               "t": float("nan"), "p": float("nan"), "p_bonferroni": float("nan"), "significant": False}
        if j > 0:
            with warnings.catch_warnings():  # identical samples (a perfect model): NaN, reported as such
                warnings.simplefilter("ignore", RuntimeWarning)
                res = (stats.ttest_rel(values[:, j], healthy) if test == "paired"
                       else stats.ttest_ind(values[:, j], healthy, equal_var=False))
            row["t"], row["p"] = float(res.statistic), float(res.pvalue)
            row["p_bonferroni"] = _bonferroni(row["p"], m)
            row["significant"] = bool(np.isfinite(row["p_bonferroni"]) and row["p_bonferroni"] < alpha)
            if first is None and row["significant"] and row["mse_mean"] > healthy.mean():
                first = float(degrees[j])
        rows.append(row)
    return rows, first


def group_statistics(values: Mapping[str, np.ndarray], groups: np.ndarray) -> dict:
    """Per metric: mean and sd (ddof 1) of controls and patients, and Welch's two-sided t-test between them
    (independent groups of unequal size and variance)."""
    groups = np.asarray(groups)
    out = {}
    for metric, raw in values.items():
        v = np.asarray(raw, np.float64)
        entry = {}
        for g in ("control", "patient"):
            sel = v[groups == g]
            with np.errstate(invalid="ignore"):  # PSNR is inf for a perfect reconstruction: sd NaN
                entry[g] = {"n": int(sel.size), "mean": float(sel.mean()) if sel.size else float("nan"),
                            "sd": float(sel.std(ddof=1)) if sel.size > 1 else float("nan")}
        a, b = v[groups == "control"], v[groups == "patient"]
        if a.size > 1 and b.size > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = stats.ttest_ind(b, a, equal_var=False)
            entry["welch_t"], entry["p"] = float(res.statistic), float(res.pvalue)
        else:
            entry["welch_t"], entry["p"] = float("nan"), float("nan")
        out[metric] = entry
    return out


# ------------------------------------------------------------------------------------------------ the pipeline


@dataclass(frozen=True)
class _Condition:
    """One input variant of a test subject: the healthy image, or a mask at a degree."""

    mask: str | None
    degree: float

    @property
    def healthy(self) -> bool:
        return self.mask is None


_HEALTHY = _Condition(None, 0.0)


class _Reconstructor:
    """Batched, deterministic calls of the model: (B, X, Y, Z) numpy in, same-shape numpy out."""

    def __init__(self, reconstruct: Callable, device):
        if not callable(reconstruct):
            raise TypeError(f"reconstruct must be a torch module or a callable, got {type(reconstruct).__name__}")
        self.reconstruct = reconstruct
        if device is None and isinstance(reconstruct, torch.nn.Module):
            param = next(iter(reconstruct.parameters()), None)
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device or "cpu")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch[:, None]).to(self.device)
        with torch.no_grad():
            y = self.reconstruct(x)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"the model returned {type(y).__name__}; it must return one tensor, the reconstruction "
                            "(wrap a VAE so that it returns the decoded mean)")
        y = y.as_tensor() if hasattr(y, "as_tensor") else y
        if tuple(y.shape) != tuple(x.shape):
            raise ValueError(f"the model returned shape {tuple(y.shape)} for an input of shape {tuple(x.shape)}; "
                             "a reconstruction must have the input's shape")
        y = y[:, 0].detach().float().cpu().numpy()
        if not np.isfinite(y).all():
            raise ValueError("the model returned NaN/Inf values in a reconstruction")
        return y


def _check_subjects(subjects, what: str, allow_empty: bool = False) -> list[dict]:
    subjects = list(subjects or [])
    if not subjects and not allow_empty:
        raise ValueError(f"{what} is empty: give at least one subject (dataset entries with 'id' and 'image')")
    for k, s in enumerate(subjects):
        if not isinstance(s, Mapping) or "id" not in s or "image" not in s:
            raise ValueError(f"{what}[{k}] must be a dataset entry with 'id' and 'image', got {s!r:.80}")
    ids = [str(s["id"]) for s in subjects]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"{what} lists subject(s) more than once: {', '.join(repeated)}")
    return subjects


def _first_file(subject: Mapping) -> str:
    image = subject["image"]
    return str(image if isinstance(image, (str, os.PathLike)) else image[0])


def _resolve_masks(names: Sequence[str], grid, masks: Mapping | None, brain: np.ndarray | None):
    """Binary masks (AND brain) and the brain mask on the grid, from ``masks``/``brain`` or the grid's atlas."""
    atlas = None
    if masks is None or brain is None:
        from common.atlases import load_atlas

        atlas = load_atlas(grid)
    if masks is None:
        known = atlas.names("dementia") + [n for n in atlas.names() if n not in atlas.names("dementia")]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown mask name(s) {unknown}; the {grid.name} atlas has dementia masks "
                             f"{atlas.names('dementia')} (and ROIs {atlas.names('macro')})")
        masks = {n: atlas.mask(n) for n in names}
    else:
        unknown = [n for n in names if n not in masks]
        if unknown:
            raise ValueError(f"unknown mask name(s) {unknown}; masks given: {sorted(masks)}")
    brain = np.asarray(atlas.brain if brain is None else brain, bool)
    if brain.shape != grid.shape:
        raise ValueError(f"the brain mask has shape {brain.shape}, the {grid.name} grid {grid.shape}")
    out = {}
    for n in names:
        m = np.asarray(masks[n]).squeeze() > 0.5
        if m.shape != grid.shape:
            raise ValueError(f"mask {n!r} has shape {m.shape}, the {grid.name} grid {grid.shape}")
        if not (m & brain).any():
            raise ValueError(f"mask {n!r} has no voxel inside the brain")
        if not (brain & ~m).any():
            raise ValueError(f"mask {n!r} covers the whole brain: no 'outside' region to compare with")
        out[n] = m & brain
    return out, brain


def _check_degrees(degrees, dementia_degree) -> tuple[float, ...]:
    degrees = sorted({float(d) for d in degrees} | {0.0})  # the healthy inputs are always the reference
    bad = [d for d in degrees if not 0.0 <= d <= 100.0]
    if bad:
        raise ValueError(f"degrees must be percentages in [0, 100]; got {bad}")
    if not 0.0 < float(dementia_degree) <= 100.0:
        raise ValueError(f"dementia_degree must be a percentage in (0, 100]; got {dementia_degree}")
    if len(degrees) < 2:
        raise ValueError("the sweep needs at least one degree > 0")
    return tuple(degrees)


@dataclass(frozen=True)
class PETEvaluationSettings:
    """How one PET evaluation runs (see :func:`run_pet_evaluation`): simulation, statistics, baseline,
    calibration, labels and outputs; checked when made, before any image is read.

    One object instead of two dozen arguments; the bundle config keeps naming the fields one by one
    (:class:`PETSimulationEvaluator` passes them as keyword options).
    """

    grid: str = "clinicadl2"
    degrees: tuple[float, ...] = DEFAULT_DEGREES
    sweep_mask: str = "ad"
    dementias: tuple[str, ...] = DEMENTIA_PATTERNS
    dementia_degree: float = 30.0
    sigma_mm: float = 5.0
    batch_size: int = 4
    progress: bool = True
    seed: int = 0
    test: str = "paired"
    alpha: float = 0.05
    voxel_subsample: int | None = 50_000
    modality: str = "PET"
    num_threads: int = 2
    figures: bool = True
    model_name: str = "ad_vae3d"
    split: Any = None
    verbose: bool = True
    calibration_pool: str = "validation controls"
    fprs: tuple[float, ...] = DEFAULT_FPRS
    n_bootstrap: int = 2000
    normative: Mapping | None = None

    def __post_init__(self):
        get_grid(self.grid)
        if self.test not in T_TESTS:
            raise ValueError(f"test must be one of {T_TESTS}, got {self.test!r}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.voxel_subsample is not None and int(self.voxel_subsample) < 2:
            raise ValueError(f"voxel_subsample must be None or >= 2, got {self.voxel_subsample}")
        if float(self.sigma_mm) < 0:
            raise ValueError(f"sigma_mm must be >= 0, got {self.sigma_mm}")
        fprs = tuple(sorted({float(f) for f in self.fprs}))
        if any(not 0.0 < f < 1.0 for f in fprs):
            raise ValueError(f"fprs must be false-positive rates in (0, 1), got {list(fprs)}")
        if int(self.n_bootstrap) < 1:
            raise ValueError(f"n_bootstrap must be >= 1, got {self.n_bootstrap}")
        if "mask" in (self.normative or {}) or "spacing" in (self.normative or {}):
            raise ValueError("normative options must not set mask or spacing: the brain mask and the grid's are used")
        if self.model_name == BASELINE_NAME:
            raise ValueError(f"model_name {self.model_name!r} is the baseline's name in the outputs; choose another")
        if not self.calibration_pool or not str(self.calibration_pool).strip():
            raise ValueError("calibration_pool must name the held-out healthy set (e.g. 'validation controls')")
        set_ = object.__setattr__
        set_(self, "degrees", _check_degrees(self.degrees, self.dementia_degree))
        set_(self, "dementia_degree", float(self.dementia_degree))
        set_(self, "dementias", tuple(dict.fromkeys(self.dementias)))
        set_(self, "fprs", fprs)

    @property
    def normative_options(self) -> dict:
        """Options of the baseline's :class:`~common.normative.NormativeModel` (lower tail: hypometabolism)."""
        return {"tail": "lower", **dict(self.normative or {})}

    @property
    def mask_names(self) -> list[str]:
        return list(dict.fromkeys([self.sweep_mask, *self.dementias]))

    @property
    def title(self) -> str:
        return self.model_name + (f", split {self.split}" if self.split is not None else "")


def _intensity_range(subject: Mapping, volume: np.ndarray, grid) -> tuple[float, float]:
    """The min and max of a loaded volume, which must lie on ``grid`` and not be constant."""
    if volume.shape != grid.shape:
        raise InputDataError(_first_file(subject), f"loaded as {volume.shape}, the {grid.name} grid is {grid.shape}")
    lo, hi = float(volume.min()), float(volume.max())
    if not hi > lo:
        raise InputDataError(_first_file(subject),
                             f"constant image (all voxels {lo:g}): it cannot be min-max normalised")
    return lo, hi


@dataclass
class _PETInputs:
    """Every volume of the run, read and validated before any model call: test controls then patients
    (``volumes``, raw, with their ranges), calibration controls, and training controls normalised on their own."""

    subjects: list[dict]
    patients: list[dict]
    train: list[dict]
    calibration: list[dict]
    volumes: list[np.ndarray]
    ranges: list[tuple[float, float]]
    cal_volumes: list[np.ndarray]
    cal_ranges: list[tuple[float, float]]
    train_volumes: list[np.ndarray]

    @property
    def everyone(self) -> list[dict]:
        return [*self.subjects, *self.patients]


def _check_subject_lists(test_subjects, patients, train_subjects, calibration_subjects) -> list[list[dict]]:
    """The four subject lists, each checked, and no subject in two of them: test, patients, calibration, train."""
    parts = {"test_subjects": _check_subjects(test_subjects, "test_subjects"),
             "patients": _check_subjects(patients, "patients", allow_empty=True),
             "calibration_subjects": _check_subjects(calibration_subjects, "calibration_subjects", allow_empty=True),
             "train_subjects": _check_subjects(train_subjects, "train_subjects", allow_empty=True)}
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted({str(s["id"]) for s in parts[a]} & {str(s["id"]) for s in parts[b]})
            if shared:
                raise ValueError(f"subject(s) both in {a} and {b}: {', '.join(shared)}")
    return list(parts.values())


def _load_pet_inputs(subjects: list[dict], patients_: list[dict], calibration: list[dict], train: list[dict], grid,
                     settings: PETEvaluationSettings, loader: Callable | None) -> _PETInputs:
    """Every volume of the run (:func:`common.data.volumes.load_subject_volumes`), read and validated."""
    from common.data.volumes import load_subject_volumes

    s = settings

    def load(entries, desc, keep=lambda i, v: v[0]):
        if not entries:
            return []
        return load_subject_volumes(entries, grid, [s.modality], keep=keep, num_threads=s.num_threads,
                                    progress=s.progress, desc=desc, loader=loader)

    def own_normalised(i: int, v: np.ndarray) -> np.ndarray:
        """A training image as the VAE saw it: min-max normalised on its own (channel axis kept)."""
        lo, hi = _intensity_range(train[i], v[0], grid)
        return ((v - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32, copy=False)

    everyone = [*subjects, *patients_]
    volumes = load(everyone, "loading PET images")
    cal_volumes = load(calibration, "loading calibration PET images")
    train_volumes = load(train, "loading training PET images", keep=own_normalised)
    return _PETInputs(subjects, patients_, train, calibration, volumes,
                      [_intensity_range(e, v, grid) for e, v in zip(everyone, volumes)], cal_volumes,
                      [_intensity_range(e, v, grid) for e, v in zip(calibration, cal_volumes)], train_volumes)


class _PETScorer:
    """Everything one reconstruction is scored with: the simulation of each condition, the masks, the voxel sample,
    each model's anomaly map (the VAE's ``|input - reconstruction|``, the baseline's z-scores) and the calibrated
    thresholds; :meth:`metrics` turns one reconstruction into its rows (run in worker threads)."""

    def __init__(self, inputs: _PETInputs, grid, regions: Mapping[str, np.ndarray], brain: np.ndarray,
                 settings: PETEvaluationSettings, baseline=None):
        s = self.settings = settings
        self.inputs, self.regions, self.brain = inputs, regions, brain
        self.n_test = len(inputs.subjects)
        # each simulator smooths its mask once, for every subject and degree
        self.simulators = {n: SimulateHypometabolism(regions[n], sigma_mm=s.sigma_mm, spacing=grid.spacing,
                                                     grid=grid.name) for n in s.mask_names}
        self.sweep_set = {_HEALTHY, *(_Condition(s.sweep_mask, d) for d in s.degrees if d > 0)}
        self.dementia_set = {_Condition(n, s.dementia_degree) for n in s.dementias}
        conditions = [_HEALTHY, *[_Condition(s.sweep_mask, d) for d in s.degrees if d > 0],
                      *[_Condition(n, s.dementia_degree) for n in s.dementias]]
        conditions.append(_Condition(s.sweep_mask, s.dementia_degree))  # the Fig. 2 example, if not in the sweep
        self.conditions = list(dict.fromkeys(conditions))
        self.outside = {n: brain & ~regions[n] for n in s.mask_names}
        brain_idx = np.flatnonzero(brain)
        rng = np.random.default_rng(s.seed)
        if s.voxel_subsample is not None and brain_idx.size > int(s.voxel_subsample):
            brain_idx = np.sort(rng.choice(brain_idx, int(s.voxel_subsample), replace=False))
        self.brain_idx = brain_idx
        self.voxel_labels = {n: regions[n].reshape(-1)[brain_idx] for n in s.mask_names}
        self.score_region = regions[s.sweep_mask]  # subject score: mean anomaly inside the sweep (AD) mask
        self.scorers: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
            s.model_name: lambda x, r: np.abs(x - r)}  # (input, reconstruction) -> anomaly map, per model
        if baseline is not None:
            self.scorers[BASELINE_NAME] = lambda x, r: np.asarray(baseline.score(x[None]), np.float32)
        self.thresholds: dict[str, dict[float, float]] = {}  # model -> fpr -> voxel threshold, set before metrics
        self.calibration_scores: dict[str, np.ndarray] = {}

    def kind_of(self, s: int, c: _Condition) -> str:
        return "patients" if s >= self.n_test else ("sweep" if c in self.sweep_set else "dementias")

    def normalised(self, s: int, raw: np.ndarray) -> np.ndarray:
        """Min-max normalised with the range of subject ``s``'s HEALTHY image."""
        lo, hi = self.inputs.ranges[s]
        return ((raw - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32, copy=False)

    def suvr(self, s: int, img: np.ndarray) -> np.ndarray:
        lo, hi = self.inputs.ranges[s]
        return img * np.float32(hi - lo) + np.float32(lo)

    def simulated(self, raw: np.ndarray, c: _Condition) -> np.ndarray:
        return raw if c.healthy else self.simulators[c.mask](raw, c.degree)

    def model_input(self, s: int, c: _Condition) -> np.ndarray:
        return self.normalised(s, self.simulated(self.inputs.volumes[s], c))

    def healthy_moments(self, s: int, r0: np.ndarray) -> tuple[SSIMMoments, SSIMMoments]:
        return SSIMMoments(self.normalised(s, self.inputs.volumes[s])), SSIMMoments(r0)

    def calibrate(self, model: Callable[[np.ndarray], np.ndarray]) -> None:
        """Voxel thresholds of each model at ``fprs``, on the held-out healthy controls' brain voxels (pooled)."""
        from common.metrics.voxel import threshold_at_fpr

        cal_volumes, cal_ranges, n = self.inputs.cal_volumes, self.inputs.cal_ranges, len(self.inputs.cal_volumes)
        batch_size = int(self.settings.batch_size)
        per_model = {name: np.empty((n, self.brain_idx.size), np.float32) for name in self.scorers}
        for start in range(0, n, batch_size):
            ks = range(start, min(n, start + batch_size))
            inputs = np.stack([((cal_volumes[k] - np.float32(cal_ranges[k][0]))
                                / np.float32(cal_ranges[k][1] - cal_ranges[k][0])).astype(np.float32) for k in ks])
            recons = model(inputs)
            for j, k in enumerate(ks):
                for name, score in self.scorers.items():
                    per_model[name][k] = score(inputs[j], recons[j]).reshape(-1)[self.brain_idx]
        for name, values in per_model.items():
            self.calibration_scores[name] = values
            self.thresholds[name] = {f: float(threshold_at_fpr(values.reshape(-1), f)) for f in self.settings.fprs}

    def metrics(self, s: int, c: _Condition, xin: np.ndarray, r: np.ndarray, r0: np.ndarray | None,
                moments: Future | None) -> dict:
        """All rows one reconstruction contributes to (runs in a worker thread)."""
        started = time.perf_counter()
        st, brain, n_test = self.settings, self.brain, self.n_test
        out: dict = {}
        raw = self.inputs.volumes[s]
        x = self.normalised(s, raw)
        sid = str(self.inputs.everyone[s]["id"])
        if s >= n_test or c.healthy:
            local = ssim_map(xin, r)
            out["cn_vs_ad"] = {"id": sid, "group": "patient" if s >= n_test else "control",
                               "mse": mse(xin, r), "mae": mae(xin, r), "psnr": psnr(xin, r),
                               "ssim": ssim_by_region(local, {"image": None})["image"]}
        if s < n_test:
            mask_name = c.mask or st.sweep_mask
            m = self.regions[mask_name]
            raw_in = self.simulated(raw, c)
            r_suvr = self.suvr(s, r)
            if c in self.sweep_set:
                out["sweep"] = {"id": sid, "degree": c.degree, "mask": st.sweep_mask, "mse": mse(xin, r),
                                "mse_healthy_vs_reconstruction": mse(x, r),
                                "effective_reduction": effective_reduction(raw, raw_in, m),
                                "healthiness_input": healthiness(raw_in, m, brain),
                                "healthiness_reconstruction": healthiness(r_suvr, m, brain)}
            if c in self.dementia_set:
                where = {"image": None, "mask": m, "outside": self.outside[c.mask]}
                row = {"id": sid, "dementia": c.mask, "degree": c.degree}
                for region, sel in where.items():
                    row[f"mse_{region}"] = mse(x, r, sel)
                    row[f"mae_{region}"] = mae(x, r, sel)
                    row[f"psnr_{region}"] = psnr(x, r, sel)
                healthy, healthy_rec = moments.result()
                rec = SSIMMoments(r)
                for region, v in ssim_by_region(healthy.ssim_map(rec), where).items():
                    row[f"ssim_{region}"] = v
                for region, v in ssim_by_region(healthy_rec.ssim_map(rec), where).items():
                    row[f"ssim_reconstructions_{region}"] = v
                row.update({"effective_reduction": effective_reduction(raw, raw_in, m),
                            "healthiness_healthy_input": healthiness(raw, m, brain),
                            "healthiness_simulated_input": healthiness(raw_in, m, brain),
                            "healthiness_reconstruction": healthiness(r_suvr, m, brain),
                            "healthiness_healthy_reconstruction": healthiness(self.suvr(s, r0), m, brain)})
                out["dementia"] = row
        maps = {name: score(xin, r) for name, score in self.scorers.items()}
        if s < n_test:
            labels = self.voxel_labels[mask_name]
            out["voxel"] = []
            for name, amap in maps.items():
                anomaly = amap.reshape(-1)[self.brain_idx]
                auroc, ap = voxel_detection(anomaly, labels)
                out["voxel"].append({"id": sid, "model": name, "mask": mask_name, "degree": c.degree, "auroc": auroc,
                                     "average_precision": ap, "prevalence": float(labels.mean()),
                                     "n_voxels": int(self.brain_idx.size),
                                     **_dice_fields(anomaly, labels, self.thresholds.get(name, {}))})
                if c.healthy:
                    out.setdefault("healthy_scores", {})[name] = anomaly
        if s >= n_test or c in self.sweep_set:
            out["subject"] = [{"id": sid, "group": "patient" if s >= n_test else "control",
                               "mask": c.mask or "", "degree": c.degree, "model": name,
                               "score": float(amap[self.score_region].mean(dtype=np.float64))}
                              for name, amap in maps.items()]
        out["_seconds"] = time.perf_counter() - started
        return out


def _reconstruct_and_score(scorer: _PETScorer, model: _Reconstructor, reconstruct) -> tuple[list[dict], dict, dict]:
    """Reconstruct every condition of every subject in batches (the metrics of one batch run in worker threads
    while the next is reconstructed); returns the per-item rows, the figure's examples and the timings."""
    s, n_test = scorer.settings, scorer.n_test
    # jobs: per test subject the healthy image first (its reconstruction is needed by the dementia rows)
    jobs = [(k, c) for k in range(n_test) for c in scorer.conditions]
    jobs += [(n_test + p, _HEALTHY) for p in range(len(scorer.inputs.patients))]
    last_job = {k: j for j, (k, _) in enumerate(jobs)}
    healthy_recon: dict[int, np.ndarray] = {}
    healthy_stats: dict[int, Future] = {}
    showcase: dict[str, tuple] = {}
    showcase_cn, showcase_ad = 0, (n_test if scorer.inputs.patients else None)
    fig2 = _Condition(s.sweep_mask, s.dementia_degree)
    timings = {"reconstruction_s": {"sweep": 0.0, "dementias": 0.0, "patients": 0.0},
               "metrics_s": {"sweep": 0.0, "dementias": 0.0, "patients": 0.0}}
    results: list[dict | None] = [None] * len(jobs)
    batch_size = int(s.batch_size)
    was_training = isinstance(reconstruct, torch.nn.Module) and reconstruct.training
    if isinstance(reconstruct, torch.nn.Module):
        reconstruct.eval()
    try:
        with torch.random.fork_rng(devices=[]), ThreadPoolExecutor(max_workers=max(1, s.num_threads)) as pool, \
                tqdm(total=len(jobs), desc="reconstructing", unit="image", disable=not s.progress) as bar:
            torch.manual_seed(s.seed)
            t_cal = time.perf_counter()
            if scorer.inputs.calibration:
                scorer.calibrate(model)
            timings["calibration_s"] = time.perf_counter() - t_cal
            pending: list[tuple[int, str, Future]] = []
            for start in range(0, len(jobs), batch_size):
                batch = jobs[start:start + batch_size]
                inputs = np.stack([scorer.model_input(k, c) for k, c in batch])
                started = time.perf_counter()
                recons = model(inputs)
                per_item = (time.perf_counter() - started) / len(batch)
                # metrics of the previous batch run while this one was reconstructed; collect them now
                for j, kind, fut in pending:
                    results[j] = fut.result()
                    timings["metrics_s"][kind] += results[j].pop("_seconds")
                pending = []
                for i, (k, c) in enumerate(batch):
                    j = start + i
                    kind = scorer.kind_of(k, c)
                    timings["reconstruction_s"][kind] += per_item
                    if c.healthy and k < n_test:
                        healthy_recon[k] = recons[i]
                        if scorer.dementia_set:  # submitted before the rows that wait for it: no deadlock
                            healthy_stats[k] = pool.submit(scorer.healthy_moments, k, recons[i])
                    if k == showcase_cn and c in (_HEALTHY, fig2):
                        showcase["cn" if c.healthy else "simulated"] = (inputs[i], recons[i])
                    if k == showcase_ad:
                        showcase["patient"] = (inputs[i], recons[i])
                    pending.append((j, kind, pool.submit(scorer.metrics, k, c, inputs[i], recons[i],
                                                         healthy_recon.get(k), healthy_stats.get(k))))
                    if last_job[k] == j:
                        healthy_recon.pop(k, None)
                        healthy_stats.pop(k, None)
                bar.update(len(batch))
            for j, kind, fut in pending:
                results[j] = fut.result()
                timings["metrics_s"][kind] += results[j].pop("_seconds")
    finally:
        if was_training:
            reconstruct.train()
    return results, showcase, timings


@dataclass
class PETEvaluation:
    """What :func:`compute_pet_tables` made of the per-item rows: ``summary`` (the JSON document), the tables
    and the arrays the figures need; ``rows`` are the CSVs' per-item rows, unrounded."""

    summary: dict
    rows: dict[str, list[dict]]
    stat_rows: list[dict]
    mse_matrix: np.ndarray
    voxel_fields: list[str]
    group_rows_table: list[dict]


def compute_pet_tables(results: Sequence[Mapping], scorer: _PETScorer, grid_name: str) -> PETEvaluation:
    """Tables and statistics from the per-item rows of :meth:`_PETScorer.metrics`: the sweep's t-tests, the
    dementia and group tables, voxel and subject detection, the thresholds' reached FPR, the paper comparison."""
    s, inputs = scorer.settings, scorer.inputs
    degrees = s.degrees
    sweep_rows = [r["sweep"] for r in results if "sweep" in r]
    dementia_rows = [r["dementia"] for r in results if "dementia" in r]
    group_rows = [r["cn_vs_ad"] for r in results if "cn_vs_ad" in r]
    voxel_rows = [row for r in results if "voxel" in r for row in r["voxel"]]
    subject_rows = [row for r in results if "subject" in r for row in r["subject"]]
    models = list(scorer.scorers)
    ids = [str(x["id"]) for x in inputs.subjects]
    by_sd = {(r["id"], r["degree"]): r for r in sweep_rows}
    mse_matrix = np.array([[by_sd[(i, d)]["mse"] for d in degrees] for i in ids])
    baseline = float(mse_matrix[:, 0].mean())
    for row in sweep_rows:
        row["mse_normalised"] = row["mse"] / baseline if baseline > 0 else float("nan")
    by_test = {t: degree_statistics(mse_matrix, degrees, test=t, alpha=s.alpha) for t in T_TESTS}
    stat_rows, first_significant = by_test[s.test]
    for t, (rows_t, _) in by_test.items():
        for row, row_t in zip(stat_rows, rows_t):
            row.update({f"{k}_{t}": row_t[k] for k in ("t", "p", "p_bonferroni", "significant")})
    m = scorer.regions[s.sweep_mask]
    smoothed_mean = scorer.simulators[s.sweep_mask].mask_map(m)[m].mean(dtype=np.float64)
    for row in stat_rows:
        d = row["degree"]
        sel = [by_sd[(i, d)] for i in ids]
        row.update({
            "nominal_reduction": d / 100.0,
            "effective_reduction_map": float(d / 100.0 * smoothed_mean),
            "effective_reduction_uptake": float(np.mean([r["effective_reduction"] for r in sel])),
            "healthiness_input_mean": float(np.mean([r["healthiness_input"] for r in sel])),
            "healthiness_reconstruction_mean": float(np.mean([r["healthiness_reconstruction"] for r in sel])),
        })
    dementia_table = _mean_sd_table(dementia_rows, "dementia", s.dementias)
    group_table = group_statistics({m_: np.array([r[m_] for r in group_rows]) for m_ in _IMAGE_METRICS},
                                   np.array([r["group"] for r in group_rows]))
    thresholds = scorer.thresholds
    voxel_fields = _voxel_fields(s.fprs if thresholds else ())
    voxel_table = _mean_sd_table(voxel_rows, ("model", "mask", "degree"),
                                 list(dict.fromkeys((r["model"], r["mask"], r["degree"]) for r in voxel_rows)),
                                 fields=[f for f in voxel_fields[3:] if f not in ("n_voxels", "threshold_oracle")])
    healthy_scores = {name: np.stack([r["healthy_scores"][name] for r in results if "healthy_scores" in r])
                      for name in models}
    threshold_rows = _threshold_rows(thresholds, scorer.calibration_scores, healthy_scores, s.calibration_pool,
                                     s.n_bootstrap, s.seed)
    detection_rows = _subject_detection(subject_rows, models, ids, [str(p["id"]) for p in inputs.patients],
                                        s.sweep_mask, degrees, s.n_bootstrap, s.seed)
    group_rows_table = [{"group": g, "n": group_table["mse"][g]["n"],
                         **{f"{m_}_{k}": group_table[m_][g][k] for m_ in _IMAGE_METRICS for k in ("mean", "sd")},
                         "source": paper_values.RUN_SOURCE}
                        for g in ("control", "patient") if group_table["mse"][g]["n"]]
    comparison = _paper_comparison(by_test, dementia_table, group_table, s.sweep_mask, s.dementia_degree)
    summary = {
        "model": s.model_name, "split": s.split, "grid": grid_name,
        "settings": {
            "degrees": list(degrees), "sweep_mask": s.sweep_mask, "dementias": list(s.dementias),
            "dementia_degree": s.dementia_degree, "sigma_mm": float(s.sigma_mm), "test": s.test, "alpha": s.alpha,
            "n_comparisons": len(degrees) - 1, "correction": "Bonferroni (p * n_comparisons, capped at 1)",
            "normalisation": "min-max of each healthy image; simulated images use their healthy image's min and max",
            "healthiness": "mean uptake (SUVR) in the mask / mean uptake in brain & ~mask",
            "outside_region": "brain & ~mask",
            "voxel_detection": "anomaly map |input - reconstruction| scored against the binary simulated mask, "
                               "over brain voxels (mask restricted to the brain)",
            "voxel_subsample": None if s.voxel_subsample is None else int(scorer.brain_idx.size), "seed": s.seed,
            "models": models,
            "baseline": ({"model": BASELINE_NAME, "fitted_on": "train_subjects (healthy training controls), "
                          "each min-max normalised on its own as the VAE's training inputs",
                          "n_train": len(inputs.train), **s.normative_options} if inputs.train else None),
            "calibration": ({"pool": s.calibration_pool, "n": len(inputs.calibration), "fprs": list(s.fprs),
                             "thresholds": "per model, the voxel score exceeded by the target fraction of the pool's "
                                           "brain voxels (the voxel set of (d))"} if inputs.calibration else None),
            "oracle": "dice_oracle: the best Dice over all thresholds of that image, chosen with its mask (an upper "
                      "bound, not an operating point)",
            "subject_score": f"mean anomaly score inside the {s.sweep_mask} mask",
            "n_bootstrap": int(s.n_bootstrap),
        },
        "subjects": {"test": ids, "patients": [str(p["id"]) for p in inputs.patients]},
        "sweep": {"baseline_mse": baseline, "first_significant_degree": first_significant,
                  "first_significant_degree_by_test": {t: v[1] for t, v in by_test.items()}, "degrees": stat_rows},
        "dementias": dementia_table,
        "cn_vs_ad": group_table,
        "voxel_detection": voxel_table,
        "voxel_thresholds": threshold_rows,
        "subject_detection": detection_rows,
        "paper": {"label": paper_values.PAPER_SOURCE, "values": paper_values.PAPER,
                  "protocol_differences": paper_values.PROTOCOL_DIFFERENCES},
        "paper_comparison": comparison,
    }
    rows = {"sweep": sweep_rows, "dementias": dementia_rows, "cn_vs_ad": group_rows, "voxel": voxel_rows,
            "subject": subject_rows}
    return PETEvaluation(summary, rows, stat_rows, mse_matrix, voxel_fields, group_rows_table)


def write_pet_tables(ev: PETEvaluation, out_dir: str | os.PathLike) -> dict[str, Path]:
    """The evaluation's CSV files (each atomically); ``voxel_thresholds.csv`` only when thresholds were set."""
    out_dir, result, rows = Path(out_dir), ev.summary, ev.rows
    s = result["settings"]
    sweep_rows, dementia_rows, group_rows = rows["sweep"], rows["dementias"], rows["cn_vs_ad"]
    comparison, threshold_rows = result["paper_comparison"], result["voxel_thresholds"]
    files = {
        "sweep": _write_csv(out_dir / "sweep.csv", _SWEEP_FIELDS, ([r[f] for f in _SWEEP_FIELDS] for r in sweep_rows)),
        "sweep_stats": _write_csv(out_dir / "sweep_stats.csv", _STAT_FIELDS,
                                  ([r[f] for f in _STAT_FIELDS] for r in ev.stat_rows)),
        "dementias": _write_csv(out_dir / "dementias.csv", list(dementia_rows[0]) if dementia_rows else ["id"],
                                ([*r.values()] for r in dementia_rows)),
        "dementia_table": _write_csv(out_dir / "dementia_table.csv", *_table_csv(
            [{**r, "source": paper_values.RUN_SOURCE} for r in result["dementias"]]
            + (paper_values.paper_dementia_rows(s["dementias"]) if s["dementia_degree"] == _PAPER_DEGREE else []),
            "dementia")),
        "cn_vs_ad": _write_csv(out_dir / "cn_vs_ad.csv", ["id", "group", *_IMAGE_METRICS],
                               ([r["id"], r["group"], *(r[m_] for m_ in _IMAGE_METRICS)] for r in group_rows)),
        "cn_vs_ad_table": _write_csv(out_dir / "cn_vs_ad_table.csv",
                                     *_table_csv(ev.group_rows_table + paper_values.paper_group_rows(), "group")),
        "voxel_detection": _write_csv(out_dir / "voxel_detection.csv", ev.voxel_fields,
                                      ([r[f] for f in ev.voxel_fields] for r in rows["voxel"])),
        "subject_scores": _write_csv(out_dir / "subject_scores.csv", _SUBJECT_FIELDS,
                                     ([r[f] for f in _SUBJECT_FIELDS] for r in rows["subject"])),
        "subject_detection": _write_csv(out_dir / "subject_detection.csv",
                                        *_table_csv(result["subject_detection"], "model")),
        "paper_comparison": _write_csv(out_dir / "paper_comparison.csv", _COMPARISON_FIELDS,
                                       ([r[f] for f in _COMPARISON_FIELDS] for r in comparison)),
    }
    if threshold_rows:
        files["voxel_thresholds"] = _write_csv(out_dir / "voxel_thresholds.csv", *_table_csv(threshold_rows, "model"))
    return files


def plot_pet_figures(ev: PETEvaluation, showcase: Mapping[str, tuple], brain: np.ndarray, fig_dir: str | os.PathLike,
                     settings: PETEvaluationSettings) -> dict[str, Path]:
    """The degree sweep, the voxel detection and the reconstruction examples (:mod:`common.visualize.pet`)."""
    from common.visualize import pet as viz

    s, fig_dir, title = settings, Path(fig_dir), settings.title
    baseline = ev.summary["sweep"]["baseline_mse"]
    ids, patients = ev.summary["subjects"]["test"], ev.summary["subjects"]["patients"]
    files = {
        "figure_sweep": viz.plot_degree_sweep(
            s.degrees, ev.mse_matrix / baseline if baseline > 0 else ev.mse_matrix, ev.stat_rows,
            fig_dir / "sweep_mse.png", normalised=baseline > 0, title=f"{title}: {s.sweep_mask} mask, {s.test} t-test",
            seed=s.seed),
        "figure_voxel_detection": viz.plot_voxel_detection(ev.summary["voxel_detection"], s.sweep_mask,
                                                           fig_dir / "voxel_detection.png", title=title),
    }
    examples = [(f"CN {ids[0]}", *showcase["cn"]),
                (f"CN {ids[0]} + {s.sweep_mask} {s.dementia_degree:g} %", *showcase["simulated"])]
    if "patient" in showcase:
        examples.insert(0, (f"patient {patients[0]}", *showcase["patient"]))
    files["figure_reconstructions"] = viz.plot_reconstructions(examples, fig_dir / "reconstructions.png",
                                                               brain=brain, title=title)
    return files


def run_pet_evaluation(reconstruct: Callable, test_subjects: Sequence[Mapping], patients: Sequence[Mapping] = (),
                       out_dir: str | os.PathLike | None = "pet_evaluation",
                       settings: PETEvaluationSettings | None = None, *, device=None,
                       masks: Mapping[str, np.ndarray] | None = None, brain: np.ndarray | None = None,
                       loader: Callable | None = None, train_subjects: Sequence[Mapping] = (),
                       calibration_subjects: Sequence[Mapping] = (), **options) -> dict:
    """The whole simulation-based evaluation of one model; writes its results under ``out_dir`` and returns them.

    ``reconstruct``: a torch module or callable mapping a (B, 1, X, Y, Z) float tensor in [0, 1] to a same-shape
    reconstruction (deterministic: a VAE decodes its mean). Modules are put in eval mode for the run.
    ``test_subjects``: healthy test controls, ``patients``: real patients (may be empty), as dataset entries
    (``id``, ``image``; e.g. from :func:`common.data.split_subjects`). Masks are the grid atlas's, by name,
    unless ``masks`` (``{name: binary array}``) and ``brain`` are given (e.g. on another grid); every mask is
    ANDed with the brain before it is simulated or scored (docs/design.md 2.4). Degree 0 is always added.
    ``loader``: path -> (1, X, Y, Z) volume on the grid (default: validated loading of ``modality`` on the grid;
    the bundle passes :class:`~common.transforms.LoadPETImage`, which also reduces Clinica pet-linear images).

    ``settings`` (:class:`PETEvaluationSettings`), or its fields as keyword ``options`` (``grid``, ``degrees``,
    ``test``, ``alpha``, ``voxel_subsample``, ``fprs``, ...; options override the fields of ``settings``):
    ``test`` (``"paired"`` or ``"welch"``) and ``alpha`` of the degree sweep; ``voxel_subsample``: the number of
    brain voxels (drawn once with ``seed``, the same for every image) scored in (d), None for all.

    Baseline and calibration (module docstring): ``train_subjects`` (healthy training controls) fit the
    ``normative`` baseline (options of :class:`~common.normative.NormativeModel`; tail ``"lower"`` by default),
    none: no baseline; ``calibration_subjects`` (held-out healthy controls, named ``calibration_pool`` in the
    outputs) set each model's voxel thresholds at ``fprs``, none: no thresholds; ``n_bootstrap`` resamples (over
    subjects) give the confidence intervals. The four subject lists must not share a subject.

    The parts: loading (every volume read and validated before any model call), reconstruction and per-item
    metrics, :func:`compute_pet_tables`, :func:`write_pet_tables`, :func:`plot_pet_figures` and the logged
    summary (:func:`format_pet_summary`). Writes ``sweep.csv``, ``sweep_stats.csv``, ``dementias.csv``,
    ``dementia_table.csv``, ``cn_vs_ad.csv``, ``cn_vs_ad_table.csv``, ``voxel_detection.csv``,
    ``voxel_thresholds.csv``, ``subject_scores.csv``, ``subject_detection.csv``, ``paper_comparison.csv``,
    ``summary.json`` and ``figures/*.png``, each atomically and only once everything is computed: a failure
    leaves no partial results (``out_dir=None``: nothing is written, e.g. on a rank other than 0). Returns the
    summary plus ``rows`` (the CSVs' rows, unrounded).
    """
    t_start = time.perf_counter()
    s = dataclasses.replace(settings or PETEvaluationSettings(), **options)
    grid_ = get_grid(s.grid)
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise InputDataError(out_dir, "the output folder exists and is not a folder")
    lists = _check_subject_lists(test_subjects, patients, train_subjects, calibration_subjects)
    regions, brain = _resolve_masks(s.mask_names, grid_, masks, brain)
    model = _Reconstructor(reconstruct, device)

    t0 = time.perf_counter()
    inputs = _load_pet_inputs(*lists, grid_, s, loader)
    t_load = time.perf_counter() - t0

    # --- the baseline: a voxel-wise normative model of the training controls' normalised images
    t0 = time.perf_counter()
    baseline_model = None
    if inputs.train:
        from common.normative import NormativeModel

        baseline_model = NormativeModel(brain, spacing=grid_.spacing, **s.normative_options)
        baseline_model.fit(np.stack(inputs.train_volumes))
    inputs.train_volumes = []
    t_fit = time.perf_counter() - t0

    scorer = _PETScorer(inputs, grid_, regions, brain, s, baseline_model)
    t0 = time.perf_counter()
    results, showcase, timings = _reconstruct_and_score(scorer, model, reconstruct)
    t_loop = time.perf_counter() - t0

    t0 = time.perf_counter()
    ev = compute_pet_tables(results, scorer, grid_.name)
    result = ev.summary
    files = {}
    if out_dir is not None:  # files, all computed above: nothing is written if anything failed
        files = write_pet_tables(ev, out_dir)
        if s.figures:
            files.update(plot_pet_figures(ev, showcase, brain, out_dir / "figures", s))
    timings.update({"load_s": t_load, "baseline_fit_s": t_fit, "reconstruct_and_metrics_s": t_loop,
                    "tables_and_files_s": time.perf_counter() - t0})
    timings["total_s"] = time.perf_counter() - t_start
    result["timings"] = timings
    if out_dir is not None:
        files["summary"] = out_dir / "summary.json"
    result["files"] = {k: str(v) for k, v in files.items()}
    if out_dir is not None:
        write_json_atomic(files["summary"], _jsonable(result))
        log_summary(format_pet_summary(result) + f"\nresults in {out_dir}", s.verbose, logger)
    # the per-item rows (the CSVs' content, unrounded) come back to the caller, not into summary.json
    result["rows"] = ev.rows
    return result


class PETSimulationEvaluator:
    """The ``evaluator`` of ad_vae3d's evaluate.json: holds :func:`run_pet_evaluation`'s arguments (built lazily
    by the config) and runs it on ``run()``; the network is called through ``inferer`` when one is given. With
    several ranks only rank 0 writes the results, as MONAI's ``MetricsSaver``."""

    def __init__(self, network: Callable, test_subjects: Sequence[Mapping], patients: Sequence[Mapping] = (),
                 out_dir: str | os.PathLike = "pet_evaluation", inferer: Callable | None = None, **options):
        self.network, self.inferer = network, inferer
        self.test_subjects, self.patients, self.out_dir, self.options = test_subjects, patients, out_dir, options
        self.result: dict | None = None

    def run(self) -> dict:
        from common.distributed import process_rank

        reconstruct = self.network
        if self.inferer is not None:
            network, inferer = self.network, self.inferer
            if isinstance(network, torch.nn.Module):
                network.eval()
            reconstruct = lambda x: inferer(x, network)  # noqa: E731
        out_dir = self.out_dir if process_rank() == 0 else None
        self.result = run_pet_evaluation(reconstruct, self.test_subjects, self.patients, out_dir, **self.options)
        return self.result


_SWEEP_FIELDS = ("id", "mask", "degree", "mse", "mse_normalised", "mse_healthy_vs_reconstruction",
                 "effective_reduction", "healthiness_input", "healthiness_reconstruction")
_STAT_FIELDS = ("degree", "nominal_reduction", "effective_reduction_map", "effective_reduction_uptake", "n",
                "mse_mean", "mse_sd", "mse_normalised_mean", "mse_normalised_sd", "t", "p", "p_bonferroni",
                "significant", *(f"{k}_{t}" for t in T_TESTS for k in ("t", "p", "p_bonferroni", "significant")),
                "healthiness_input_mean", "healthiness_reconstruction_mean")
_SUBJECT_FIELDS = ("id", "group", "mask", "degree", "model", "score")
_COMPARISON_FIELDS = ("quantity", "row", "metric", "value", "source", "note")
#: The degree of the paper's Table 1 and Fig. 2: its numbers are only shown next to runs at this degree.
_PAPER_DEGREE = 30.0


def _voxel_fields(fprs: Sequence[float]) -> list[str]:
    """Columns of ``voxel_detection.csv``: Dice at each calibrated threshold only when there are thresholds."""
    return ["id", "model", "mask", "degree", "auroc", "average_precision", "prevalence", "n_voxels",
            *(f"dice_fpr_{f:g}" for f in fprs), "dice_oracle", "threshold_oracle"]


def _dice_fields(scores: np.ndarray, labels: np.ndarray, thresholds: Mapping[float, float]) -> dict:
    """Dice of ``scores >= threshold`` against ``labels`` at each calibrated threshold, and the oracle's."""
    from common.metrics.voxel import best_dice, dice_at_threshold

    out = {f"dice_fpr_{f:g}": float(dice_at_threshold(scores, labels, t, strict=False)) for f, t in thresholds.items()}
    best = best_dice(scores, labels, strict=False)
    out["dice_oracle"], out["threshold_oracle"] = best["dice"], best["threshold"]
    return out


def _threshold_rows(thresholds: Mapping[str, Mapping[float, float]], calibration_scores: Mapping[str, np.ndarray],
                    healthy_scores: Mapping[str, np.ndarray], pool: str, n_bootstrap: int, seed: int) -> list[dict]:
    """Per model and target FPR: the threshold, the FPR it reaches on the calibration pool itself and on the
    unsimulated test controls (bootstrap CI over those subjects)."""
    if not thresholds:
        return []
    from common.metrics.voxel import false_positive_rate

    rows = []
    for name, by_fpr in thresholds.items():
        cal, test = calibration_scores[name], healthy_scores[name]
        for f, thr in by_fpr.items():
            reached = false_positive_rate(test, thr, n_bootstrap=n_bootstrap, seed=seed)
            rows.append({"model": name, "target_fpr": f, "threshold": thr, "calibration_pool": pool,
                         "n_calibration": int(cal.shape[0]), "calibration_fpr": float(np.mean(cal > thr)),
                         "n_test_controls": int(test.shape[0]), "test_fpr": reached["fpr"],
                         "test_fpr_ci_low": reached["ci_low"], "test_fpr_ci_high": reached["ci_high"],
                         "n_voxels_per_subject": int(test.shape[1])})
    return rows


def _subject_detection(rows: Sequence[Mapping], models: Sequence[str], test_ids: Sequence[str],
                       patient_ids: Sequence[str], sweep_mask: str, degrees: Sequence[float], n_bootstrap: int,
                       seed: int) -> list[dict]:
    """Subject-level AUROC / AP with bootstrap CIs of the per-subject score: CN vs AD (test controls vs patients)
    and, per degree, the simulated images vs the same subjects' healthy ones (scored as independent groups)."""
    from common.metrics.voxel import subject_auroc_ap

    out = []
    for name in models:
        score = {(r["id"], r["mask"], r["degree"]): r["score"] for r in rows if r["model"] == name}
        healthy = [score[(i, "", 0.0)] for i in test_ids]
        comparisons = [("CN vs AD", "test controls", "patients", [score[(p, "", 0.0)] for p in patient_ids])]
        comparisons += [(f"{sweep_mask} {d:g} % vs healthy", "test controls (healthy)",
                         f"test controls ({sweep_mask} {d:g} %)", [score[(i, sweep_mask, d)] for i in test_ids])
                        for d in degrees if d > 0]
        for comparison, negatives, positives, values in comparisons:
            if not values:
                continue
            scores = np.asarray([*healthy, *values], np.float64)
            labels = np.r_[np.zeros(len(healthy), bool), np.ones(len(values), bool)]
            out.append({"model": name, "comparison": comparison, "negatives": negatives, "positives": positives,
                        "n_negative": len(healthy), "n_positive": len(values),
                        **{k: v for k, v in subject_auroc_ap(scores, labels, n_bootstrap=n_bootstrap, seed=seed).items()
                           if k not in ("n_controls", "n_patients")}})
    return out


def _paper_comparison(by_test: Mapping, dementia_table: Sequence[Mapping], group_table: Mapping, sweep_mask: str,
                      dementia_degree: float) -> list[dict]:
    """Long-format rows (quantity, row, metric, value, source, note) of every number the paper reports, this run's
    next to the paper's. Table 1 and the SSIM between reconstructions only when the dementias ran at the paper's
    30 %; the first significant degree only for the AD mask (the paper's sweep)."""
    pv, run, paper = paper_values, paper_values.RUN_SOURCE, paper_values.PAPER_SOURCE
    rows = []
    if sweep_mask == "ad":
        for t, (_, first) in by_test.items():
            rows.append({"quantity": "first significant degree (%)", "row": sweep_mask, "metric": f"{t} t-test",
                         "value": first, "source": run, "note": "Bonferroni-corrected, higher mean MSE"})
        rows.append({"quantity": "first significant degree (%)", "row": sweep_mask, "metric": "t-test (not stated)",
                     "value": pv.paper_value("first_significant_degree"), "source": paper,
                     "note": pv.PAPER["first_significant_degree"]["source"]})
    if dementia_degree == _PAPER_DEGREE:
        by_dementia = {r["dementia"]: r for r in dementia_table}
        if "ad" in by_dementia:
            rows.append({"quantity": "SSIM between reconstructions", "row": "ad 30 %", "metric": "ssim",
                         "value": by_dementia["ad"]["ssim_reconstructions_image_mean"], "source": run,
                         "note": "mean over test controls, whole image"})
            rows.append({"quantity": "SSIM between reconstructions", "row": "ad 30 %", "metric": "ssim",
                         "value": pv.paper_value("ssim_between_reconstructions"), "source": paper,
                         "note": pv.PAPER["ssim_between_reconstructions"]["source"]})
        for d, r in by_dementia.items():
            if d not in pv.PAPER["dementias"]:
                continue
            for m_ in _IMAGE_METRICS:
                rows.append({"quantity": "Table 1", "row": d, "metric": m_, "value": r[f"{m_}_image_mean"],
                             "source": run, "note": "whole image, mean over test controls"})
                rows.append({"quantity": "Table 1", "row": d, "metric": m_, "value": pv.paper_value("dementias", d, m_),
                             "source": paper, "note": pv.PAPER["dementias"][d][m_]["source"]})
    for g in ("control", "patient"):
        for m_ in _IMAGE_METRICS:
            if group_table[m_][g]["n"]:
                rows.append({"quantity": "Table 2", "row": g, "metric": m_, "value": group_table[m_][g]["mean"],
                             "source": run, "note": f"mean over {group_table[m_][g]['n']} subjects"})
            rows.append({"quantity": "Table 2", "row": g, "metric": m_, "value": pv.paper_value("cn_vs_ad", g, m_),
                         "source": paper, "note": pv.PAPER["cn_vs_ad"][g][m_]["source"]})
    return rows


def _mean_sd_table(rows: Sequence[Mapping], key, order: Sequence, fields: Sequence[str] | None = None) -> list[dict]:
    """Mean and sd (ddof 1) of the numeric fields of ``rows`` per value of ``key`` (a field or a tuple)."""
    keys = (key,) if isinstance(key, str) else tuple(key)
    table = []
    for value in order:
        value_t = value if isinstance(value, tuple) else (value,)
        sel = [r for r in rows if tuple(r[k] for k in keys) == value_t]
        if not sel:
            continue
        names = fields or [f for f, v in sel[0].items()
                           if f not in (*keys, "id", "degree") and isinstance(v, float)]
        entry = {**dict(zip(keys, value_t)), "n": len(sel)}
        for f in names:
            v = np.array([r[f] for r in sel], np.float64)
            with np.errstate(invalid="ignore"):  # PSNR is inf for a perfect reconstruction: sd NaN
                entry[f"{f}_mean"] = float(v.mean())
                entry[f"{f}_sd"] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
        table.append(entry)
    return table


def _table_csv(table: Sequence[Mapping], key: str):
    header = list(dict.fromkeys(k for row in table for k in row)) or [key]
    return header, ([row.get(k) for k in header] for row in table)


def format_pet_summary(result: Mapping) -> str:
    """The printed report: the sweep (Fig. 1 in numbers), Table 1 and Table 2 layouts, voxel detection."""
    s = result["settings"]
    lines = [f"PET simulation-based evaluation of {result['model']}"
             + (f", split {result['split']}" if result.get("split") is not None else "")
             + f": {len(result['subjects']['test'])} test controls, {len(result['subjects']['patients'])} patients",
             f"(a) degree sweep in the {s['sweep_mask']} mask ({s['test']} t-test vs healthy inputs, Bonferroni x"
             f"{s['n_comparisons']}); baseline MSE {result['sweep']['baseline_mse']:.5g}",
             f"{'degree':>7} {'eff.red.':>8} {'norm. MSE':>14} {'p (Bonf.)':>10}  {'healthiness in -> rec':>22}"]
    for r in result["sweep"]["degrees"]:
        p = ("" if r["p_bonferroni"] is None or not np.isfinite(r["p_bonferroni"])  # None: read back from JSON
             else f"{r['p_bonferroni']:.2g}" + (" *" if r["significant"] else ""))
        lines.append(f"{r['degree']:>6g}% {100 * r['effective_reduction_uptake']:>7.1f}% "
                     f"{r['mse_normalised_mean']:>7.3f} ± {r['mse_normalised_sd']:<5.3f}{p:>10}  "
                     f"{r['healthiness_input_mean']:>9.3f} -> {r['healthiness_reconstruction_mean']:.3f}")
    paper = paper_values.PAPER_SOURCE

    def pct(d):
        return "none" if d is None else f"{d:g} %"

    by_test = (result["sweep"].get("first_significant_degree_by_test")
               or {s["test"]: result["sweep"]["first_significant_degree"]})
    lines.append("first significant degree: " + ", ".join(f"{t} {pct(d)}" for t, d in by_test.items())
                 + (f"   [{paper}: {pct(paper_values.paper_value('first_significant_degree'))}, t-test not stated]"
                    if s["sweep_mask"] == "ad" else ""))
    lines.append(f"(b) dementias at {s['dementia_degree']:g} %: healthy original vs reconstruction of the simulated "
                 "image (whole image), SSIM between the two reconstructions, healthiness (healthy / simulated / rec.)")
    lines.append(f"{'dementia':<9}{'MSE':>9}{'MAE':>8}{'PSNR':>7}{'SSIM':>7}{'SSIM rec':>9}   healthiness")
    for r in result["dementias"]:
        lines.append(f"{r['dementia']:<9}{r['mse_image_mean']:>9.5f}{r['mae_image_mean']:>8.4f}"
                     f"{r['psnr_image_mean']:>7.2f}{r['ssim_image_mean']:>7.3f}{r['ssim_reconstructions_image_mean']:>9.3f}"
                     f"   {r['healthiness_healthy_input_mean']:.3f} / {r['healthiness_simulated_input_mean']:.3f}"
                     f" / {r['healthiness_reconstruction_mean']:.3f}")
    if s["dementia_degree"] == _PAPER_DEGREE:
        for r in paper_values.paper_dementia_rows([r["dementia"] for r in result["dementias"]]):
            lines.append(f"{r['dementia']:<9}{r['mse_image_mean']:>9.5f}{r['mae_image_mean']:>8.4f}"
                         f"{r['psnr_image_mean']:>7.1f}{r['ssim_image_mean']:>7.3f}"
                         + (f"{paper_values.paper_value('ssim_between_reconstructions'):>9.3f}"
                            if r["dementia"] == "ad" else " " * 9) + f"   [{paper}]")
    lines.append("(c) input vs reconstruction, mean ± sd (Welch p, patients vs controls)")
    lines.append(f"{'group':<9}" + "".join(f"{m:>18}" for m in _IMAGE_METRICS))
    g = result["cn_vs_ad"]
    for group in ("control", "patient"):
        if g["mse"][group]["n"]:
            lines.append(f"{group:<9}" + "".join(f"{g[m][group]['mean']:>10.4g} ± {g[m][group]['sd']:<6.2g}"
                                                 for m in _IMAGE_METRICS))
    if g["mse"]["patient"]["n"]:
        lines.append(f"{'p':<9}" + "".join(f"{g[m]['p']:>18.2g}" for m in _IMAGE_METRICS))
    for r in paper_values.paper_group_rows():
        lines.append(f"{r['group']:<9}" + "".join(f"{r[f'{m}_mean']:>10.4g}{'':<9}" for m in _IMAGE_METRICS)
                     + f"[{paper}]")
    lines.append("(d) voxel detection of the mask (brain voxels): AUROC / AP"
                 + (", Dice at the calibrated thresholds (FPR " + ", ".join(f"{f:g}" for f in s["calibration"]["fprs"])
                    + f" on the {s['calibration']['pool']}) / oracle" if s.get("calibration") else ", oracle Dice"))
    for model in s.get("models") or [result["model"]]:
        rows = [r for r in result["voxel_detection"] if r.get("model", model) == model]
        lines.append(f"  {model}: " + ", ".join(
            f"{r['mask']} {r['degree']:g}%: {r['auroc_mean']:.3f}/{r['average_precision_mean']:.3f}"
            + "".join(f"/{r[k]:.2f}" for k in r if k.startswith("dice_fpr_") and k.endswith("_mean"))
            + (f"/{r['dice_oracle_mean']:.2f}" if "dice_oracle_mean" in r else "") for r in rows))
    for r in result.get("voxel_thresholds") or []:
        lines.append(f"  {r['model']} threshold at FPR {r['target_fpr']:g} ({r['calibration_pool']}, "
                     f"{r['n_calibration']}): {r['threshold']:.4g}; FPR on the {r['n_test_controls']} healthy test "
                     f"controls {r['test_fpr']:.4f} [{r['test_fpr_ci_low']:.4f}, {r['test_fpr_ci_high']:.4f}]")
    if result.get("subject_detection"):
        lines.append(f"subject level ({s.get('subject_score', 'mean anomaly score in the mask')}): "
                     "AUROC [95 % CI] / AP")
        for r in result["subject_detection"]:
            lines.append(f"  {r['model']:<10} {r['comparison']:<22} {r['auroc']:.3f} [{r['auroc_ci_low']:.3f}, "
                         f"{r['auroc_ci_high']:.3f}] / {r['average_precision']:.3f}")
    return "\n".join(lines)
