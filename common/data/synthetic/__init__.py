"""Synthetic cohorts on real anatomy, standing in for PPMI (PD DTI) and ADNI (FDG PET), which cannot be
shipped. Both are written exactly as a user's own data: NIfTI files plus a Decathlon-style dataset.json.

>>> from common.data.synthetic import default_cohort
>>> dataset_json = default_cohort("pd")     # generated into the cache on first use
"""

from __future__ import annotations

from pathlib import Path

from common.cache import cache_root
from common.data.synthetic.pd import MD_MAX_MM2_PER_S, PDCohortConfig, make_pd_cohort
from common.data.synthetic.pet import PETCohortConfig, make_pet_cohort

__all__ = ["PDCohortConfig", "PETCohortConfig", "make_pd_cohort", "make_pet_cohort", "default_cohort",
           "MD_MAX_MM2_PER_S"]


def default_cohort(kind: str, progress: bool = True, **overrides) -> Path:
    """dataset.json of the embedded demo cohort of ``kind`` (``"pd"`` or ``"pet"``), generated into
    ``<cache>/cohorts/<kind>_seed<seed>`` on first use and reused afterwards."""
    if kind == "pd":
        cfg = PDCohortConfig(**overrides)
        folder, _ = make_pd_cohort(cache_root() / "cohorts" / f"pd_seed{cfg.seed}", cfg, progress, overwrite=True)
    elif kind == "pet":
        cfg = PETCohortConfig(**overrides)
        folder, _ = make_pet_cohort(cache_root() / "cohorts" / f"pet_seed{cfg.seed}", cfg, progress, overwrite=True)
    else:
        raise ValueError(f"unknown cohort kind {kind!r}; expected 'pd' or 'pet'")
    return folder / "dataset.json"
