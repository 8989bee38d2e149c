"""Which of the repository's bundles the Label app serves (no MONAI Label import: testable anywhere)."""

from __future__ import annotations

from pathlib import Path

from common.bundle_support import check_bundle_weights
from common.errors import InputDataError
from integrations.bundles import BUNDLES_DIR, available_bundles

__all__ = ["select_bundles"]


def select_bundles(conf: dict[str, str]) -> dict[str, Path]:
    """Bundle name -> folder, from ``conf``; a named bundle without an inference config or weights, or with weights
    that do not load into its network, is an error naming the file (raised at start-up, not on the first
    request)."""
    root = Path(conf.get("bundles") or BUNDLES_DIR)
    if not root.is_dir():
        raise InputDataError(root, "bundles folder not found")
    names = [n.strip() for n in conf.get("models", "").split(",") if n.strip()]
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
        check_bundle_weights(root / name)  # a broken or foreign model.pt: refused at start-up, naming the file
        selected[name] = root / name
    return selected
