"""Loading for MONAI Label: one uploaded NIfTI per subject, validated exactly as the bundles validate."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ImageMetaKey

from common.errors import InputDataError
from common.grids import Grid
from common.transforms import LoadValidatedImage

__all__ = ["LoadStackedValidatedImage", "LoadStackedValidatedImaged"]


class LoadStackedValidatedImage(Transform):
    """Load a subject sent as ONE file, 3D for a one-modality bundle or 4D with the modalities on the last axis
    (how MONAI Label and viewers carry multi-channel images), and validate every channel with
    :class:`common.transforms.LoadValidatedImage` (grid, finite values, modality range).

    The bundles' loader takes one file per channel, so a 4D file is split into uncompressed temporary
    3D files first (tens of milliseconds); a problem is reported against the uploaded file and channel.
    """

    def __init__(self, grid: str | Grid, modalities: Sequence[str]) -> None:
        self.loader = LoadValidatedImage(grid, modalities)

    def __call__(self, filename: str | os.PathLike) -> MetaTensor:
        path = Path(filename)
        modalities = self.loader.modalities
        try:
            img = nib.load(path)
        except Exception as err:  # nibabel raises several types for a non-NIfTI or damaged file
            raise InputDataError(path, f"not a readable NIfTI image ({err})") from None
        if len(modalities) == 1 and len(img.shape) == 3:
            return self.loader([path])
        if len(img.shape) != 4 or img.shape[3] != len(modalities):
            expected = (f"a 4D image with {len(modalities)} channels ({', '.join(modalities)}) on the last axis"
                        if len(modalities) > 1 else "a 3D image")
            raise InputDataError(path, f"expected {expected}; got shape {tuple(img.shape)}")
        data = np.asarray(img.dataobj)
        with tempfile.TemporaryDirectory(prefix="anomaly-label-") as tmp:
            files = []
            for c, modality in enumerate(modalities):
                files.append(Path(tmp) / f"channel{c}_{modality}.nii")
                nib.save(nib.Nifti1Image(data[..., c], img.affine, img.header), files[-1])
            try:
                volume = self.loader(files)
            except InputDataError as err:
                channel = next((i for i, f in enumerate(files) if str(f) == err.path), None)
                where = f"channel {channel} ({modalities[channel]}): " if channel is not None else ""
                raise InputDataError(path, where + err.problem) from None
        volume.meta[ImageMetaKey.FILENAME_OR_OBJ] = str(path)
        return volume


class LoadStackedValidatedImaged(MapTransform):
    """Dictionary version of :class:`LoadStackedValidatedImage`."""

    def __init__(self, keys: KeysCollection, grid: str | Grid, modalities: Sequence[str],
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadStackedValidatedImage(grid, modalities)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
