"""The PET simulation-based evaluation (AD paper sections 2.2, 3) against independent computations.

Most tests run on a small 24x26x22 grid at 2 mm (big enough for the 11-tap SSIM window) with masks given
as arrays and stand-in "models" whose output is known in closed form (identity, a scaling, the healthy
image itself); one test runs on the synthetic PET cohort with a blurring, healthy-prior stand-in.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from helpers import write_nifti
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from common import grids
from common.errors import InputDataError
from common.evaluation.pet import degree_statistics, run_pet_evaluation, ssim_by_region, voxel_detection
from common.grids import Grid
from common.metrics.image import SSIMMoments, ssim, ssim_map

SMALL = Grid(name="pet_small", shape=(24, 26, 22),
             affine_rows=((2.0, 0, 0, -24.0), (0, 2.0, 0, -26.0), (0, 0, 2.0, -22.0)), description="PET test grid")
DEGREES = (0, 10, 30, 50, 70)


def numpy_gaussian(volume: np.ndarray, sigma_vox: float) -> np.ndarray:
    """Separable Gaussian by np.convolve (truncated at 4 sigma, zeros outside): independent of scipy.ndimage."""
    out = volume.astype(np.float64)
    radius = int(4.0 * sigma_vox + 0.5)
    t = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (t / sigma_vox) ** 2)
    kernel /= kernel.sum()
    for axis in range(3):
        out = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, out)
    return out


@pytest.fixture
def small_grid(monkeypatch) -> Grid:
    monkeypatch.setitem(grids.GRIDS, SMALL.name, SMALL)
    return SMALL


@pytest.fixture
def setup(tmp_path, small_grid):
    """Brain (ellipsoid), a mask in one side of it and a second mask, and healthy SUVR-like images on disk."""
    shape = SMALL.shape
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    centre = (np.asarray(shape) - 1) / 2
    brain = ((ii - centre[0]) / 10) ** 2 + ((jj - centre[1]) / 11) ** 2 + ((kk - centre[2]) / 9) ** 2 <= 1
    masks = {"left": brain & (ii < 9), "front": brain & (jj > 16)}
    rng = np.random.default_rng(7)

    def subject(k: int, group: str = "control") -> dict:
        pattern = numpy_gaussian(rng.standard_normal(shape), 1.5)
        image = np.where(brain, 1.2 + 0.15 * k + 2.0 * pattern, 0.05).clip(0.0, None).astype(np.float32)
        path = write_nifti(tmp_path / "data" / f"s{k}.nii.gz", image, SMALL.affine)
        return {"id": f"s{k}", "group": group, "image": str(path), "volume": image}

    controls = [subject(k) for k in range(3)]
    patients = [subject(k, "patient") for k in range(3, 5)]
    return {"brain": brain, "masks": masks, "controls": controls, "patients": patients, "out": tmp_path / "out"}


def evaluate(setup, model, test_subjects=None, patients=None, **kwargs):
    options = {"grid": SMALL.name, "degrees": DEGREES, "sweep_mask": "left", "dementias": ("left", "front"),
               "dementia_degree": 30, "masks": setup["masks"], "brain": setup["brain"], "batch_size": 3,
               "progress": False, "voxel_subsample": None, "verbose": False, "figures": False}
    options.update(kwargs)
    return run_pet_evaluation(model, setup["controls"] if test_subjects is None else test_subjects,
                              setup["patients"] if patients is None else patients, setup["out"], **options)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def normalised(volume: np.ndarray, raw: np.ndarray | None = None) -> np.ndarray:
    """Min-max normalisation with the HEALTHY volume's range (applied to ``raw``, default the volume)."""
    raw = volume if raw is None else raw
    return (raw.astype(np.float64) - volume.min()) / (volume.max() - volume.min())


class Blur(torch.nn.Module):
    """Fixed separable Gaussian blur, optionally pulled towards a healthy template (a 'healthy prior')."""

    def __init__(self, sigma: float = 1.0, template: torch.Tensor | None = None, weight: float = 1.0):
        super().__init__()
        radius = int(3 * sigma)
        g = torch.exp(-torch.arange(-radius, radius + 1.0) ** 2 / (2 * sigma**2))
        self.register_buffer("g", g / g.sum())
        self.register_buffer("template", template if template is not None else torch.zeros(()))
        self.weight = weight

    def forward(self, x):
        k = self.g.numel()
        for axis in range(3):
            shape, pad = [1, 1, 1, 1, 1], [0, 0, 0]
            shape[2 + axis], pad[axis] = k, k // 2
            x = torch.nn.functional.conv3d(x, self.g.view(shape), padding=tuple(pad))
        return self.weight * x + (1.0 - self.weight) * self.template


# --------------------------------------------------------------------------------------------------- the pipeline


def test_pipeline_writes_every_file_with_one_row_per_item(setup):
    result = evaluate(setup, Blur(1.0), figures=True)
    out = setup["out"]
    for name in ("sweep.csv", "sweep_stats.csv", "dementias.csv", "dementia_table.csv", "cn_vs_ad.csv",
                 "voxel_detection.csv", "summary.json", "figures/sweep_mse.png", "figures/reconstructions.png",
                 "figures/voxel_detection.png"):
        assert (out / name).is_file(), name
    n, n_pat = len(setup["controls"]), len(setup["patients"])
    assert len(read_csv(out / "sweep.csv")) == n * len(DEGREES)
    assert [float(r["degree"]) for r in read_csv(out / "sweep_stats.csv")] == list(DEGREES)
    assert len(read_csv(out / "dementias.csv")) == n * 2
    assert [r["dementia"] for r in read_csv(out / "dementia_table.csv")] == ["left", "front"]
    groups = [r["group"] for r in read_csv(out / "cn_vs_ad.csv")]
    assert groups.count("control") == n and groups.count("patient") == n_pat
    # voxel detection: every sweep degree in 'left', and 'front' at 30 % ('left' at 30 % is in the sweep)
    assert len(read_csv(out / "voxel_detection.csv")) == n * (len(DEGREES) + 1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["n_comparisons"] == len(DEGREES) - 1
    assert summary["subjects"] == {"test": ["s0", "s1", "s2"], "patients": ["s3", "s4"]}
    assert not list(out.glob("**/.*.tmp*"))  # atomic writes leave no temporary file
    assert result["timings"]["total_s"] > 0


@pytest.mark.slow  # quick lane: the pipeline and identity-model tests
def test_deterministic_and_batch_size_independent(setup):
    first = evaluate(setup, Blur(1.0), batch_size=1)
    other = evaluate(setup, Blur(1.0), batch_size=4)
    for a, b in zip(first["sweep"]["degrees"] + first["dementias"], other["sweep"]["degrees"] + other["dementias"]):
        # float summation order inside a batched convolution differs by ~1e-9 on some CPUs (oneDNN kernels);
        # a batch that leaked one subject into another would differ by orders of magnitude more
        assert a == pytest.approx(b, rel=1e-4, abs=1e-12, nan_ok=True)  # t statistics amplify it to ~4e-6


def test_effective_reduction_matches_numpy_and_increases(setup):
    result = evaluate(setup, Blur(1.0))
    mask = setup["masks"]["left"]
    g = numpy_gaussian(mask.astype(float), 5.0 / 2.0)  # sigma 5 mm on a 2 mm grid
    rows = result["sweep"]["degrees"]
    for row in rows:
        d = row["degree"] / 100
        assert row["effective_reduction_map"] == pytest.approx(d * g[mask].mean(), rel=1e-5, abs=1e-9)
        expected = np.mean([d * (s["volume"] * g)[mask].sum() / s["volume"][mask].sum() for s in setup["controls"]])
        assert row["effective_reduction_uptake"] == pytest.approx(expected, rel=1e-5, abs=1e-9)
        assert row["effective_reduction_uptake"] < d or d == 0  # smoothing: below the nominal degree
    assert np.all(np.diff([r["effective_reduction_uptake"] for r in rows]) > 0)


def test_bonferroni_is_scipy_times_the_number_of_comparisons(setup):
    result = evaluate(setup, Blur(1.0, torch.full((1, 1, *SMALL.shape), 0.3), weight=0.6))
    by = {(r["id"], r["degree"]): r["mse"] for r in result["rows"]["sweep"]}
    ids = [s["id"] for s in setup["controls"]]
    healthy = [by[(i, 0.0)] for i in ids]
    for row in result["sweep"]["degrees"][1:]:
        p = stats.ttest_rel([by[(i, row["degree"])] for i in ids], healthy).pvalue
        assert row["p"] == pytest.approx(p, rel=1e-12)
        assert row["p_bonferroni"] == pytest.approx(min(1.0, 4 * p), rel=1e-12)
    # the statistics function itself, both tests, with values where the cap at 1 matters
    mse = np.array([[1.0, 1.1, 1.5, 3.0], [1.2, 1.15, 1.9, 3.3], [0.9, 1.05, 1.4, 2.6], [1.1, 1.0, 1.7, 3.1]])
    degrees = (0, 5, 30, 70)
    for test, fn in (("paired", stats.ttest_rel),
                     ("welch", lambda a, b: stats.ttest_ind(a, b, equal_var=False))):
        rows, first = degree_statistics(mse, degrees, test=test)
        for j, row in enumerate(rows[1:], start=1):
            p = fn(mse[:, j], mse[:, 0]).pvalue
            assert row["p"] == pytest.approx(p) and row["p_bonferroni"] == pytest.approx(min(1.0, 3 * p))
        assert rows[1]["p_bonferroni"] == 1.0 and first == 30.0
        assert rows[3]["mse_normalised_mean"] == pytest.approx(mse[:, 3].mean() / mse[:, 0].mean())


def test_identity_model_has_zero_error_and_chance_voxel_detection(setup):
    result = evaluate(setup, lambda x: x.clone())
    for row in read_csv(setup["out"] / "sweep.csv"):
        assert float(row["mse"]) == 0.0
        assert row["mse_normalised"] == ""  # 0 / 0: left empty, not a number made up
        assert float(row["healthiness_reconstruction"]) == pytest.approx(float(row["healthiness_input"]), rel=1e-5)
    assert result["sweep"]["first_significant_degree"] is None
    # a constant anomaly map ranks nothing: AUROC exactly 0.5, AP = prevalence of the mask in the brain
    prevalence = {n: m[setup["brain"]].mean() for n, m in setup["masks"].items()}
    for row in read_csv(setup["out"] / "voxel_detection.csv"):
        assert float(row["auroc"]) == 0.5
        assert float(row["average_precision"]) == pytest.approx(prevalence[row["mask"]], rel=1e-5)
    for metric in ("mse", "mae"):
        assert all(float(r[metric]) == 0.0 for r in read_csv(setup["out"] / "cn_vs_ad.csv"))


def test_a_perfect_healthy_model_detects_the_mask(setup):
    """A model that returns the healthy image: |x' - x| = x * d * G(M) / (max - min), so the voxel AUROC is that
    of x * G(M) against M, computed here with numpy and sklearn; it is high since G(M) peaks inside M."""
    subject = setup["controls"][0]
    healthy = torch.from_numpy(normalised(subject["volume"]).astype(np.float32))
    result = evaluate(setup, lambda x: healthy.expand_as(x).clone(), test_subjects=[subject], patients=[])
    brain, mask = setup["brain"], setup["masks"]["left"]
    score = (subject["volume"] * numpy_gaussian(mask.astype(float), 2.5))[brain]
    expected_auc, expected_ap = roc_auc_score(mask[brain], score), average_precision_score(mask[brain], score)
    assert expected_auc > 0.95
    rows = {float(r["degree"]): r for r in read_csv(setup["out"] / "voxel_detection.csv") if r["mask"] == "left"}
    for degree in DEGREES[1:]:
        assert float(rows[degree]["auroc"]) == pytest.approx(expected_auc, abs=2e-4)
        assert float(rows[degree]["average_precision"]) == pytest.approx(expected_ap, abs=2e-4)
    # and the reconstructions of the healthy and of every simulated input are identical
    assert all(r["ssim_reconstructions_image_mean"] == pytest.approx(1.0) for r in result["dementias"])


@pytest.mark.slow  # quick lane: the pipeline and identity-model tests
def test_healthiness_of_the_simulated_input_decreases_with_degree(setup):
    result = evaluate(setup, Blur(1.0))
    values = [r["healthiness_input_mean"] for r in result["sweep"]["degrees"]]
    assert np.all(np.diff(values) < 0)
    brain, mask = setup["brain"], setup["masks"]["left"]
    ratios = [s["volume"][mask].mean() / s["volume"][brain & ~mask].mean() for s in setup["controls"]]
    assert values[0] == pytest.approx(np.mean(ratios), rel=1e-5)


def test_region_metrics_use_brain_and_not_mask(setup):
    """A mask reaching out of the brain: 'mask' is mask & brain and 'outside' is brain & ~mask (ClinicaDL's
    brain - mask would give -1 where the mask leaves the brain)."""
    brain = setup["brain"]
    leaky = np.zeros_like(brain)
    leaky[:9] = True  # the 'left' slab, outside the brain too
    masks = {"left": leaky, "front": setup["masks"]["front"]}
    evaluate(setup, lambda x: 0.9 * x, masks=masks, patients=[])
    rows = [r for r in read_csv(setup["out"] / "dementias.csv") if r["dementia"] == "left"]
    g = numpy_gaussian((leaky & brain).astype(float), 2.5)
    for row, subject in zip(rows, setup["controls"]):
        x = normalised(subject["volume"])
        r = 0.9 * normalised(subject["volume"], subject["volume"] * (1 - 0.3 * g))
        inside, outside = leaky & brain, brain & ~leaky
        assert float(row["mse_outside"]) == pytest.approx(np.mean((x - r)[outside] ** 2), rel=1e-4)
        assert float(row["mse_mask"]) == pytest.approx(np.mean((x - r)[inside] ** 2), rel=1e-4)
        assert float(row["mae_image"]) == pytest.approx(np.mean(np.abs(x - r)), rel=1e-4)
        assert float(row["ssim_outside"]) == pytest.approx(ssim(x, r, outside), abs=1e-5)


def test_ssim_by_region_matches_the_metric_and_constant_maps_are_chance():
    rng = np.random.default_rng(0)
    x = numpy_gaussian(rng.random((24, 26, 22)), 1.0)
    y = x + 0.05 * rng.standard_normal(x.shape)
    mask = np.zeros(x.shape, bool)
    mask[5:15, 4:20, 3:12] = True
    got = ssim_by_region(ssim_map(x, y), {"image": None, "mask": mask})
    assert got["image"] == pytest.approx(ssim(x, y)) and got["mask"] == pytest.approx(ssim(x, y, mask))
    # the cached-moments SSIM of the dementia rows is the metric's SSIM map
    np.testing.assert_allclose(SSIMMoments(x).ssim_map(SSIMMoments(y)), ssim_map(x, y), rtol=1e-12, atol=1e-12)
    labels = rng.random(500) < 0.2
    assert voxel_detection(np.ones(500), labels) == (0.5, pytest.approx(labels.mean()))
    assert voxel_detection(labels.astype(float), labels) == (1.0, 1.0)


# -------------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("change, message", [
    ({"sweep_mask": "nope"}, "unknown mask name"),
    ({"dementias": ("left", "bvftd")}, "unknown mask name"),
    ({"test_subjects": []}, "test_subjects is empty"),
    ({"degrees": (0, 120)}, "percentages"),
    ({"batch_size": 0}, "batch_size"),
    ({"test": "mann-whitney"}, "test must be"),
])
def test_bad_arguments_fail_before_any_work(setup, change, message):
    with pytest.raises(ValueError, match=message):
        evaluate(setup, Blur(1.0), **change)
    assert not setup["out"].exists()


def test_bad_images_name_the_file(setup, tmp_path):
    off_grid = write_nifti(tmp_path / "bad" / "off_grid.nii.gz", np.ones((20, 20, 20), np.float32), SMALL.affine)
    constant = write_nifti(tmp_path / "bad" / "constant.nii.gz", np.ones(SMALL.shape, np.float32), SMALL.affine)
    for path, message in ((off_grid, "shape"), (constant, "constant image")):
        subjects = [*setup["controls"], {"id": "bad", "image": str(path)}]
        with pytest.raises(InputDataError, match=message) as err:
            evaluate(setup, Blur(1.0), test_subjects=subjects)
        assert str(path) in str(err.value)
    with pytest.raises(ValueError, match="both in test_subjects and patients"):
        evaluate(setup, Blur(1.0), patients=[setup["controls"][0]])
    with pytest.raises(ValueError, match="more than once"):
        evaluate(setup, Blur(1.0), test_subjects=[setup["controls"][0]] * 2)
    assert not setup["out"].exists()


def test_a_model_of_the_wrong_shape_is_refused(setup):
    with pytest.raises(ValueError, match="must have the input's shape"):
        evaluate(setup, lambda x: x[..., :-1])
    assert not setup["out"].exists()


# ---------------------------------------------------------------------------------------- synthetic PET cohort


@pytest.mark.slow  # quick lane: the pipeline and identity-model tests
def test_error_rises_with_degree_on_the_synthetic_cohort(tmp_path, capsys):
    """Blur + pull towards the mean healthy training image (a linear 'healthy prior' standing in for the VAE)
    on 3 test controls of the synthetic cohort: the input-vs-reconstruction MSE rises with the degree."""
    from common.data import split_subjects
    from common.data.synthetic import default_cohort
    from common.data.volumes import load_subject_volumes

    dataset = default_cohort("pet", progress=False)
    test = split_subjects(dataset, "test", 0)[:3]
    train = split_subjects(dataset, "train", 0)
    volumes = load_subject_volumes(train, "clinicadl2", ["PET"], keep=lambda i, v: normalised(v[0]), progress=False)
    template = torch.from_numpy(np.mean(volumes, axis=0).astype(np.float32))[None, None]
    result = run_pet_evaluation(Blur(1.0, template, weight=0.5), test, [], tmp_path / "out", dementias=("ad", "pca"),
                                batch_size=4, progress=False, figures=False)
    rows = result["sweep"]["degrees"]
    normalised_mse = [r["mse_normalised_mean"] for r in rows]
    print("degree, normalised MSE, effective reduction, p Bonferroni:",
          [(r["degree"], round(r["mse_normalised_mean"], 3), round(r["effective_reduction_uptake"], 3),
            float(f"{r['p_bonferroni']:.2g}")) for r in rows])
    # MSE(d) = |R0|^2 - 2 d <R0, v> + d^2 |v|^2 (R0: healthy residual, v: reduction pattern): it rises strictly
    # over the simulated degrees; the first step from the healthy inputs is within a few % either way (the linear
    # term), as in the paper, where errors below 20 % are similar to those of the healthy inputs
    assert np.all(np.diff(normalised_mse[1:]) > 0), normalised_mse
    assert abs(normalised_mse[1] - 1.0) < 0.05 and normalised_mse[-1] > 3.0
    assert result["sweep"]["degrees"][6]["effective_reduction_uptake"] == pytest.approx(0.21, abs=0.02)  # 30 %
    ad = result["dementias"][0]
    assert ad["healthiness_simulated_input_mean"] < ad["healthiness_reconstruction_mean"] \
        < ad["healthiness_healthy_input_mean"] + 1e-6


# ----------------------------------------------------------------------------------------- the bundle's config


def _first_two(part: str) -> str:
    return (f"$common.data.split_subjects(@dataset_json, '{part}', @split_index, @splits_file or None, @n_splits, "
            "@n_val, @split_seed)[:2]")


@pytest.mark.slow  # quick lane: the pipeline and identity-model tests
def test_ad_vae3d_evaluate_config_runs_the_evaluation(tmp_path):
    """train.json + evaluate.json as `monai.bundle run evaluating` merges them: the infer properties are
    complete, the weights are loaded (weights_only) into the reconstructor, results land in eval/split_<i>."""
    from helpers import bundle_workflow

    from common.networks import VAE3d, VAEReconstructor

    overrides = {"bundle_root": str(tmp_path), "degrees": [0, 30], "dementias": ["ad"], "progress": False,
                 "voxel_subsample": 2000, "test_subjects": _first_two("test"), "patients": _first_two("patients"),
                 "train#subjects": _first_two("train"), "validate#subjects": _first_two("val"), "n_bootstrap": 50}
    missing = bundle_workflow("ad_vae3d", ["train.json", "evaluate.json"], "infer", **overrides)
    with pytest.raises((RuntimeError, InputDataError)) as err:  # MONAI may wrap errors of config expressions
        missing.initialize()
    causes, cause = [], err.value
    while cause is not None:
        causes.append(str(cause))
        cause = cause.__cause__
    assert any("model.pt: file not found" in c for c in causes), causes
    assert not (tmp_path / "eval").exists()

    torch.manual_seed(0)
    trained = VAEReconstructor(VAE3d())
    (tmp_path / "models").mkdir()
    torch.save(trained.state_dict(), tmp_path / "models" / "model.pt")
    workflow = bundle_workflow("ad_vae3d", ["train.json", "evaluate.json"], "infer", **overrides)
    workflow.initialize()
    assert workflow.check_properties() == []
    loaded = workflow.parser.get_parsed_content("reconstructor")
    for name, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[name].cpu(), value), name
    workflow.run()
    workflow.finalize()
    out = tmp_path / "eval" / "split_0"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == 0 and len(summary["subjects"]["test"]) == 2 and len(summary["subjects"]["patients"]) == 2
    assert [r["degree"] for r in summary["sweep"]["degrees"]] == [0.0, 30.0]
    assert (out / "figures" / "reconstructions.png").is_file()
    # the baseline is fitted on the split's training controls, thresholds set on its validation controls
    assert summary["settings"]["baseline"]["n_train"] == 2 and summary["settings"]["baseline"]["tail"] == "lower"
    assert summary["settings"]["calibration"] == {**summary["settings"]["calibration"], "pool": "validation controls",
                                                  "n": 2, "fprs": [0.01, 0.05]}
    assert {r["model"] for r in summary["voxel_thresholds"]} == {"ad_vae3d", "normative"}


def test_load_weights_takes_a_state_dict_or_a_saver_dict_and_names_a_mismatch(tmp_path):
    from common.bundle_support import load_weights

    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    torch.save({"model": source.state_dict(), "optimizer": {}}, tmp_path / "saver.pt")
    assert torch.equal(load_weights(target, tmp_path / "saver.pt").weight, source.weight)
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(InputDataError, match=r"other.pt: not the weights of Linear .*1 of another shape \('weight'"):
        load_weights(target, tmp_path / "other.pt")


@pytest.mark.slow
def test_experiment_pet_trains_then_evaluates_and_resumes(tmp_path, capsys):
    """`python -m common experiment pet` end to end on the synthetic cohort: one epoch on 4 training
    controls, a reduced evaluation; a second call reuses the results."""
    from common.app import main
    from common.app.experiment import run_pet_experiment

    subset = ("$common.data.split_subjects(@dataset_json, '{}', @split_index, @splits_file or None, @n_splits, "
              "@n_val, @split_seed)[:{}]")
    overrides = {"degrees": [0, 50], "dementias": ["ad"], "voxel_subsample": 2000,
                 "train#subjects": subset.format("train", 4), "validate#subjects": subset.format("val", 1),
                 "test_subjects": subset.format("test", 2), "patients": subset.format("patients", 2)}
    summary = run_pet_experiment(out=tmp_path, epochs=1, overrides=overrides, progress=False)
    root = tmp_path / "split_00"
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "train_summary.json").is_file()
    assert summary["split"] == 0 and summary["subjects"]["test"] and summary["subjects"]["patients"]
    assert (root / "eval" / "split_0" / "sweep_stats.csv").is_file()
    capsys.readouterr()
    run_pet_experiment(out=tmp_path, epochs=1, overrides=overrides, progress=False)  # the same run: reused
    assert "evaluated earlier, reusing" in capsys.readouterr().out
    # the command line without the reduced evaluation is another run: refused before any work, naming it
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "pet", "--out", str(tmp_path), "--epochs", "1", "--progress", "False"])
    assert exit_info.value.code == 2 and "voxel_subsample: 2000 -> (bundle default)" in capsys.readouterr().err
