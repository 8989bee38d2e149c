"""The HTML report: tables carry the CSV's numbers, figures are embedded byte for byte, bad input writes nothing."""

from __future__ import annotations

import base64
import csv
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from common.report import ReportSection, read_csv_rows, write_html_report


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
    with pytest.raises(FileNotFoundError, match="nope.png"):
        write_html_report(target, "t", [ReportSection("s", figures=[("x", tmp_path / "nope.png")])])
    assert not target.exists() and list(tmp_path.iterdir()) == []
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no column"):
        read_csv_rows(table, columns=["a", "c"])
