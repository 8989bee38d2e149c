"""In-memory axial slices of the analysed slab: what pd_ae trains on.

All volumes are read (and validated) once at construction, in two threads; only the slab's slices are
kept, as one contiguous (N * S, C, X, Y) tensor, so an epoch never touches a file and a batch is a gather.
With ``device`` (a GPU) that tensor lives there: items are views of it and the DataLoader's collation stacks
them on the device, so a training step copies nothing from the host.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from common.atlases import load_atlas
from common.data.slab import analysed_slab
from common.data.volumes import load_subject_volumes
from common.grids import get_grid

__all__ = ["AxialSliceDataset"]


class AxialSliceDataset(Dataset):
    """``n_slices`` axial slices around the brain centre of every subject, held in memory.

    Items are ``{"image": (C, X, Y) tensor, "id": subject id, "z": slice index}``; the reconstruction
    target is the image itself (see :func:`common.engines.prepare_reconstruction_batch`).

    Args:
        data: dataset entries (a MONAI datalist) with an ``image`` list (one path per channel) and an ``id``.
        grid: grid the files must be on.
        modalities: one modality per channel (validated ranges).
        n_slices: slab thickness in slices (PD paper: 40), centred on the atlas brain's centre of mass.
        num_threads: files read in parallel (decompression releases the GIL).
        progress: show a progress bar while loading.
        transform: dictionary transform that loads one entry (its ``image`` becomes the ``(C, X, Y, Z)``
            volume), as MONAI's ``Dataset(data, transform)``: the bundle's ``train#preprocessing``. Default:
            :class:`~common.transforms.LoadValidatedImage` of ``grid`` and ``modalities`` on ``image``.
        device: torch device the slices are held on (moved once, after loading); ``None`` keeps them on the
            host. With a GPU device the DataLoader needs ``pin_memory=False`` (device tensors cannot be pinned).
    """

    def __init__(self, data: Sequence[dict], grid: str = "spm1p5", modalities: Sequence[str] = ("FA", "MD"),
                 n_slices: int = 40, num_threads: int = 2, progress: bool = True, transform=None,
                 device: str | torch.device | None = None):
        subjects = data
        if not subjects:
            raise ValueError("AxialSliceDataset needs at least one subject")
        self.grid = get_grid(grid)
        self.slab = analysed_slab(load_atlas(self.grid).brain, n_slices)
        def slab_slices(_: int, volume) -> torch.Tensor:  # (C, X, Y, Z) -> (S, C, X, Y)
            return torch.from_numpy(volume[..., self.slab]).permute(3, 0, 1, 2).contiguous()

        chunks = load_subject_volumes(subjects, self.grid, modalities, slab_slices, num_threads, progress,
                                      transform=transform)
        self.slices = torch.cat(chunks)
        if device is not None:
            self.slices = self.slices.to(device)
        n = self.slab.stop - self.slab.start
        self.ids = [s["id"] for s in subjects for _ in range(n)]
        self.z = [z for _ in subjects for z in range(self.slab.start, self.slab.stop)]

    def __len__(self) -> int:
        return self.slices.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {"image": self.slices[index], "id": self.ids[index], "z": self.z[index]}
