"""The normative baseline on a PD split: voxel-wise z-scores of FA and MD against healthy controls.

This is the first thing a neuroimager would try, and the bar every bundle must clear: per voxel and channel, the
mean and sd of the split's reference controls (training + validation controls: the baseline has no checkpoint to
select, so it may use both), ``|z|`` combined over FA and MD, and then exactly the evaluation the bundles get:
the q-quantile threshold and the voxel thresholds at fixed false-positive rates set on the calibration controls,
per-ROI % abnormal voxels, subject and voxel metrics (:func:`common.evaluation.pd.run_pd_evaluation`).

Its output folder has the bundles' layout (``<root>/models/normative/``, ``<root>/eval/split_<i>/``), so the
experiment driver, the comparison and the report treat it as one more model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["BASELINE_NAME", "evaluate_normative_split"]

#: The model name of the baseline in every table.
BASELINE_NAME = "normative"


def evaluate_normative_split(dataset_json: str | os.PathLike, root: str | os.PathLike, split_index: int = 0,
                             splits_file: str | None = None, n_splits: int = 10, n_val: int = 3, n_calib: int = 4,
                             split_seed: int = 0, seed: int = 0, fit_pool: Sequence[str] = ("train", "val"),
                             reference_pool: str | Sequence[str] = "calib", grid: str = "spm1p5",
                             modalities: Sequence[str] = ("FA", "MD"), robust: bool = False,
                             smoothing_mm: float = 0.0, q: float = 0.98, n_slices: int = 40, n_bootstrap: int = 2000,
                             fprs: Sequence[float] | None = None, figures: bool = True, progress: bool = True,
                             verbose: bool = True, write_maps: bool = False) -> dict:
    """Fit the baseline on ``fit_pool`` controls of split ``split_index`` and evaluate it like a bundle.

    Writes ``<root>/models/normative/`` (the fitted model: centre, scale, mask, settings) and
    ``<root>/eval/split_<i>/`` (:func:`run_pd_evaluation` files, model name ``normative``); with ``write_maps``
    also ``<root>/maps/<id>_zmap.nii.gz`` for every evaluated subject, on the grid with its affine.
    Returns the evaluation result.
    """
    from common.atlases import load_atlas
    from common.data import pool_subjects, split_subjects
    from common.data.volumes import load_subject_volumes
    from common.evaluation.detection import load_ground_truth
    from common.evaluation.pd import ErrorBank, run_pd_evaluation
    from common.normative import NormativeModel
    from common.paths import eval_dir, models_dir

    root = Path(root)
    split = (split_index, splits_file, n_splits, n_val, split_seed, n_calib)
    fit_subjects = pool_subjects(dataset_json, list(fit_pool), *split)
    reference = pool_subjects(dataset_json, reference_pool, *split)
    evaluation = split_subjects(dataset_json, "evaluation", *split)
    atlas = load_atlas(grid)
    bank = ErrorBank.for_brain(atlas.brain, n_slices, capacity=len(reference) + len(evaluation))

    model = NormativeModel(atlas.brain, robust=robust, smoothing_mm=smoothing_mm, spacing=atlas.grid.spacing,
                           tail="both", channel_names=list(modalities))
    volumes = load_subject_volumes(fit_subjects, grid, modalities, keep=lambda i, v: v, progress=progress,
                                   desc="normative: reference controls")
    model.fit(np.stack(volumes))
    del volumes
    model.save(models_dir(root) / BASELINE_NAME, affine=atlas.grid.affine)

    scored = reference + [s for s in evaluation if s["id"] not in {r["id"] for r in reference}]

    def score(i: int, volume: np.ndarray) -> np.ndarray:
        return model.score(volume).astype(np.float32)

    maps = load_subject_volumes(scored, grid, modalities, keep=score, progress=progress,
                                desc="normative: scoring")
    for subject, zmap in zip(scored, maps):
        bank.add(subject["id"], subject["group"], zmap)
        if write_maps:
            _write_map(root / "maps" / f"{subject['id']}_zmap.nii.gz", zmap, atlas.grid.affine)
    truth = load_ground_truth(evaluation, bank, grid)
    return run_pd_evaluation(bank, None, [s["id"] for s in evaluation], [s["id"] for s in reference], atlas,
                             eval_dir(root, split_index), q=q, n_slices=n_slices, n_bootstrap=n_bootstrap,
                             seed=seed, model_name=BASELINE_NAME, split=split_index, figures=figures, verbose=verbose,
                             ground_truth=truth, fprs=fprs, scoring="zscore")


def _write_map(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """One float32 NIfTI map, written atomically."""
    import gzip

    import nibabel as nib

    from common.data._jsonio import write_bytes_atomic

    image = nib.Nifti1Image(np.asarray(data, np.float32), affine)
    image.header.set_data_dtype(np.float32)
    write_bytes_atomic(path, gzip.compress(image.to_bytes(), compresslevel=1))
