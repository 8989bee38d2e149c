"""pd_sae: the paper's patch auto-encoder shapes, the exact dense centre reconstruction, the siamese loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.losses import SiameseReconstructionLoss
from common.networks import PatchAE2d, SiamesePatchAE


def test_shapes_as_the_paper_describes():
    net = PatchAE2d()
    x = torch.rand(3, 2, 15, 15)
    shapes = []
    h = x
    for layer in (net.conv1, lambda t: F.max_pool2d(t, 2), net.conv2, net.conv3):
        h = layer(h)
        shapes.append(tuple(h.shape[1:]))
    assert shapes == [(16, 13, 13), (16, 6, 6), (16, 4, 4), (16, 2, 2)]
    h = net.up1(h)
    assert tuple(h.shape[1:]) == (16, 4, 4)
    h = net.up2(h)
    assert tuple(h.shape[1:]) == (16, 6, 6)
    h = F.interpolate(h, scale_factor=2.0)
    assert tuple(h.shape[1:]) == (16, 12, 12)
    h = net.up3(h)
    assert tuple(h.shape[1:]) == (16, 14, 14)
    assert tuple(net.up4(h).shape[1:]) == (2, 15, 15)
    assert net.up4.kernel_size == (2, 2) and net.up4.out_channels == 2
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert 11_000 < sum(p.numel() for p in net.parameters()) < 13_000  # docs/design.md 3.2: 12,034
    y = net(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    siamese = SiamesePatchAE()
    siamese.load_state_dict(net.state_dict())  # same parameters: checkpoints move between the two
    recon, codes = siamese(x)
    assert codes.shape == (3, 64)
    torch.testing.assert_close(recon, y)


def cut_patches_reference(net, slices):
    """Every zero-padded 15x15 patch cut explicitly and run through ``forward``; its centre pixel kept."""
    s, c, h, w = slices.shape
    padded = F.pad(slices, (7, 7, 7, 7))
    patches = F.unfold(padded, 15).transpose(1, 2).reshape(s * h * w, c, 15, 15)
    return net(patches)[:, :, 7, 7].reshape(s, h * w, c).permute(0, 2, 1).reshape(s, c, h, w)


@pytest.mark.parametrize("seed", [0, 1])
def test_dense_centre_reconstruction_equals_cutting_every_patch(seed):
    torch.manual_seed(seed)
    net = PatchAE2d().eval()
    slices = torch.rand(2, 2, 19, 23)
    with torch.no_grad():
        dense = net.dense_centre_reconstruction(slices, chunk=97)
        reference = cut_patches_reference(net, slices)
    torch.testing.assert_close(dense, reference, atol=1e-6, rtol=1e-5)


def test_dense_centre_reconstruction_with_a_mask():
    torch.manual_seed(2)
    net = PatchAE2d().eval()
    slices = torch.rand(2, 2, 11, 12)
    mask = torch.rand(2, 11, 12) > 0.5
    with torch.no_grad():
        full = net.dense_centre_reconstruction(slices)
        masked = net.dense_centre_reconstruction(slices, mask=mask)
    m = mask[:, None].expand_as(full)
    torch.testing.assert_close(masked[m], full[m])
    assert not masked[~m].any()


def test_siamese_loss_against_a_direct_computation():
    torch.manual_seed(3)
    b = 4
    target = torch.rand(2 * b, 2, 15, 15)
    recon = torch.rand(2 * b, 2, 15, 15)
    codes = torch.randn(2 * b, 64)
    t, r, z = target.numpy(), recon.numpy(), codes.numpy()
    mse = ((t - r) ** 2).reshape(2 * b, -1).mean(1)
    cos = (z[:b] * z[b:]).sum(1) / (np.linalg.norm(z[:b], axis=1) * np.linalg.norm(z[b:], axis=1))
    expected = (mse[:b] + mse[b:] - 0.005 * cos).mean()
    assert SiameseReconstructionLoss()((recon, codes), target).item() == pytest.approx(expected, rel=1e-5)
    sse = ((t - r) ** 2).reshape(2 * b, -1).sum(1)
    expected_sum = (sse[:b] + sse[b:] - 0.005 * cos).mean()
    loss_sum = SiameseReconstructionLoss(reconstruction="sum")((recon, codes), target).item()
    assert loss_sum == pytest.approx(expected_sum, rel=1e-5)
    # identical codes are maximally similar: the loss drops by exactly alpha
    same = SiameseReconstructionLoss(alpha=0.5)((target, torch.cat([codes[:b], codes[:b]])), target)
    assert same.item() == pytest.approx(-0.5, abs=1e-6)


def test_siamese_loss_rejects_bad_batches():
    with pytest.raises(ValueError, match="reconstruction"):
        SiameseReconstructionLoss(reconstruction="median")
    with pytest.raises(ValueError, match="pairs"):
        SiameseReconstructionLoss()((torch.rand(3, 2, 15, 15), torch.rand(3, 64)), torch.rand(3, 2, 15, 15))


def test_torchscript_of_both_networks():
    x = torch.rand(4, 2, 15, 15)
    net = PatchAE2d().eval()
    torch.testing.assert_close(torch.jit.script(net)(x), net(x))
    siamese = SiamesePatchAE().eval()
    torch.testing.assert_close(torch.jit.script(siamese)(x)[1], siamese(x)[1])


# ---- the bundle ------------------------------------------------------------------------------------------

import json

import nibabel as nib
from helpers import bundle_workflow

from common.data.synthetic import PDCohortConfig, make_pd_cohort


def workflow(config, workflow_type, **overrides):
    return bundle_workflow("pd_sae", config, workflow_type, **overrides)


@pytest.fixture(scope="module")
def tiny_pd(tmp_path_factory):
    folder, _ = make_pd_cohort(tmp_path_factory.mktemp("pd_sae_tiny") / "cohort", PDCohortConfig(7, 2, seed=13),
                               progress=False)
    return folder


@pytest.mark.slow  # quick lane: ad_vae3d's one-epoch workflow test
def test_one_epoch_training_evaluation_and_inference_through_configworkflow(tiny_pd, tmp_path):
    overrides = {"dataset_dir": str(tiny_pd), "bundle_root": str(tmp_path), "n_val": 2, "n_calib": 1, "epochs": 1,
                 "pairs_per_epoch": 900, "val_pairs": 450, "n_slices": 4, "progress": False}
    train = workflow("train.json", "train", **overrides)
    train.initialize()
    assert train.check_properties() == []
    assert len(train.train_dataset) == 900 // 225  # batches of the pair sampler per epoch
    train.run()
    train.finalize()
    summary = json.loads((tmp_path / "models" / "train_summary.json").read_text())
    assert summary["epochs"] == 1 and summary["key_metric"] == "val_loss" and summary["best_val_epoch"] == 1
    # validation logged input | reconstruction | |error| of its first samples (the 15x15 patches of FA and MD,
    # upscaled x7 to 105 px; 2-px gaps)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "logs"), size_guidance={"images": 0})
    events.Reload()
    height, width = 2 * 105 + 2, 3 * 105 + 2 * 2
    assert events.Tags()["images"] == [f"val_reconstruction/{k}" for k in range(3)]
    for k in range(3):
        assert [(e.step, e.height, e.width) for e in events.Images(f"val_reconstruction/{k}")] == [(1, height, width)]
    # the siamese training checkpoint loads into the inference network
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    PatchAE2d().load_state_dict(state)

    evaluate = workflow(["train.json", "evaluate.json"], "infer", n_bootstrap=50, num_workers=0, **overrides)
    evaluate.initialize()
    assert evaluate.check_properties() == []
    evaluate.run()
    result = json.loads((tmp_path / "eval" / "split_0" / "pd_evaluation.json").read_text())
    # threshold from the 1 calibration control; errors standardised against the 2 training + 2 validation controls
    assert result["model"] == "pd_sae" and len(result["reference_pool"]["ids"]) == 1
    assert result["scoring"] == "zscore" and len(result["detection"]) == len(result["rois"])
    assert {r["roi"] for r in result["rois"]} >= {"whole_brain", "white_matter", "putamen"}

    infer = workflow("inference.json", "infer", dataset_dir=str(tiny_pd), bundle_root=str(tmp_path),
                     subject_ids=["sub-0008"], num_workers=0, n_slices=4)
    infer.initialize()
    assert infer.check_properties() == []
    infer.run()
    out = tmp_path / "eval" / "inference" / "sub-0008"
    error = nib.load(out / "sub-0008_error.nii.gz")
    source = nib.load(tiny_pd / "sub-0008" / "sub-0008_FA.nii.gz")
    np.testing.assert_allclose(error.affine, source.affine, atol=1e-5)
    e = error.get_fdata()
    assert nib.load(out / "sub-0008_reconstruction.nii.gz").shape == (121, 145, 121, 2)
    # only the analysed slab carries error: outside it the reconstruction is the input itself
    slab = infer.parser.get_parsed_content("inferer").region((121, 145, 121))[1]
    outside = np.ones(e.shape[-1], bool)
    outside[slab] = False
    assert not e[..., outside].any() and e[..., slab].any()
