"""MONAI transforms of the bundles (array versions and their ``d``/``D``/``Dict`` dictionary versions)."""

from .hypometabolism import (
    DEMENTIA_PATTERNS,
    RandSimulateHypometabolism,
    RandSimulateHypometabolismd,
    SimulateHypometabolism,
    SimulateHypometabolismd,
    smoothed_mask,
)
from .io import LoadValidatedImage, LoadValidatedImageD, LoadValidatedImaged, LoadValidatedImageDict

__all__ = [
    "LoadValidatedImage",
    "LoadValidatedImaged",
    "LoadValidatedImageD",
    "LoadValidatedImageDict",
    "SimulateHypometabolism",
    "SimulateHypometabolismd",
    "RandSimulateHypometabolism",
    "RandSimulateHypometabolismd",
    "DEMENTIA_PATTERNS",
    "smoothed_mask",
]
