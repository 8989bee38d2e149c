"""Synthetic cohorts on real anatomy, standing in for PPMI (PD DTI) and ADNI (FDG PET), which cannot be
shipped. Both are written exactly as a user's own data: NIfTI files plus a Decathlon-style dataset.json.

>>> from common.data.synthetic import default_cohort
>>> dataset_json = default_cohort("pd")     # generated into the cache on first use
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock

from common.cache import cache_root
from common.data.synthetic.pd import PDCohortConfig, make_pd_cohort
from common.data.synthetic.pet import PETCohortConfig, make_pet_cohort

__all__ = ["PDCohortConfig", "PETCohortConfig", "default_cohort", "make_pd_cohort", "make_pet_cohort"]


def default_cohort(kind: str, progress: bool = True, paper_size: bool = False, **overrides) -> Path:
    """dataset.json of the embedded demo cohort of ``kind`` (``"pd"`` or ``"pet"``), generated into
    ``<cache>/cohorts/<kind>_seed<seed>`` on first use and reused afterwards. ``paper_size``: the paper's cohort
    size instead (PD 56 controls / 129 patients, PET 301 / 311), in ``<kind>_paper_seed<seed>``: what
    ``python -m common experiment pd|pet --paper`` runs on."""
    makers = {"pd": (PDCohortConfig, make_pd_cohort), "pet": (PETCohortConfig, make_pet_cohort)}
    if kind not in makers:
        raise ValueError(f"unknown cohort kind {kind!r}; expected 'pd' or 'pet'")
    config_cls, make = makers[kind]
    cfg = config_cls.paper_size(**overrides) if paper_size else config_cls(**overrides)
    target = cache_root() / "cohorts" / f"{kind}_{'paper_' if paper_size else ''}seed{cfg.seed}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        folder, _ = make(target, cfg, progress, overwrite=True)
    return folder / "dataset.json"
