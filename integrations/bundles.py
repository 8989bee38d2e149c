"""What the integrations need to know about this repository's bundles, in one place for Deploy and Label."""

from __future__ import annotations

from pathlib import Path

from common.paths import BUNDLES_DIR, REPO_DIR

__all__ = ["BUNDLES_DIR", "LOADER_PREFIX", "REPO", "anomaly_map_key", "available_bundles", "input_modalities",
           "is_loader"]

#: The repository; it and its ``BUNDLES_DIR`` are the library's (:mod:`common.paths` owns both).
REPO = REPO_DIR

#: The transform of the bundles' inference post-processing that computes the voxel anomaly map.
ERROR_TRANSFORM = "ReconstructionErrord"

#: Class-name prefix of the bundles' loading transforms (``LoadValidatedImaged``, ``LoadPETImaged``): they take
#: file paths, so a server runs them on its input files and drops them from the in-memory pre-processing.
LOADER_PREFIX = "Load"


def available_bundles(root: str | Path = BUNDLES_DIR) -> list[str]:
    """Bundles under ``root`` with an inference config."""
    return sorted(p.name for p in Path(root).iterdir() if (p / "configs" / "inference.json").is_file())


def anomaly_map_key(config: dict) -> str:
    """The key under which a bundle's inference post-processing stores its voxel anomaly map: the
    ``error_key`` of its first ``ReconstructionErrord`` (``error`` for pd_ae/pd_sae, ``abs_difference`` for
    ad_vae3d, whose second one is the signed difference)."""
    transforms = (config.get("postprocessing") or {}).get("transforms") or []
    for t in transforms:
        if isinstance(t, dict) and str(t.get("_target_", "")).split(".")[-1] == ERROR_TRANSFORM:
            return str(t.get("error_key", "error"))
    raise ValueError(f"the inference config's postprocessing has no {ERROR_TRANSFORM}: no anomaly map to serve")


def input_modalities(config: dict, meta: dict) -> list[str]:
    """The input's modality per channel, as its files are named: the config's ``modalities`` (pd_ae, pd_sae:
    FA, MD) or, for a one-channel bundle without them (ad_vae3d), the metadata's input modality (PET)."""
    if config.get("modalities"):
        return [str(m) for m in config["modalities"]]
    image = meta["network_data_format"]["inputs"]["image"]
    if int(image.get("num_channels", 1)) != 1:
        raise ValueError("a multi-channel bundle must name its channels in the config's 'modalities'")
    return [str(image.get("modality", "image"))]


def is_loader(transform) -> bool:
    """Whether ``transform`` (an instance) is one of the bundles' loading transforms."""
    return type(transform).__name__.startswith(LOADER_PREFIX)
