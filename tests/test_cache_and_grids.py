"""The cache's atomic build and staleness rules, and the grid definitions."""

from __future__ import annotations

import numpy as np
import pytest

from common.cache import build_atomically, manifest_is_current, read_manifest
from common.grids import GRIDS, get_grid


def test_grids_match_design():
    spm = GRIDS["spm1p5"]
    assert spm.shape == (121, 145, 121) and spm.spacing == (1.5, 1.5, 1.5)
    corners = spm.world_coordinates()[:, [0, -1], [0, -1], [0, -1]]
    np.testing.assert_allclose(corners[:, 0], [-90, -126, -72])
    np.testing.assert_allclose(corners[:, 1], [90, 90, 108])
    # SPM's x-flipped storage names the same voxel centres in reverse x order.
    flipped = spm.x_flipped_affine
    first_voxel_mm = flipped @ np.array([0, 0, 0, 1.0])
    assert flipped[0, 0] == -1.5 and first_voxel_mm[0] == 90
    pet = get_grid("clinicadl2")
    assert pet.shape == (80, 96, 80) and pet.spacing == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="unknown grid 'mni1mm'"):
        get_grid("mni1mm")


def test_build_atomically_and_staleness(tmp_path):
    folder = tmp_path / "entry"
    inputs = {"version": 1}

    def build(tmp):
        (tmp / "a.txt").write_text("hello")
        return {"note": "x"}

    build_atomically(folder, inputs, build)
    assert (folder / "a.txt").read_text() == "hello"
    assert read_manifest(folder)["note"] == "x"
    assert manifest_is_current(folder, inputs)
    assert not manifest_is_current(folder, {"version": 2}), "other inputs make it stale"
    (folder / "a.txt").write_text("changed")
    assert not manifest_is_current(folder, inputs), "a changed file makes it stale"


def test_failed_build_leaves_nothing(tmp_path):
    folder = tmp_path / "entry"

    def build(tmp):
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        build_atomically(folder, {}, build)
    assert not folder.exists()
    assert list(tmp_path.iterdir()) == [], "no temporary folder left behind"
