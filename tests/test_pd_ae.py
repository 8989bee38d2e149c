"""pd_ae: network shapes, loss, slice inference, and the bundle's train/infer workflows on a tiny cohort."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import bundle_workflow
from monai.inferers import SliceInferer

from common.data.synthetic import PDCohortConfig, make_pd_cohort
from common.networks import SpatialAE2d
from common.transforms import ReconstructionError

REPO = Path(__file__).resolve().parents[1]


def test_layer_shapes_121x145_to_4x5_and_back():
    net = SpatialAE2d(in_channels=2)
    x = torch.rand(2, 2, 121, 145)
    z, sizes = net.encode(x)
    assert z.shape == (2, 256, 4, 5)
    assert sizes == [[8, 10], [16, 19], [31, 37], [61, 73], [121, 145]]
    y = net(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    ups = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == 5 and len(ups) == 5
    assert all(m.stride == (2, 2) and m.kernel_size == (3, 3) for m in convs + ups)
    assert 1.9e6 < sum(p.numel() for p in net.parameters()) < 2.1e6  # docs/design.md 3.1: 1.96 M
    assert len([m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]) == 9  # all but the last


def test_torchscript_matches_eager():
    net = SpatialAE2d().eval()
    x = torch.rand(1, 2, 121, 145)
    torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_bundle_trainer_loss_is_the_mean_absolute_reconstruction_error():
    """The bundle's configured trainer (its ``loss`` and ``prepare_reconstruction_batch``) scores a reconstruction
    against its own input: a network that outputs 0.25 everywhere, on inputs 0, 0.5, 1 and 0.25, gives
    (0.25 + 0.25 + 0.75 + 0) / 4 = 0.3125 (a squared error would give 0.171875, a sum 5.0)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "pd_ae" / "configs" / "train.json"))
    net = torch.nn.Conv2d(2, 2, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.fill_(0.25)
    image = torch.tensor([0.0, 0.5, 1.0, 0.25]).expand(1, 2, 2, 4).contiguous()  # (B, C, H, W)
    parser["device"] = "$torch.device('cpu')"
    parser["network_def"] = net
    parser["train#dataloader"] = [{"image": image}]
    parser["train#handlers"] = []
    parser["epochs"] = 1
    trainer = parser.get_parsed_content("train#trainer")
    trainer.run()
    assert trainer.state.output["loss"].item() == pytest.approx(0.3125, abs=1e-7)


def test_joint_error_map_matches_numpy():
    x, xhat = torch.rand(2, 5, 6, 7), torch.rand(2, 5, 6, 7)
    expected = np.sqrt(((x.numpy() - xhat.numpy()) ** 2).sum(0, keepdims=True))
    np.testing.assert_allclose(ReconstructionError()(x, xhat).numpy(), expected, rtol=1e-6)


def test_signed_difference_keeps_channels_and_meta():
    from monai.data import MetaTensor

    affine = torch.diag(torch.tensor([1.5, 1.5, 1.5, 1.0], dtype=torch.float64))
    x = MetaTensor(torch.rand(2, 5, 6, 7), affine=affine)
    xhat = torch.rand(2, 5, 6, 7)
    diff = ReconstructionError(signed=True)(x, xhat)
    np.testing.assert_allclose(diff.numpy(), xhat.numpy() - x.numpy(), rtol=1e-6)
    assert isinstance(diff, MetaTensor) and torch.equal(diff.affine, affine)


def test_slice_inferer_runs_the_network_on_axial_slices():
    """spatial_dim=2 of a (B, C, X, Y, Z) volume is the axial axis of our RAS grids."""
    net = SpatialAE2d(channels=(4, 8)).eval()
    volume = torch.rand(1, 2, 21, 25, 6)
    out = SliceInferer(roi_size=(21, 25), spatial_dim=2, sw_batch_size=4)(volume, net)
    with torch.no_grad():
        manual = torch.stack([net(volume[..., z]) for z in range(volume.shape[-1])], dim=-1)
    torch.testing.assert_close(out, manual, atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_pd(tmp_path_factory):
    folder, _ = make_pd_cohort(tmp_path_factory.mktemp("pd_tiny") / "cohort", PDCohortConfig(6, 2, seed=11),
                               progress=False)
    return folder


@pytest.mark.slow  # quick lane: ad_vae3d's one-epoch workflow test
def test_one_epoch_training_evaluation_and_inference_through_configworkflow(tiny_pd, tmp_path):
    overrides = {"dataset_dir": str(tiny_pd), "bundle_root": str(tmp_path), "n_val": 1, "n_calib": 1, "epochs": 1,
                 "batch_size": 8, "n_slices": 4, "progress": False}
    train = bundle_workflow("pd_ae", "train.json", "train", **overrides)
    train.initialize()
    assert train.check_properties() == []
    # the training loss reaches the logs with decollate off (the output is one dict, not a list of items)
    stats = train.parser.get_parsed_content("train#handlers")[1]
    assert stats.output_transform({"loss": torch.tensor(0.25, requires_grad=True)}) == pytest.approx(0.25)
    assert len(train.train_dataset) == (6 - 2 - 1 - 1) * 4  # 2 train controls x 4 slices
    train.run()
    train.finalize()
    summary = json.loads((tmp_path / "models" / "train_summary.json").read_text())
    assert summary["epochs"] == 1 and summary["best_val_epoch"] == 1
    # validation logged input | reconstruction | |error| of its first samples (tiles Y x X per channel, upscaled to
    # >= 96 px; 2-px gaps)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "logs"), size_guidance={"images": 0})
    events.Reload()
    c, x, y = train.parser.get_parsed_content("validate#dataset")[0]["image"].shape
    f = -(-96 // min(x, y))
    height, width = c * y * f + (c - 1) * 2, 3 * x * f + 2 * 2
    assert events.Tags()["images"] == [f"val_reconstruction/{k}" for k in range(3)]
    for k in range(3):
        assert [(e.step, e.height, e.width) for e in events.Images(f"val_reconstruction/{k}")] == [(1, height, width)]
    assert (tmp_path / "models" / "model.pt").is_file()

    evaluate = bundle_workflow("pd_ae", ["train.json", "evaluate.json"], "infer", n_bootstrap=50, num_workers=0,
                               **overrides)
    evaluate.initialize()
    assert evaluate.check_properties() == []
    evaluate.run()
    evaluate.finalize()
    result = json.loads((tmp_path / "eval" / "split_0" / "pd_evaluation.json").read_text())
    # the threshold comes from the calibration control; errors are standardised against the 2 training + 1
    # validation controls' errors; the test set is the split's 2 test controls + 2 patients
    assert len(result["reference_pool"]["ids"]) == 1 and len(result["subjects"]) == 4
    assert result["scoring"] == "zscore" and result["reference_pool"]["overlaps_test"] == []
    detection = {r["roi"]: r for r in result["detection"]}
    assert detection["whole_brain"]["n_patients_with_truth"] == 2 and 0 <= detection["whole_brain"]["test_fpr1"] <= 1
    assert (tmp_path / "eval" / "split_0" / "detection.csv").is_file()
    # the 4-slice slab misses the SN
    assert {r["roi"] for r in result["rois"]} >= {"whole_brain", "white_matter", "putamen"}
    for figure in ("roc_curves", "gmean_bars", "percent_abnormal_heatmap", "reconstruction_showcase"):
        assert (tmp_path / "eval" / "split_0" / "figures" / f"{figure}.png").is_file()

    infer = bundle_workflow("pd_ae", "inference.json", "infer", dataset_dir=str(tiny_pd), bundle_root=str(tmp_path),
                            subject_ids=["sub-0001", "sub-0007"], num_workers=0)
    infer.initialize()
    assert infer.check_properties() == []
    infer.run()
    infer.finalize()
    source = nib.load(tiny_pd / "sub-0007" / "sub-0007_FA.nii.gz")
    for name, shape in (("reconstruction", (121, 145, 121, 2)), ("error", (121, 145, 121))):
        img = nib.load(tmp_path / "eval" / "inference" / "sub-0007" / f"sub-0007_{name}.nii.gz")
        assert img.shape == shape
        np.testing.assert_allclose(img.affine, source.affine, atol=1e-5)
    error = nib.load(tmp_path / "eval" / "inference" / "sub-0007" / "sub-0007_error.nii.gz").get_fdata()
    recon = nib.load(tmp_path / "eval" / "inference" / "sub-0007" / "sub-0007_reconstruction.nii.gz").get_fdata()
    fa = source.get_fdata()
    md = nib.load(tiny_pd / "sub-0007" / "sub-0007_MD.nii.gz").get_fdata()
    expected = np.sqrt((fa - recon[..., 0]) ** 2 + (md - recon[..., 1]) ** 2)
    np.testing.assert_allclose(error, expected, atol=1e-5)

    # error z-maps: the evaluation saved the controls' error statistics; inference standardises with them
    stats = tmp_path / "models" / "error_normative"
    centre = nib.load(stats / "centre.nii.gz").get_fdata()[..., 0]
    scale = nib.load(stats / "scale.nii.gz").get_fdata()[..., 0]
    mask = nib.load(stats / "mask.nii.gz").get_fdata() > 0
    zinfer = bundle_workflow("pd_ae", "inference.json", "infer", dataset_dir=str(tiny_pd), bundle_root=str(tmp_path),
                             subject_ids=["sub-0007"], num_workers=0, zmap=True, save_reconstruction=False)
    zinfer.initialize()
    zinfer.run()
    zmap = nib.load(tmp_path / "eval" / "inference" / "sub-0007" / "sub-0007_zmap.nii.gz")
    np.testing.assert_allclose(zmap.affine, source.affine, atol=1e-5)
    z = zmap.get_fdata()
    np.testing.assert_allclose(z[mask], ((error - centre) / scale)[mask], rtol=1e-4, atol=1e-4)
    assert not z[~mask].any()


def test_inference_without_weights_fails_before_work(tiny_pd, tmp_path):
    infer = bundle_workflow("pd_ae", "inference.json", "infer", dataset_dir=str(tiny_pd), bundle_root=str(tmp_path))
    with pytest.raises(RuntimeError) as err:  # MONAI wraps errors of config expressions
        infer.initialize()
    causes = []
    cause = err.value
    while cause is not None:
        causes.append(str(cause))
        cause = cause.__cause__
    assert any("model.pt: file not found" in c for c in causes), causes
    assert not (tmp_path / "eval").exists()


