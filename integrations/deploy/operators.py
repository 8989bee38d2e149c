"""MONAI Deploy operators that serve a bundle's voxel anomaly map: validated NIfTI in, float NIfTI out.

The pipeline is ``BundleLoaderOperator -> AnomalyBundleInferenceOperator -> NiftiMapWriterOperator``:

- the loader reads one subject's files with the bundle's own loading transforms, which validate them (grid,
  dimensions, finite values, modality range), and keeps the affine in the SDK ``Image``'s metadata (the SDK's
  ``NiftiDataLoader`` drops it);
- the inference operator is the SDK's ``MonaiBundleInferenceOperator``: it runs the bundle's own inferer
  (``SliceInferer`` for pd_ae, the patch reassembly inferer for pd_sae, ...) and post-processing
  (``ReconstructionErrord``), so the map is the one the bundle's ``inference.json`` writes;
- the writer stores the float32 map with the input's affine, atomically (nothing half-written).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.deploy.core import ConditionType, Fragment, Image, Operator, OperatorSpec
from monai.deploy.operators.monai_bundle_inference_operator import MonaiBundleInferenceOperator, filter_compose

from common.data._jsonio import atomic_path
from common.transforms import SUBJECT_ID
from integrations.bundles import LOADER_PREFIX

__all__ = ["AnomalyBundleInferenceOperator", "BundleLoaderOperator", "NiftiMapWriterOperator"]


class BundleLoaderOperator(Operator):
    """Loads one subject with the bundle's own loading transforms and emits it as an SDK ``Image``.

    The transforms are the ``Load*`` head of the bundle's pre-processing (``LoadValidatedImaged`` for pd_ae and
    pd_sae, ``LoadPETImaged`` for ad_vae3d): they validate every file (grid, dimensions, finite values,
    modality range) and raise ``InputDataError`` naming it. Named output ``image``: ``Image`` of a
    (C, X, Y, Z) float32 array in RAS whose metadata holds ``affine``, ``original_affine``, ``spacing`` and
    ``subject_id`` (what ``MonaiBundleInferenceOperator`` turns back into a ``MetaTensor``).
    """

    def __init__(self, fragment: Fragment, *args, files: list[str], loaders: list[Callable[[dict], dict]],
                 subject_id: str, **kwargs) -> None:
        self.files = [str(f) for f in files]
        self.loaders = loaders
        self.subject_id = subject_id
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.output("image")

    def compute(self, op_input, op_output, context):
        data = {"image": self.files if len(self.files) > 1 else self.files[0], "id": self.subject_id}
        for load in self.loaders:  # not Compose: its RuntimeError wrapper would hide the InputDataError
            data = load(data)
        volume = data["image"]
        affine = volume.affine.numpy()
        meta = dict(volume.meta)
        meta.update({"affine": affine, "original_affine": affine.copy(), SUBJECT_ID: self.subject_id,
                     "spacing": np.sqrt((affine[:3, :3] ** 2).sum(axis=0))})
        logging.getLogger(__name__).info("loaded %s: %s", self.subject_id, tuple(volume.shape))
        op_output.emit(Image(volume.numpy(), metadata=meta), "image")


class AnomalyBundleInferenceOperator(MonaiBundleInferenceOperator):
    """``MonaiBundleInferenceOperator`` for this project's bundles, with two changes.

    - The bundles load with their own ``Load*`` transforms, which the SDK does not recognise as loaders:
      ``BundleLoaderOperator`` runs them, so they are filtered out of the pre-processing as the SDK filters
      ``LoadImage`` (ad_vae3d's ``ScaleIntensityd`` and the like stay).
    - Outputs may stay unconnected: an app that writes only the anomaly map leaves ``pred`` open, which would
      otherwise keep the operator from ever running.

    The inferer and the post-processing come from the bundle's config unchanged. Outputs must be declared
    ``"series"`` in the packaged metadata (``package.py`` does it): the SDK casts an ``"image"`` output to
    uint8, which would destroy a float anomaly map.
    """

    def setup(self, spec: OperatorSpec):
        for v in self._input_mapping:
            spec.input(v.label)
        for v in self._output_mapping:
            spec.output(v.label).condition(ConditionType.NONE)

    def pre_process(self, data, *args, **kwargs):
        self._preproc = filter_compose(self._preproc, [LOADER_PREFIX])
        return super().pre_process(data, *args, **kwargs)


class NiftiMapWriterOperator(Operator):
    """Writes a (C, X, Y, Z) or (X, Y, Z) map as float32 NIfTI ``<output_folder>/<subject>_<postfix>.nii.gz``.

    Named inputs: ``map`` (ndarray, e.g. the bundle's ``error`` output) and ``image`` (the loader's ``Image``,
    for the affine and the subject id). A single channel is written 3D, several channels as a 4D volume
    with channels last, as MONAI's ``SaveImage`` writes them.
    """

    def __init__(self, fragment: Fragment, *args, output_folder: str | os.PathLike, postfix: str = "error",
                 **kwargs) -> None:
        self.output_folder = Path(output_folder)
        self.postfix = postfix
        self.written: list[Path] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("map")
        spec.input("image")

    def compute(self, op_input, op_output, context):
        data = np.asarray(op_input.receive("map"), dtype=np.float32)
        image = op_input.receive("image")
        meta = image.metadata()
        spatial = image.asnumpy().shape[1:]
        if data.ndim == len(spatial) + 1:
            data = data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)
        if data.shape[: len(spatial)] != tuple(spatial):
            raise ValueError(f"map of shape {data.shape} does not match the input's spatial shape {spatial}")
        path = write_nifti_atomic(self.output_folder / f"{meta[SUBJECT_ID]}_{self.postfix}.nii.gz", data,
                                  np.asarray(meta["affine"], dtype=np.float64))
        self.written.append(path)
        logging.getLogger(__name__).info("wrote %s: %s float32, range [%.4g, %.4g]", path, data.shape,
                                         float(data.min()), float(data.max()))


def write_nifti_atomic(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Save float32 ``data`` with ``affine`` (qform and sform) via a temporary sibling renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    with atomic_path(path, ".nii.gz") as tmp:
        nib.save(img, tmp)
    return path

