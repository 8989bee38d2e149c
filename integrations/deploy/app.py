"""MONAI Deploy application: one subject's NIfTI in, the bundle's float voxel anomaly map out.

    python integrations/deploy/app.py -i INPUT -o OUTPUT -m MODEL      (in the Deploy environment)

- ``MODEL``: ``model.ts`` made by ``package.py`` (or a folder holding it). The bundle (pd_ae, pd_sae,
  ad_vae3d) is whichever was packaged; how to read its input comes from the config inside.
- ``INPUT``: a folder with one NIfTI per modality of the bundle, named ``*<MODALITY>.nii[.gz]``
  (``sub-01_FA.nii.gz``, ``sub-01_MD.nii.gz``), or the file itself for a one-modality bundle (PET). The
  bundle's own loading transforms read and validate them (grid, dimensions, NaN/Inf, modality range) before
  anything is written.
- ``OUTPUT``: receives ``<subject>_<map>.nii.gz`` (``error`` for pd_ae/pd_sae, ``abs_difference`` for
  ad_vae3d), float32, on the input grid with the input's affine: the map the bundle's ``inference.json`` writes.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

import numpy as np
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Image, IOType
from monai.deploy.operators.monai_bundle_inference_operator import (
    BundleConfigNames,
    IOMapping,
    get_bundle_config,
)

from common.errors import InputDataError
from integrations.bundles import anomaly_map_key, input_modalities, is_loader
from integrations.deploy.inputs import find_subject_files, model_file
from integrations.deploy.operators import (
    AnomalyBundleInferenceOperator,
    BundleLoaderOperator,
    NiftiMapWriterOperator,
)

__all__ = ["AnomalyMapApp", "main"]

logger = logging.getLogger(__name__)


class AnomalyMapApp(Application):
    """The bundle's loader -> ``MonaiBundleInferenceOperator`` (the bundle's pre-processing, inferer and
    post-processing) -> float32 NIfTI writer of the anomaly map."""

    def compose(self):
        app_context: AppContext = Application.init_app_context(self.argv)
        model = model_file(app_context.model_path)
        if str(model) != str(app_context.model_path):  # a folder: the SDK's model factory wants the file here
            app_context.update({"model": str(model)})
        parser = get_bundle_config(str(model), ["inference"])
        config, meta = parser.get(), parser["_meta_"]
        map_key = anomaly_map_key(config)
        outputs = list(meta["network_data_format"]["outputs"])
        if map_key not in outputs:
            raise InputDataError(model, f"packaged without the '{map_key}' output: repackage with package.py")
        loaders = [t for t in parser.get_parsed_content("preprocessing").transforms if is_loader(t)]
        if not loaders:
            raise InputDataError(model, "the bundle's preprocessing has no Load* transform to read files with")

        modalities = input_modalities(config, meta)
        files, subject = find_subject_files(app_context.input_path, modalities)
        logger.info("subject %s: %s (%s)", subject, [str(f) for f in files], ", ".join(modalities))

        loader = BundleLoaderOperator(self, CountCondition(self, 1), files=files, loaders=loaders,
                                      subject_id=subject, name="loader")
        infer = AnomalyBundleInferenceOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping(name, np.ndarray, IOType.IN_MEMORY) for name in outputs],
            app_context=app_context,
            bundle_path=model,
            bundle_config_names=BundleConfigNames(config_names=["inference"]),
            name="bundle_inference",
        )
        writer = self.writer = NiftiMapWriterOperator(self, output_folder=app_context.output_path, postfix=map_key,
                                                      name="writer")
        self.add_flow(loader, infer, {("image", "image")})
        self.add_flow(loader, writer, {("image", "image")})
        self.add_flow(infer, writer, {(map_key, "map")})


def main() -> int:
    """Run the app; bad input exits with status 2 and one line naming the file, as the bundles' commands do."""
    app = AnomalyMapApp()
    try:
        app.run()
    except (InputDataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not getattr(app, "writer", None) or not app.writer.written:
        print("error: no anomaly map was written (see the log above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
