"""Reconstructions in TensorBoard: per validation epoch, input | reconstruction | |error| of a few fixed samples.

Scalars say that the loss falls, not what the model gets wrong. MONAI's ``TensorBoardImageHandler`` plots the
first item of the last batch, one tensor per tag; for an auto-encoder the three views of one sample read best side
by side, and a fixed set (the first ``n_images`` samples of the unshuffled validation loader) lets epochs be
compared. The handler only copies those samples to the CPU as they pass and writes a few small images at the end
of the epoch, so it costs a fraction of a percent of a validation epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.utils import CommonKeys

from common.distributed import process_rank

__all__ = ["ReconstructionImageHandler", "reconstruction_pair", "reconstruction_panel"]

#: Pixels of value 1 (white) between tiles.
GAP = 2


def reconstruction_pair(output) -> tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]:
    """(inputs, reconstructions) of an evaluator's ``engine.state.output``: one dict of batch tensors
    (``decollate=False``) or a list of per-item dicts. A tuple prediction (the siamese AE's
    ``(reconstruction, codes)``) gives its first element."""
    batched = not isinstance(output, (list, tuple))
    images, recons = [], []
    for item in [output] if batched else output:
        image, pred = item[CommonKeys.IMAGE], item[CommonKeys.PRED]
        pred = pred[0] if isinstance(pred, (tuple, list)) else pred
        images += list(image) if batched else [image]
        recons += list(pred) if batched else [pred]
    return images, recons


def _views(volume: np.ndarray) -> list[np.ndarray]:
    """2D slices to show of one channel, each oriented for display (first axis up the screen): a 2D array as it is,
    a 3D volume by its middle axial and coronal slices."""
    if volume.ndim == 2:
        return [np.flipud(volume.T)]
    if volume.ndim == 3:
        _, y, z = volume.shape
        return [np.flipud(volume[:, :, z // 2].T), np.flipud(volume[:, y // 2, :].T)]
    raise ValueError(f"a sample must be (C, X, Y) or (C, X, Y, Z), got a channel of shape {volume.shape}")


def reconstruction_panel(image, reconstruction, min_size: int = 96) -> np.ndarray:
    """One grey (H, W) image in [0, 1]: per channel and view (2D: the slice; 3D: middle axial, then middle coronal)
    a row of input, reconstruction (both on the input's min-max range) and |reconstruction - input| (scaled to its
    own maximum), tiles padded to a common size and separated by white lines of ``GAP`` pixels. Pixels are
    repeated (an integer factor) until the smallest tile side reaches ``min_size``, so 15x15 patches stay visible.
    """
    image = np.asarray(image.detach().float().cpu() if torch.is_tensor(image) else image, dtype=np.float32)
    recon = np.asarray(reconstruction.detach().float().cpu() if torch.is_tensor(reconstruction) else reconstruction,
                       dtype=np.float32)
    if image.shape != recon.shape or image.ndim not in (3, 4):
        raise ValueError(f"input {image.shape} and reconstruction {recon.shape} must both be (C, X, Y) or (C, X, Y, Z)")
    rows = []
    for x, y in zip(image, recon):
        for vx, vy in zip(_views(x), _views(y)):
            lo, hi = float(vx.min()), float(vx.max())
            scale = hi - lo if hi > lo else 1.0
            error = np.abs(vy - vx)
            rows.append([(vx - lo) / scale, np.clip((vy - lo) / scale, 0, 1), error / (float(error.max()) or 1.0)])
    h = max(t.shape[0] for row in rows for t in row)
    w = max(t.shape[1] for row in rows for t in row)
    factor = max(1, math.ceil(min_size / min(h, w)))
    h, w = h * factor, w * factor
    panel = np.ones((len(rows) * (h + GAP) - GAP, 3 * (w + GAP) - GAP), np.float32)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            big = np.repeat(np.repeat(tile, factor, axis=0), factor, axis=1)
            top, left = r * (h + GAP), c * (w + GAP)
            panel[top:top + h, left:left + w] = 0.0  # padding around a smaller tile is black, not a separator
            panel[top:top + big.shape[0], left:left + big.shape[1]] = big
    return panel


class ReconstructionImageHandler:
    """Logs :func:`reconstruction_panel` of the first ``n_images`` samples of each validation epoch to TensorBoard,
    one tag per sample (``<tag>/<k>``), step = the engine's epoch (the trainer's, under ``ValidationHandler``).

    Attach it to the evaluator (``val_handlers``); only rank 0 attaches, and the writer is made on the first write,
    so other ranks create no event file. ``n_images=0`` attaches nothing.

    Args:
        log_dir: folder of the event file when no ``summary_writer`` is given.
        summary_writer: a ``SummaryWriter`` to share (not closed by this handler).
        n_images: samples logged per epoch, the first ones the (unshuffled) validation loader yields.
        tag: tag prefix.
        output_transform: ``engine.state.output`` -> (inputs, reconstructions), default :func:`reconstruction_pair`.
        min_size: smallest tile side in pixels after upscaling (see :func:`reconstruction_panel`).
    """

    def __init__(self, log_dir: str = "./runs", summary_writer=None, n_images: int = 3,
                 tag: str = "val_reconstruction", output_transform: Callable = reconstruction_pair,
                 min_size: int = 96):
        if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 0:
            raise ValueError(f"n_images (the number of TensorBoard images) must be an integer >= 0, got {n_images!r}")
        self.log_dir, self._writer, self.internal_writer = log_dir, summary_writer, summary_writer is None
        self.n_images, self.tag, self.output_transform, self.min_size = n_images, tag, output_transform, min_size
        self._samples: list[tuple[np.ndarray, np.ndarray]] = []

    def attach(self, engine: Engine) -> None:
        if self.n_images == 0 or process_rank() != 0:
            return
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._samples = []

    def _collect(self, engine: Engine) -> None:
        if len(self._samples) >= self.n_images:
            return
        images, recons = self.output_transform(engine.state.output)
        for image, recon in zip(images, recons):
            if len(self._samples) >= self.n_images:
                break
            self._samples.append((image.detach().float().cpu().numpy(), recon.detach().float().cpu().numpy()))

    def _write(self, engine: Engine) -> None:
        if not self._samples:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        for k, (image, recon) in enumerate(self._samples):
            self._writer.add_image(f"{self.tag}/{k}", reconstruction_panel(image, recon, self.min_size),
                                   engine.state.epoch, dataformats="HW")
        self._writer.flush()

    def close(self) -> None:
        """Close the writer if this handler made it."""
        if self.internal_writer and self._writer is not None:
            self._writer.close()
