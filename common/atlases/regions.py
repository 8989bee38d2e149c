"""Reading the editable region table (``regions.toml``) and turning label names into label ids."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

__all__ = ["GROUPS", "REGION_TABLE_PATH", "Region", "load_region_table", "select_labels"]

REGION_TABLE_PATH = Path(str(resources.files("common.atlases").joinpath("regions.toml")))
SOURCES = {"aal3", "hcpex", "white_matter", "ellipsoid"}
#: Groups of the table, in reporting order.
GROUPS = ("macro", "nuclei", "dementia", "reference")


@dataclass(frozen=True)
class Region:
    """One row of the region table (see the comments at the top of regions.toml)."""

    name: str
    group: str
    source: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hemisphere: str | None = None
    sides: bool = False
    approximate: bool = False
    expected_voxels_1p5mm: int | None = None
    params: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def mask_names(self) -> tuple[str, ...]:
        """Names of the masks this region produces (``name`` or ``name_L``, ``name_R``)."""
        return (f"{self.name}_L", f"{self.name}_R") if self.sides else (self.name,)


def load_region_table(path: str | Path | None = None) -> list[Region]:
    """Parse and check the region table; errors name the table and the offending entry."""
    path = Path(path) if path is not None else REGION_TABLE_PATH
    with open(path, "rb") as fh:
        table = tomllib.load(fh)
    known = {"source", "include", "exclude", "hemisphere", "sides", "approximate", "expected_voxels_1p5mm"}
    regions: list[Region] = []
    for group, entries in table.items():
        if group not in GROUPS:
            raise ValueError(f"{path}: unknown group [{group}]; expected one of {GROUPS}")
        for name, spec in entries.items():
            source = spec.get("source")
            if source not in SOURCES:
                raise ValueError(f"{path}: [{group}.{name}] has source {source!r}; expected one of {sorted(SOURCES)}")
            if source in ("aal3", "hcpex") and not spec.get("include"):
                raise ValueError(f"{path}: [{group}.{name}] selects no labels (empty 'include')")
            if spec.get("hemisphere") not in (None, "L", "R"):
                raise ValueError(f"{path}: [{group}.{name}] hemisphere must be 'L' or 'R'")
            regions.append(
                Region(
                    name=name,
                    group=group,
                    source=source,
                    include=tuple(spec.get("include", ())),
                    exclude=tuple(spec.get("exclude", ())),
                    hemisphere=spec.get("hemisphere"),
                    sides=bool(spec.get("sides", False)),
                    approximate=bool(spec.get("approximate", False)),
                    expected_voxels_1p5mm=spec.get("expected_voxels_1p5mm"),
                    params={k: v for k, v in spec.items() if k not in known},
                )
            )
    names = [r.name for r in regions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: region names must be unique across groups; repeated: {duplicates}")
    for region in regions:
        unknown = [e for e in region.exclude if e not in names]
        if unknown:
            raise ValueError(f"{path}: [{region.group}.{region.name}] excludes unknown regions {unknown}")
    return regions


def select_labels(lut: dict[int, str], include: tuple[str, ...], hemisphere: str | None = None) -> dict[int, str]:
    """Label ids whose names start with one of ``include`` (optionally one hemisphere only)."""
    chosen = {i: n for i, n in lut.items() if n.startswith(tuple(include))}
    if hemisphere is not None:
        chosen = {i: n for i, n in chosen.items() if n.endswith(f"_{hemisphere}")}
    return chosen
