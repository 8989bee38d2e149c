"""The training data paths that keep a GPU fed: data moved to the device once, batches made there.

Without a GPU, two stand-ins: ``device="cpu"`` runs the device code paths (torch gather, stacking of device
tensors) so their batches can be compared value for value with the host paths; and PyTorch's ``meta`` device,
where any tensor left on the host would meet a meta tensor in an operation and fail, so a batch that comes
out on ``meta`` was made entirely on the device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_pairs import MASK, N_SLICES, VOLUMES
from torch.utils.data import DataLoader

from common.data.pairs import SiamesePairSampler


def pair_sampler(**kwargs) -> SiamesePairSampler:
    args = {"volumes": VOLUMES, "mask": MASK, "n_slices": N_SLICES, "pairs_per_epoch": 1000, "batch_size": 100,
            "seed": 0, "progress": False}
    return SiamesePairSampler(None, **{**args, **kwargs})


@pytest.mark.parametrize("channels_last", [False, True])
def test_device_pair_sampler_gives_the_host_samplers_pairs(channels_last):
    host, device = pair_sampler(channels_last=channels_last), pair_sampler(channels_last=channels_last, device="cpu")
    assert device.nbytes == host.nbytes == VOLUMES.dtype.itemsize * host._store.size
    a, b = host.sample(300, 4), device.sample(300, 4)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert b["x1"].stride() == a["x1"].stride()  # the same memory format (channels_last or contiguous)
    # an epoch through a DataLoader, as the bundle trains: the same batches, in the same order
    host.set_epoch(3)
    device.set_epoch(3)
    ha = [x["image"] for x in DataLoader(host, batch_size=None)]
    hb = [x["image"] for x in DataLoader(device, batch_size=None)]
    assert len(ha) == len(hb) == 10
    for x, y in zip(ha, hb):
        assert torch.equal(x, y) and x.stride() == y.stride()
    # and the batches are the pairs sample() draws from the epoch's stream (independent of both gathers)
    rng = host.epoch_rng(3)
    first = host.sample(100, rng)
    torch.testing.assert_close(hb[0], torch.cat([first["x1"], first["x2"]]), rtol=0, atol=0)


def test_device_pair_sampler_makes_its_batches_on_the_device():
    s = pair_sampler(channels_last=True, device="meta")
    assert s.device == torch.device("meta") and s._store is None  # nothing kept on the host
    batches = list(DataLoader(s, batch_size=None))
    assert len(batches) == 10
    assert all(b["image"].device.type == "meta" and b["image"].shape == (200, 2, 15, 15) for b in batches)
    x = s.sample(7, 0)
    assert x["x1"].device.type == x["x2"].device.type == "meta"
    assert x["centres"].shape == (7, 3) and x["subjects"].shape == (7, 2)


def test_axial_slices_on_the_device_collate_to_the_host_batches():
    from common.data.slices import AxialSliceDataset
    from common.grids import get_grid

    # the dataset's transform hands it each subject's (C, X, Y, Z) volume, as the bundle's preprocessing does
    shape = get_grid("spm1p5").shape
    volumes = {f"sub-{i}": np.random.default_rng(i).random((2, *shape), dtype=np.float32) for i in range(2)}
    subjects = [{"id": k} for k in volumes]
    kwargs = {"n_slices": 3, "progress": False, "transform": lambda entry: {"image": volumes[entry["id"]]}}
    host = AxialSliceDataset(subjects, **kwargs)
    meta = AxialSliceDataset(subjects, **kwargs, device="meta")
    assert meta.slices.device.type == "meta" and meta.slices.shape == host.slices.shape == (6, 2, 121, 145)

    def loader(dataset):  # the bundle's train#dataloader
        return DataLoader(dataset, batch_size=4, shuffle=True, num_workers=0, pin_memory=False,
                          generator=torch.Generator().manual_seed(0))

    on_device = next(iter(loader(meta)))
    assert on_device["image"].device.type == "meta" and on_device["image"].shape == (4, 2, 121, 145)
    # device="cpu" runs the same code: the batches are the host's, the shuffled order that of torch's sampler
    cpu = AxialSliceDataset(subjects, **kwargs, device="cpu")
    g = torch.Generator().manual_seed(0)
    torch.empty((), dtype=torch.int64).random_(generator=g)  # the DataLoader iterator's base seed, drawn first
    order = torch.randperm(6, generator=g)
    for batch, start in zip(loader(cpu), (0, 4)):
        idx = order[start:start + 4]
        assert torch.equal(batch["image"], host.slices[idx])
        subject, z = idx // 3, host.slab.start + idx % 3  # and those are the volumes' slab slices
        expected = [volumes[f"sub-{int(i)}"][..., int(k)] for i, k in zip(subject, z)]
        np.testing.assert_array_equal(batch["image"].numpy(), np.stack(expected))
        assert batch["id"] == [host.ids[i] for i in idx] and batch["z"].tolist() == [host.z[i] for i in idx]


@pytest.fixture(scope="module")
def small_pet(tmp_path_factory):
    from common.data.synthetic import PETCohortConfig, make_pet_cohort

    folder, _ = make_pet_cohort(tmp_path_factory.mktemp("pet_small") / "cohort", PETCohortConfig(5, 1, seed=7),
                                progress=False)
    return folder


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_vae_training_volumes_are_cached_on_the_device_as_plain_tensors(small_pet, tmp_path, device):
    from helpers import bundle_workflow
    from monai.transforms import Compose, ScaleIntensityd

    from common.transforms import LoadPETImaged

    train = bundle_workflow("ad_vae3d", "train.json", "train", dataset_dir=str(small_pet), bundle_root=str(tmp_path),
                            n_val=1, progress=False, cache_workers=1, batch_size=2,
                            device=f"$torch.device('{device}')")
    train.initialize()
    parse = train.parser.get_parsed_content
    dataset = parse("train#dataset")
    assert len(dataset) == 2
    images = [item["image"] for item in dataset]
    assert all(type(x) is torch.Tensor and x.device.type == device for x in images)  # no metadata to collate
    batch = next(iter(parse("train#dataloader")))["image"]
    assert type(batch) is torch.Tensor and batch.device.type == device and batch.shape == (2, 1, 80, 96, 80)
    if device == "cpu":  # the values the MONAI pipeline without the device step gives (load, min-max scale)
        reference = Compose([LoadPETImaged("image", mode="resample"), ScaleIntensityd("image", 0.0, 1.0)])
        entries = parse("train#dataset#data")
        expected = [np.asarray(reference(dict(e))["image"]) for e in entries]
        got = sorted(batch.numpy(), key=lambda v: float(v.sum()))
        for a, b in zip(got, sorted(expected, key=lambda v: float(v.sum()))):
            np.testing.assert_array_equal(a, b)
