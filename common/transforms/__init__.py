"""MONAI transforms of the bundles (array versions and their ``d``/``D``/``Dict`` dictionary versions)."""

from .hypometabolism import (
    DEMENTIA_PATTERNS,
    RandSimulateHypometabolism,
    RandSimulateHypometabolismd,
    SimulateHypometabolism,
    SimulateHypometabolismd,
    smoothed_mask,
)
from .io import (
    SUBJECT_ID,
    LoadValidatedImage,
    LoadValidatedImageD,
    LoadValidatedImaged,
    LoadValidatedImageDict,
    subject_output_name,
)
from .reconstruction import ReconstructionError, ReconstructionErrord

__all__ = [
    "SUBJECT_ID",
    "subject_output_name",
    "ReconstructionError",
    "ReconstructionErrord",
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
