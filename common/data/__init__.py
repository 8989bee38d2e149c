"""Real data in: the dataset.json reader/writer and the control splits; the NIfTI checks of :mod:`common.nifti`
(one layer below, as the transforms use them too) are re-exported here.

Everything here depends on nibabel and numpy only (no torch); the MONAI transforms built on it live in
:mod:`common.transforms`. The exception, pd_sae's :class:`~common.data.pairs.SiamesePairSampler` (a torch
``IterableDataset``), is imported only when asked for, so ``import common.data`` stays torch-free.
"""

from common.nifti import (
    MD_MAX_MM2_PER_S,
    MODALITIES,
    ModalitySpec,
    check_header,
    check_same_grid,
    get_modality,
    load_checked,
)

from .dataset_json import (
    GROUPS,
    SEXES,
    SUBJECT_ID_PATTERN,
    CohortDataset,
    ValidationReport,
    check_subjects,
    order_channels,
    read_dataset,
    validate_dataset,
    write_dataset,
)
from .splits import (
    SPLIT_PARTS,
    check_splits,
    default_n_test,
    make_splits,
    pool_subjects,
    read_splits,
    require_distinct_splits,
    split_subjects,
    union_subjects,
    write_splits,
)

__all__ = [
    "GROUPS",
    "MD_MAX_MM2_PER_S",
    "MODALITIES",
    "SEXES",
    "SPLIT_PARTS",
    "SUBJECT_ID_PATTERN",
    "CohortDataset",
    "ModalitySpec",
    "SiamesePairSampler",
    "ValidationReport",
    "check_header",
    "check_same_grid",
    "check_splits",
    "check_subjects",
    "default_n_test",
    "get_modality",
    "load_checked",
    "make_splits",
    "order_channels",
    "pool_subjects",
    "read_dataset",
    "read_splits",
    "require_distinct_splits",
    "split_subjects",
    "union_subjects",
    "validate_dataset",
    "write_dataset",
    "write_splits",
]


def __getattr__(name: str):
    if name == "SiamesePairSampler":  # lazy: it needs torch
        from .pairs import SiamesePairSampler

        return SiamesePairSampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
