"""What the integrations need to know about this repository's bundles, in one place for Deploy and Label."""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPO", "BUNDLES_DIR", "available_bundles", "anomaly_map_key"]

REPO = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO / "bundles"

#: The transform of the bundles' inference post-processing that computes the voxel anomaly map.
ERROR_TRANSFORM = "ReconstructionErrord"


def available_bundles(root: str | Path = BUNDLES_DIR) -> list[str]:
    """Bundles under ``root`` with an inference config."""
    return sorted(p.name for p in Path(root).iterdir() if (p / "configs" / "inference.json").is_file())


def anomaly_map_key(config: dict) -> str:
    """The key under which a bundle's inference post-processing stores its voxel anomaly map."""
    transforms = (config.get("postprocessing") or {}).get("transforms") or []
    for t in transforms:
        if isinstance(t, dict) and str(t.get("_target_", "")).split(".")[-1] == ERROR_TRANSFORM:
            return str(t.get("error_key", "error"))
    raise ValueError(f"the inference config's postprocessing has no {ERROR_TRANSFORM}: no anomaly map to serve")
