"""Reading the subjects' volumes once, validated, in parallel: what every in-memory training dataset does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from tqdm.auto import tqdm

from common.grids import Grid

__all__ = ["load_subject_volumes"]

T = TypeVar("T")


def load_subject_volumes(subjects: Sequence[dict], grid: str | Grid, modalities: Sequence[str],
                         keep: Callable[[int, np.ndarray], T], num_threads: int = 2, progress: bool = True,
                         desc: str = "loading volumes", loader: Callable | None = None,
                         transform: Callable | None = None) -> list[T]:
    """Load each subject's ``image`` files (one per channel) with :class:`~common.transforms.LoadValidatedImage`
    (or ``loader``, e.g. :class:`~common.transforms.LoadPETImage`, which also takes Clinica's grid)
    and hand the (C, X, Y, Z) float32 array to ``keep(index, volume)``, which keeps what the dataset needs
    (a slab, a padded box), so whole volumes never pile up. Files are read in ``num_threads`` threads
    (decompression releases the GIL); the results come back in subject order.

    ``transform`` (a dictionary transform, e.g. a bundle's ``train#preprocessing``) replaces ``loader``: it gets
    a copy of the subject's entry and its ``image`` is the volume, so a config's preprocessing is what runs."""
    from common.transforms.io import LoadValidatedImage

    if transform is not None:
        def loader_of(i: int):
            return transform(dict(subjects[i]))["image"]
    else:
        load_image = LoadValidatedImage(grid, list(modalities)) if loader is None else loader

        def loader_of(i: int):
            return load_image(subjects[i]["image"])

    def load(i: int) -> T:
        volume = loader_of(i)
        return keep(i, np.asarray(volume.as_tensor().numpy() if hasattr(volume, "as_tensor") else volume,
                                  dtype=np.float32))

    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        return list(tqdm(pool.map(load, range(len(subjects))), total=len(subjects), desc=desc, unit="subject",
                         disable=not progress))
