"""From scanner output to bundle input: BIDS DWI and FDG PET onto the bundles' grids (``python -m common prepare``).

- :mod:`~common.prepare.bids`: scan discovery, ``participants.tsv`` and the output ``dataset.json``;
- :mod:`~common.prepare.runner`: subjects in parallel, each written atomically, resumable, failures listed;
- :mod:`~common.prepare.registration`: the ICBM152 template, ANTsPy registration, resampling, alignment QC;
- :mod:`~common.prepare.qc`: the per-subject QC figure;
- :mod:`~common.prepare.dti`: brain mask, tensor fit, FA/MD, registration onto ``spm1p5``;
- :mod:`~common.prepare.pet`: frame averaging, SUVR, registration onto ``clinicadl2``.

Heavy modules (ANTsPy, dipy, matplotlib) are imported where they are used, so importing the package stays cheap.
"""
