"""The HTML report: tables carry the CSV's numbers, figures are embedded byte for byte, bad input writes nothing."""

from __future__ import annotations

import base64
import csv
import re
from html.parser import HTMLParser

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from common.app.report import ReportSection, read_csv_rows, write_html_report


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self.images, self.headings, self._in_cell = [], [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "td":
            self._in_cell = True
            self.cells.append("")
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells[-1] += data


def _png(path):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path)
    plt.close(fig)
    return path


def test_report_embeds_figures_and_renders_csv_rows(tmp_path):
    table = tmp_path / "rois.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([["model", "roi", "auc"], ["pd_ae", "sn", "0.7734"], ["pd_sae", "sn", "0.5"],
                          ["pd_ae", "putamen", "0.0001234"]])
    rows = read_csv_rows(table, columns=["roi", "auc"], where={"model": "pd_ae"})
    assert rows == [{"roi": "sn", "auc": "0.7734"}, {"roi": "putamen", "auc": "0.0001234"}]
    figure = _png(tmp_path / "roc.png")
    page = write_html_report(tmp_path / "out" / "report.html", "Demo <results>",
                             [ReportSection("PD", ["AE & SAE"], [("AUC", rows)], [("ROC", figure)])])
    text = page.read_text()
    assert "Demo &lt;results&gt;" in text and "AE &amp; SAE" in text
    parsed = _Collector()
    parsed.feed(text)
    assert parsed.cells == ["sn", "0.773", "putamen", "0.000123"]
    assert len(parsed.images) == 1
    assert base64.b64decode(parsed.images[0].split(",", 1)[1]) == figure.read_bytes()


def test_missing_figure_or_column_fails_before_writing(tmp_path):
    target = tmp_path / "report.html"
    with pytest.raises(FileNotFoundError, match=re.escape("nope.png")):
        write_html_report(target, "t", [ReportSection("s", figures=[("x", tmp_path / "nope.png")])])
    assert not target.exists() and list(tmp_path.iterdir()) == []
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no column"):
        read_csv_rows(table, columns=["a", "c"])


# ------------------------------------------------------------------------------- the demo's detection section

def test_compare_intervals_needs_disjoint_intervals():
    from common.app.report import compare_intervals, format_interval

    assert compare_intervals(0.61, 0.9, 0.2, 0.6) == "better"
    assert compare_intervals(0.1, 0.39, 0.4, 0.8) == "worse"
    assert compare_intervals(0.5, 0.9, 0.2, 0.5) == "no clear difference"  # touching intervals overlap
    assert compare_intervals("", 0.9, 0.2, 0.5) is None
    assert format_interval("0.6", "0.25", "0.9") == "0.600 [0.25, 0.90]"
    assert format_interval(0.0079, 0.0049, 0.0105, scale=100, digits=2, bound_digits=2) == "0.79 [0.49, 1.05]"
    assert format_interval("") == ""


def test_verdict_sentence_names_where_a_model_wins_and_loses():
    from common.app.report import verdict_sentence

    metric = {"AUC": ("lo", "hi")}
    model = [{"roi": "sn", "lo": 0.7, "hi": 0.9}, {"roi": "wm", "lo": 0.1, "hi": 0.3},
             {"roi": "gpi", "lo": 0.4, "hi": 0.6}, {"roi": "stn", "lo": "", "hi": ""}]
    ref = [{"roi": "sn", "lo": 0.4, "hi": 0.6}, {"roi": "wm", "lo": 0.4, "hi": 0.6},
           {"roi": "gpi", "lo": 0.5, "hi": 0.7}, {"roi": "stn", "lo": 0.1, "hi": 0.2}]
    sentence = verdict_sentence("pd_ae", model, ref, "roi", metric, label=str.upper)
    assert "better in AUC (SN)" in sentence and "worse in AUC (WM)" in sentence
    assert "no clear difference in 1 of 3 comparisons" in sentence  # stn has no interval: not counted
    assert "better nowhere; worse nowhere" in verdict_sentence("m", model[2:3], ref[2:3], "roi", metric)
    assert "no pair of intervals" in verdict_sentence("m", model, [], "roi", metric)


def _write_rows(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)
    return path


_ROIS = ("whole_brain", "subcortical", "white_matter", "frontal", "sn", "putamen", "gpi", "stn")


def _pd_detection(model, auroc_by_roi):
    """detection.csv rows of a PD model: subject AUROC (CI +- 0.05) from ``auroc_by_roi``, the rest fixed."""
    from common.evaluation.detection import detection_fields

    rows = []
    for k, roi in enumerate(_ROIS):
        auc = auroc_by_roi.get(roi, 0.6)
        row = dict.fromkeys(detection_fields(), "")
        row.update({"roi": roi, "n_voxels": 100 + k, "voxel_auroc": "" if roi == "stn" else 0.6 + k / 100,
                    "voxel_ap": "" if roi == "stn" else 0.1, "dice_fpr1": "" if roi == "stn" else 0.05,
                    "test_fpr1": 0.0079, "test_fpr1_ci_low": 0.0049, "test_fpr1_ci_high": 0.0105,
                    "oracle_dice": "" if roi == "stn" else 0.3, "subject_auroc": auc,
                    "subject_auroc_ci_low": auc - 0.05, "subject_auroc_ci_high": auc + 0.05, "subject_ap": 0.8,
                    "subject_ap_ci_low": 0.7, "subject_ap_ci_high": 0.9})
        rows.append({"model": model, "scoring": "zscore", **row})
    return rows


def _fabricate_demo(out):
    """A demo output folder without training: split-0 files of pd_ae, pd_sae and the baseline, the comparison,
    ad_vae3d's PET summary and the cohort figure."""
    import json

    from common.evaluation.pd import ROW_FIELDS

    aurocs = {"pd_ae": {"sn": 0.9, "white_matter": 0.3}, "pd_sae": {"putamen": 0.85}, "normative": {}}
    for model, by_roi in aurocs.items():
        folder = out / "experiments" / model / "split_00" / "eval" / "split_0"
        _write_rows(folder / "detection.csv", _pd_detection(model, by_roi))
        best = {("pd_sae", "frontal")}  # split-0 AUC 0.95 [0.9, 1.0] against 0.6 [0.4, 0.7] everywhere else
        _write_rows(folder / "roi_results.csv", [
            {"model": model, **dict.fromkeys(ROW_FIELDS, 0.5), "roi": roi, "group": "macro", "approximate": False,
             "n_voxels": 10, **({"auc": 0.95, "auc_ci_low": 0.9, "auc_ci_high": 1.0} if (model, roi) in best
                                else {"auc": 0.6, "auc_ci_low": 0.4, "auc_ci_high": 0.7})}
            for roi in _ROIS])
    _write_rows(out / "experiments" / "compare" / "split_aggregates.csv", [
        {"model": m, "roi": roi, "n_splits": 1, "auc_mean": 0.6, "auc_sd": "", "paper_gmean_mean": 0.612,
         "paper_gmean_sd": "", "nested_gmean_mean": 0.5, "nested_gmean_sd": ""} for m in aurocs for roi in _ROIS])
    voxel = [{"model": m, "mask": "ad", "degree": d, "n": 3, "auroc_mean": a, "auroc_sd": sd,
              "average_precision_mean": 0.3, "average_precision_sd": 0.01, "prevalence_mean": 0.28,
              "dice_fpr_0.01_mean": 0.05, "dice_fpr_0.01_sd": 0.01, "dice_oracle_mean": 0.45}
             for m, d, a, sd in (("ad_vae3d", 0.0, 0.2, 0.01), ("normative", 0.0, 0.9, 0.01),  # degree 0: not judged
                                 ("ad_vae3d", 30.0, 0.70, 0.05), ("normative", 30.0, 0.55, 0.05),
                                 ("ad_vae3d", 50.0, 0.90, 0.01), ("normative", 50.0, 0.50, 0.01))]
    subject = [{"model": m, "comparison": "CN vs AD", "negatives": "test controls", "positives": "patients",
                "n_negative": 3, "n_positive": 2, "auroc": a, "auroc_ci_low": a - 0.1, "auroc_ci_high": a + 0.1,
                "average_precision": 0.7, "ap_ci_low": 0.6, "ap_ci_high": 0.8}
               for m, a in (("ad_vae3d", 0.4), ("normative", 0.75))]
    thresholds = [{"model": m, "target_fpr": 0.01, "threshold": 1.0, "calibration_pool": "validation controls",
                   "n_calibration": 3, "calibration_fpr": 0.0099, "n_test_controls": 3, "test_fpr": 0.0143,
                   "test_fpr_ci_low": 0.0022, "test_fpr_ci_high": 0.0284} for m in ("ad_vae3d", "normative")]
    pet = out / "experiments" / "ad_vae3d" / "split_00" / "eval" / "split_0" / "summary.json"
    _write_rows(pet.parent / "sweep_stats.csv", [
        {"degree": d, "effective_reduction_uptake": d / 200, "mse_normalised_mean": 1 - d / 300,
         "mse_normalised_sd": 0.07, "t": -20.0, "p_bonferroni": 0.01, "significant": True} for d in (10, 30, 50)])
    _write_rows(pet.parent / "dementia_table.csv", [{"source": "this run", "dementia": "ad", "mse_image_mean": 0.004}])
    pet.write_text(json.dumps({"model": "ad_vae3d", "settings": {"sweep_mask": "ad"}, "voxel_detection": voxel,
                               "voxel_thresholds": thresholds, "subject_detection": subject}))
    (out / "figures").mkdir(parents=True)
    _png(out / "figures" / "cohorts_overview.png")
    return out


class _Tables(HTMLParser):
    """Every table of the page as (caption, header, rows)."""

    def __init__(self):
        super().__init__()
        self.tables, self._text, self._row = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"caption": "", "header": [], "rows": []})
        elif tag in ("caption", "th", "td"):
            self._text = ""
        elif tag == "tr":
            self._row = []

    def handle_endtag(self, tag):
        if tag == "caption":
            self.tables[-1]["caption"] = self._text
        elif tag in ("th", "td"):
            self._row.append(self._text)
        elif tag == "tr":
            key = "header" if not self.tables[-1]["header"] else "rows"
            self.tables[-1][key] = self._row if key == "header" else self.tables[-1]["rows"] + [self._row]
        if tag in ("caption", "th", "td"):
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text += data

    def find(self, start):
        return [t for t in self.tables if t["caption"].startswith(start)]


def test_demo_report_detection_section_from_fabricated_results(tmp_path, capsys):
    import json

    from scipy import stats

    from common.app.demo import finish_demo

    out = _fabricate_demo(tmp_path / "demo")
    planted = ["white_matter", "sn", "putamen", "gpi", "stn"]
    summary = finish_demo(out, {"pd_ae_seconds": 12.5, "pd_planted_rois": planted})
    page = _Tables()
    page.feed((out / "report.html").read_text())

    pd_ae = page.find("pd_ae: PD detection")[0]
    assert pd_ae["header"][0] == "ROI" and not any("_" in h for h in pd_ae["header"])  # readable, not raw columns
    assert "oracle Dice (oracle threshold)" in pd_ae["header"] and "subject AUROC [95 % CI]" in pd_ae["header"]
    # the summary ROIs in order, frontal left out (neither summary nor planted)
    assert [r[0] for r in pd_ae["rows"]] == ["Whole brain", "WM", "Subcortical", "SN", "Putamen", "GPi", "STN"]
    col = dict(zip(pd_ae["header"], zip(*pd_ae["rows"])))
    assert col["changes planted"][1] == "yes" and col["subject AUROC [95 % CI]"][3] == "0.900 [0.85, 0.95]"
    assert col["FPR @1 % on test controls, % [95 % CI]"][0] == "0.79 [0.49, 1.05]"
    assert col["voxel AUROC"][6] == "" and col["voxel AUROC"][0] == "0.6"
    # the sentence follows the intervals: SN 0.85-0.95 vs 0.55-0.65 (better), WM 0.25-0.35 vs 0.55-0.65 (worse)
    assert "better in subject AUROC (SN)" in pd_ae["caption"] and "worse in subject AUROC (WM)" in pd_ae["caption"]
    assert "no clear difference in 12 of 14 comparisons" in pd_ae["caption"]
    assert "better in subject AUROC (Putamen); worse nowhere" in page.find("pd_sae: PD detection")[0]["caption"]
    assert page.find("normative: PD detection")

    # PET voxel: 95 % t-intervals of the mean over 3 controls, so 0.70 vs 0.55 (sd 0.05) overlap, 0.90 vs 0.50 do not
    half = stats.t.ppf(0.975, 2) * 0.05 / 3 ** 0.5
    assert 0.70 - half < 0.55 + half and 0.70 - 0.05 > 0.55 + 0.05  # plain mean +- sd would have called it
    voxel = page.find("PET voxel detection")[0]
    assert "better in voxel AUROC (ad 50 %); worse nowhere" in voxel["caption"]
    assert "no clear difference in 3 of 4 comparisons" in voxel["caption"]  # degree 0 is not judged
    assert voxel["rows"][2][4] == "0.700 ± 0.050"
    subject = page.find("PET subject detection")[0]
    assert "better nowhere; worse in subject AUROC (CN vs AD)" in subject["caption"]
    assert page.find("PET voxel thresholds")[0]["rows"][0][-1] == "1.43 [0.22, 2.84]"

    # the comparison: three models, the paper's g-means labelled and in %
    comparison = page.find("mean over splits per model and ROI")[0]
    paper = [r for r in comparison["rows"] if r[2] == "paper (real PPMI)"]
    assert [(r[0], r[1], r[5]) for r in paper] == [
        ("pd_ae", "Whole brain", "65.3 ± 7.5"), ("pd_ae", "WM", "66.2 ± 6.7"),
        ("pd_sae", "Whole brain", "66.9 ± 5.8"), ("pd_sae", "WM", "68.2 ± 4.6")]
    assert {r[0] for r in comparison["rows"]} == {"pd_ae", "pd_sae", "normative"}
    assert comparison["rows"][0][5] == "61.2"
    text = (out / "report.html").read_text()
    assert "pd_sae vs the normative baseline (95 % bootstrap CIs of split 0&#x27;s AUC compared" in text
    assert text.count("better in AUC (Frontal)") == 1 and "no clear difference in 8 of 8 comparisons" in text
    # summary.json, the printed summary and the report carry the same headline figures
    saved = json.loads((out / "summary.json").read_text())
    assert saved == summary
    assert saved["pd_ae_whole_brain_subject_auroc"] == 0.6
    assert saved["pd_ae_whole_brain_subject_auroc_ci"] == [0.55, 0.65]
    assert saved["pet_normative_cn_vs_ad_subject_auroc"] == 0.75 and saved["pet_ad_vae3d_voxel_auroc_ad30"] == 0.7
    assert saved["detection_verdicts"]["pd_ae"] in pd_ae["caption"]
    printed = capsys.readouterr().out
    run = {r[0]: r[1] for r in page.find("timings (s) and headline figures")[0]["rows"]}
    for key in ("pd_sae_white_matter_test_fpr1_pct", "pet_ad_vae3d_cn_vs_ad_subject_auroc", "pd_ae_seconds"):
        assert f"{key} " in printed and key in run
    assert float(run["pd_sae_white_matter_test_fpr1_pct"]) == saved["pd_sae_white_matter_test_fpr1_pct"] == 0.79
    assert float(run["pd_ae_whole_brain_voxel_ap"]) == saved["pd_ae_whole_brain_voxel_ap"] == 0.1


def test_demo_report_refuses_a_detection_file_without_its_columns(tmp_path):
    from common.app.demo import write_demo_report
    from common.errors import InputDataError

    out = _fabricate_demo(tmp_path / "demo")
    path = out / "experiments" / "pd_sae" / "split_00" / "eval" / "split_0" / "detection.csv"
    rows = [{k: v for k, v in r.items() if k != "subject_ap_ci_high"}
            for r in csv.DictReader(path.read_text().splitlines())]
    _write_rows(path, rows)
    with pytest.raises(InputDataError, match=r"detection\.csv: no column\(s\) subject_ap_ci_high"):
        write_demo_report(out, {"pd_planted_rois": ["white_matter"]})
    rows[0]["subject_ap_ci_high"] = rows[0]["voxel_auroc"] = "n/a"  # the column is back, a value is not a number
    _write_rows(path, rows)
    with pytest.raises(InputDataError, match=r"detection\.csv: ROI whole_brain, column voxel_auroc: 'n/a'"):
        write_demo_report(out, {"pd_planted_rois": ["white_matter"]})
    assert not (out / "report.html").exists()


# ------------------------------------------------------------------------- layout at 1280 px, captions, colour bars

class _Layout(HTMLParser):
    """The page's CSS text, and per table its caption and header; per figure its caption."""

    def __init__(self):
        super().__init__()
        self.style, self.tables, self.figcaptions, self._where = "", [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"caption": "", "header": []})
        elif tag == "th":
            self.tables[-1]["header"].append("")
        if tag in ("style", "caption", "th", "figcaption"):
            self._where = tag
            if tag == "figcaption":
                self.figcaptions.append("")

    def handle_endtag(self, tag):
        if tag == self._where:
            self._where = None

    def handle_data(self, data):
        if self._where == "style":
            self.style += data
        elif self._where == "caption":
            self.tables[-1]["caption"] += data
        elif self._where == "th":
            self.tables[-1]["header"][-1] += data
        elif self._where == "figcaption":
            self.figcaptions[-1] += data


def _css(style, selector, prop):
    """The value of ``prop`` in the rule whose selector is ``selector`` (as the page writes it)."""
    import re

    rule = re.search(r"(?:^|[}\s])" + re.escape(selector) + r"\s*\{([^}]*)\}", style)
    assert rule, f"no CSS rule {selector}"
    value = re.search(rf"(?:^|;)\s*{prop}\s*:\s*([^;]+)", rule.group(1))
    assert value, f"no {prop} in {selector}"
    return value.group(1).strip()


def _px(length, em_px):
    """A CSS length in px (``12px`` or ``0.8em`` of an ``em_px`` font)."""
    return float(length[:-2]) * (em_px if length.endswith("em") else 1)


def _fabricate_pet_tables(out):
    """ad_vae3d's six-dementia table with every column the report shows, paper rows included, and its figure."""
    folder = out / "experiments" / "ad_vae3d" / "split_00" / "eval" / "split_0"
    columns = ["mse_image_mean", "mae_image_mean", "psnr_image_mean", "ssim_image_mean", "mse_mask_mean",
               "mse_outside_mean", "ssim_reconstructions_image_mean", "healthiness_healthy_input_mean",
               "healthiness_simulated_input_mean", "healthiness_reconstruction_mean"]
    _write_rows(folder / "dementia_table.csv", [{"source": source, "dementia": d, **dict.fromkeys(columns, 0.5)}
                                                 for source in ("this run", "paper") for d in ("ad", "bvftd")])
    (folder / "figures").mkdir(parents=True)
    _png(folder / "figures" / "reconstructions.png")


def test_report_fits_1280_px_with_readable_headers_and_captions(tmp_path):
    """The documented check that stands in for a browser: read the page's own CSS and assert that, at a 1280 px
    window, the text column fits beside its padding and a scrollbar, and every table, each column at the widest
    the CSS lets a cell grow, fits in the text column; every figure has a caption and every header is a name."""
    from common.app.demo import write_demo_report
    from common.app.report import PAGE_WIDTH_PX

    out = _fabricate_demo(tmp_path / "demo")
    _fabricate_pet_tables(out)
    page = _Layout()
    page.feed(write_demo_report(out, {"pd_planted_rois": ["white_matter", "stn"]}).read_text())

    body = _px(_css(page.style, "body", "max-width"), 16)
    padding = 16 * 1  # body padding: 0 1em
    assert _css(page.style, "body", "padding") == "0 1em"
    assert body + 2 * padding + 17 <= PAGE_WIDTH_PX  # 17 px: the widest common scrollbar
    font = _px(_css(page.style, "table", "font-size"), 16)
    cell = _px(_css(page.style, "th > div, td > div", "max-width"), font)
    assert _css(page.style, "th > div, td > div", "overflow-wrap") == "anywhere"  # a long word cannot widen a cell
    pad = _px(_css(page.style, "th, td", "padding").split()[1], font)
    widest = 0
    for table in page.tables:
        n = len(table["header"])
        widest = max(widest, n)
        assert n * (cell + 2 * pad + 1) + 1 <= body, (table["caption"], n)
        assert not any("_" in h for h in table["header"]), table["header"]  # names, not CSV columns
    assert widest == 9  # the PD and PET detection tables
    # ad_vae3d's six-dementia table is split in two, its healthiness columns in the second, units in the headers
    header = lambda start: next(t["header"] for t in page.tables if t["caption"].startswith(start))  # noqa: E731
    errors, health = header("(b) six dementias"), header("(b, continued)")
    assert errors[:2] == ["source", "dementia (mask)"]
    assert "PSNR, brain (dB)" in errors and "MSE, brain (a.u.)" in errors
    assert health[:2] == ["source", "dementia (mask)"] and sum("healthiness" in h for h in health) == 3
    sweep = header("(a) degree sweep")
    assert sweep[0] == "simulated degree (%)" and "measured uptake loss in the mask (%)" in sweep
    # every figure has a caption saying what it shows, the PET rows in the figure's order, STN* explained
    assert page.figcaptions and all(len(c.split()) >= 5 for c in page.figcaptions)
    (reconstructions,) = [c for c in page.figcaptions if "paper Fig. 2" in c]
    order = [reconstructions.index(w) for w in ("AD patient", "CN test control", "simulated AD")]
    assert order == sorted(order)
    assert "a control and a patient" not in " ".join(page.figcaptions[1:])
    assert "(STN*) marks an approximate ROI" in (out / "report.html").read_text()


def test_a_table_wider_than_the_page_is_split_repeating_its_first_column(tmp_path):
    from common.app.report import max_table_columns

    limit = max_table_columns()
    rows = [{"name": f"r{i}", **{f"c{k}": k for k in range(2 * limit)}} for i in range(2)]
    page = _Tables()
    page.feed(write_html_report(tmp_path / "r.html", "t", [ReportSection("s", tables=[("wide", rows)])]).read_text())
    assert [t["caption"] for t in page.tables] == [f"wide (part {k} of 3)" for k in (1, 2, 3)]
    assert all(t["header"][0] == "name" and len(t["header"]) <= limit for t in page.tables)
    shown = [h for t in page.tables for h in t["header"][1:]]
    assert shown == [f"c{k}" for k in range(2 * limit)]  # every column once, in order
    assert [t["rows"][1][0] for t in page.tables] == ["r1"] * 3


def _figures_drawn(monkeypatch):
    """Capture every figure the visualize modules save (they save through ``_save``), without rendering it."""
    import common.visualize.pd as pd_viz
    import common.visualize.pet as pet_viz

    drawn = []

    def keep(fig, out):
        drawn.append(fig)
        return out

    monkeypatch.setattr(pd_viz, "_save", keep)
    monkeypatch.setattr(pet_viz, "_save", keep)
    return drawn


def test_every_colour_bar_has_a_label_with_its_unit(tmp_path, monkeypatch):
    from common.visualize.pd import plot_percent_abnormal_heatmap, plot_reconstruction_showcase
    from common.visualize.pet import plot_reconstructions

    drawn = _figures_drawn(monkeypatch)
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (2, 6, 7, 5))
    plot_reconstruction_showcase({"image": image, "reconstruction": image * 0.9, "error": image[0] * 0.1, "id": "p1"},
                                 tmp_path / "a.png")
    plot_reconstruction_showcase({"image": image, "reconstruction": image, "error": image[0], "id": "p1",
                                  "error_label": "|z|"}, tmp_path / "b.png")
    plot_percent_abnormal_heatmap(rng.uniform(0, 5, (4, 3)), ["control", "control", "patient", "patient"],
                                  ["sn", "stn", "gpi"], tmp_path / "c.png", approximate={"stn": True})
    plot_reconstructions([("CN", image[0], image[0] * 0.9)], tmp_path / "d.png")
    labels = [ax.get_ylabel() for fig in drawn for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    assert labels == ["e(v), FA and MD (a.u.)", "|z|", "% abnormal voxels",
                      "reconstruction - input (normalised uptake, a.u.)"]
