"""Synthetic audit populations with planted gaps, whose true rates are known exactly.

    python -m bench.audit_population --out FILE [--seed N]

A population is planned cell by cell of sex x race (either may be None: unknown), each cell
with its size, how many of it are selected and how many score strictly above the whole
sample's median. Every "low" row scores one identical low score (40.0) and every "high" row
a distinct score in (40, 100]; with fewer than half the rows high, the median is the low
score, so exactly the planned rows are above it. ``expected_audit`` computes every group's
true rates, ratios and flags from the plan alone, in exact fractions, independently of
``rtserver.scoring.audit``: what the audit must reproduce.

The default population (the CLI's) plants a gap: women are selected at 0.6 times men's rate
(0.18 against 0.30), Native Hawaiian or Other Pacific Islander candidates are 1.5 % of the
sample, and 50 of 1000 rows lack a sex, a race or both. A synthetic population is a test of
the audit's arithmetic, never an audit.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from rtserver.scoring.audit import AuditRow

LOW_SCORE = 40.0
TOP_SCORE = 100.0
FOUR_FIFTHS = Fraction(4, 5)
SMALL_GROUP_SHARE = Fraction(2, 100)


@dataclass(frozen=True)
class PlantedGroup:
    """One cell of the plan: ``n`` rows of this sex and race (None: unknown), ``selected``
    of them selected and ``above`` of them scoring above the whole sample's median."""

    sex: str | None
    race: str | None
    n: int
    selected: int
    above: int


NHPI = "Native Hawaiian or Other Pacific Islander"
DEFAULT_CELLS = (
    # Men: selected at 0.30 (150 of 500, 156 of 520 with the unknown race below), 45 % above.
    PlantedGroup("Male", "White", 250, 75, 112),
    PlantedGroup("Male", "Black or African American", 100, 30, 45),
    PlantedGroup("Male", "Asian", 80, 24, 36),
    PlantedGroup("Male", "Hispanic or Latino", 62, 19, 28),
    PlantedGroup("Male", NHPI, 8, 2, 4),
    # Women: selected at 0.18 (81 of 450), 0.6 times men's rate; about 38 % above.
    PlantedGroup("Female", "White", 200, 36, 76),
    PlantedGroup("Female", "Black or African American", 100, 18, 38),
    PlantedGroup("Female", "Asian", 80, 14, 30),
    PlantedGroup("Female", "Hispanic or Latino", 63, 12, 24),
    PlantedGroup("Female", NHPI, 7, 1, 2),
    # Unknowns: 50 rows.
    PlantedGroup(None, "White", 20, 5, 8),
    PlantedGroup("Male", None, 20, 6, 9),  # keeps men at 0.30 exactly
    PlantedGroup(None, None, 10, 2, 4),
)


def check_plan(cells: Sequence[PlantedGroup]) -> None:
    """Raises ValueError unless every count fits its cell and fewer than half of all rows
    are above (so that the median is the low score)."""
    if not cells:
        raise ValueError("the plan has no cells")
    for c in cells:
        if c.n < 0 or not 0 <= c.selected <= c.n or not 0 <= c.above <= c.n:
            raise ValueError(f"cell {c}: counts must lie within 0..n")
    n, above = sum(c.n for c in cells), sum(c.above for c in cells)
    if n == 0 or 2 * above >= n:
        raise ValueError(f"{above} of {n} rows above: it must be fewer than half")


def make_audit_population(cells: Sequence[PlantedGroup], seed: int) -> list[AuditRow]:
    """The rows of the plan, shuffled by ``seed``: within each cell exactly ``selected``
    selected and exactly ``above`` scoring above the median, chosen at random and apart."""
    check_plan(cells)
    rng = np.random.default_rng(seed)
    high = iter(_high_scores(rng, sum(c.above for c in cells)))
    planned: list[tuple[float, bool, str | None, str | None]] = []
    for c in cells:
        selected = _exactly(rng, c.n, c.selected)
        above = _exactly(rng, c.n, c.above)
        for i in range(c.n):
            score = next(high) if above[i] else LOW_SCORE
            planned.append((score, bool(selected[i]), c.sex, c.race))
    order = rng.permutation(len(planned))
    return [AuditRow(f"c{k + 1:05d}", *planned[int(j)]) for k, j in enumerate(order)]


def _high_scores(rng: np.random.Generator, count: int) -> list[float]:
    """``count`` distinct scores in (40, 100], evenly spaced, in random order."""
    steps = rng.permutation(count) + 1
    return [LOW_SCORE + (TOP_SCORE - LOW_SCORE) * int(k) / count for k in steps]


def _exactly(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """A random mask of ``n`` with exactly ``k`` set."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=k, replace=False)] = True
    return mask


def expected_audit(cells: Sequence[PlantedGroup]) -> dict[str, Any]:
    """The true audit of the plan in exact fractions: ``n``, ``selected``, ``unknown`` per
    dimension, and ``groups``, keyed by (dimension, group), each with its ``n``,
    ``selected``, ``above``, ``selection_rate``, ``scoring_rate``, the two impact ratios
    (None where the dimension's highest rate is 0) and the flags ``below_four_fifths``,
    ``scoring_below_four_fifths`` and ``under_2pct``."""
    check_plan(cells)
    n = sum(c.n for c in cells)
    counts: dict[tuple[str, str], list[int]] = {}  # (dimension, group) -> [n, selected, above]
    unknown = {"sex": 0, "race": 0, "sex_race": 0}
    for c in cells:
        labels = {
            "sex": c.sex,
            "race": c.race,
            "sex_race": f"{c.sex} / {c.race}" if c.sex and c.race else None,
        }
        for dimension, label in labels.items():
            if label is None:
                unknown[dimension] += c.n
                continue
            tally = counts.setdefault((dimension, label), [0, 0, 0])
            for j, value in enumerate((c.n, c.selected, c.above)):
                tally[j] += value
    groups = {
        key: {
            "n": size,
            "selected": chosen,
            "above": above,
            "selection_rate": Fraction(chosen, size),
            "scoring_rate": Fraction(above, size),
            "under_2pct": Fraction(size, n) < SMALL_GROUP_SHARE,
        }
        for key, (size, chosen, above) in counts.items()
        if size > 0
    }
    for rate, ratio, flag in (
        ("selection_rate", "impact_ratio", "below_four_fifths"),
        ("scoring_rate", "scoring_impact_ratio", "scoring_below_four_fifths"),
    ):
        _add_ratios(groups, rate, ratio, flag)
    return {
        "n": n,
        "selected": sum(c.selected for c in cells),
        "unknown": unknown,
        "groups": groups,
    }


def _add_ratios(
    groups: dict[tuple[str, str], dict[str, Any]], rate: str, ratio: str, flag: str
) -> None:
    """Each group's ``rate`` over its dimension's highest, and whether that is under 4/5."""
    best: dict[str, Fraction] = {}
    for (dimension, _), g in groups.items():
        best[dimension] = max(best.get(dimension, Fraction(0)), g[rate])
    for (dimension, _), g in groups.items():
        top = best[dimension]
        g[ratio] = g[rate] / top if top > 0 else None
        g[flag] = g[ratio] is not None and g[ratio] < FOUR_FIFTHS


def write_csv(rows: Sequence[AuditRow], path: Path) -> None:
    """``rows`` as an audit CSV (``read_audit_csv``'s format; unknown = empty cell). Scores
    are written as Python's shortest round-trip text, so they read back identical."""
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["candidate", "score", "selected", "sex", "race"])
        for r in rows:
            writer.writerow(
                [r.candidate, repr(r.score), int(r.selected), r.sex or "", r.race or ""]
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="the CSV to write")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the rows and scores")
    args = parser.parse_args(argv)
    rows = make_audit_population(DEFAULT_CELLS, args.seed)
    write_csv(rows, args.out)
    print(f"{len(rows)} candidates written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
