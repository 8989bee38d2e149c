"""PatchReassemblyInferer: exactness, brute-force references, batching, mask/slab, fast-path dispatch, MONAI."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.engines import SupervisedEvaluator
from torch import nn
from torch.utils.data import DataLoader

from common.atlases import load_atlas
from common.data.slab import analysed_slab
from common.inferers import PatchReassemblyInferer

PS = 7  # small patches keep the brute-force references fast; the default 15 is covered too


@pytest.fixture(autouse=True)
def one_thread():
    """Small conv batches on a shared 2-core machine are dominated by OpenMP hand-offs: one thread each."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_conv(seed: int = 0, channels: int = 2) -> nn.Module:
    """A fixed random conv net, patch -> patch (zero 'same' padding inside the patch, so a patch's output
    depends on where the patch ends: the mean mode then differs from the centre mode)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, channels, 3, padding=1)).eval()


class PointwiseConvNet(nn.Module):
    """Toy network with both paths: ``forward`` maps a patch through a 3x3 'same' conv and a sigmoid, so
    the centre of the zero-padded patch centred on a pixel is that conv on the zero-padded slice there:
    ``dense_centre_reconstruction`` computes it on whole slices. Counts the calls of each path."""

    def __init__(self, channels: int = 2):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.forward_calls = self.dense_calls = 0

    def forward(self, patches):
        self.forward_calls += 1
        return torch.sigmoid(self.conv(patches))

    def dense_centre_reconstruction(self, slices):
        self.dense_calls += 1
        return torch.sigmoid(self.conv(slices))


def brute_force(x: torch.Tensor, net, region: np.ndarray, mode: str, ps: int = PS) -> torch.Tensor:
    """Reference: explicit loops over the region's voxels, one zero-padded patch at a time; 'centre' keeps
    the patch's centre, 'mean' adds each patch's output to every voxel it covers and divides by the count.
    Voxels outside the region keep the input."""
    p = ps // 2
    b_n, c, nx, ny, nz = x.shape
    out = x.clone().double()
    acc = torch.zeros(b_n, c, nx, ny, nz, dtype=torch.float64)
    count = torch.zeros(nx, ny, nz, dtype=torch.float64)
    with torch.no_grad():
        for b in range(b_n):
            for z in range(nz):
                padded = F.pad(x[b, :, :, :, z], (p, p, p, p))
                for i, j in zip(*np.nonzero(region[:, :, z])):
                    o = net(padded[:, i:i + ps, j:j + ps].unsqueeze(0).contiguous())[0].double()
                    if mode == "centre":
                        out[b, :, i, j, z] = o[:, p, p]
                        continue
                    for di in range(ps):  # each row of the patch, clipped to the slice
                        u = i + di - p
                        if 0 <= u < nx:
                            v0, v1 = max(j - p, 0), min(j - p + ps, ny)
                            acc[b, :, u, v0:v1, z] += o[:, di, v0 - (j - p):v1 - (j - p)]
                            if b == 0:
                                count[u, v0:v1, z] += 1
    if mode == "mean":
        m = torch.from_numpy(region)
        out[:, :, m] = (acc / count.clamp_min(1))[:, :, m]
    return out.float()


@pytest.fixture
def volume():
    return torch.rand((2, 2, 24, 26, 6), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def small_region():
    """A blob mask on (10, 11, 4) and a 3-slice slab: region = mask & slab."""
    rng = np.random.default_rng(0)
    mask = rng.random((10, 11, 4)) < 0.6
    mask[4:7, 4:7] = True
    return mask, slice(1, 4)


# ---------------------------------------------------------------- exactness
@pytest.mark.parametrize("mode", ["centre", "mean"])
@pytest.mark.parametrize("patch_size", [PS, 15])
def test_identity_network_gives_back_the_input(volume, mode, patch_size):
    mask = np.zeros(volume.shape[2:], bool)
    mask[3:20, 2:25] = True
    inferer = PatchReassemblyInferer(patch_size=patch_size, mode=mode, slab=slice(1, 5), mask=mask, outside="zero")
    out = inferer(volume, nn.Identity())
    region, _ = inferer.region(volume.shape[2:])
    assert out.shape == volume.shape and out.dtype == volume.dtype
    r = torch.from_numpy(region)
    assert torch.equal(out[:, :, r], volume[:, :, r])
    assert not out[:, :, ~r].any()  # outside="zero"


@pytest.mark.parametrize("mode", ["centre", "mean"])
def test_matches_brute_force(small_region, mode):
    mask, slab = small_region
    x = torch.rand((2, 2, *mask.shape), generator=torch.Generator().manual_seed(3))
    net = random_conv()
    inferer = PatchReassemblyInferer(patch_size=PS, mode=mode, slab=slab, mask=mask)
    out = inferer(x, net)
    region, _ = inferer.region(mask.shape)
    expected = brute_force(x, net, region, mode)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert torch.equal(out[:, :, torch.from_numpy(~region)], x[:, :, torch.from_numpy(~region)])  # outside="input"


def test_centre_and_mean_differ_for_a_position_dependent_network(small_region):
    mask, slab = small_region
    x = torch.rand((1, 2, *mask.shape), generator=torch.Generator().manual_seed(4))
    centre = PatchReassemblyInferer(patch_size=PS, mode="centre", slab=slab, mask=mask)(x, random_conv())
    mean = PatchReassemblyInferer(patch_size=PS, mode="mean", slab=slab, mask=mask)(x, random_conv())
    assert (centre - mean).abs().max() > 1e-3


# ---------------------------------------------------------------- batching
@pytest.mark.parametrize("mode", ["centre", "mean"])
def test_tiny_memory_budget_gives_more_batches_and_the_same_result(volume, mode):
    net = random_conv()
    big = PatchReassemblyInferer(patch_size=PS, mode=mode, n_slices=None, max_batch_size=None)
    tiny = PatchReassemblyInferer(patch_size=PS, mode=mode, n_slices=None, memory_budget_mb=0.5)
    fixed = PatchReassemblyInferer(patch_size=PS, mode=mode, n_slices=None, batch_size=37)
    capped = PatchReassemblyInferer(patch_size=PS, mode=mode, n_slices=None, max_batch_size=500)
    expected = big(volume, net)
    torch.testing.assert_close(tiny(volume, net), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(fixed(volume, net), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(capped(volume, net), expected, atol=1e-6, rtol=0)
    n_patches = volume.shape[0] * volume.shape[2] * volume.shape[3] * volume.shape[4]
    assert big.last_run["calls"] <= 2 < tiny.last_run["calls"]
    assert fixed.last_run == {"path": "patches", "patch": 37, "calls": -(-n_patches // 37)}
    assert tiny.last_run["patch"] < 200 and capped.last_run["patch"] == 500


# ---------------------------------------------------------------- mask, slab, outside
def test_region_is_mask_within_slab_and_outside_policy(volume):
    mask = np.zeros(volume.shape[2:], bool)
    mask[5:15, 5:15, :] = True
    net = random_conv()
    as_input = PatchReassemblyInferer(patch_size=PS, slab=slice(2, 4), mask=mask)
    as_zero = PatchReassemblyInferer(patch_size=PS, slab=slice(2, 4), mask=torch.from_numpy(mask), outside="zero")
    region, slab = as_input.region(volume.shape[2:])
    expected_region = np.zeros_like(mask)
    expected_region[..., 2:4] = mask[..., 2:4]
    assert slab == slice(2, 4) and np.array_equal(region, expected_region)
    a, z = as_input(volume, net), as_zero(volume, net)
    r = torch.from_numpy(region)
    assert torch.equal(a[:, :, r], z[:, :, r])
    assert torch.equal(a[:, :, ~r], volume[:, :, ~r]) and not z[:, :, ~r].any()


def test_default_region_off_the_atlas_grid_is_every_voxel_of_a_centred_slab():
    region, slab = PatchReassemblyInferer(n_slices=4).region((8, 9, 10))
    assert slab == analysed_slab(np.ones((8, 9, 10), bool), 4) == slice(2, 6)
    assert region[..., 2:6].all() and not region[..., :2].any() and not region[..., 6:].any()
    with pytest.raises(ValueError, match="n_slices=None"):
        PatchReassemblyInferer(n_slices=40).region((8, 9, 10))
    region, slab = PatchReassemblyInferer(n_slices=None).region((8, 9, 10))
    assert slab == slice(0, 10) and region.all()


def test_slab_from_n_slices_uses_the_real_atlas():
    brain = load_atlas("spm1p5").brain
    expected_slab = analysed_slab(brain, 40)
    for mask in (None, "atlas:spm1p5", "all"):
        region, slab = PatchReassemblyInferer(n_slices=40, mask=mask).region(brain.shape)
        assert slab == expected_slab
        expected = np.zeros_like(brain)
        expected[..., slab] = True if mask == "all" else brain[..., slab]
        assert np.array_equal(region, expected)
    with pytest.raises(ValueError, match="shape"):
        PatchReassemblyInferer(mask="atlas:spm1p5").region((8, 9, 10))


def test_full_grid_call_reconstructs_only_the_atlas_brain_slab():
    brain = load_atlas("spm1p5").brain
    x = torch.rand((1, 2, *brain.shape), generator=torch.Generator().manual_seed(0))
    net = PointwiseConvNet()
    out = PatchReassemblyInferer(outside="zero")(x, net)  # defaults: atlas brain, 40-slice slab, dense path
    assert net.dense_calls >= 1 and net.forward_calls == 0
    expected = np.zeros_like(brain)
    slab = analysed_slab(brain, 40)
    expected[..., slab] = brain[..., slab]
    assert np.array_equal((out[0] != 0).any(0).numpy(), expected)


def test_slab_axis(volume):
    net = random_conv()
    moved = volume.movedim(2, -1)  # slices across x instead of z
    out_x = PatchReassemblyInferer(patch_size=PS, n_slices=None, slab=slice(5, 9), slab_axis=2)(volume, net)
    out_z = PatchReassemblyInferer(patch_size=PS, n_slices=None, slab=slice(5, 9))(moved, net)
    torch.testing.assert_close(out_x, out_z.movedim(-1, 2), atol=1e-6, rtol=0)


def test_empty_region_returns_the_input(volume):
    inferer = PatchReassemblyInferer(patch_size=PS, mask=np.zeros(volume.shape[2:], bool), n_slices=None)
    out = inferer(volume, random_conv())
    assert torch.equal(out, volume)


# ---------------------------------------------------------------- fast path dispatch
def test_dense_fast_path_dispatch(volume):
    mask = np.random.default_rng(2).random(volume.shape[2:]) < 0.7
    dense_net, patch_net = PointwiseConvNet(), PointwiseConvNet()
    fast = PatchReassemblyInferer(patch_size=15, mask=mask, slab=slice(1, 5))
    slow = PatchReassemblyInferer(patch_size=15, mask=mask, slab=slice(1, 5), use_dense=False)
    a, b = fast(volume, dense_net), slow(volume, patch_net)
    assert dense_net.dense_calls >= 1 and dense_net.forward_calls == 0 and fast.last_run["path"] == "dense"
    assert patch_net.dense_calls == 0 and patch_net.forward_calls >= 1 and slow.last_run["path"] == "patches"
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # the mean mode has no fast path
    mean_net = PointwiseConvNet()
    PatchReassemblyInferer(patch_size=15, mode="mean", mask=mask, slab=slice(1, 5))(volume, mean_net)
    assert mean_net.dense_calls == 0 and mean_net.forward_calls >= 1


def test_dense_fast_path_batches_of_slices(volume):
    net = PointwiseConvNet()
    inferer = PatchReassemblyInferer(n_slices=None, slice_batch_size=5)
    out = inferer(volume, net)
    assert inferer.last_run == {"path": "dense", "slice": 5, "calls": 3}  # 12 slices
    torch.testing.assert_close(out, torch.sigmoid(net.conv(volume.permute(0, 4, 1, 2, 3).flatten(0, 1)))
                               .view(2, 6, 2, 24, 26).permute(0, 2, 3, 4, 1), atol=1e-6, rtol=0)


def test_dense_method_with_wrong_shape_is_reported(volume):
    class Bad(PointwiseConvNet):
        def dense_centre_reconstruction(self, slices):
            return slices[..., 1:, :]

    with pytest.raises(ValueError, match="dense_centre_reconstruction must return"):
        PatchReassemblyInferer(n_slices=None)(volume, Bad())


def _benchmark_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pd_sae_reassembly.py"
    spec = importlib.util.spec_from_file_location("pd_sae_reassembly_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_stand_in_dense_method_matches_its_patch_path():
    """The benchmark's stand-in (docs/design.md 3.2 layer shapes) computes the fast path exactly: the padding
    convention of dense_centre_reconstruction holds on the real architecture."""
    net = _benchmark_module().stand_in()
    with torch.no_grad():  # larger weights: a reconstruction that varies, so a misplaced pixel would show
        for p in net.parameters():
            p.mul_(2.5)
    x = torch.rand((1, 2, 19, 22, 3), generator=torch.Generator().manual_seed(5))
    dense = PatchReassemblyInferer(n_slices=None, outside="zero")(x, net)
    patches = PatchReassemblyInferer(n_slices=None, outside="zero", use_dense=False)(x, net)
    assert dense.std() > 0.05
    torch.testing.assert_close(dense, patches, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- robustness
def test_network_that_views_its_input_falls_back_from_channels_last(volume):
    class Flat(nn.Module):
        def forward(self, x):
            return x.view(len(x), -1).mul(2).view(x.shape)

    out = PatchReassemblyInferer(patch_size=PS, n_slices=None, mode="mean")(volume, Flat())
    torch.testing.assert_close(out, 2 * volume, atol=1e-6, rtol=0)


def test_progress_bar_and_metatensor_input(volume, capsys):
    affine = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0]))
    x = MetaTensor(volume[:1], affine=affine)
    out = PatchReassemblyInferer(patch_size=PS, n_slices=None, progress=True)(x, random_conv())
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, affine) and out.shape == x.shape
    assert "patch reassembly" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, match", [
    ({"patch_size": 4}, "odd"), ({"mode": "median"}, "mode"), ({"outside": "nan"}, "outside"),
    ({"mask": "brain"}, "mask"), ({"slab": (1, 3)}, "slice"), ({"slab_axis": 1}, "slab_axis"),
    ({"batch_size": 0}, "batch_size"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        PatchReassemblyInferer(**kwargs)


def test_invalid_inputs(volume):
    with pytest.raises(ValueError, match="spatial shape"):
        PatchReassemblyInferer(mask=np.ones((3, 3, 3), bool))(volume, nn.Identity())
    with pytest.raises(ValueError, match="same shape"):
        PatchReassemblyInferer(patch_size=PS, n_slices=None)(volume, lambda x: x[:, :1])
    with pytest.raises(ValueError, match="B, C, X, Y, Z"):
        PatchReassemblyInferer()(volume[0], nn.Identity())


# ---------------------------------------------------------------- MONAI engine
def test_inside_a_supervised_evaluator():
    image = torch.rand((2, 12, 13, 5), generator=torch.Generator().manual_seed(6))
    loader = DataLoader([{"image": image}], batch_size=1)
    inferer = PatchReassemblyInferer(patch_size=PS, n_slices=3)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=random_conv(),
                                    inferer=inferer)
    evaluator.run()
    output = evaluator.state.output
    pred = output[0]["pred"] if isinstance(output, list) else output["pred"][0]
    assert pred.shape == image.shape
    expected = PatchReassemblyInferer(patch_size=PS, n_slices=3)(image[None], random_conv())[0]
    torch.testing.assert_close(torch.as_tensor(pred), expected, atol=1e-6, rtol=0)
