"""MONAI Label inference task that serves a bundle's voxel anomaly map as its result image."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from fastapi import HTTPException
from lib.transforms import LoadStackedValidatedImaged
from monai.transforms import SaveImaged
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.transform.writer import Writer

from common.errors import InputDataError
from common.transforms import LoadValidatedImaged
from integrations.bundles import anomaly_map_key

logger = logging.getLogger(__name__)

__all__ = ["AnomalyMapInferTask"]


class AnomalyMapInferTask(BundleInferTask):
    """``BundleInferTask`` of one of this repository's bundles, returning the float32 anomaly map.

    The bundle's own pre-processing, inferer and post-processing run (so the map is the one its
    ``inference.json`` writes), with three adaptations to MONAI Label:

    - input: one uploaded NIfTI (4D with the modalities last for pd_ae/pd_sae, 3D for PET), validated channel
      by channel as the bundles validate (``LoadStackedValidatedImaged`` replaces ``LoadValidatedImaged``);
    - result: MONAI Label returns one image, ``output_label_key`` (the network's reconstruction, ``pred``);
      this task returns the post-processing's anomaly map instead, as float32 NIfTI on the input grid;
    - weights load strictly: a checkpoint that does not fit the network is an error, not a warning;
    - bad input answers HTTP 422 with the validation message (file and problem) instead of a bare 500.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        super().__init__(path, conf, type=InferType.OTHERS, post_filter=[SaveImaged], load_strict=True, **kwargs)
        if not self.valid:
            return
        self.map_key = anomaly_map_key(self.bundle_config.config)
        self.key_pred = self.map_key  # what Restored brings back onto the input image's grid
        self.labels = []  # a continuous map, not classes
        self.description = f"{self.description} Result: the voxel anomaly map ('{self.map_key}'), float32 NIfTI."

    def __call__(self, request, callbacks=None):
        try:
            return super().__call__(request, callbacks)
        except Exception as err:
            cause = _input_error(err)
            if cause is None:
                raise
            raise HTTPException(status_code=422, detail=str(cause)) from None

    def pre_transforms(self, data=None):
        pre = []
        for t in super().pre_transforms(data):
            if isinstance(t, LoadValidatedImaged):
                pre.extend(LoadStackedValidatedImaged(k, loader.grid, loader.modalities)
                           for k, loader in t.loaders.items())
            else:
                pre.append(t)
        return pre

    def writer(self, data: dict[str, Any], extension=None, dtype=None):
        data.setdefault("result_extension", ".nii.gz")
        data.setdefault("result_dtype", "float32")
        anomaly = np.asarray(data[self.map_key])
        data.setdefault(self.output_json_key, {})["anomaly_map"] = {
            "key": self.map_key, "shape": list(anomaly.shape), "dtype": str(data["result_dtype"]),
            "min": float(anomaly.min()), "max": float(anomaly.max()),
        }
        logger.info("anomaly map %s: %s, range [%.4g, %.4g]", self.map_key, anomaly.shape, anomaly.min(), anomaly.max())
        return Writer(label=self.map_key, json=self.output_json_key, nibabel=True)(data)


def _input_error(err: BaseException | None) -> InputDataError | None:
    """The InputDataError behind ``err`` (MONAI wraps a transform's exception in a RuntimeError), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, InputDataError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
