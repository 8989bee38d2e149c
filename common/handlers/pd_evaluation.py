"""Ignite handler running the PD anomaly evaluation (:func:`common.evaluation.pd.run_pd_evaluation`) on the
error maps an evaluator produces.

Per iteration it keeps only each subject's error values at the brain voxels of the analysed slab (on the
CPU, ~1.4 MB per subject on the 1.5 mm grid); at the end of the epoch it evaluates and writes the results,
and puts summary metrics on ``engine.state.metrics``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events

from common.atlases import Atlas, load_atlas
from common.distributed import process_rank
from common.evaluation.detection import load_ground_truth, standardise_bank
from common.evaluation.pd import (
    TEST_CONTROLS,
    ErrorBank,
    PDEvaluationSettings,
    run_pd_evaluation,
)
from common.transforms.io import SUBJECT_ID

__all__ = ["PDAnomalyEvaluationHandler"]

logger = logging.getLogger(__name__)

#: What the evaluated maps hold: the raw reconstruction errors, or their z-scores against the errors of the
#: ``normative_ids`` controls at the same voxel (error z-maps).
SCORINGS = ("raw", "zscore")


class PDAnomalyEvaluationHandler:
    """Collect per-subject error maps from ``engine.state.output`` and run the PD evaluation once per epoch.

    ``engine.state.output`` is MONAI's decollated batch: a list of dicts, one per subject (a single batched
    dict is decollated here). Per item:

    - the error map under ``error_key``: (1, X, Y, Z) or (X, Y, Z), tensor or array, on the atlas grid. When
      absent, it is computed as ``sqrt(sum_c (image_c - pred_c)^2)`` from ``image_key`` and ``pred_key``
      ((C, X, Y, Z) each), the paper's joint FA/MD error.
    - the subject id under ``id_key``, else in the meta of the ``image_key`` MetaTensor (``id_key`` or
      ``subject_id``, which :class:`~common.transforms.LoadValidatedImaged` sets).
    - the group (``control`` / ``patient``) under ``group_key``, else in the image meta, else in ``groups``.

    Subjects outside ``reference_ids`` and ``test_ids`` are not kept (when ``test_ids`` is given). With
    ``test_ids=None`` every collected subject that is not in the reference pool is a test subject.
    ``reference_ids``: the controls defining tau (e.g. the split's training controls, which the evaluator
    must then also run), or ``"test_controls"``; ``threshold`` instead uses a tau computed elsewhere.

    Scoring: ``scoring="zscore"`` standardises every subject's errors per voxel against the errors of the
    ``normative_ids`` controls (saved to ``error_normative_dir`` when given, for inference's error z-maps);
    ``reference_ids`` then set the thresholds on the z-scores. ``ground_truth_subjects`` (dataset entries with an
    ``anomaly`` map) give the voxel metrics of ``detection.csv``; ``fprs`` the calibrated false-positive rates.

    After the epoch: files in ``out_dir`` (see :func:`run_pd_evaluation`), ``engine.state.metrics`` gets
    ``<prefix><roi>_auc``, ``<prefix><roi>_paper_gmean``, ``<prefix><roi>_nested_gmean`` for every ROI and
    ``<prefix>tau`` (global threshold), and ``engine.state.pd_evaluation`` the full result. The collected
    errors are released after the evaluation.

    Settings: ``settings`` (:class:`~common.evaluation.pd.PDEvaluationSettings`) or its fields by name (``q``,
    ``n_slices``, ``n_bootstrap``, ``seed``, ``model_name``, ``split``, ``scoring``, ``fprs``, ...; as the bundle
    configs give them), passed on as one object. With several ranks, each evaluates the subjects it collected
    (gather them before for one evaluation) and only rank 0 writes files, as MONAI's ``MetricsSaver``.
    """

    def __init__(self, atlas_grid: str | Atlas | None = "spm1p5", reference_ids: Iterable[str] | str | None = None,
                 test_ids: Iterable[str] | None = None, out_dir: str | os.PathLike = "pd_evaluation",
                 settings: PDEvaluationSettings | None = None, *, error_key: str = "error", id_key: str = "id",
                 group_key: str = "group", image_key: str = "image", pred_key: str = "pred",
                 groups: Mapping[str, str] | None = None, threshold: float | Mapping[str, float] | None = None,
                 showcase: bool = True, showcase_id: str | None = None, metric_prefix: str = "",
                 brain: np.ndarray | None = None, roi_masks: Mapping[str, np.ndarray] | None = None,
                 normative_ids: Iterable[str] | None = None, robust_scoring: bool = False,
                 ground_truth_subjects: Sequence[Mapping] | None = None,
                 error_normative_dir: str | os.PathLike | None = None, **options) -> None:
        self.settings = dataclasses.replace(settings or PDEvaluationSettings(), **options)
        if reference_ids is None and threshold is None:
            raise ValueError(f"give reference_ids (control ids, or {TEST_CONTROLS!r}) or a precomputed threshold")
        if isinstance(reference_ids, str) and reference_ids != TEST_CONTROLS:
            raise ValueError(f"reference_ids must be a list of subject ids or {TEST_CONTROLS!r}, got {reference_ids!r}")
        if atlas_grid is None and (brain is None or roi_masks is None):
            raise ValueError("without atlas_grid, give both brain and roi_masks")
        scoring = self.settings.scoring
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        if scoring == "zscore" and not normative_ids:
            raise ValueError("scoring='zscore' needs normative_ids: the controls whose errors define each voxel's "
                             "normal range")
        self.robust_scoring = robust_scoring
        self.normative_ids = [str(i) for i in normative_ids] if normative_ids else []
        self.ground_truth_subjects = list(ground_truth_subjects or [])
        self.error_normative_dir = error_normative_dir
        self.atlas_grid = atlas_grid
        self.reference_ids = reference_ids if isinstance(reference_ids, str) or reference_ids is None \
            else [str(i) for i in reference_ids]
        self.test_ids = None if test_ids is None else [str(i) for i in test_ids]
        self.out_dir = out_dir
        self.error_key, self.id_key, self.group_key = error_key, id_key, group_key
        self.image_key, self.pred_key = image_key, pred_key
        self.groups = dict(groups or {})
        self.threshold = threshold
        self.showcase, self.showcase_id = showcase, showcase_id
        self.metric_prefix = metric_prefix
        self.brain, self.roi_masks = brain, roi_masks
        self.atlas: Atlas | None = None
        self.bank: ErrorBank | None = None
        self.result: dict | None = None
        self._showcase: dict | None = None
        # Subjects worth storing: all of them unless test_ids is given.
        self._keep = None if self.test_ids is None else {
            *self.test_ids, *(self.reference_ids if isinstance(self.reference_ids, list) else ()), *self.normative_ids}

    # ------------------------------------------------------------------------------------------ wiring

    def attach(self, engine: Engine) -> None:
        if self.atlas_grid is not None:
            self.atlas = self.atlas_grid if isinstance(self.atlas_grid, Atlas) else load_atlas(self.atlas_grid)
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.evaluate)

    def reset(self, engine: Engine | None = None) -> None:
        brain = self.brain if self.brain is not None else self.atlas.brain
        self.bank = ErrorBank.for_brain(brain, self.settings.n_slices)
        self._showcase = None

    def _wanted(self, sid: str) -> bool:
        return self._keep is None or sid in self._keep

    # ---------------------------------------------------------------------------------------- collect

    def collect(self, engine: Engine) -> None:
        """Store the error maps of the subjects in ``engine.state.output``."""
        if self.bank is None:
            self.reset(engine)
        for k, item in enumerate(_items(engine.state.output)):
            sid = _lookup(item, self.id_key, self.image_key, extra=(SUBJECT_ID,))
            if sid is None:
                raise KeyError(f"engine.state.output item {k} has no subject id: expected key {self.id_key!r} or "
                               f"{self.id_key!r} / {SUBJECT_ID!r} in the meta of {self.image_key!r}; "
                               f"item keys: {sorted(map(str, item))}")
            sid = _as_str(sid)
            if not self._wanted(sid):
                continue
            group = _lookup(item, self.group_key, self.image_key)
            group = _as_str(group) if group is not None else self.groups.get(sid)
            if group is None:
                raise KeyError(f"subject {sid!r}: no group (key {self.group_key!r} in the item or image meta, or "
                               "the handler's groups mapping)")
            self.bank.add(sid, group, self._error(item, sid))
            self._maybe_keep_showcase(item, sid, group)

    def _error(self, item: Mapping, sid: str):
        if self.error_key in item:
            return item[self.error_key]
        if self.image_key in item and self.pred_key in item:
            image, pred = torch.as_tensor(item[self.image_key]), torch.as_tensor(item[self.pred_key])
            if image.shape != pred.shape or image.ndim != 4:
                raise ValueError(f"subject {sid!r}: {self.image_key!r} {tuple(image.shape)} and {self.pred_key!r} "
                                 f"{tuple(pred.shape)} must both be (C, X, Y, Z) to compute the error map")
            return torch.linalg.vector_norm((image - pred).float(), dim=0).detach().cpu()
        raise KeyError(f"subject {sid!r}: no error map under {self.error_key!r} and no {self.image_key!r} / "
                       f"{self.pred_key!r} pair to compute it from; item keys: {sorted(map(str, item))}")

    def _maybe_keep_showcase(self, item: Mapping, sid: str, group: str) -> None:
        if not self.showcase or self._showcase is not None:
            return
        if self.showcase_id is not None:
            if sid != self.showcase_id:
                return
        elif group != "patient" or (self.test_ids is not None and sid not in self._keep):
            return
        if self.image_key not in item or self.pred_key not in item:
            return
        image, recon = (_to_numpy(item[key]) for key in (self.image_key, self.pred_key))
        error = _to_numpy(self._error(item, sid))
        # The bank keeps only the brain slab; the figure needs the full maps of this one subject.
        self._showcase = {"image": image, "reconstruction": recon, "error": error.reshape(image.shape[1:]), "id": sid}

    # --------------------------------------------------------------------------------------- evaluate

    def evaluate(self, engine: Engine) -> dict | None:
        """Run the evaluation on what was collected; metrics onto ``engine.state``."""
        if self.bank is None or len(self.bank) == 0:
            logger.warning("PD evaluation: no subject was collected this epoch; nothing evaluated")
            return None
        bank = self.bank
        if self.settings.scoring == "zscore":
            overlap = set(self.normative_ids) & set(self.reference_ids if isinstance(self.reference_ids, list) else ())
            if overlap:
                logger.warning("%d control(s) both standardise the errors and set the threshold: their z-scores are "
                               "in-sample, so the threshold is optimistic", len(overlap))
            affine = self.atlas.grid.affine if self.atlas is not None else None
            save_to = self.error_normative_dir if affine is not None and process_rank() == 0 else None
            bank = standardise_bank(bank, self.normative_ids, robust=self.robust_scoring, save_to=save_to,
                                    affine=affine)
        truth = None
        if self.ground_truth_subjects and self.atlas is not None:
            wanted = set(self.test_ids) if self.test_ids is not None else set(bank.ids)
            truth = load_ground_truth([s for s in self.ground_truth_subjects if str(s["id"]) in wanted], bank,
                                      self.atlas.grid.name)
        writer = process_rank() == 0  # every rank computes its metrics; only rank 0 writes, as MetricsSaver
        self.result = run_pd_evaluation(
            bank, None, self.test_ids, self.reference_ids, self.atlas, self.out_dir if writer else None,
            self.settings, showcase=self._showcase, threshold=self.threshold, roi_masks=self.roi_masks,
            brain=self.brain, ground_truth=truth)
        metrics = {self.metric_prefix + k: (math.nan if v is None else float(v))
                   for k, v in self.result["metrics"].items()}
        if not isinstance(self.result["threshold"], Mapping):
            metrics[self.metric_prefix + "tau"] = float(self.result["threshold"])
        engine.state.metrics.update(metrics)
        engine.state.pd_evaluation = self.result
        self.bank, self._showcase = None, None  # release the errors (hundreds of MB on the 1.5 mm grid)
        return self.result


def _items(output) -> Sequence[Mapping]:
    """The per-subject dicts of an engine output: a decollated list, or a batched dict (decollated here)."""
    if output is None:
        return []
    if isinstance(output, Mapping):
        from monai.data import decollate_batch

        return decollate_batch(output)
    if isinstance(output, (list, tuple)) and all(isinstance(o, Mapping) for o in output):
        return output
    raise TypeError("engine.state.output must be a list of per-subject dicts (MONAI's decollated batch) or a batched "
                    f"dict, got {type(output).__name__}")


def _lookup(item: Mapping, key: str, image_key: str, extra: Sequence[str] = ()):
    """``item[key]``, else ``key`` (or an ``extra`` key) in the meta of ``item[image_key]``."""
    if key in item:
        return item[key]
    image = item.get(image_key)
    meta = getattr(image, "meta", None) or item.get(f"{image_key}_meta_dict") or {}
    for name in (key, *extra):
        if name in meta:
            return meta[name]
    return None


def _to_numpy(x) -> np.ndarray:
    """float32 numpy copy on the CPU of a tensor / MetaTensor / array."""
    return torch.as_tensor(x).detach().cpu().float().numpy().copy()


def _as_str(value) -> str:
    """A plain string from a str or number, or a one-element list/array/tensor (what collation may leave)."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"expected one subject id / group per item, got an array of shape {value.shape}")
        value = value.reshape(-1)[0].item()
    return str(value)
