"""The papers' protocols at their own size (``experiment pd|pet --paper``): split sizes, the exact 41/15 split
without validation (final-epoch weights), and the scale label every table carries."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine

from common.app.experiment import PAPER_SCALE, _scale_label, paper_pet_splits, pd_protocol
from common.bundle_support import write_training_summary
from common.data import make_splits
from common.errors import SettingsError
from common.handlers import FinalCheckpointSaver
from tests.helpers import bundle_workflow


def _subjects(n_controls: int, n_patients: int) -> list[dict]:
    return [{"id": f"sub-{i:04d}", "group": "control" if i < n_controls else "patient", "age": 55.0 + i % 25,
             "sex": "F" if i % 3 else "M"} for i in range(n_controls + n_patients)]


def _sizes(manifest: dict) -> dict:
    split = manifest["splits"][0]
    return {part: len(split.get(part, [])) for part in ("train", "val", "calib", "test", "patients")}


def test_pd_protocols_on_the_paper_cohort_give_its_41_15_split_or_carve_validation_and_calibration_from_the_41():
    subjects = _subjects(56, 129)
    name, exact = pd_protocol(paper=True, exact_split=True)
    assert name == "paper_exact" and exact["reference_pool"] == "train" and exact["splits"] == 10
    assert _sizes(make_splits(subjects, n_splits=1, n_val=exact["n_val"], n_calib=exact["n_calib"])) == {
        "train": 41, "val": 0, "calib": 0, "test": 15, "patients": 129}
    name, paper = pd_protocol(paper=True)
    assert name == "paper" and paper["reference_pool"] == "calib"
    sizes = _sizes(make_splits(subjects, n_splits=1, n_val=paper["n_val"], n_calib=paper["n_calib"]))
    assert sizes["test"] == 15 and sizes["train"] + sizes["val"] + sizes["calib"] == 41 and sizes["calib"] > 0


def test_pd_protocol_explicit_values_win_except_where_the_exact_split_fixes_them():
    assert pd_protocol()[1] == {"splits": 10, "n_val": 3, "n_calib": 4, "reference_pool": "calib"}
    assert pd_protocol(paper=True, exact_split=True, splits=2)[1]["splits"] == 2  # a reduced scale
    assert pd_protocol(paper=True, n_calib=2, splits=None)[1]["n_calib"] == 2
    with pytest.raises(SettingsError, match="--exact_split"):
        pd_protocol(exact_split=True)
    with pytest.raises(SettingsError, match="--n_val"):
        pd_protocol(paper=True, exact_split=True, n_val=3)
    with pytest.raises(SettingsError, match="--reference_pool"):
        pd_protocol(paper=True, exact_split=True, reference_pool="calib")


def test_paper_pet_split_is_237_34_30_and_is_kept_on_a_rerun(tmp_path):
    dataset = tmp_path / "dataset.json"
    training = [{**s, "image": [f"{s['id']}/{s['id']}_pet.nii.gz"]} for s in _subjects(301, 7)]
    dataset.write_text(json.dumps({"name": "paper-size PET", "grid": "clinicadl2", "modality": {"0": "PET"},
                                   "numTraining": len(training), "training": training}))
    path = paper_pet_splits(dataset, tmp_path, seed=3)
    manifest = json.loads(path.read_text())
    assert _sizes(manifest) == {"train": 237, "val": 34, "calib": 0, "test": 30, "patients": 7}
    assert len(manifest["splits"]) == 8
    stamp = path.stat().st_mtime_ns
    assert paper_pet_splits(dataset, tmp_path, seed=3) == path and path.stat().st_mtime_ns == stamp
    assert json.loads(paper_pet_splits(dataset, tmp_path, seed=4).read_text()) != manifest  # another draw: replaced


def test_scale_label_names_every_setting_below_the_papers():
    pd = {"n_controls": 56, "n_patients": 129, "splits": 10, "epochs": 160}
    assert _scale_label("pd", "pd_ae", pd) == "paper size"
    assert _scale_label("pd", "normative", {**pd, "epochs": None}) == "paper size"  # nothing trained
    label = _scale_label("pd", "pd_ae", {**pd, "splits": 2, "epochs": 20})
    assert label == "reduced: splits 2 (paper 10), epochs 20 (paper 160)"
    sae = {**pd, "epochs": 30, "pairs_per_epoch": 45000}
    assert _scale_label("pd", "pd_sae", sae) == "reduced: pairs_per_epoch 45000 (paper 300000)"
    pet = {"n_controls": 301, "n_patients": 311, "train": 237, "val": 34, "test": 30, "epochs": 12}
    assert _scale_label("pet", "ad_vae3d", pet) == f"reduced: epochs 12 (paper {PAPER_SCALE['pet']['epochs']})"
    short = {**pet, "epochs": 300, "batch_size": 2, "learning_rate": 1e-3}
    expected = "reduced: batch_size 2 (paper 24), learning_rate 0.001 (paper 1e-05)"
    assert _scale_label("pet", "ad_vae3d", short) == expected


def test_final_checkpoint_saver_writes_the_last_epochs_weights_once(tmp_path):
    model = torch.nn.Linear(3, 2)
    saves = []

    def step(engine, _):
        with torch.no_grad():
            model.weight.add_(1.0)  # weights change every iteration: the file must hold the last ones

    trainer = Engine(step)
    saver = FinalCheckpointSaver(tmp_path, {"model": model})
    saver.attach(trainer)
    original_save = saver.save
    saver.save = lambda: saves.append(trainer.state.epoch) or original_save()
    trainer.run(range(2), max_epochs=3)
    assert saves == [3] and saver.best_epoch == 3
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.testing.assert_close(state["weight"], model.weight.detach())

    summary = json.loads(write_training_summary(trainer, None, tmp_path).read_text())
    assert summary["model_selection"] == "final epoch (no validation)" and summary["model_epoch"] == 3
    assert summary["best_val_epoch"] == -1 and summary["best_val_metric"] is None


@pytest.mark.slow  # two tiny trainings and an evaluation through the bundles' configs (~40 s)
@pytest.mark.parametrize("bundle", ["pd_ae", "pd_sae"])
def test_bundle_trains_without_validation_controls_and_evaluates_on_the_training_pool(bundle, tiny_bundle_cohort,
                                                                                         tmp_path):
    cohort = tiny_bundle_cohort("pd")
    overrides = {"dataset_dir": str(cohort), "bundle_root": str(tmp_path), "n_val": 0, "n_calib": 0, "epochs": 2,
                 "n_slices": 4, "progress": False,
                 **({"batch_size": 8} if bundle == "pd_ae" else {"pairs_per_epoch": 450, "val_pairs": 450})}
    train = bundle_workflow(bundle, "train.json", "train", **overrides)
    train.initialize()
    assert train.check_properties() == []
    train.run()
    train.finalize()
    summary = json.loads((tmp_path / "models" / "train_summary.json").read_text())
    assert summary["epochs"] == 2 and summary["model_epoch"] == 2 and summary["best_val_epoch"] == -1
    network = train.parser.get_parsed_content("network")
    saved = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    for name, value in network.state_dict().items():  # the final weights, not an earlier epoch's
        torch.testing.assert_close(saved[name], value.cpu())

    evaluate = bundle_workflow(bundle, ["train.json", "evaluate.json"], "infer", n_bootstrap=20, num_workers=0,
                               reference_pool="train", **overrides)
    evaluate.initialize()
    evaluate.run()
    evaluate.finalize()
    result = json.loads((tmp_path / "eval" / "split_0" / "pd_evaluation.json").read_text())
    # 7 controls: 2 test (round(7 * 15 / 56)), the other 5 train and set the threshold; 2 patients
    assert result["reference_pool"]["n"] == 5 and result["test"]["n_controls"] == 2


def _fake_pd_run(root, model: str, per_split: list[dict], protocol: dict, timing: dict):
    from common.paths import eval_dir, split_root

    for index, metrics in enumerate(per_split):
        folder = split_root(root, index)
        eval_dir(folder, index).mkdir(parents=True)
        (eval_dir(folder, index) / "pd_evaluation.json").write_text(json.dumps({"metrics": metrics}))
        (folder / "timing.json").write_text(json.dumps(timing))
    (root / "protocol.json").write_text(json.dumps({"kind": "pd", "model": model, **protocol}))
    return root


def test_paired_comparison_matches_scipy_and_hand_values():
    from common.app.reproduction import paired_comparison

    a = {i: {"m": v} for i, v in enumerate([0.70, 0.72, 0.65, 0.80, 0.60])}
    b = {i: {"m": v} for i, v in enumerate([0.60, 0.70, 0.62, 0.70, 0.55])}
    row = paired_comparison(a, b, "m")
    assert row["n"] == 5 and row["mean_diff"] == pytest.approx(0.06)
    assert row["wilcoxon_p"] == pytest.approx(2 / 32)  # all 5 differences positive: exact two-sided p = 2 / 2^5
    assert row["ttest_p"] < 0.05
    assert paired_comparison({0: {"m": 1.0}, 1: {"m": 2.0}}, {0: {"m": 0.5}, 1: {"m": 1.0}}, "m")["wilcoxon_p"] is None
    assert paired_comparison(a, {7: {"m": 0.1}}, "m")["n"] == 0  # no split in common


def test_extrapolation_scales_epochs_training_set_and_evaluated_subjects():
    from common.app.reproduction import extrapolated_seconds

    protocol = {"kind": "pd", "model": "pd_ae", "train": 32, "test": 15, "n_patients": 129}
    times = extrapolated_seconds(protocol, [{"train_s": 200.0, "epochs": 20, "evaluate_s": 60.0},
                                            {"train_s": 240.0, "epochs": 20, "evaluate_s": 80.0}])
    assert times["epoch_s"] == pytest.approx(11.0) and times["evaluate_s"] == pytest.approx(70.0)
    # 10 splits x (160 epochs x 11 s x 41/32 training controls + 70 s x 144/144 subjects)
    assert times["paper_total_s"] == pytest.approx(10 * (160 * 11.0 * 41 / 32 + 70.0))
    sae = extrapolated_seconds({"kind": "pd", "model": "pd_sae", "train": 32, "test": 15, "n_patients": 129,
                                "pairs_per_epoch": 30000}, [{"train_s": 100.0, "epochs": 2, "evaluate_s": 10.0}])
    assert sae["paper_total_s"] == pytest.approx(10 * (30 * 50.0 * 10 + 10.0))  # 300,000 / 30,000 pairs
    baseline = extrapolated_seconds({"kind": "pd", "model": "normative", "train": 32, "test": 5, "n_patients": 43},
                                    [{"evaluate_s": 12.0}])
    assert baseline["paper_total_s"] == pytest.approx(10 * 12.0 * 144 / 48)


def test_reproduction_report_puts_the_papers_gmeans_beside_the_runs_and_labels_the_scale(tmp_path):
    from common.app.reproduction import write_reproduction_report

    protocol = {"protocol": "paper", "scale": "reduced: splits 3 (paper 10)", "train": 32, "val": 3, "calib": 6,
                "test": 15, "n_patients": 129, "epochs": 20, "splits": 3}
    ae = [{"whole_brain_paper_gmean": g, "white_matter_paper_gmean": g, "whole_brain_auc": 0.7, "putamen_auc": 0.9}
          for g in (0.6, 0.7, 0.8)]
    sae = [{**m, "whole_brain_paper_gmean": m["whole_brain_paper_gmean"] - 0.1} for m in ae]
    timing = {"train_s": 100, "epochs": 20, "evaluate_s": 30}
    runs = {"pd_ae": _fake_pd_run(tmp_path / "ae", "pd_ae", ae, protocol, timing),
            "pd_sae": _fake_pd_run(tmp_path / "sae", "pd_sae", sae, {**protocol, "splits": 4}, timing)}
    text = write_reproduction_report(tmp_path / "report.md", runs).read_text()
    assert "| pd_ae | 3 | 70.0 ± 10.0 | 65.3 ± 7.5 | 70.0 ± 10.0 | 66.2 ± 6.7 |" in text
    assert "| pd_sae | 3 | 60.0 ± 10.0 | 66.9 ± 5.8 |" in text
    assert text.count("reduced: splits 3 (paper 10)") == 2
    assert text.count("splits finished") == 1 and "3 of 4 splits finished" in text  # pd_sae stopped early
    assert "| pd_ae − pd_sae | whole_brain paper_gmean | 3 | 0.100 | 0.000 |" in text
    assert "| putamen | 0.900 ± 0.000 | 0.900 ± 0.000 |" in text


def test_a_pool_of_train_and_val_is_the_training_controls_when_the_split_has_no_validation(make_cohort):
    from common.data import pool_subjects, split_subjects
    from common.errors import InputDataError

    dataset = make_cohort(n_controls=9, n_patients=2)
    train = split_subjects(dataset, "train", n_splits=1, n_val=0, n_calib=0)
    assert [s["id"] for s in pool_subjects(dataset, ["train", "val"], n_splits=1, n_val=0)] == [s["id"] for s in train]
    assert len(train) == 9 - 2  # round(9 * 15 / 56) = 2 test controls
    with pytest.raises(InputDataError, match="no val controls"):
        pool_subjects(dataset, "val", n_splits=1, n_val=0)
