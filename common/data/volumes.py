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
                         desc: str = "loading volumes") -> list[T]:
    """Load each subject's ``image`` files (one per channel) with :class:`~common.transforms.LoadValidatedImage`
    and hand the (C, X, Y, Z) float32 array to ``keep(index, volume)``, which keeps what the dataset needs
    (a slab, a padded box), so whole volumes never pile up. Files are read in ``num_threads`` threads
    (decompression releases the GIL); the results come back in subject order."""
    from common.transforms.io import LoadValidatedImage

    loader = LoadValidatedImage(grid, list(modalities))

    def load(i: int) -> T:
        return keep(i, loader(subjects[i]["image"]).as_tensor().numpy())

    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        return list(tqdm(pool.map(load, range(len(subjects))), total=len(subjects), desc=desc, unit="subject",
                         disable=not progress))
