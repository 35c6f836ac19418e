"""A bias audit of job-fit scores and the human decisions they informed (NYC Local Law 144).

Each candidate of the audit sample has a 0-100 job-fit score, whether a person advanced them
(``selected``), and their voluntarily self-identified sex and race (either may be unknown).
For each group of sex, of race and of their intersection, the audit reports what 6 RCNY
§ 5-301 asks of an automated employment decision tool:

* the selection rate (selected / n) and its impact ratio: that rate over the highest group's
  rate in the same dimension;
* the scoring rate (the share scoring strictly above the whole sample's median score, unknowns
  included) and its impact ratio, the rule's measure for a tool that scores;

with, for reading them, the four-fifths flag (EEOC Uniform Guidelines, 29 CFR 1607.4(D)), the
under-2 % flag (a group an independent auditor may exclude, with a justification), Fisher's
exact test of the group against the rest of its dimension, and a bootstrap interval of each
impact ratio. ``competency_effects`` says which of a job's competencies drives a scoring gap.

Rates are counts over sizes in float64, exactly what a person computes; nothing is rounded,
and every undefined figure is None, so the result is strict JSON. The groups, rates and
ratios themselves are ``groups.py``'s.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import fisher_exact

from rtserver.errors import BadRequest
from rtserver.scoring.groups import (
    DIMENSIONS,
    BoolArray,
    FloatArray,
    Group,
    above_median,
    group_rates,
    groups_of,
    impact_ratios,
    lowest_ratio,
    unknown_counts,
)

FOUR_FIFTHS = Fraction(4, 5)
SMALL_GROUP_SHARE = Fraction(2, 100)  # under 2 % of the sample: an auditor may exclude it
CI_LEVEL = 0.95
GAP_LIFT = 0.1  # a competency whose removal lifts a lowest ratio by this much drives the gap
REQUIRED_COLUMNS = ("candidate", "score", "selected", "sex", "race")
FOUR_FIFTHS_RULE = (
    "A group is flagged when its impact ratio (its rate over the highest group's rate in the "
    "same dimension) is under 0.8, the four-fifths rule of the EEOC Uniform Guidelines "
    "(29 CFR 1607.4(D)): a rule of thumb that calls for a closer look, not a legal finding "
    "of adverse impact."
)


class AuditInvalid(BadRequest, ValueError):
    """An audit sample that cannot be audited; the message names the CSV line where one is
    at fault."""

    code = "invalid_audit"


@dataclass(frozen=True)
class AuditRow:
    """One candidate of an audit sample."""

    candidate: str
    score: float  # job-fit score, 0-100
    selected: bool  # advanced by the human decision
    sex: str | None  # None: unknown (not self-identified)
    race: str | None


def read_audit_csv(path: Path) -> list[AuditRow]:
    """The rows of an audit CSV: a header naming at least ``candidate, score, selected, sex,
    race`` (others are ignored), then one candidate a line; ``selected`` is 1 or 0, an empty
    sex or race is unknown. A UTF-8 byte order mark is accepted. Raises AuditInvalid, naming
    the line, on a missing column, a bad score or selection, a duplicate candidate, or a file
    without rows; and on a file that is not UTF-8 or not CSV."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file)
        try:
            rows = _read_rows(reader)
        except UnicodeDecodeError:
            # Decoding runs ahead in chunks, so the line it fails on is not known.
            raise AuditInvalid("the file is not UTF-8 text") from None
        except csv.Error as error:
            # DictReader.line_num is updated only after a good record; its reader's is not.
            raise AuditInvalid(f"line {reader.reader.line_num}: {error}") from None
    if not rows:
        raise AuditInvalid("line 2: the file has a header but no candidate rows")
    return rows


def _read_rows(reader: csv.DictReader[str]) -> list[AuditRow]:
    _check_header(reader.fieldnames)
    rows: list[AuditRow] = []
    first_line: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        row = _parse_row(record, line)
        if row.candidate in first_line:
            raise AuditInvalid(
                f"line {line}: candidate {row.candidate!r} is already on line "
                f"{first_line[row.candidate]}"
            )
        first_line[row.candidate] = line
        rows.append(row)
    return rows


def _check_header(fieldnames: Sequence[str] | None) -> None:
    if not fieldnames:
        raise AuditInvalid("line 1: the file is empty; it needs a header line")
    present = {name.strip() for name in fieldnames if name}
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if missing:
        raise AuditInvalid(f"line 1: the header lacks the column(s) {', '.join(missing)}")


def _cell(record: dict[str | Any, Any], column: str) -> str:
    """A cell, stripped; "" when the line is too short to have it. DictReader keys the
    header's names as written, so a header with spaces around a name still matches."""
    for key, value in record.items():
        if isinstance(key, str) and key.strip() == column:
            return value.strip() if isinstance(value, str) else ""
    return ""


def _parse_row(record: dict[str | Any, Any], line: int) -> AuditRow:
    candidate = _cell(record, "candidate")
    if not candidate:
        raise AuditInvalid(f"line {line}: the candidate is empty")
    text = _cell(record, "score")
    try:
        score = float(text)
    except ValueError:
        raise AuditInvalid(f"line {line}: score {text!r} is not a number") from None
    if not math.isfinite(score):  # any scale: only the order of scores matters here
        raise AuditInvalid(f"line {line}: score {text!r} is not a finite number")
    selected = _cell(record, "selected").lower()
    if selected not in SELECTED_TRUE + SELECTED_FALSE:
        raise AuditInvalid(f"line {line}: selected is {selected!r}; it must be 1 or 0")
    sex, race = _cell(record, "sex"), _cell(record, "race")
    return AuditRow(candidate, score, selected in SELECTED_TRUE, sex or None, race or None)


# 1/0 as the file format says, and the spellings other tools export the same flag with.
SELECTED_TRUE = ("1", "1.0", "true", "yes")
SELECTED_FALSE = ("0", "0.0", "false", "no")


SELECTION_KEYS = (
    "selected",
    "selection_rate",
    "impact_ratio",
    "below_four_fifths",
    "p_value",
    "ci",
)
SCORING_KEYS = (
    "above",
    "scoring_rate",
    "scoring_impact_ratio",
    "scoring_below_four_fifths",
    "scoring_p_value",
    "scoring_ci",
)


@dataclass(frozen=True)
class _Decision:
    """One decision audited (selected, or scored above the median), per group."""

    counts: list[int]  # members flagged
    rates: FloatArray  # counts / n
    ratios: FloatArray  # rate / the dimension's highest rate; NaN where that is 0
    below: list[bool]  # ratio < 0.8, exactly
    p_values: list[float | None]  # Fisher, two-sided, against the rest of the dimension
    cis: list[list[float] | None]  # bootstrap percentile interval of the ratio

    def fields(self, i: int, keys: Sequence[str]) -> dict[str, Any]:
        """Group ``i``'s figures under ``keys`` (count, rate, ratio, flag, p, interval)."""
        values = (
            self.counts[i],
            float(self.rates[i]),
            _number(float(self.ratios[i])),
            self.below[i],
            self.p_values[i],
            self.cis[i],
        )
        return dict(zip(keys, values, strict=True))


def run_audit(rows: Sequence[AuditRow], *, seed: int = 0, resamples: int = 2000) -> dict[str, Any]:
    """The audit of ``rows``: per group of sex, race and sex_race (in that order, each by
    name) its n, selections, selection and scoring rates (0-1), their impact ratios, the
    flags, Fisher p-values and 95 % bootstrap intervals of the ratios (``resamples`` draws
    from ``seed``), with the unknowns counted per dimension. Strict JSON: an undefined
    figure is None. Raises AuditInvalid on an empty sample."""
    if not rows:
        raise AuditInvalid("the audit sample has no rows")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    sex, race = [r.sex for r in rows], [r.race for r in rows]
    groups = groups_of(sex, race)
    scores = np.array([r.score for r in rows], dtype=np.float64)
    selected = np.array([r.selected for r in rows], dtype=bool)
    rng = np.random.default_rng(seed)
    selection = _decide(selected, groups, rng, resamples)
    scoring = _decide(above_median(scores), groups, rng, resamples)
    n = len(rows)
    return {
        "n": n,
        "selected": int(selected.sum()),
        "selection_rate": int(selected.sum()) / n,
        "median_score": float(np.median(scores)),
        "groups": [
            {
                "dimension": g.dimension,
                "group": g.name,
                "n": g.n,
                "share": g.n / n,
                "under_2pct": Fraction(g.n, n) < SMALL_GROUP_SHARE,
                **selection.fields(i, SELECTION_KEYS),
                **scoring.fields(i, SCORING_KEYS),
            }
            for i, g in enumerate(groups)
        ],
        "unknown": unknown_counts(sex, race),
        "four_fifths_rule": FOUR_FIFTHS_RULE,
        "bootstrap": {"resamples": resamples, "seed": seed, "level": CI_LEVEL},
    }


def _decide(
    flags: BoolArray, groups: Sequence[Group], rng: np.random.Generator, resamples: int
) -> _Decision:
    """Every group's figures for one decision (``flags``: one per row)."""
    rates = group_rates(flags, groups)
    counts = [int((flags & g.members).sum()) for g in groups]
    return _Decision(
        counts=counts,
        rates=rates,
        ratios=impact_ratios(rates, groups),
        below=_below_four_fifths(counts, groups),
        p_values=[_fisher(flags, g, groups) for g in groups],
        cis=_bootstrap_cis(rates, groups, rng, resamples),
    )


def _below_four_fifths(counts: Sequence[int], groups: Sequence[Group]) -> list[bool]:
    """Whether each group's impact ratio is under 0.8, in exact fractions: a float ratio
    of rates a person reads as exactly 0.8 (4/7 over 5/7) can land a hair under it."""
    rates = [Fraction(c, g.n) for c, g in zip(counts, groups, strict=True)]
    best: dict[str, Fraction] = {}
    for rate, g in zip(rates, groups, strict=True):
        best[g.dimension] = max(best.get(g.dimension, rate), rate)
    return [
        best[g.dimension] > 0 and rate / best[g.dimension] < FOUR_FIFTHS
        for rate, g in zip(rates, groups, strict=True)
    ]


def _fisher(flags: BoolArray, group: Group, groups: Sequence[Group]) -> float | None:
    """Fisher's exact test (two-sided) of the group's flagged share against the rest of the
    known rows of its dimension; None when the dimension has no other group."""
    known = np.zeros_like(group.members)
    for g in groups:
        if g.dimension == group.dimension:
            known |= g.members
    rest = known & ~group.members
    if not rest.any():
        return None
    inside, outside = int((flags & group.members).sum()), int((flags & rest).sum())
    table = [[inside, group.n - inside], [outside, int(rest.sum()) - outside]]
    return float(fisher_exact(table, alternative="two-sided").pvalue)


def _bootstrap_cis(
    rates: FloatArray, groups: Sequence[Group], rng: np.random.Generator, resamples: int
) -> list[list[float] | None]:
    """The percentile interval (``CI_LEVEL``) of each group's impact ratio, resampled within
    each group (stratified: a group's resampled rate is Binomial(n, rate) / n) and recomputed
    against each resample's highest rate of the dimension. Resamples where that highest
    rate is 0 define no ratio and are left out; None when none defines one."""
    sizes = np.array([g.n for g in groups], dtype=np.int64)
    drawn = rng.binomial(sizes, rates, size=(resamples, len(groups))) / sizes
    ratios = impact_ratios(drawn, groups)  # resamples x groups
    tail = 100 * (1 - CI_LEVEL) / 2
    cis: list[list[float] | None] = []
    for column in ratios.T:
        defined = column[~np.isnan(column)]
        if defined.size == 0:
            cis.append(None)
            continue
        low, high = np.percentile(defined, [tail, 100 - tail])
        cis.append([float(low), float(high)])
    return cis


def _number(value: float) -> float | None:
    """A float for strict JSON: None for NaN or infinity."""
    return value if math.isfinite(value) else None


def competency_effects(
    scores: np.ndarray,
    weights: Sequence[float],
    ids: Sequence[str],
    sex: Sequence[str | None],
    race: Sequence[str | None],
) -> list[dict[str, Any]]:
    """What each competency does to the scoring impact ratios (above-median shares, as in
    ``run_audit``). ``scores`` is candidates x competencies (0-100), ``weights`` the job's
    (summing to 1). Per competency: the ratios of the weighted score with every competency
    and without that one (the other weights rescaled to sum to 1; None when no weight is
    left), per group and the lowest per dimension, and ``drives_gap``: the dimensions whose
    lowest ratio its removal lifts from under 0.8 to 0.8 or more, or by 0.1 or more."""
    matrix = _weightings(np.asarray(scores, dtype=np.float64), weights, ids, len(sex))
    groups = groups_of(sex, race)
    defined: BoolArray = np.asarray(~np.isnan(matrix).any(axis=1))
    # Every scoring (with all, then without each) in one matrix: scorings x candidates.
    scorings = np.nan_to_num(matrix) @ np.asarray(scores, dtype=np.float64).T
    ratios = impact_ratios(group_rates(above_median(scorings), groups), groups)
    lowest = {d: lowest_ratio(ratios, groups, d) for d in DIMENSIONS}
    return [
        _effect(k, ids[k], float(weights[k]), bool(defined[k + 1]), ratios, lowest, groups)
        for k in range(len(ids))
    ]


def _weightings(
    scores: FloatArray, weights: Sequence[float], ids: Sequence[str], rows: int
) -> FloatArray:
    """The weights of every scoring, (competencies + 1) x competencies: the job's, then the
    job's without each competency, rescaled to sum to 1 (a row of NaN when nothing is left)."""
    k = len(weights)
    if scores.ndim != 2 or scores.shape != (rows, k) or len(ids) != k:
        raise ValueError("scores must be candidates x competencies, with one weight and id each")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or not math.isclose(float(w.sum()), 1.0, abs_tol=1e-9):
        raise ValueError("weights must be non-negative and sum to 1")
    without = np.tile(w, (k, 1))
    np.fill_diagonal(without, 0.0)
    left = without.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        without = np.where(left > 0, without / left, np.nan)
    result: FloatArray = np.vstack([w, without])
    return result


def _effect(
    k: int,
    competency: str,
    weight: float,
    defined: bool,
    ratios: FloatArray,
    lowest: dict[str, FloatArray],
    groups: Sequence[Group],
) -> dict[str, Any]:
    """One competency's row of ``competency_effects`` (scoring ``k + 1`` is without it)."""

    def without(value: float) -> float | None:
        return _number(float(value)) if defined else None

    low = {d: {"with": float(lowest[d][0]), "without": without(lowest[d][k + 1])} for d in lowest}
    return {
        "competency": competency,
        "weight": weight,
        "lowest": low,
        "groups": [
            {
                "dimension": g.dimension,
                "group": g.name,
                "with": _number(float(ratios[0, i])),
                "without": without(float(ratios[k + 1, i])),
            }
            for i, g in enumerate(groups)
        ],
        "drives_gap": [d for d, pair in low.items() if _lifts(pair["with"], pair["without"])],
    }


def _lifts(before: float | None, after: float | None) -> bool:
    """Whether a lowest ratio going from ``before`` to ``after`` closes a gap: from under
    0.8 to 0.8 or more, or up by ``GAP_LIFT`` or more."""
    if before is None or after is None:
        return False
    threshold = float(FOUR_FIFTHS)
    return (before < threshold <= after) or after - before >= GAP_LIFT
