"""Reconstruction images in TensorBoard: the panel's layout and scaling, the fixed samples per epoch, rank 0 only."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from PIL import Image

from common.handlers.tensorboard_images import GAP, ReconstructionImageHandler, reconstruction_panel


def read_images(log_dir) -> dict[str, list]:
    """Every image tag of the event files under ``log_dir``: tag -> [(step, (height, width), pixels uint8)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    return {tag: [(e.step, (e.height, e.width), np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("L")))
                  for e in events.Images(tag)] for tag in events.Tags()["images"]}


def test_panel_rows_are_channels_columns_input_reconstruction_error():
    rng = np.random.default_rng(0)
    image = rng.uniform(2.0, 4.0, (2, 100, 110)).astype(np.float32)  # (C, X, Y): a tile is Y rows of X columns
    recon = image + rng.normal(0, 0.1, image.shape).astype(np.float32)
    panel = reconstruction_panel(image, recon)
    assert panel.shape == (2 * 110 + GAP, 3 * 100 + 2 * GAP)  # no upscaling: 100 >= min_size 96
    h, w = 110, 100
    for c in range(2):
        top = c * (h + GAP)
        tiles = [panel[top:top + h, k * (w + GAP):k * (w + GAP) + w] for k in range(3)]
        lo, hi = image[c].min(), image[c].max()
        shown = lambda v: np.flipud(v.T)  # noqa: E731 (first axis up the screen)
        np.testing.assert_allclose(tiles[0], shown((image[c] - lo) / (hi - lo)), atol=1e-6)
        np.testing.assert_allclose(tiles[1], shown(np.clip((recon[c] - lo) / (hi - lo), 0, 1)), atol=1e-6)
        error = np.abs(recon[c] - image[c])
        np.testing.assert_allclose(tiles[2], shown(error / error.max()), atol=1e-6)
    assert (panel[h:h + GAP] == 1).all() and (panel[:, w:w + GAP] == 1).all()  # white separators


def test_small_patches_are_upscaled_and_volumes_show_axial_and_coronal():
    patch = np.linspace(0, 1, 2 * 15 * 15, dtype=np.float32).reshape(2, 15, 15)
    panel = reconstruction_panel(patch, patch)
    assert panel.shape == (2 * 105 + GAP, 3 * 105 + 2 * GAP)  # 15 px x ceil(96 / 15) = 7
    assert (panel[:105, 2 * (105 + GAP):] == 0).all()  # a perfect reconstruction has no error
    volume = np.arange(8 * 12 * 10, dtype=np.float32).reshape(1, 8, 12, 10)
    panel = reconstruction_panel(volume, volume, min_size=1)
    assert panel.shape == (12 + GAP + 12, 3 * 8 + 2 * GAP)  # axial 12x8, coronal 10x8 padded to 12 rows
    scaled = lambda v: np.flipud(((v - v.min()) / (v.max() - v.min())).T)  # noqa: E731
    np.testing.assert_allclose(panel[:12, :8], scaled(volume[0, :, :, 5]), atol=1e-6)  # middle axial, z = 10 // 2
    np.testing.assert_allclose(panel[12 + GAP:12 + GAP + 10, :8], scaled(volume[0, :, 6, :]), atol=1e-6)
    assert (panel[12 + GAP + 10:, :8] == 0).all()  # padding below the shorter coronal tile is black


def _evaluator():
    """An engine whose output per iteration is the batch and a reconstruction of it: batch * 0.5 (a tuple pred, as
    the siamese AE's), so the samples it logs can be recomputed."""
    return Engine(lambda engine, batch: {"image": batch, "pred": (batch * 0.5, None)})


def test_handler_logs_the_first_samples_of_every_epoch(tmp_path):
    torch.manual_seed(0)
    batches = [torch.rand(2, 1, 20, 24) + 1 for _ in range(3)]
    engine = _evaluator()
    handler = ReconstructionImageHandler(log_dir=str(tmp_path), n_images=3, min_size=40)
    handler.attach(engine)
    engine.run(batches, max_epochs=2)
    handler.close()
    images = read_images(tmp_path)
    assert sorted(images) == ["val_reconstruction/0", "val_reconstruction/1", "val_reconstruction/2"]
    firsts = [batches[0][0], batches[0][1], batches[1][0]]  # samples 0, 1 of batch 0, sample 0 of batch 1
    for k, sample in enumerate(firsts):
        expected = reconstruction_panel(sample, sample * 0.5, min_size=40)
        assert [step for step, _, _ in images[f"val_reconstruction/{k}"]] == [1, 2]
        for _, size, pixels in images[f"val_reconstruction/{k}"]:
            assert size == expected.shape == (48, 3 * 40 + 2 * GAP)  # 24x20 tiles upscaled x2 to reach 40 px
            np.testing.assert_allclose(pixels.astype(float) / 255, expected, atol=1 / 255 + 1e-6)


def test_only_rank_zero_writes_and_zero_images_attach_nothing(tmp_path, monkeypatch):
    import torch.distributed as dist

    batches = [torch.rand(1, 1, 8, 8)]
    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # a rank other than 0 of a process group
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    engine = _evaluator()
    ReconstructionImageHandler(log_dir=str(tmp_path / "rank1"), n_images=2).attach(engine)
    engine.run(batches, max_epochs=1)
    assert not (tmp_path / "rank1").exists()
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    engine = _evaluator()
    ReconstructionImageHandler(log_dir=str(tmp_path / "none"), n_images=0).attach(engine)
    engine.run(batches, max_epochs=1)
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValueError, match="n_images"):
        ReconstructionImageHandler(n_images=-1)
