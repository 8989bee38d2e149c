"""Helpers the tests import: the tiny test grid, a NIfTI writer, a bundle's ``ConfigWorkflow`` and the tiny-run
overrides of each bundle. Fixtures and hooks live in ``conftest.py``; pytest puts ``tests/`` on ``sys.path``, so a
test reads ``from helpers import write_nifti``."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.grids import Grid

#: MONAI's bundle metadata schema, the one test input from outside the repository (nothing is downloaded).
#: Set BRAIN_ANOMALY_META_SCHEMA to its path; by default it is ../shared/monai/ beside the checkout, where CI has it.
META_SCHEMA = Path(os.environ.get("BRAIN_ANOMALY_META_SCHEMA")
                   or Path(__file__).resolve().parents[2] / "shared" / "monai" / "meta_schema_20240725.json")

TINY = Grid(
    name="tiny",
    shape=(8, 9, 7),
    affine_rows=((2.0, 0, 0, -8.0), (0, 2.0, 0, -9.0), (0, 0, 2.0, -6.0)),
    description="8x9x7 test grid at 2 mm",
)


def write_nifti(path, data, affine, dtype=None) -> Path:
    """Save ``data`` with ``affine`` (the on-disk dtype follows ``dtype`` or the array's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data)
    img = nib.Nifti1Image(data if dtype is None else data.astype(dtype), np.asarray(affine, dtype=float))
    img.header.set_data_dtype(data.dtype if dtype is None else dtype)
    nib.save(img, str(path))
    return path


def bundle_workflow(bundle: str, configs, workflow_type: str, **overrides):
    """A MONAI ``ConfigWorkflow`` of ``bundles/<bundle>`` from one config or a list merged in order, with the
    bundle's metadata and logging files, as ``python -m monai.bundle run`` builds it."""
    from monai.bundle import ConfigWorkflow

    folder = Path(__file__).resolve().parents[1] / "bundles" / bundle / "configs"
    files = [str(folder / c) for c in ([configs] if isinstance(configs, str) else configs)]
    return ConfigWorkflow(config_file=files, workflow_type=workflow_type, meta_file=str(folder / "metadata.json"),
                          logging_file=str(folder / "logging.conf"), **overrides)


#: Tiny runs of each bundle for the end-to-end tests that run it as a user would (release download-and-run,
#: torchrun): the synthetic cohort it reads, training overrides for an epoch of seconds, inference overrides
#: for one subject, and what the torchrun test changes on top of "train" so each of 2 ranks runs a few
#: iterations. A new bundle adds its entry here; those tests fail for a bundle without one.
TINY_RUNS = {
    "pd_ae": {
        "cohort": "pd",
        "train": {"n_val": 1, "n_calib": 0, "epochs": 1, "batch_size": 8, "n_slices": 4, "progress": False},
        "infer": {"subject_ids": ["sub-0008"], "num_workers": 0},
        "multi_gpu": {"batch_size": 2},  # 4 controls x 4 slices: 4 iterations per rank
    },
    "pd_sae": {
        "cohort": "pd",
        "train": {"n_val": 2, "n_calib": 0, "epochs": 1, "pairs_per_epoch": 900, "val_pairs": 450, "n_slices": 4,
                  "progress": False},
        "infer": {"subject_ids": ["sub-0008"], "num_workers": 0, "n_slices": 4},
        "multi_gpu": {"pairs_per_epoch": 1800},  # 8 batches of 225 pairs: 4 per rank
    },
    "ad_vae3d": {  # a narrow VAE (0.25 M parameters instead of 80 M): the configs are under test, not the model
        "cohort": "pet",
        "train": {"n_val": 1, "epochs": 1, "batch_size": 1, "cache_workers": 1, "progress": False,
                  "network_def#channels": [4, 8, 8], "network_def#decoder_channels": [8, 8, 4],
                  "network_def#latent_size": 8},
        "infer": {"subject_ids": ["sub-0009"], "num_workers": 0, "network_def#vae#channels": [4, 8, 8],
                  "network_def#vae#decoder_channels": [8, 8, 4], "network_def#vae#latent_size": 8},
        # a volume per batch, 4 training and 2 validation controls: 2 iterations and 1 validation volume per rank
        # (MONAI's DistributedSampler without padding needs at least one validation volume per rank)
        "multi_gpu": {"n_val": 2},
    },
}


def tiny_run(bundle: str) -> dict:
    """The :data:`TINY_RUNS` entry of ``bundle``, with a clear failure when the bundle has none."""
    if bundle not in TINY_RUNS:
        pytest.fail(f"bundle {bundle!r} has no tiny-run overrides: add them to TINY_RUNS in tests/helpers.py")
    return TINY_RUNS[bundle]


def slow_cases(values, slow) -> list:
    """``values`` for ``pytest.mark.parametrize`` with the cases in ``slow`` marked ``slow``: the quick lane
    (``-m "not slow"``) keeps a representative of the suite and CI still runs every case."""
    slow = set(slow)
    return [pytest.param(v, marks=pytest.mark.slow, id=str(v)) if v in slow else v for v in values]
