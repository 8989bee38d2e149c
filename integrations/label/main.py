"""MONAI Label app serving the voxel anomaly maps of this repository's bundles, offline.

    monailabel start_server --app integrations/label --studies DIR --conf models pd_ae --host 127.0.0.1

Address: this machine only (``--host 127.0.0.1``) unless told otherwise. MONAI Label listens on 0.0.0.0 by
default, without authentication and with CORS ``*``; the app refuses to start there. Expose it deliberately
with ``--host ADDRESS --conf expose true`` (then put authentication or a firewall in front of it).

Configuration (``--conf KEY VALUE``):

- ``models``: comma-separated bundle names (default: every bundle that has trained weights);
- ``bundles``: the folder holding them (default: the repository's ``bundles/``); each bundle is read in
  place, with its weights at ``<bundle>/models/model.pt``. Nothing is downloaded. A bundle this environment
  cannot run is refused when named, left out otherwise (pd_sae needs an atlas that numpy < 2 cannot rebuild
  here: ``lib.bundles.atlas_problem``);
- ``expose``: ``true`` to allow a non-loopback ``--host``.

Send one NIfTI per subject (4D with FA, MD as the last axis for pd_ae/pd_sae; 3D SUVR for PET) to
``POST /infer/<bundle>?output=image``; the reply is the float32 anomaly map on the input grid (``output=json``
gives its shape and range). No training task: the bundles learn from healthy scans without labels, while
MONAI Label's training path feeds image/label pairs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # common/ and integrations/ of this checkout
    sys.path.insert(0, str(REPO))

import monailabel
from lib.bundles import check_exposure, select_bundles
from lib.infers import AnomalyMapInferTask
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from common.errors import InputDataError

logger = logging.getLogger(__name__)


class AnomalyMapApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        # runs in the server's start-up, before uvicorn binds its socket: a refusal means nothing listened
        self.host = check_exposure(sys.argv, conf)
        self.bundles = select_bundles(conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="Brain anomaly maps",
            description="Voxel anomaly maps of the brain-anomaly-bundles auto-encoders (research use only)",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, path in self.bundles.items():
            task = AnomalyMapInferTask(str(path), self.conf)
            if not task.is_valid():
                raise InputDataError(path, "MONAI Label could not load this bundle (see the log above)")
            logger.info("+++ anomaly map inferer: %s => %s", name, path)
            infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        return {}  # unsupervised bundles: see the module docstring
