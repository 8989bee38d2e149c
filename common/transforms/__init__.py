"""MONAI transforms of the bundles (array versions and their ``d``/``D``/``Dict`` dictionary versions)."""

from .clinica import (
    CLINICADL_SLICES,
    PET_INPUT_MODES,
    LoadPETImage,
    LoadPETImaged,
    ReducePETLinear,
    ReducePETLineard,
    antialias_sigma_mm,
)
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
    "PET_INPUT_MODES",
    "CLINICADL_SLICES",
    "antialias_sigma_mm",
    "ReducePETLinear",
    "ReducePETLineard",
    "LoadPETImage",
    "LoadPETImaged",
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
