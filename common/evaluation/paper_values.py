"""The AD paper's published numbers (Hassanaly et al., SPIE Medical Imaging 2023), for side-by-side tables.

One place for every number the PET evaluation puts next to its own: each entry is ``{"value", "source"}``,
the source saying where in the paper it stands and what it measures. They come from real ADNI data and
ClinicaDL's pipeline, so they are labelled :data:`PAPER_SOURCE` ("paper (real ADNI)") wherever they are
shown and never mixed into this run's statistics; :data:`PROTOCOL_DIFFERENCES` lists why the two need not
agree even for a perfectly reproduced model.
"""

from __future__ import annotations

__all__ = ["PAPER_SOURCE", "RUN_SOURCE", "PAPER", "PROTOCOL_DIFFERENCES", "paper_value", "paper_dementia_rows",
           "paper_group_rows"]

#: Labels of the ``source`` column of every table that mirrors one of the paper's.
PAPER_SOURCE = "paper (real ADNI)"
RUN_SOURCE = "this run"

_TABLE1 = "Table 1 (dementias at 30 %: healthy original vs reconstruction of the simulated image; region not stated)"
_TABLE2 = "Table 2 (test subjects, input vs reconstruction)"

#: Table 1 rows: dementia -> (MSE, MAE, PSNR, SSIM).
_DEMENTIAS = {
    "ad": (0.00356, 0.0414, 24.6, 0.729),
    "bvftd": (0.00313, 0.0388, 25.2, 0.741),
    "lvppa": (0.00320, 0.0392, 25.1, 0.739),
    "svppa": (0.00293, 0.0375, 25.5, 0.749),
    "nfvppa": (0.00319, 0.0388, 25.2, 0.744),
    "pca": (0.00306, 0.0381, 25.4, 0.749),
}
#: Table 2 rows: group (this project's names) -> (MSE, MAE, PSNR, SSIM); the paper's "CN test" / "AD test".
_GROUPS = {"control": (0.00292, 0.0373, 25.6, 0.749), "patient": (0.00408, 0.0433, 24.5, 0.709)}
_METRICS = ("mse", "mae", "psnr", "ssim")

PAPER: dict = {
    "first_significant_degree": {
        "value": 25.0,
        "source": "section 3.1, Fig. 1: MSE of AD-mask simulations vs the healthy test inputs, t-test (paired or "
                  "two-sample not stated), Bonferroni over 9 degrees (p < 0.05 / 9); significant from 25 %",
    },
    "ssim_between_reconstructions": {
        "value": 0.993,
        "source": "section 3.1, Fig. 2: SSIM between the reconstructions of one CN test subject's healthy image and "
                  "of its 30 % AD simulation (one subject; section 3.2: above 0.99 on average for every dementia)",
    },
    "dementias": {name: {metric: {"value": v, "source": f"{_TABLE1}, row {name}"} for metric, v in zip(_METRICS, row)}
                  for name, row in _DEMENTIAS.items()},
    "cn_vs_ad": {group: {metric: {"value": v, "source": f"{_TABLE2}, row {'CN' if group == 'control' else 'AD'} test"}
                         for metric, v in zip(_METRICS, row)} for group, row in _GROUPS.items()},
    "cohort": {
        "value": {"train": 237, "validation": 34, "test_controls": 30, "patients": 311},
        "source": "section 2.4: one fold of an 8-fold cross-validation of 301 ADNI CN subjects; 311 baseline AD",
    },
}

#: Why this run's numbers and the paper's differ even for a faithful model (shown with every comparison).
PROTOCOL_DIFFERENCES = [
    "data: the paper uses real ADNI FDG PET (30 test CN, 311 AD, 237 training CN); the default here is a small "
    "synthetic cohort, so only the trends are comparable, not the values",
    "masks: the paper's dementia masks are ClinicaDL's (not published offline); here they are AAL3 stand-ins "
    "(common/atlases/regions.toml) of different sizes",
    "t-test: the paper does not say whether its t-test is paired or two-sample; both are reported here",
    "Table 1 region: the paper does not say over which voxels its metrics are computed; the whole-image "
    "values are compared",
    "simulation: the paper smooths the mask with a Gaussian of sigma 5 without a unit; 5 mm here",
    "SSIM between reconstructions: the paper's 0.993 is one subject (its Fig. 2); here it is the mean over the "
    "test controls",
    "normalisation: the paper does not describe how simulated images are scaled for the network; here each is "
    "min-max normalised with its healthy image's range",
    "model: ClinicaDL's CVAE_3D_half bounds the posterior mean with tanh; common.networks.VAE3d does not",
]


def paper_value(*keys: str) -> float:
    """The number at ``PAPER[k0][k1]...`` (e.g. ``paper_value("dementias", "ad", "mse")``)."""
    entry = PAPER
    for k in keys:
        entry = entry[k]
    return entry["value"]


def paper_dementia_rows(dementias) -> list[dict]:
    """Table 1 rows in the layout of ``dementia_table.csv`` (whole-image means), for the dementias evaluated."""
    return [{"dementia": d, **{f"{m}_image_mean": paper_value("dementias", d, m) for m in _METRICS},
             "source": PAPER_SOURCE} for d in dementias if d in _DEMENTIAS]


def paper_group_rows() -> list[dict]:
    """Table 2 rows in the layout of ``cn_vs_ad_table.csv``."""
    return [{"group": g, **{f"{m}_mean": paper_value("cn_vs_ad", g, m) for m in _METRICS}, "source": PAPER_SOURCE}
            for g in _GROUPS]
