"""The bias audit (``audit.py``) as HTML: a fragment for a page, or a standalone document.

The fragment goes into pages served under a strict Content-Security-Policy (``api/
security.py``: no inline script or style), so it carries classes only, never a ``style``
attribute or a script; the SVG charts draw with geometry attributes. Group labels are the
candidates' own self-identification, so every label is escaped. The standalone document
is a file opened from disk and printed to PDF, so it carries its own ``<style>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

DIMENSION_TITLES = {"sex": "Sex", "race": "Race / ethnicity", "sex_race": "Sex and race"}
THRESHOLD = 0.8  # the four-fifths line of the charts

# The chart's geometry, in SVG user units.
LABEL_WIDTH = 280
LABEL_CHARS = 40  # longer labels are cut in the chart (whole in its tooltip and table)
BAR_WIDTH = 360
ROW_HEIGHT = 22
AXIS_HEIGHT = 20

LIMITS_TITLE = "What these figures mean, and their limits"
LIMITS = (
    "The impact ratio is the one of NYC Local Law "
    "144's rules (6 RCNY § 5-301): a group's selection rate (or its scoring rate, the share "
    "scoring above the whole sample's median) over the highest group's rate in the same "
    "dimension. The four-fifths rule of the EEOC Uniform Guidelines (29 CFR 1607.4(D)), which "
    "flags a ratio under 0.8, is a rule of thumb that calls for a closer look, not a legal "
    "test of adverse impact. Small groups are noisy: read each ratio with its 95 % interval "
    "and its p-value (Fisher's exact test against the rest of the dimension). A group under "
    "2 % of the sample may be excluded by an independent auditor, with a justification; it is "
    "kept in every figure here. Candidates who did not state their sex or race are counted "
    "as unknown and kept out of the ratios of that dimension. An audit of a synthetic "
    "population is not an audit. Local Law 144 requires a bias audit by an independent "
    "auditor: these figures are what one would start from, not its conclusion."
)

# The fragment's own look, scoped to it: the jobs page loads it too (/audit.css), so the
# report looks the same there and in the printed document.
FRAGMENT_STYLE = """
.audit table { border-collapse: collapse; margin: 0.5em 0 1.5em; page-break-inside: avoid; }
.audit th, .audit td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: right; }
.audit th.label, .audit td.label { text-align: left; }
.audit tr.below td { background: #fde2e2; }
.audit .flag { font-weight: bold; }
.audit .chart-caption { margin: 0.5em 0 0.2em; font-size: 0.9em; }
.audit svg.impact-chart { display: block; margin-bottom: 1.5em; page-break-inside: avoid; }
.audit svg.impact-chart rect.bar { fill: #4a78b5; }
.audit svg.impact-chart rect.bar.below { fill: #c0392b; }
.audit svg.impact-chart line.four-fifths { stroke: #222; }
.audit svg.impact-chart text { font-size: 12px; }
"""
# The standalone document's page around it.
STYLE = (
    FRAGMENT_STYLE
    + """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
header { border-bottom: 1px solid #999; margin-bottom: 1em; }
.limits { max-width: 50em; font-size: 0.9em; }
@media print {
  body { margin: 0; }
  section.audit-dimension, table, svg { page-break-inside: avoid; }
}
"""
)


def audit_fragment(
    audit: Mapping[str, Any], effects: Sequence[Mapping[str, Any]] | None = None
) -> str:
    """``run_audit``'s result as an HTML fragment (classes only, no style attribute, no
    script): a summary line, per dimension a table and a bar chart of the impact ratios
    with the 0.8 line, and, given ``competency_effects``' result, a table of competencies."""
    parts = [_summary(audit)]
    for dimension, title in DIMENSION_TITLES.items():
        groups = [g for g in audit["groups"] if g["dimension"] == dimension]
        if groups:
            parts.append(_dimension_section(title, groups))
    if effects:
        parts.append(_effects_table(effects))
    return '<div class="audit">\n' + "\n".join(parts) + "\n</div>"


def audit_html(
    audit: Mapping[str, Any],
    title: str,
    effects: Sequence[Mapping[str, Any]] | None = None,
    *,
    generated: datetime | None = None,
) -> str:
    """A standalone HTML document of the audit that prints cleanly to PDF: a header with
    ``title`` and the date generated (``generated``, or now in UTC), the fragment, and what
    the figures mean and their limits."""
    when = (generated or datetime.now(UTC)).strftime("%Y-%m-%d")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f'<header><h1>{escape(title)}</h1><p class="generated">Generated {when}</p></header>\n'
        f"{audit_fragment(audit, effects)}\n"
        f'<section class="limits"><h2>{LIMITS_TITLE}</h2><p>{escape(LIMITS)}</p></section>\n'
        "</body>\n</html>\n"
    )


def _summary(audit: Mapping[str, Any]) -> str:
    unknown = audit["unknown"]
    return (
        '<p class="audit-summary">'
        f"{audit['n']} candidates, median score {_fixed(audit['median_score'], 1)}, "
        f"{audit['selected']} selected ({_percent(audit['selection_rate'])}). Unknown: "
        f"sex {unknown['sex']}, race {unknown['race']}, sex and race "
        f"{unknown.get('sex_race', 0)}.</p>"
    )


def _dimension_section(title: str, groups: Sequence[Mapping[str, Any]]) -> str:
    return (
        f'<section class="audit-dimension">\n<h2>{escape(title)}</h2>\n'
        f"{_groups_table(groups)}\n"
        f"{_chart(f'selection by {title.lower()}', groups, SELECTION)}\n"
        f"{_chart(f'scoring (above the median) by {title.lower()}', groups, SCORING)}\n"
        "</section>"
    )


GROUP_HEADERS = (
    "Group",
    "n",
    "Selected",
    "Selection rate",
    "Impact ratio (95 % CI)",
    "p",
    "Scoring rate",
    "Scoring impact ratio (95 % CI)",
    "Scoring p",
    "Flags",
)


def _groups_table(groups: Sequence[Mapping[str, Any]]) -> str:
    head = '<th class="label">Group</th>' + "".join(
        f"<th>{escape(h)}</th>" for h in GROUP_HEADERS[1:]
    )
    rows = "\n".join(_group_row(g) for g in groups)
    return f'<table class="audit-groups">\n<tr>{head}</tr>\n{rows}\n</table>'


def _group_row(g: Mapping[str, Any]) -> str:
    below = g["below_four_fifths"] or g.get("scoring_below_four_fifths", False)
    cells = [
        _number_cell(g["n"]),
        _number_cell(g["selected"]),
        _number_cell(_percent(g["selection_rate"])),
        _number_cell(_ratio_with_ci(g["impact_ratio"], g["ci"])),
        _number_cell(_p(g["p_value"])),
        _number_cell(_percent(g["scoring_rate"])),
        _number_cell(_ratio_with_ci(g["scoring_impact_ratio"], g.get("scoring_ci"))),
        _number_cell(_p(g.get("scoring_p_value"))),
        f'<td class="flags">{escape(", ".join(_flags(g)))}</td>',
    ]
    row_class = ' class="below"' if below else ""
    label = f'<td class="label">{escape(g["group"])}</td>'
    return f"<tr{row_class}>{label}{''.join(cells)}</tr>"


def _flags(g: Mapping[str, Any]) -> list[str]:
    flags = []
    if g["below_four_fifths"]:
        flags.append("selection under 4/5")
    if g.get("scoring_below_four_fifths"):
        flags.append("scoring under 4/5")
    if g["under_2pct"]:
        flags.append("under 2 % of sample")
    return flags


SELECTION = ("impact_ratio", "below_four_fifths")
SCORING = ("scoring_impact_ratio", "scoring_below_four_fifths")


def _chart(title: str, groups: Sequence[Mapping[str, Any]], keys: tuple[str, str]) -> str:
    """A horizontal bar per group of its impact ratio (0-1; ``keys`` names the ratio and its
    flag), the bars under 0.8 of class ``below``, with a dashed vertical line at 0.8."""
    height = ROW_HEIGHT * len(groups) + AXIS_HEIGHT
    width = LABEL_WIDTH + BAR_WIDTH + 60
    x_line = LABEL_WIDTH + THRESHOLD * BAR_WIDTH
    rows = "\n".join(_bar(i, g, keys) for i, g in enumerate(groups))
    label = escape(f"Impact ratios of {title}, with the 0.8 line")
    return (
        f'<p class="chart-caption">{label}</p>\n'
        f'<svg class="impact-chart" role="img" aria-label="{label}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">\n'
        f"<title>{label}</title>\n{rows}\n"
        f'<line class="four-fifths" x1="{x_line:g}" y1="0" x2="{x_line:g}" '
        f'y2="{height - AXIS_HEIGHT}" stroke="currentColor" stroke-dasharray="4 3"/>\n'
        f'<text class="axis" x="{x_line:g}" y="{height - 5}" text-anchor="middle">0.8</text>\n'
        "</svg>"
    )


def _bar(i: int, g: Mapping[str, Any], keys: tuple[str, str]) -> str:
    y = i * ROW_HEIGHT
    ratio, below = g[keys[0]], g[keys[1]]
    text_y = y + ROW_HEIGHT - 7
    name = g["group"]
    shown = name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"
    label = (
        f'<text class="group" x="{LABEL_WIDTH - 6}" y="{text_y}" text-anchor="end">'
        f"<title>{escape(name)}</title>{escape(shown)}</text>"
    )
    if ratio is None:
        return label + f'<text class="na" x="{LABEL_WIDTH + 4}" y="{text_y}">n/a</text>'
    bar_class = "bar below" if below else "bar"
    length = ratio * BAR_WIDTH
    return (
        f'{label}<rect class="{bar_class}" x="{LABEL_WIDTH}" y="{y + 3}" '
        f'width="{length:.1f}" height="{ROW_HEIGHT - 6}"/>'
        f'<text class="value" x="{LABEL_WIDTH + length + 4:.1f}" y="{text_y}">'
        f"{ratio:.2f}</text>"
    )


def _effects_table(effects: Sequence[Mapping[str, Any]]) -> str:
    """Per competency and dimension, the lowest scoring impact ratio with and without it."""
    dimensions = [d for d in DIMENSION_TITLES if d in effects[0]["lowest"]]
    head = '<th class="label">Competency</th><th>Weight</th>' + "".join(
        f"<th>{escape(DIMENSION_TITLES[d])}: with / without</th>" for d in dimensions
    )
    head += "<th>Drives the gap in</th>"
    rows = []
    for e in effects:
        pairs = "".join(_number_cell(_pair(e["lowest"][d])) for d in dimensions)
        drives = ", ".join(DIMENSION_TITLES.get(d, d) for d in e["drives_gap"])
        row_class = ' class="drives-gap"' if e["drives_gap"] else ""
        rows.append(
            f'<tr{row_class}><td class="label">{escape(str(e["competency"]))}</td>'
            f"{_number_cell(_percent(e['weight']))}{pairs}<td>{escape(drives)}</td></tr>"
        )
    return (
        '<section class="audit-competencies">\n<h2>Competencies and the scoring gap</h2>\n'
        "<p>The lowest scoring impact ratio of each dimension, with every competency and "
        "without each one (the other weights rescaled to sum to 1).</p>\n"
        f'<table class="audit-effects">\n<tr>{head}</tr>\n' + "\n".join(rows) + "\n</table>\n"
        "</section>"
    )


def _pair(lowest: Mapping[str, float | None]) -> str:
    return f"{_fixed(lowest['with'], 2)} / {_fixed(lowest['without'], 2)}"


def _number_cell(value: object) -> str:
    return f'<td class="number">{escape(str(value))}</td>'


def _ratio_with_ci(ratio: float | None, ci: Sequence[float] | None) -> str:
    if ratio is None:
        return "n/a"
    if ci is None:
        return f"{ratio:.3f}"
    return f"{ratio:.3f} ({ci[0]:.2f}–{ci[1]:.2f})"


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f} %"


def _fixed(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
