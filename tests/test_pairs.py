"""pd_sae's siamese pair sampler: exact patches, pair properties, randomness, iteration, MONAI wiring, real files.

The synthetic volumes encode every voxel's (subject, channel, x, y, z) in its value (exact in float32), so each
gathered patch is checked against the direct slice of the zero-padded volume *and* decoded back.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from scipy.special import chdtrc
from torch.utils.data import DataLoader

from common.data.pairs import SiamesePairSampler

N, C, X, Y, Z = 4, 2, 30, 32, 12
P, H = 15, 7
N_SLICES = 6


def encoded_volumes() -> np.ndarray:
    """(N, C, X, Y, Z) float32 with value 1 + flat index of (s, c, x, y, z): exact, never 0 (0 is padding)."""
    return (1 + np.arange(N * C * X * Y * Z, dtype=np.float64).reshape(N, C, X, Y, Z)).astype(np.float32)


def decode(value: float) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(value) - 1, (N, C, X, Y, Z)))


def make_mask() -> np.ndarray:
    """Random voxels, including the volume's border in x and y (so zero padding is used), with a z-profile
    exactly symmetric about z = 6: the centre of mass is 6.0 and the 6-slice slab is z = 3..8."""
    half = np.random.default_rng(5).random((X, Y, 6)) < 0.35  # z = 6 + k, k = 0..5
    mask = np.zeros((X, Y, Z), bool)
    mask[..., 6:] = half
    mask[..., 1:6] = half[..., 5:0:-1]  # z = 6 - k, k = 5..1
    mask[0, :, 6] = True
    mask[X - 1, :, [5, 7]] = mask[:, 0, [4, 8]] = mask[:, Y - 1, [3, 9]] = True
    return mask


VOLUMES, MASK = encoded_volumes(), make_mask()
SLAB = range(3, 9)


def chisquare_pvalue(counts: np.ndarray) -> float:
    """p-value of Pearson's chi-square test of equal frequencies."""
    expected = counts.sum() / counts.size
    return float(chdtrc(counts.size - 1, ((counts - expected) ** 2 / expected).sum()))


def sampler(subjects=None, **kwargs) -> SiamesePairSampler:
    args = {"volumes": VOLUMES, "mask": MASK, "n_slices": N_SLICES, "pairs_per_epoch": 1000, "batch_size": 100,
            "seed": 0, "progress": False}
    return SiamesePairSampler(subjects, **{**args, **kwargs})


@pytest.fixture(scope="module")
def default() -> SiamesePairSampler:
    return sampler()


def test_slab_and_centre_set(default):
    z_counts = MASK.sum((0, 1))
    assert (z_counts * np.arange(Z)).sum() / z_counts.sum() == 6.0  # the slab is 6 +- 3 slices: z = 3..8
    assert default.slab == slice(SLAB.start, SLAB.stop)
    expected = MASK.copy()
    expected[..., [z for z in range(Z) if z not in SLAB]] = False
    assert default.n_centres == expected.sum()
    # a large sample covers every allowed centre and nothing else (1x1 patches: same draws, cheap)
    centres = sampler(patch_size=1).sample(100_000, 1)["centres"].numpy()
    drawn = np.zeros_like(MASK)
    drawn[tuple(centres.T)] = True
    np.testing.assert_array_equal(drawn, expected)


@pytest.mark.parametrize("channels_last", [False, True])
def test_patches_equal_direct_slices_of_zero_padded_volumes(channels_last):
    s = sampler(channels_last=channels_last)
    out = s.sample(400, np.random.default_rng(3))
    x1, x2, centres, subjects = out["x1"], out["x2"], out["centres"], out["subjects"]
    assert x1.shape == x2.shape == (400, C, P, P) and x1.dtype == x2.dtype == torch.float32
    assert centres.shape == (subjects.shape[0], 3) and centres.dtype == subjects.dtype == torch.int64
    assert subjects.shape == (400, 2)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert x1.is_contiguous(memory_format=fmt) and x2.is_contiguous(memory_format=fmt)
    padded = np.pad(VOLUMES, ((0, 0), (0, 0), (H, H), (H, H), (0, 0)))
    near_border = 0
    for k in range(400):
        x, y, z = centres[k].tolist()
        a, b = subjects[k].tolist()
        # padded index x + H - H = x is the patch's first row
        np.testing.assert_array_equal(x1[k].numpy(), padded[a, :, x:x + P, y:y + P, z])
        np.testing.assert_array_equal(x2[k].numpy(), padded[b, :, x:x + P, y:y + P, z])
        near_border += min(x, y, X - 1 - x, Y - 1 - y) < H
    assert near_border > 50  # zero padding was exercised


def test_decoded_pairs_same_location_different_subjects(default):
    out = default.sample(2000, 11)
    x1, x2 = out["x1"].numpy(), out["x2"].numpy()
    for k in range(0, 2000, 7):
        s1, c1, *loc1 = decode(x1[k, 1, H, H])
        s2, c2, *loc2 = decode(x2[k, 1, H, H])
        assert (c1, c2) == (1, 1)
        assert loc1 == loc2 == out["centres"][k].tolist()
        assert [s1, s2] == out["subjects"][k].tolist()
    subjects = out["subjects"].numpy()
    assert (subjects[:, 0] != subjects[:, 1]).all()
    assert subjects.min() == 0 and subjects.max() == N - 1
    centres = out["centres"].numpy()
    assert MASK[tuple(centres.T)].all()
    assert np.isin(centres[:, 2], SLAB).all()


def test_deterministic_under_seed_and_epoch(default):
    a, b = default.sample(500, 7), default.sample(500, np.random.default_rng(7))
    for key in a:
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["centres"], default.sample(500, 8)["centres"])
    e0, e0_again, e1 = default.epoch_rng(0), default.epoch_rng(0), default.epoch_rng(1)
    assert torch.equal(default.sample(50, e0)["x1"], default.sample(50, e0_again)["x1"])
    assert not torch.equal(default.sample(50, default.epoch_rng(0))["x1"], default.sample(50, e1)["x1"])
    other = sampler(seed=1)
    assert not torch.equal(next(iter(other.batches(0)))["image"], next(iter(default.batches(0)))["image"])
    assert torch.equal(next(iter(sampler(seed=0).batches(3)))["image"], next(iter(default.batches(3)))["image"])


def test_roughly_uniform_over_subjects_and_centres(default):
    n = 200_000
    out = sampler(patch_size=1).sample(n, 21)  # 1x1 patches: the same draws, without 700 MB of patches
    pairs = out["subjects"].numpy()
    counts = np.bincount(pairs[:, 0] * N + pairs[:, 1], minlength=N * N).reshape(N, N)
    assert (np.diag(counts) == 0).all()
    assert chisquare_pvalue(counts[~np.eye(N, dtype=bool)]) > 1e-3  # 12 ordered pairs, equally likely
    flat = np.ravel_multi_index(tuple(out["centres"].numpy().T), MASK.shape)
    per_voxel = np.unique(flat, return_counts=True)[1]
    assert len(per_voxel) == default.n_centres
    assert chisquare_pvalue(per_voxel) > 1e-3  # every allowed centre equally likely


def test_ranks_draw_different_pairs(default, monkeypatch):
    r0, r1 = sampler(rank=0, world_size=2), sampler(rank=1, world_size=2)
    assert len(r0) == len(r1) == math.ceil(10 / 2) and len(default) == 10
    b0, b1 = next(iter(r0.batches(0))), next(iter(r1.batches(0)))
    assert not torch.equal(b0["image"], b1["image"])
    assert torch.equal(b0["image"], next(iter(default.batches(0)))["image"])  # rank 0 of 2 = the single process
    # rank and world size from torch.distributed when it is initialised
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 3)
    auto = sampler()
    assert (auto.rank, auto.world_size, len(auto)) == (1, 3, 4)
    assert torch.equal(next(iter(auto.batches(0)))["image"], b1["image"])


def test_iteration_through_dataloader_epoch_after_epoch():
    s = sampler(pairs_per_epoch=1050, batch_size=100)  # 10 batches, the partial 11th dropped
    loader = DataLoader(s, batch_size=None, num_workers=0)
    assert len(s) == len(loader) == 10
    epochs = [list(loader) for _ in range(3)]
    assert s.epoch == 3
    for batches in epochs:
        assert len(batches) == 10
        assert all(set(b) == {"image"} and b["image"].shape == (200, C, P, P) for b in batches)
    assert not torch.equal(epochs[0][0]["image"], epochs[1][0]["image"])
    # epoch e, batch b = the b-th sample(batch_size) of the epoch's stream, first patches then partners
    rng = s.epoch_rng(1)
    for batch in epochs[1]:
        expected = s.sample(100, rng)
        assert torch.equal(batch["image"], torch.cat([expected["x1"], expected["x2"]]))
    s.set_epoch(1)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(list(loader), epochs[1], strict=True))
    assert s.epoch == 2


def test_workers_give_the_same_sequence():
    s = sampler(pairs_per_epoch=500, batch_size=100)
    single = list(DataLoader(s, batch_size=None, num_workers=0))
    s.set_epoch(0)
    multi = list(DataLoader(s, batch_size=None, num_workers=2))
    assert len(multi) == 5
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(single, multi, strict=True))


def run_trainer(s: SiamesePairSampler, as_handler: bool, resume_at_epoch: int = 0) -> list[tuple[int, torch.Tensor]]:
    """Run a MONAI SupervisedTrainer for 3 epochs on the sampler; returns (epoch, batch) of every iteration."""
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    from common.engines import prepare_reconstruction_batch

    net = torch.nn.Conv2d(C, C, 3, padding=1)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=3, train_data_loader=DataLoader(s, batch_size=None, num_workers=0),
        network=net, optimizer=torch.optim.SGD(net.parameters(), 1e-9), loss_function=torch.nn.MSELoss(),
        prepare_batch=prepare_reconstruction_batch, decollate=False,
        train_handlers=[s] if as_handler else None,  # a handler: the engine sets the sampler's epoch
    )
    trainer.state.epoch, trainer.state.iteration = resume_at_epoch, resume_at_epoch * len(s)  # as a checkpoint
    seen: list[tuple[int, torch.Tensor]] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda e: seen.append((e.state.epoch, e.state.batch["image"].clone())))
    trainer.run()
    assert trainer.state.iteration == 3 * len(s)
    return seen


@pytest.mark.parametrize("as_handler", [False, True])
def test_supervised_trainer_draws_a_new_epoch_each_epoch(as_handler):
    # without the handler, the sampler's own counter gives the same epochs in an uninterrupted run
    s = sampler(pairs_per_epoch=300, batch_size=100)
    seen = run_trainer(s, as_handler)
    assert [e for e, _ in seen] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    for epoch in (1, 2, 3):
        got = [b for e, b in seen if e == epoch]
        assert all(torch.equal(a, b["image"]) for a, b in zip(got, s.batches(epoch - 1), strict=True))


def test_resumed_trainer_draws_the_epochs_it_resumes_at():
    s = sampler(pairs_per_epoch=300, batch_size=100)
    seen = run_trainer(s, as_handler=True, resume_at_epoch=2)  # a fresh sampler, epoch 3 of 3 left
    assert [e for e, _ in seen] == [3, 3, 3]
    assert all(torch.equal(a, b["image"]) for (_, a), b in zip(seen, s.batches(2), strict=True))


def test_monai_dataloader_and_set_random_state():
    from monai.data import DataLoader as MonaiDataLoader
    from monai.data.utils import no_collation

    s = sampler(pairs_per_epoch=200, batch_size=100)
    assert s.set_random_state(seed=5) is s and s.seed == 5
    s.set_random_state(state=np.random.RandomState(0))
    assert s.seed == np.random.RandomState(0).randint(2**32)
    with torch.random.fork_rng():  # as monai.utils.set_determinism(0) would, without touching other tests' state
        torch.manual_seed(0)
        # batch_size=None needs no_collation: MONAI's default collate expects a list of samples
        first = list(MonaiDataLoader(s, batch_size=None, collate_fn=no_collation))  # reseeds from torch's RNG
        seed = s.seed
        torch.manual_seed(0)
        s.set_epoch(0)
        again = list(MonaiDataLoader(s, batch_size=None, collate_fn=no_collation))
    assert seed != np.random.RandomState(0).randint(2**32)  # replaced by the loader
    assert len(first) == 2 and all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again, strict=True))


def test_pickles_the_store_only(default):
    blob = pickle.dumps(default)
    assert len(blob) < 1.2 * default.nbytes + 1e6  # not the overlapping row view (~15x larger)
    copy = pickle.loads(blob)
    assert torch.equal(copy.sample(100, 4)["x1"], default.sample(100, 4)["x1"])


def test_subjects_list_and_torch_inputs():
    s = SiamesePairSampler([{"id": f"sub-{i}"} for i in range(N)], volumes=torch.from_numpy(VOLUMES),
                           mask=torch.from_numpy(MASK), n_slices=N_SLICES, progress=False)
    assert s.ids == ["sub-0", "sub-1", "sub-2", "sub-3"] and s.n_subjects == N and s.n_channels == C
    assert torch.equal(s.sample(10, 0)["x1"], sampler().sample(10, 0)["x1"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"volumes": VOLUMES[:1]}, "at least 2 subjects"),
        ({"mask": np.zeros_like(MASK)}, "empty"),
        ({"patch_size": 14}, "odd"),
        ({"patch_size": 0}, "odd"),
        ({"mask": MASK[:-1]}, "differs"),
        ({"volumes": VOLUMES[:, :1]}, "channels"),
        ({"batch_size": 2000}, "batch_size"),
        ({"rank": 0}, "both rank and world_size"),
        ({"rank": 2, "world_size": 2}, "rank < world_size"),
    ],
)
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sampler(**kwargs)


def test_one_subject_file_list_rejected_before_loading():
    with pytest.raises(ValueError, match="at least 2 subjects"):
        SiamesePairSampler([{"id": "a", "image": ["missing_FA.nii.gz", "missing_MD.nii.gz"]}], progress=False)


def test_non_finite_volumes_rejected():
    bad = VOLUMES.copy()
    bad[1, 0, 3, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sampler(volumes=bad)


@pytest.mark.slow  # synthesises a PD cohort
def test_real_files_tiny_pd_cohort(tmp_path):
    from common.atlases import load_atlas
    from common.data import read_dataset
    from common.data.slab import analysed_slab
    from common.data.synthetic import PDCohortConfig, make_pd_cohort
    from common.transforms.io import LoadValidatedImage

    folder, _ = make_pd_cohort(tmp_path / "cohort", PDCohortConfig(3, 0, seed=2), progress=False)
    controls = read_dataset(folder / "dataset.json").controls
    s = SiamesePairSampler(controls, pairs_per_epoch=1000, batch_size=250, progress=False)
    brain = load_atlas("spm1p5").brain
    slab = analysed_slab(brain, 40)
    assert s.slab == slab and s.n_subjects == 3 and s.ids == [c["id"] for c in controls]
    assert s.n_centres == brain[..., slab].sum()
    assert s._store.shape[:3] == (3, 40, 2) and s.nbytes < 3 * 40 * 2 * 121 * 145 * 4
    out = s.sample(64, 0)
    assert out["x1"].shape == (64, 2, 15, 15) and out["x1"].min() >= 0 and out["x1"].max() <= 1
    assert brain[tuple(out["centres"].numpy().T)].all()
    volume = LoadValidatedImage("spm1p5", ["FA", "MD"])(controls[int(out["subjects"][0, 1])]["image"]).numpy()
    x, y, z = out["centres"][0].tolist()
    np.testing.assert_array_equal(out["x2"][0].numpy(), volume[:, x - H:x + H + 1, y - H:y + H + 1, z])
    batches = list(DataLoader(s, batch_size=None))
    assert len(batches) == 4 and batches[0]["image"].shape == (500, 2, 15, 15)
