"""The papers' published numbers, for side-by-side tables: the AD paper's (PET) first, then the PD paper's (DTI).

One place for every number the PET evaluation puts next to its own: each entry is ``{"value", "source"}``,
the source saying where in the paper it stands and what it measures. They come from real ADNI data and
ClinicaDL's pipeline, so they are labelled :data:`PAPER_SOURCE` ("paper (real ADNI)") wherever they are
shown and never mixed into this run's statistics; :data:`PROTOCOL_DIFFERENCES` lists why the two need not
agree even for a perfectly reproduced model.
"""

from __future__ import annotations

__all__ = [
    "PAPER",
    "PAPER_SOURCE",
    "PD_PAPER_GMEAN",
    "PD_PAPER_SOURCE",
    "PD_PROTOCOL_DIFFERENCES",
    "PROTOCOL_DIFFERENCES",
    "RUN_SOURCE",
    "paper_dementia_rows",
    "paper_group_rows",
    "paper_value",
    "pd_paper_gmean",
]

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


# ------------------------------------------------------------------------------------------ PD paper

#: Label of the PD paper's numbers (PPMI) wherever a table shows them.
PD_PAPER_SOURCE = "paper (real PPMI)"

#: The PD paper's g-means (%, mean +- sd over 10 splits; operating point chosen on each split's test set):
#: model -> ROI -> (mean, sd).
PD_PAPER_GMEAN = {
    "pd_ae": {"whole_brain": (65.3, 7.5), "white_matter": (66.2, 6.7)},
    "pd_sae": {"whole_brain": (66.9, 5.8), "white_matter": (68.2, 4.6)},
}
PD_PAPER_GMEAN_SOURCE = ("results, per-ROI g-means of the spatial AE and the siamese patch AE: mean +- sd over 10 "
                         "bootstrap splits of 56 PPMI controls (41 train / 15 test) against 129 de novo PD patients, "
                         "threshold q = 0.98 of the training controls' errors, operating point on the test set")

#: Why this project's PD tables and the paper's differ.
PD_PROTOCOL_DIFFERENCES = [
    "data: real PPMI DTI (56 controls, 129 de novo PD patients) in the paper; synthetic FA/MD cohorts here, whose "
    "planted changes have a known size and place",
    "atlas: Neuromorphometrics and MNI PD25 in the paper; AAL3, HCPEx and an approximate STN ellipsoid here",
    "threshold pool: the paper's tau comes from the training controls, whose errors the model fitted; here the "
    "default pool is held-out calibration controls (--reference_pool train gives the paper's)",
    "scoring: raw errors in the paper; errors standardised against controls' errors by default here "
    "(--scoring raw gives the paper's)",
    "splits: 41 train / 15 test and no validation set in the paper; here test, validation and calibration "
    "controls are scaled to the cohort (n_val, n_calib) unless set to the paper's",
    "schedules: 160 AE epochs and 30 SAE epochs of 300,000 pairs in the paper; shorter CPU schedules in the demo",
]


def pd_paper_gmean(model: str, roi: str) -> tuple[float, float] | None:
    """The paper's (mean, sd) g-mean in % for ``model`` (``pd_ae``/``pd_sae``) and ``roi``, or None."""
    return PD_PAPER_GMEAN.get(model, {}).get(roi)
