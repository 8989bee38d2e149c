"""Synthetic cohorts: layout, validity as user data, determinism, demographics and planted effects."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from common.atlases import load_atlas
from common.data import load_checked, read_dataset, validate_dataset
from common.data.synthetic import PDCohortConfig, PETCohortConfig, make_pd_cohort, make_pet_cohort
from common.data.synthetic.base import SubjectSpec, draw_subjects
from common.data.synthetic.pd import PDTemplate, render_pd_subject
from common.data.synthetic.pet import PETTemplate, render_pet_subject


@pytest.fixture(scope="module")
def pd_cohort(tmp_path_factory):
    folder, seconds = make_pd_cohort(tmp_path_factory.mktemp("pd") / "cohort", PDCohortConfig(2, 2, seed=3),
                                     progress=False)
    return read_dataset(folder / "dataset.json"), seconds


@pytest.fixture(scope="module")
def pet_cohort(tmp_path_factory):
    folder, seconds = make_pet_cohort(tmp_path_factory.mktemp("pet") / "cohort", PETCohortConfig(2, 2, seed=3),
                                      progress=False)
    return read_dataset(folder / "dataset.json"), seconds


@pytest.fixture(scope="module")
def pd_template():
    return PDTemplate(load_atlas("spm1p5"))


@pytest.fixture(scope="module")
def pet_template():
    return PETTemplate(load_atlas("clinicadl2"))


def test_pd_cohort_is_valid_user_data(pd_cohort):
    ds, seconds = pd_cohort
    assert seconds > 0
    assert ds.grid.name == "spm1p5" and ds.modalities == ["FA", "MD"]
    assert [s["group"] for s in ds.subjects] == ["control", "control", "patient", "patient"]
    report = validate_dataset(ds, progress=False)
    assert report.n_files == 4 * 2 + 2  # FA + MD each, plus the patients' anomaly maps
    assert all("anomaly" in s for s in ds.patients) and not any("anomaly" in s for s in ds.controls)
    # MONAI's own reader understands the file too.
    datalist = load_decathlon_datalist(ds.path, is_segmentation=False, data_list_key="training")
    assert len(datalist) == 4 and len(datalist[0]["image"]) == 2


def test_pet_cohort_is_valid_user_data_and_suvr_normalised(pet_cohort):
    ds, _ = pet_cohort
    assert ds.grid.name == "clinicadl2" and ds.modalities == ["PET"]
    validate_dataset(ds, progress=False)
    atlas = load_atlas("clinicadl2")
    reference = atlas.mask("cerebellum") | atlas.mask("pons")
    for subject in ds.subjects:
        image, affine = load_checked(subject["image"][0], ds.grid, "PET")
        np.testing.assert_allclose(affine, atlas.affine)
        assert image[reference].mean() == pytest.approx(1.0, abs=1e-4)
        assert 1.0 < image[atlas.gm > 0.7].mean() < 1.6  # cortical SUVR above the reference region
    for patient in ds.patients:
        assert 15.0 <= patient["hypometabolism"]["degree"] <= 35.0


def test_rerun_reuses_and_other_config_refuses_to_overwrite(pd_cohort):
    ds, _ = pd_cohort
    _folder, seconds = make_pd_cohort(ds.root, PDCohortConfig(2, 2, seed=3), progress=False)
    assert seconds == 0.0, "same configuration: reused"
    with pytest.raises(FileExistsError, match="overwrite"):
        make_pd_cohort(ds.root, PDCohortConfig(2, 2, seed=4), progress=False)


def test_pd_subject_is_deterministic_and_seed_dependent(pd_template):
    subject = SubjectSpec(0, "sub-0001", "patient", 60.0, "F")
    a = render_pd_subject(pd_template, PDCohortConfig(seed=1), subject)
    b = render_pd_subject(pd_template, PDCohortConfig(seed=1), subject)
    c = render_pd_subject(pd_template, PDCohortConfig(seed=2), subject)
    for key in ("FA", "MD", "anomaly"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["FA"], c["FA"])


def test_pd_maps_in_range_and_zero_outside_the_head(pd_template):
    maps = render_pd_subject(pd_template, PDCohortConfig(), SubjectSpec(1, "s", "control", 70.0, "M"))
    atlas = pd_template.atlas
    from scipy import ndimage

    head = ndimage.binary_dilation(atlas.brain, iterations=6)  # deformation + head scaling: a few mm
    for key in ("FA", "MD"):
        assert maps[key].min() >= 0 and maps[key].max() <= 1
        assert not maps[key][~head].any()
    wm, gm = atlas.mask("white_matter"), atlas.region_mask("frontal")
    assert 0.3 < maps["FA"][wm].mean() < 0.55, "white-matter FA of healthy adults"
    assert maps["FA"][gm].mean() < maps["FA"][wm].mean()
    assert maps["MD"][atlas.csf > 0.9].mean() > 2 * maps["MD"][wm].mean(), "CSF diffuses freely"


def test_patient_is_its_control_twin_plus_the_planted_change(pd_template):
    """Separate random streams: FA_patient / FA_control = 1 - effect where the saved map says so."""
    subject = SubjectSpec(5, "s", "patient", 62.0, "F")
    cfg = PDCohortConfig(effect_size=0.08)
    patient = render_pd_subject(pd_template, cfg, subject)
    control = render_pd_subject(pd_template, cfg, replace(subject, group="control"))
    effect = patient["anomaly"]
    changed = effect > 0.02
    assert changed.sum() > 200
    np.testing.assert_allclose((patient["FA"][changed] / control["FA"][changed]).mean(), (1 - effect[changed]).mean(),
                               atol=0.004)
    np.testing.assert_allclose((patient["MD"][changed] / control["MD"][changed]).mean(), (1 + effect[changed]).mean(),
                               atol=0.004)
    assert effect.max() <= 0.08 * 1.5 + 1e-6
    untouched = effect == 0
    assert np.abs(patient["FA"][untouched] - control["FA"][untouched]).mean() < 1e-4
    # Changes lie in white matter and the PD target nuclei.
    atlas = pd_template.atlas
    targets = atlas.wm > 0.3
    for region in ("sn", "putamen", "gpi", "stn"):
        targets |= atlas.region_mask(region)
    from scipy import ndimage

    assert (ndimage.binary_dilation(targets, iterations=3)[changed]).mean() > 0.95


def test_heterogeneity_makes_the_change_patchy_and_leaves_controls_alone(pd_template):
    """h > 0 multiplies the change by max(0, 1 + h f): same regions, about the same mean, far more voxel-scale
    variation (measured as the Laplacian's energy inside the change); controls are bit-identical."""
    from scipy import ndimage

    subject = SubjectSpec(5, "s", "patient", 62.0, "F")
    smooth = render_pd_subject(pd_template, PDCohortConfig(effect_size=0.1), subject)["anomaly"]
    patchy = render_pd_subject(pd_template, PDCohortConfig(effect_size=0.1, heterogeneity=1.0), subject)["anomaly"]
    core = smooth > 0.03
    assert core.sum() > 200
    assert ((patchy > 0) <= ndimage.binary_dilation(smooth > 0, iterations=2)).all()
    ratio = patchy[core].mean() / smooth[core].mean()
    assert 0.85 < ratio < 1.25, ratio
    roughness = [np.abs(ndimage.laplace(a))[core].mean() / a[core].mean() for a in (smooth, patchy)]
    assert roughness[1] > 3 * roughness[0], roughness
    control = replace(subject, group="control")
    for h in (0.0, 1.0):
        twin = render_pd_subject(pd_template, PDCohortConfig(effect_size=0.1, heterogeneity=h), control)
        np.testing.assert_array_equal(twin["FA"], render_pd_subject(pd_template, PDCohortConfig(), control)["FA"])


def test_pet_patient_hypometabolism_in_the_ad_mask(pet_template):
    subject = SubjectSpec(2, "s", "patient", 75.0, "M")
    cfg = PETCohortConfig()
    patient = render_pet_subject(pet_template, cfg, subject)
    control = render_pet_subject(pet_template, cfg, replace(subject, group="control"))
    atlas = pet_template.atlas
    ad, rest = atlas.mask("ad"), atlas.brain & ~atlas.mask("ad")
    ratio = patient["PET"][ad].mean() / control["PET"][ad].mean()
    assert ratio == pytest.approx(1 - patient["anomaly"][ad].mean(), abs=0.015)
    healthiness = lambda image: image[ad].mean() / image[rest].mean()  # noqa: E731
    assert healthiness(patient["PET"]) < healthiness(control["PET"]) - 0.05


def test_demographics_follow_the_paper():
    subjects = draw_subjects(2000, 0, seed=0, age_mean=61, age_sd=9, female_fraction=0.4)
    ages = np.array([s.age for s in subjects])
    assert abs(ages.mean() - 61) < 0.6 and abs(ages.std() - 9) < 0.6
    small = draw_subjects(10, 15, seed=1, age_mean=61, age_sd=9, female_fraction=0.4)
    assert sum(s.sex == "F" for s in small if s.group == "control") == 4
    assert sum(s.sex == "F" for s in small if s.group == "patient") == 6
    assert len({s.id for s in small}) == 25
    with pytest.raises(ValueError, match="control"):
        draw_subjects(0, 3, seed=0, age_mean=61, age_sd=9, female_fraction=0.4)


@pytest.mark.parametrize("seed_index", [3, 5, 11])
def test_locations_confine_the_change_and_leave_the_default_draws_alone(pd_template, seed_index):
    """locations='nuclei' with one target nucleus changes that nucleus only (every patient carries it);
    'white_matter' changes white matter only; the default still draws what 'mixed' with all nuclei draws."""
    from scipy import ndimage

    atlas = pd_template.atlas
    subject = SubjectSpec(seed_index, "s", "patient", 62.0, "F")
    nuclei = render_pd_subject(pd_template, PDCohortConfig(effect_size=0.15, locations="nuclei",
                                                           target_nuclei=("putamen",)), subject)
    changed = nuclei["anomaly"] > 0.01
    assert changed.sum() > 50 and nuclei["info"]["wm_blobs"] == 0
    assert all(n.startswith("putamen_") for n in nuclei["info"]["nuclei"])
    assert ndimage.binary_dilation(atlas.region_mask("putamen"), iterations=3)[changed].all()
    wm = render_pd_subject(pd_template, PDCohortConfig(effect_size=0.15, locations="white_matter"), subject)
    assert wm["info"]["nuclei"] == [] and wm["info"]["wm_blobs"] >= 2
    wm_changed = wm["anomaly"] > 0.01
    assert ndimage.binary_dilation(atlas.wm > 0.3, iterations=3)[wm_changed].mean() > 0.97
    mixed = render_pd_subject(pd_template, PDCohortConfig(effect_size=0.15, locations="mixed"), subject)
    default = render_pd_subject(pd_template, PDCohortConfig(effect_size=0.15), subject)
    np.testing.assert_array_equal(mixed["anomaly"], default["anomaly"])
    with pytest.raises(ValueError, match="locations"):
        PDCohortConfig(locations="cortex")
    with pytest.raises(ValueError, match="target_nuclei"):
        PDCohortConfig(target_nuclei=("hippocampus",))


@pytest.mark.parametrize("seed_index", [3, 11])
def test_fixed_change_is_exactly_the_effect_size_on_both_sides(pd_template, seed_index):
    """fixed_change=True: both putamina of every patient carry exactly effect_size before the subject's warp and
    smoothing (the change map's maximum is 0.15 whatever the patient's drawn spread), and the FA inside the nucleus
    core drops by that fraction relative to the same subject rendered as a control."""
    subject = SubjectSpec(seed_index, "s", "patient", 62.0, "F")
    cfg = PDCohortConfig(effect_size=0.15, locations="nuclei", target_nuclei=("putamen",), fixed_change=True)
    patient = render_pd_subject(pd_template, cfg, subject)
    assert patient["info"]["nuclei"] == ["putamen_L", "putamen_R"] and patient["info"]["severity"] == 0.15
    assert patient["anomaly"].max() == pytest.approx(0.15, abs=0.005)
    control = render_pd_subject(pd_template, cfg, SubjectSpec(seed_index, "s", "control", 62.0, "F"))
    core = patient["anomaly"] > 0.149
    assert core.sum() > 20
    for side in ("putamen_L", "putamen_R"):  # both sides changed
        side_core = core & pd_template.atlas.mask(side)
        assert side_core.sum() > 5
    # Noise is the same draw for both renders (subject stream), so the change is the only difference.
    np.testing.assert_allclose(np.median(patient["FA"][core] / control["FA"][core]), 0.85, atol=0.03)
    varied = render_pd_subject(pd_template, PDCohortConfig(effect_size=0.15, locations="nuclei",
                                                           target_nuclei=("putamen",)), subject)
    assert varied["info"]["severity"] != 0.15


@pytest.mark.slow
def test_synth_pd_fixed_change_flag_reaches_the_cohort(tmp_path):
    """`synth pd --fixed_change true --nuclei putamen --effect_size 0.15`: every patient's recorded severity is 0.15
    and both putamina changed; the manifest records the setting."""
    import json

    from common.app.commands import main

    out = tmp_path / "c"
    main(["synth", "pd", "--out", str(out), "--n_controls", "1", "--n_patients", "2", "--effect_size", "0.15",
          "--locations", "nuclei", "--nuclei", "putamen", "--fixed_change", "--progress", "false"])
    subjects = json.loads((out / "dataset.json").read_text())["training"]
    patients = [s for s in subjects if s["group"] == "patient"]
    assert len(patients) == 2
    for p in patients:
        assert p["effect"]["severity"] == 0.15 and p["effect"]["nuclei"] == ["putamen_L", "putamen_R"]
    assert json.loads((out / "manifest.json").read_text())["inputs"]["config"]["fixed_change"] is True
