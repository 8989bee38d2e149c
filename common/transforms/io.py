"""MONAI loading transforms that validate every file (grid, dimensions, finite values, modality range).

They replace ``LoadImage`` + ``EnsureChannelFirst`` for the bundles: one file per channel is read with
:func:`common.nifti.load_checked`, the channels are stacked in order, and the result is a
``MetaTensor`` (C, X, Y, Z) float32 on the grid in RAS, so a bad file stops the run with a message naming it
instead of producing a wrong anomaly map. Cache them in ``CacheDataset`` (each volume is read once).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys

from common.errors import InputDataError
from common.grids import Grid, get_grid
from common.nifti import check_same_grid, get_modality, load_checked

#: Meta key holding the subject id of a loaded image.
SUBJECT_ID = "subject_id"

__all__ = [
    "SUBJECT_ID",
    "LoadValidatedImage",
    "LoadValidatedImageD",
    "LoadValidatedImageDict",
    "LoadValidatedImaged",
    "subject_output_name",
]


class LoadValidatedImage(Transform):
    """Load one file per channel, check each against ``grid`` and its modality, stack to (C, X, Y, Z).

    Args:
        grid: grid name or :class:`~common.grids.Grid` every file must be on.
        modalities: one modality name per channel, in channel order (e.g. ``["FA", "MD"]``).
        allow_resample: resample off-grid files onto the grid (trilinear) instead of raising.
    """

    def __init__(self, grid: str | Grid, modalities: Sequence[str], allow_resample: bool = False) -> None:
        if isinstance(modalities, str):
            modalities = [modalities]
        self.grid = get_grid(grid)
        self.modalities = [get_modality(m).name for m in modalities]
        if not self.modalities:
            raise ValueError("modalities must name at least one channel")
        self.allow_resample = allow_resample

    def __call__(self, filename: str | os.PathLike | Sequence[str | os.PathLike]) -> MetaTensor:
        files = [os.fspath(filename)] if isinstance(filename, (str, os.PathLike)) else [os.fspath(f) for f in filename]
        if len(files) != len(self.modalities):
            raise InputDataError(
                files[0] if files else None,
                f"{len(files)} channel file(s) given for {len(self.modalities)} modalities "
                f"({', '.join(self.modalities)})",
            )
        if self.allow_resample and len(files) > 1:
            # without resampling every file is checked against the grid itself; with it, channels of
            # different grids would be silently aligned, so refuse them (headers only: cheap)
            check_same_grid(files)
        volumes = [
            load_checked(f, self.grid, m, self.allow_resample)[0] for f, m in zip(files, self.modalities, strict=True)
        ]
        affine = torch.as_tensor(self.grid.affine, dtype=torch.float64)
        meta = {
            ImageMetaKey.FILENAME_OR_OBJ: files[0],  # as MONAI's LoadImage does for a list of files
            MetaKeys.ORIGINAL_AFFINE: self.grid.affine,
            MetaKeys.SPATIAL_SHAPE: np.asarray(self.grid.shape),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: 0,
        }
        return MetaTensor(torch.from_numpy(np.stack(volumes)), affine=affine, meta=meta)


class LoadValidatedImaged(MapTransform):
    """Dictionary version of :class:`LoadValidatedImage`.

    Args:
        keys: keys whose values are a path or a list of paths (one per channel).
        grid: grid name or :class:`~common.grids.Grid`.
        modalities: modality names per key (``{"image": ["FA", "MD"], "anomaly": ["ANOMALY"]}``) or one list
            used for every key.
        allow_resample: resample off-grid files onto the grid instead of raising.
        allow_missing_keys: skip keys a data item lacks (e.g. ``anomaly`` of controls).
        id_key: key of the subject id in the data item; when present it is stored as ``subject_id`` in each
            loaded image's meta, so outputs can be named after the subject (see :func:`subject_output_name`).
    """

    def __init__(
        self,
        keys: KeysCollection,
        grid: str | Grid,
        modalities: Mapping[Hashable, Sequence[str]] | Sequence[str],
        allow_resample: bool = False,
        allow_missing_keys: bool = False,
        id_key: str | None = "id",
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.id_key = id_key
        if isinstance(modalities, Mapping):
            missing = [k for k in self.keys if k not in modalities]
            if missing:
                raise ValueError(f"modalities has no entry for keys {missing}")
            per_key = {k: modalities[k] for k in self.keys}
        else:
            per_key = dict.fromkeys(self.keys, modalities)
        self.loaders = {k: LoadValidatedImage(grid, m, allow_resample) for k, m in per_key.items()}

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loaders[key](d[key])
            if self.id_key is not None and self.id_key in d:
                d[key].meta[SUBJECT_ID] = str(d[self.id_key])
        return d


def subject_output_name(metadict: Mapping, saver: Transform) -> dict:
    """``output_name_formatter`` for MONAI's ``SaveImage(d)``: outputs are named after the subject id
    (``<output_dir>/<id>/<id>_<postfix>.nii.gz``) instead of the first input file's name.

    MONAI strips what it takes for an extension from the name (``sub.001`` would become ``sub``, so
    ``sub.001`` and ``sub.002`` would overwrite one file), so ``.nii.gz`` is appended for it to strip: the id
    is kept whole (:func:`common.data.dataset_json.output_stem`). Ids are checked to be single safe path
    components (:data:`common.data.SUBJECT_ID_PATTERN`) before a run starts; a ``/`` is refused here too."""
    subject = metadict.get(SUBJECT_ID)
    if subject is None:
        name = os.path.basename(str(metadict.get(ImageMetaKey.FILENAME_OR_OBJ, "image")))
        subject = name.split(".nii")[0]
    subject = str(subject)
    if "/" in subject or "\\" in subject or subject in ("", ".", ".."):
        raise InputDataError(None, f"subject id {subject!r} cannot name an output file (one path component needed)")
    return {"subject": f"{subject}.nii.gz", "idx": metadict.get(ImageMetaKey.PATCH_INDEX)}


LoadValidatedImageD = LoadValidatedImageDict = LoadValidatedImaged
