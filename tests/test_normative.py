"""The voxel-wise normative (z-score) model against numpy/scipy, its calibration on simulated controls, its
save/load round trip, its MONAI transforms and its input checks."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from helpers import write_nifti
from monai.data import MetaTensor
from scipy import ndimage, stats

from common.errors import InputDataError
from common.normative import (
    MAD_TO_SD,
    NormativeModel,
    NormativeScore,
    NormativeScored,
    fit_normative_from_subjects,
)

SHAPE = (10, 12, 9)


@pytest.fixture
def mask():
    m = np.zeros(SHAPE, bool)
    m[2:8, 2:10, 1:8] = True
    m[2, 2, 1] = False  # not a box: the C order of volume[:, mask] must be respected
    return m


@pytest.fixture
def volumes():
    """(6, 2, X, Y, Z) float64 volumes with a different mean and sd per voxel and channel."""
    rng = np.random.default_rng(7)
    mu = rng.uniform(0.2, 0.8, (2, *SHAPE))
    sd = rng.uniform(0.02, 0.1, (2, *SHAPE))
    return mu + sd * rng.standard_normal((6, 2, *SHAPE))


def test_mean_and_sd_match_numpy(mask, volumes):
    model = NormativeModel(mask, min_scale_fraction=0.0).fit(volumes)
    values = volumes[:, :, mask].astype(np.float32).astype(np.float64)  # the model keeps float32 values
    np.testing.assert_allclose(model.centre, values.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(model.scale, values.std(axis=0, ddof=1), rtol=1e-6)
    assert model.centre.dtype == model.scale.dtype == np.float32 and model.centre.shape == (2, mask.sum())
    # the values path and an iterable (a generator: no len) give the same model
    by_values = NormativeModel(mask, min_scale_fraction=0.0).fit_values(volumes[:, :, mask])
    by_generator = NormativeModel(mask, min_scale_fraction=0.0).fit(v for v in volumes)
    np.testing.assert_array_equal(by_values.centre, model.centre)
    np.testing.assert_array_equal(by_generator.scale, model.scale)
    assert model.n_fit == 6 and model.channel_names == ["channel 0", "channel 1"]


@pytest.mark.parametrize("n", [5, 6])  # odd and even medians
def test_robust_matches_median_and_scipy_mad(mask, volumes, n):
    model = NormativeModel(mask, robust=True, min_scale_fraction=0.0).fit(volumes[:n])
    values = volumes[:n, :, mask].astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(model.centre, np.median(values, axis=0), rtol=1e-6)
    np.testing.assert_allclose(model.scale, stats.median_abs_deviation(values, axis=0, scale="normal"), rtol=1e-6)
    assert pytest.approx(1.4826, abs=1e-4) == MAD_TO_SD


def test_masked_smoothing_matches_normalised_gaussian(mask, volumes):
    spacing = (1.5, 2.0, 2.5)  # anisotropic: sigma is converted per axis
    sigma_mm = 3.0
    sigma_vox = [sigma_mm / s for s in spacing]
    m = mask.astype(float)

    def reference(vol):  # smooth(x m) / smooth(m) inside the mask, in float64
        den = ndimage.gaussian_filter(m, sigma_vox, mode="constant")
        return np.stack([ndimage.gaussian_filter(c * m, sigma_vox, mode="constant") / den for c in vol])[:, mask]

    model = NormativeModel(mask, smoothing_mm=sigma_mm, spacing=spacing, min_scale_fraction=0.0).fit(volumes[:5])
    smoothed = np.stack([reference(v) for v in volumes[:5]])
    by_values = NormativeModel(mask, smoothing_mm=sigma_mm, spacing=spacing, min_scale_fraction=0.0)
    np.testing.assert_array_equal(by_values.fit_values(volumes[:5, :, mask]).centre, model.centre)
    np.testing.assert_allclose(model.centre, smoothed.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(model.scale, smoothed.std(axis=0, ddof=1), rtol=1e-4)
    z = model.zscores(volumes[5])
    expected = (reference(volumes[5]) - smoothed.mean(axis=0)) / smoothed.std(axis=0, ddof=1)
    np.testing.assert_allclose(z[:, mask], expected, rtol=1e-4, atol=1e-4)
    assert np.all(z[:, ~mask] == 0)
    # the background does not leak in: a constant map stays constant up to the brain edge, whatever lies outside
    const = np.where(mask, 0.5, 9.0)[None]
    assert np.allclose(model._smooth(const[:, mask].astype(np.float32)), 0.5, atol=1e-6)
    # score_values smooths exactly as zscores does
    np.testing.assert_allclose(model.score_values(volumes[5:, :, mask])[0], model.score(volumes[5])[mask], rtol=1e-6)


def test_known_z_values_and_tails(mask):
    # every voxel: controls 0, 1, 2, 3 (+ a channel offset): mean 1.5, sd sqrt(5/3)
    controls = np.arange(4.0)[:, None, None, None, None] + np.array([0.0, 10.0])[None, :, None, None, None]
    controls = np.broadcast_to(controls, (4, 2, *SHAPE))
    subject = np.stack([np.full(SHAPE, 3.0), np.full(SHAPE, 10.0)])  # z = +1.5/sd and -1.5/sd
    z_known = 1.5 / np.sqrt(5 / 3)
    for tail, expected in (("both", np.sqrt(2) * z_known), ("upper", z_known), ("lower", z_known)):
        model = NormativeModel(mask, tail=tail, channel_names=["FA", "MD"]).fit(controls)
        z = model.zscores(subject)
        np.testing.assert_allclose(z[0][mask], z_known, rtol=1e-6)
        np.testing.assert_allclose(z[1][mask], -z_known, rtol=1e-6)
        np.testing.assert_allclose(model.score(subject)[mask], expected, rtol=1e-6)
    # one channel: "upper" is the signed z and "lower" its negative
    for tail, sign in (("upper", 1), ("lower", -1), ("both", None)):
        one = NormativeModel(mask, tail=tail).fit(controls[:, 1:])
        score = one.score(subject[1:])[mask]
        np.testing.assert_allclose(score, z_known if sign is None else sign * -z_known, rtol=1e-6)
    # robust: controls 0, 1, 2, 3, 10 -> median 2, MAD 1, subject at 10 has z = 8 / 1.4826
    robust_controls = np.broadcast_to(np.array([0.0, 1, 2, 3, 10])[:, None, None, None, None], (5, 1, *SHAPE))
    robust = NormativeModel(mask, robust=True).fit(robust_controls)
    np.testing.assert_allclose(robust.zscores(np.full((1, *SHAPE), 10.0))[0][mask], 8 / 1.482602218505602, rtol=1e-6)


def test_scale_floor(mask):
    rng = np.random.default_rng(3)
    controls = rng.normal(0.0, 1.0, (8, 1, *SHAPE))
    flat = (4, 5, 4)
    controls[:, 0, flat[0], flat[1], flat[2]] = 0.5 + 1e-7 * np.arange(8)  # a near-constant voxel
    model = NormativeModel(mask, min_scale_fraction=0.1).fit(controls)
    raw = controls[:, 0][:, mask].std(axis=0, ddof=1)
    floor = 0.1 * np.median(raw)
    np.testing.assert_allclose(model.scale[0], np.maximum(raw, floor), rtol=1e-5)
    assert model.scale_floor[0] == pytest.approx(floor, rel=1e-5)
    bump = np.zeros((1, *SHAPE))
    bump[0, flat[0], flat[1], flat[2]] = 0.6  # 0.1 off a voxel that "never varies": bounded z, not ~1e6
    centre = controls[:, 0, flat[0], flat[1], flat[2]].mean()
    assert model.zscores(bump)[0][flat] == pytest.approx((0.6 - centre) / floor, rel=1e-4)


def test_calibration_on_controls_and_planted_anomaly(mask):
    rng = np.random.default_rng(11)
    mu = rng.uniform(0.5, 1.5, (2, *SHAPE))
    sd = rng.uniform(0.05, 0.2, (2, *SHAPE))

    def draw(n):
        return (mu + sd * rng.standard_normal((n, 2, *SHAPE))).astype(np.float32)

    model = NormativeModel(mask, tail="both").fit(draw(60))
    new = draw(40)[:, :, mask]
    z = (new - model.centre) / model.scale
    # |z| of unseen controls ~ N(0, 1) (slightly wider: the centre and scale are estimates from 60 subjects)
    frac = np.mean(np.abs(z) > 2.576)
    assert 0.006 < frac < 0.02
    # two channels combined: score^2 ~ chi2(2)
    scores = model.score_values(new)
    assert 0.006 < np.mean(scores > np.sqrt(stats.chi2.ppf(0.99, 2))) < 0.025
    # a planted hypometabolism (-5 sd in both channels of a blob) scores above the controls' 99.9th percentile
    patient = draw(1)[0]
    blob = np.zeros(SHAPE, bool)
    blob[4:6, 5:8, 3:5] = True
    patient[:, blob] -= 5 * sd[:, blob]
    lower = NormativeModel(mask, tail="lower").fit(draw(60))
    threshold = np.quantile(lower.score_values(new), 0.999)
    assert np.all(lower.score(patient)[blob] > threshold)
    assert np.mean(lower.score(patient)[mask & ~blob] > threshold) < 0.01


def test_save_load_round_trip_is_bit_identical(tmp_path, mask, volumes):
    affine = np.array([[2.0, 0, 0, -10], [0, 2, 0, -12], [0, 0, 2, -9], [0, 0, 0, 1]])
    model = NormativeModel(mask, robust=True, smoothing_mm=2.0, spacing=(2, 2, 2), tail="lower",
                           channel_names=["FA", "MD"]).fit(volumes)
    folder = model.save(tmp_path / "model", affine=affine)
    loaded = NormativeModel.load(folder)
    np.testing.assert_array_equal(loaded.centre, model.centre)
    np.testing.assert_array_equal(loaded.scale, model.scale)
    np.testing.assert_array_equal(loaded.mask, mask)
    np.testing.assert_array_equal(loaded.affine, affine)
    assert (loaded.robust, loaded.smoothing_mm, loaded.spacing, loaded.tail, loaded.channel_names, loaded.n_fit) == \
        (True, 2.0, (2.0, 2.0, 2.0), "lower", ["FA", "MD"], 6)
    np.testing.assert_array_equal(loaded.score(volumes[0]), model.score(volumes[0]))
    # saving the loaded model again writes the same bytes
    again = loaded.save(tmp_path / "again")
    for name in ("centre.nii.gz", "scale.nii.gz", "mask.nii.gz", "normative.json"):
        assert (again / name).read_bytes() == (folder / name).read_bytes(), name
    assert not list(folder.glob(".*tmp"))
    # the 4-D images hold one channel per volume, on the given grid
    import nibabel as nib

    img = nib.load(folder / "centre.nii.gz")
    assert img.shape == (*SHAPE, 2) and np.allclose(img.affine, affine)
    np.testing.assert_array_equal(np.asarray(img.dataobj)[mask].T, model.centre)


def test_load_names_the_broken_file(tmp_path, mask, volumes):
    folder = NormativeModel(mask).fit(volumes).save(tmp_path / "m")
    scale = folder / "scale.nii.gz"
    scale.write_bytes(scale.read_bytes()[:-20])
    with pytest.raises(InputDataError, match=r"scale\.nii\.gz: content does not match its checksum"):
        NormativeModel.load(folder)
    (folder / "mask.nii.gz").unlink()
    with pytest.raises(InputDataError, match=r"mask\.nii\.gz: file not found"):
        NormativeModel.load(folder)
    doc = json.loads((folder / "normative.json").read_text())
    del doc["settings"]["tail"]
    (folder / "normative.json").write_text(json.dumps(doc))
    with pytest.raises(InputDataError, match=r"normative\.json: missing or malformed entry.*tail"):
        NormativeModel.load(folder)
    (folder / "normative.json").unlink()
    with pytest.raises(InputDataError, match=r"normative\.json: file not found"):
        NormativeModel.load(folder)
    # a file replaced by a valid image of the wrong shape, with its checksum updated, is still refused
    folder = NormativeModel(mask).fit(volumes).save(tmp_path / "m2")
    write_nifti(folder / "centre.nii.gz", np.zeros((*SHAPE, 3), np.float32), np.eye(4))
    doc = json.loads((folder / "normative.json").read_text())
    import hashlib

    doc["sha256"]["centre.nii.gz"] = hashlib.sha256((folder / "centre.nii.gz").read_bytes()).hexdigest()
    (folder / "normative.json").write_text(json.dumps(doc))
    with pytest.raises(InputDataError, match=r"centre\.nii\.gz: shape .*expected"):
        NormativeModel.load(folder)
    assert gzip.decompress((folder / "mask.nii.gz").read_bytes())  # the other files are untouched


def test_transforms_keep_the_affine_and_meta(mask, volumes):
    affine = torch.tensor([[2.0, 0, 0, -10], [0, 2, 0, -12], [0, 0, 2, -9], [0, 0, 0, 1]], dtype=torch.float64)
    model = NormativeModel(mask, spacing=(2, 2, 2), affine=affine, channel_names=["FA", "MD"]).fit(volumes)
    image = MetaTensor(torch.as_tensor(volumes[0], dtype=torch.float32), affine=affine,
                       meta={"filename_or_obj": "sub-01_FA.nii.gz", "subject_id": "sub-01"})
    out = NormativeScore(model)(image)
    assert isinstance(out, MetaTensor) and out.shape == (1, *SHAPE)
    assert torch.equal(out.affine, affine) and out.meta["subject_id"] == "sub-01"
    np.testing.assert_allclose(out[0].numpy(), model.score(volumes[0].astype(np.float32)), rtol=1e-6)
    d = NormativeScored("error", model, output_key="error_z", channels=True)({"error": image, "id": "sub-01"})
    assert d["error_z"].shape == (2, *SHAPE) and torch.equal(d["error_z"].affine, affine)
    assert d["error"] is image
    np.testing.assert_allclose(d["error_z"].numpy(), model.zscores(image), rtol=1e-6)
    shifted = affine.clone()
    shifted[0, 3] += 2.0  # one voxel off
    moved = MetaTensor(image.as_tensor(), affine=shifted)
    with pytest.raises(ValueError, match="not on the model's grid"):
        NormativeScore(model)(moved)
    with pytest.raises(ValueError, match="one output key per key"):
        NormativeScored(["a", "b"], model, output_key="zmap")


def test_clear_errors(mask, volumes):
    with pytest.raises(ValueError, match="not fitted"):
        NormativeModel(mask).score(volumes[0])
    with pytest.raises(ValueError, match="not fitted"):
        NormativeScore(NormativeModel(mask))
    with pytest.raises(ValueError, match="does not match the mask"):
        NormativeModel(mask).fit(volumes[:, :, :-1])
    with pytest.raises(ValueError, match=r"has 1 channel\(s\); the model expects 2 \(FA, MD\)"):
        NormativeModel(mask, channel_names=["FA", "MD"]).fit(volumes[:, :1])
    fitted = NormativeModel(mask, channel_names=["FA", "MD"]).fit(volumes)
    with pytest.raises(ValueError, match=r"expects 2 \(FA, MD\)"):
        fitted.score(volumes[0, :1])
    with pytest.raises(ValueError, match="2 or more fitting subjects"):
        NormativeModel(mask).fit(volumes[:1])
    with pytest.raises(ValueError, match="3 or more fitting subjects"):
        NormativeModel(mask, robust=True).fit(list(volumes[:2]))
    bad = volumes.copy()
    bad[3, 1][mask] = np.nan
    with pytest.raises(ValueError, match=r"subject 3: \d+ NaN/Inf value\(s\) at mask voxels \(MD\)"):
        NormativeModel(mask, channel_names=["FA", "MD"]).fit(bad)
    with pytest.raises(ValueError, match=r"values: subject 3: .*NaN/Inf"):
        fitted.score_values(bad[:, :, mask])
    outside = volumes.copy()
    outside[0, 0][~mask] = np.inf  # outside the mask: never used, so accepted
    NormativeModel(mask).fit(outside)
    with pytest.raises(ValueError, match="tail must be one of"):
        NormativeModel(mask, tail="two-sided")
    with pytest.raises(ValueError, match="binary"):
        NormativeModel(mask * 0.7)
    with pytest.raises(ValueError, match="empty"):
        NormativeModel(np.zeros(SHAPE, bool))
    with pytest.raises(ValueError, match="disagrees with the affine"):
        NormativeModel(mask, spacing=(1, 1, 1), affine=np.diag([2.0, 2, 2, 1]))
    same_md = np.stack([volumes[:3, 0], np.broadcast_to(volumes[0, 1], (3, *SHAPE))], axis=1)
    with pytest.raises(ValueError, match=r"'MD'.*do not vary at \d+ of"):  # identical controls: z undefined
        NormativeModel(mask, channel_names=["FA", "MD"]).fit(same_md)


def test_fit_from_subjects_loads_each_file_once(tiny_grid, tmp_path, monkeypatch):
    import common.transforms.io as io

    rng = np.random.default_rng(5)
    volumes = rng.uniform(0.1, 0.9, (4, 2, *tiny_grid.shape)).astype(np.float32)
    subjects = []
    for i, vol in enumerate(volumes):
        files = [write_nifti(tmp_path / f"sub-{i}_{m}.nii.gz", vol[c], tiny_grid.affine) for c, m in
                 enumerate(("FA", "MD"))]
        subjects.append({"id": f"sub-{i}", "image": [str(f) for f in files]})
    mask = np.zeros(tiny_grid.shape, bool)
    mask[1:7, 1:8, 1:6] = True
    calls = []
    original = io.load_checked
    monkeypatch.setattr(io, "load_checked", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    model = fit_normative_from_subjects(subjects, "tiny", ["FA", "MD"], mask, progress=False, smoothing_mm=2.0)
    assert sorted(calls) == sorted(f for s in subjects for f in s["image"])
    reference = NormativeModel(mask, smoothing_mm=2.0, spacing=(2, 2, 2)).fit(volumes)
    np.testing.assert_array_equal(model.centre, reference.centre)
    np.testing.assert_array_equal(model.scale, reference.scale)
    assert model.channel_names == ["FA", "MD"] and np.array_equal(model.affine, tiny_grid.affine)
    # a bad file is named before any volume is read
    calls.clear()
    write_nifti(tmp_path / "sub-3_MD.nii.gz", volumes[3, 1, :-1], tiny_grid.affine)
    with pytest.raises(InputDataError, match=r"sub-3_MD\.nii\.gz: not on grid 'tiny'"):
        fit_normative_from_subjects(subjects, "tiny", ["FA", "MD"], mask, progress=False)
    assert calls == []
