"""Shared fixtures: a tiny test grid and a tiny valid cohort written into tmp_path (helpers the tests import
are in ``helpers.py``).

The cohort's dataset.json is written with plain ``json.dump`` in the documented format (not with
``write_dataset``), so reader tests do not depend on the writer under test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

# Tests build their atlases and cohorts in a cache of their own (fresh on a clean clone, so CI exercises
# the offline atlas build), unless the caller points BRAIN_ANOMALY_CACHE somewhere on purpose.
os.environ.setdefault("BRAIN_ANOMALY_CACHE",
                      str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "brain-anomaly-cache"))

# Under pytest-xdist each worker gets its share of the cores (torch and the BLAS/OpenMP pools of the
# subprocesses the bundle tests start): two workers with two threads each on a 2-core CI machine spend
# their time contending instead of computing.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    import torch

    torch.set_num_threads(_threads)

from helpers import TINY, write_nifti

from common import grids
from common.grids import Grid


@pytest.fixture
def all_cores():
    """For the long end-to-end tests: every core for torch. They outlast the other tests, so the per-worker
    share set above would leave cores idle while they finish alone."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_grid(monkeypatch) -> Grid:
    """The tiny grid, registered as ``"tiny"`` in :data:`common.grids.GRIDS` for this test only."""
    monkeypatch.setitem(grids.GRIDS, TINY.name, TINY)
    return TINY


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def make_cohort(tmp_path, tiny_grid):
    """``make_cohort(n_controls=3, n_patients=2, anomaly=True) -> Path`` of a valid FA/MD cohort's dataset.json.

    Each subject's FA is filled with ``0.1 * subject number`` and MD with ``0.5`` so tests can tell files apart
    (voxels (0, 0, 0) and (0, 0, 1) hold 0 and 1: a constant or binary map is refused as no image).
    """

    def make(n_controls: int = 3, n_patients: int = 2, anomaly: bool = True, root: Path | None = None) -> Path:
        root = Path(root or tmp_path / "cohort")
        training = []
        for i in range(n_controls + n_patients):
            sid = f"sub-{i + 1:04d}"
            group = "control" if i < n_controls else "patient"
            fa = np.full(TINY.shape, 0.1 * ((i % 9) + 1), dtype=np.float32)
            md = np.full(TINY.shape, 0.5, dtype=np.float32)
            fa[0, 0, :2] = md[0, 0, :2] = (0.0, 1.0)  # three values: constant and binary maps are refused
            write_nifti(root / sid / f"{sid}_FA.nii.gz", fa, TINY.affine)
            write_nifti(root / sid / f"{sid}_MD.nii.gz", md, TINY.affine)
            entry = {
                "id": sid,
                "group": group,
                "image": [f"{sid}/{sid}_FA.nii.gz", f"{sid}/{sid}_MD.nii.gz"],
                "age": 60.0 + i,
                "sex": "F" if i % 2 else "M",
                "site": "A",
            }
            if group == "patient" and anomaly:
                write_nifti(root / sid / f"{sid}_effect.nii.gz", np.zeros(TINY.shape, np.float32), TINY.affine)
                entry["anomaly"] = f"{sid}/{sid}_effect.nii.gz"
            training.append(entry)
        doc = {
            "name": "tiny test cohort",
            "description": "written by tests/conftest.py",
            "licence": "CC0",
            "tensorImageSize": "3D",
            "grid": TINY.name,
            "modality": {"0": "FA", "1": "MD"},
            "numTraining": len(training),
            "training": training,
        }
        path = root / "dataset.json"
        path.write_text(json.dumps(doc, indent=2))
        return path

    return make


@pytest.fixture(scope="session")
def tiny_bundle_cohort(tmp_path_factory):
    """``get(kind) -> dataset folder`` of a small synthetic cohort of ``kind`` ('pd': 7 controls, 2 patients;
    'pet': 8 cognitively normal, 2 AD), made once per session."""
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            from common.data.synthetic import PDCohortConfig, PETCohortConfig, make_pd_cohort, make_pet_cohort

            out = tmp_path_factory.mktemp(f"{kind}_tiny_cohort") / "cohort"
            if kind == "pd":
                made[kind], _ = make_pd_cohort(out, PDCohortConfig(7, 2, seed=13), progress=False)
            elif kind == "pet":
                made[kind], _ = make_pet_cohort(out, PETCohortConfig(8, 2, seed=13), progress=False)
            else:
                raise ValueError(f"unknown cohort kind {kind!r}")
        return made[kind]

    return get
