"""One self-contained HTML page of results: sections of text, tables (from CSV files or rows) and figures.

Figures are embedded as base64 PNG, so the page can be mailed or attached to a lab notebook as one file and
still shows everything; tables are rendered from the CSV files the evaluations write (the same numbers,
not a second computation). The demo builds its report with :func:`write_html_report`.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.data._jsonio import write_text_atomic
from common.errors import InputDataError

__all__ = ["PAGE_WIDTH_PX", "ReportSection", "compare_intervals", "format_interval", "max_table_columns",
           "read_csv_rows", "rounded", "verdict_sentence", "write_html_report"]

#: The page must read in a browser window this wide: no table wider than the text column, no sideways scrolling.
PAGE_WIDTH_PX = 1280
#: Width of the text column (CSS ``max-width`` of the body), under ``PAGE_WIDTH_PX`` minus its padding and a scrollbar.
BODY_MAX_WIDTH_PX = 1200
#: Table font size (em of the 16 px body font), widest cell content and cell padding (em of the table font): cell
#: text wraps at ``COLUMN_MAX_EM``, so a table of n columns is at most n * (COLUMN_MAX_EM + 2 * CELL_PADDING_EM)
#: em wide plus its borders, whatever its content.
TABLE_FONT_EM, COLUMN_MAX_EM, CELL_PADDING_EM = 0.84, 9.0, 0.3


def max_table_columns() -> int:
    """How many columns of the widest possible kind fit in the text column (1 px borders)."""
    column_px = 16 * TABLE_FONT_EM * (COLUMN_MAX_EM + 2 * CELL_PADDING_EM) + 1
    return int((BODY_MAX_WIDTH_PX - 1) // column_px)


_STYLE = f"""
body {{ font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
       max-width: {BODY_MAX_WIDTH_PX}px; color: #222; line-height: 1.45; padding: 0 1em; }}
h1 {{ border-bottom: 2px solid #446; padding-bottom: .3em; }}
h2 {{ margin-top: 2em; border-bottom: 1px solid #ccd; padding-bottom: .2em; }}
.table {{ overflow-x: auto; max-width: 100%; }}
table {{ border-collapse: collapse; margin: .8em 0 1.4em; font-size: {TABLE_FONT_EM}em; }}
th, td {{ border: 1px solid #ccd; padding: .25em {CELL_PADDING_EM}em; text-align: right; vertical-align: top; }}
th > div, td > div {{ max-width: {COLUMN_MAX_EM}em; overflow-wrap: anywhere; }}
th {{ background: #eef; font-weight: 600; }} td:first-child, th:first-child {{ text-align: left; }}
.nw {{ white-space: nowrap; }}
caption {{ caption-side: top; text-align: left; font-weight: 600; padding-bottom: .3em; }}
figure {{ margin: 1em 0 2em; }} figure img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ font-size: .9em; color: #555; }}
nav a {{ margin-right: 1em; }} .meta {{ color: #666; font-size: .9em; }}
"""


@dataclass
class ReportSection:
    """One section: paragraphs of text, tables as (caption, rows) and figures as (caption, PNG path)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[Mapping]]] = field(default_factory=list)
    figures: list[tuple[str, str | os.PathLike]] = field(default_factory=list)


def read_csv_rows(path: str | os.PathLike, columns: Sequence[str] | None = None,
                  where: Mapping[str, str] | None = None) -> list[dict]:
    """Rows of a CSV file, optionally only ``columns`` and the rows matching ``where`` (string equality)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if where:
        rows = [r for r in rows if all(r.get(k) == v for k, v in where.items())]
    if columns:
        missing = [c for c in columns if rows and c not in rows[0]]
        if missing:
            raise InputDataError(path, f"no column(s) {', '.join(missing)}")
        rows = [{c: r[c] for c in columns} for r in rows]
    return rows


def _number(value) -> float | None:
    """A CSV cell or JSON value as a finite float; None for blanks, None and NaN."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def rounded(value, digits: int = 3) -> float | None:
    """``value`` rounded as the report's tables print it (``digits`` decimals, or significant digits below 1e-3),
    so a figure stored elsewhere (summary.json) is the one the page shows."""
    value = _number(value)
    if value is None or value == 0:
        return value
    return float(f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}")


def format_interval(value, low=None, high=None, scale: float = 1.0, digits: int = 3,
                    bound_digits: int | None = None) -> str:
    """``value [low, high]`` (times ``scale``, e.g. 100 for %; bounds with ``bound_digits``, default one digit
    fewer than the value), ``value`` alone without bounds, "" without a value."""
    value, low, high = _number(value), _number(low), _number(high)
    if value is None:
        return ""
    text = f"{scale * value:.{digits}f}"
    if low is not None and high is not None:
        b = max(1, digits - 1) if bound_digits is None else bound_digits
        text += f" [{scale * low:.{b}f}, {scale * high:.{b}f}]"
    return text


def compare_intervals(low, high, ref_low, ref_high) -> str | None:
    """"better" when ``[low, high]`` lies wholly above the reference interval, "worse" wholly below, "no clear
    difference" when they overlap (higher is better); None when a bound is missing (nothing to judge)."""
    bounds = [_number(b) for b in (low, high, ref_low, ref_high)]
    if any(b is None for b in bounds):
        return None
    low, high, ref_low, ref_high = bounds
    if low > ref_high:
        return "better"
    if high < ref_low:
        return "worse"
    return "no clear difference"


def verdict_sentence(model: str, rows: Sequence[Mapping], reference: Sequence[Mapping], key: str,
                     metrics: Mapping[str, tuple[str, str]], reference_name: str = "the normative baseline",
                     label=str, interval: str = "95 % CIs") -> str:
    """One sentence saying where ``model`` beats ``reference`` and where it loses, from the numbers.

    ``rows`` / ``reference``: one row per ``key`` value (e.g. ROI), matched by it; ``metrics``: display name ->
    (low, high) columns of its interval. A metric counts as better or worse only where the intervals do not
    overlap (:func:`compare_intervals`); ``label`` turns a key value into display text.
    """
    by_key = {str(r[key]): r for r in reference}
    found: dict[str, list[str]] = {"better": [], "worse": []}
    n_unclear = n_compared = 0
    for name, (low, high) in metrics.items():
        verdicts: dict[str, list[str]] = {"better": [], "worse": []}
        for row in rows:
            ref = by_key.get(str(row[key]))
            verdict = None if ref is None else compare_intervals(row.get(low), row.get(high), ref.get(low),
                                                                 ref.get(high))
            if verdict is None:
                continue
            n_compared += 1
            if verdict == "no clear difference":
                n_unclear += 1
            else:
                verdicts[verdict].append(label(row[key]))
        for verdict, where in verdicts.items():
            if where:
                found[verdict].append(f"{name} ({', '.join(where)})")
    if not n_compared:
        return f"{model} vs {reference_name}: no pair of intervals to compare."
    better = "in " + " and ".join(found["better"]) if found["better"] else "nowhere"
    worse = "in " + " and ".join(found["worse"]) if found["worse"] else "nowhere"
    return (f"{model} vs {reference_name} ({interval} compared; a difference counts only where they do not overlap): "
            f"better {better}; worse {worse}; no clear difference in {n_unclear} of {n_compared} comparisons.")


#: An interval ``[low, high]`` or a ``± sd`` inside a cell: kept on one line, so a cell wraps before it.
_UNBROKEN = re.compile(r"(\[[^\]]*\]|± \S+)")


def _cell(value, digits: int) -> str:
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return _UNBROKEN.sub(r"<span class='nw'>\1</span>", html.escape(value))
        if value.strip().lstrip("-").isdigit():
            return value
        value = number
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if abs(value) < 1e-3 and value != 0:
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return html.escape(str(value))


def _column_parts(header: list, limit: int) -> list[list]:
    """Columns of each part of a table too wide for the page: the first (row label) column repeated in every part,
    the others in runs of at most ``limit - 1``."""
    if len(header) <= limit:
        return [header]
    step = max(1, limit - 1)
    return [[header[0], *header[i:i + step]] for i in range(1, len(header), step)]


def _table(caption: str, rows: list[Mapping], digits: int) -> str:
    if not rows:
        return f"<p><em>{html.escape(caption)}: no rows.</em></p>"
    parts = _column_parts(list(rows[0]), max_table_columns())
    out = []
    for k, header in enumerate(parts):
        title = caption + (f" (part {k + 1} of {len(parts)})" if len(parts) > 1 else "")
        head = "".join(f"<th><div>{html.escape(str(h))}</div></th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td><div>{_cell(r.get(h, ''), digits)}</div></td>" for h in header) + "</tr>"
                       for r in rows)
        out.append(f"<div class='table'><table><caption>{html.escape(title)}</caption><thead><tr>{head}</tr></thead>"
                   f"<tbody>{body}</tbody></table></div>")
    return "\n".join(out)


def _figure(caption: str, path: str | os.PathLike) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)} <span class='meta'>({html.escape(Path(path).name)})</span>"
            "</figcaption></figure>")


def write_html_report(path: str | os.PathLike, title: str, sections: Iterable[ReportSection],
                      intro: str = "", digits: int = 3) -> Path:
    """Write the page atomically; every figure must exist (checked before anything is written)."""
    sections = list(sections)
    missing = [str(p) for s in sections for _, p in s.figures if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"report {path}: figure(s) not found: {', '.join(missing)}")
    anchors = [f"s{i}" for i in range(len(sections))]
    nav = " ".join(f'<a href="#{a}">{html.escape(s.title)}</a>' for a, s in zip(anchors, sections))
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='meta'>written {datetime.datetime.now().isoformat(timespec='seconds')}</p>"]
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    parts.append(f"<nav>{nav}</nav>")
    for anchor, section in zip(anchors, sections):
        parts.append(f"<h2 id='{anchor}'>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        parts += [_table(caption, rows, digits) for caption, rows in section.tables]
        parts += [_figure(caption, p) for caption, p in section.figures]
    parts.append("</body></html>")
    return write_text_atomic(Path(path), "\n".join(parts))
