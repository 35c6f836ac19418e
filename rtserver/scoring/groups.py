"""The demographic groups of an audit sample, and each group's rates, for many scorings at once.

A bias audit (``audit.py``) and a fairness-constrained calibration (``calibration.py``) ask
the same question of a scoring: what share of each group does it put strictly above the
whole sample's median score, and how does that share compare with the best-off group's in
the same dimension (the impact ratio of NYC Local Law 144's rules, 6 RCNY § 5-301)? The
calibration asks it of thousands of candidate weightings, so everything here takes a matrix
of scorings (one row each) and answers with a matrix.

Demographics come only from the candidates' voluntary self-identification, which scoring
never reads: these functions are handed the labels by the audit, never by a job-fit.
A missing label (None or an empty text) is unknown: it is counted, and kept out of every
group of its dimension (and out of every intersection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DIMENSIONS = ("sex", "race", "sex_race")
INTERSECTION_SEPARATOR = " / "

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class Group:
    """One group of one dimension: its members, as a mask over the sample's rows."""

    dimension: str  # "sex", "race" or "sex_race"
    name: str  # the label; for sex_race "<sex> / <race>"
    members: BoolArray

    @property
    def n(self) -> int:
        return int(self.members.sum())


def known(label: str | None) -> str | None:
    """The label, stripped; None when it is unknown (missing or empty)."""
    if label is None:
        return None
    label = label.strip()
    return label or None


def groups_of(sex: Sequence[str | None], race: Sequence[str | None]) -> list[Group]:
    """Every group with at least one member, dimension by dimension (sex, race, then their
    intersection), each dimension's groups sorted by name."""
    if len(sex) != len(race):
        raise ValueError("sex and race must label the same rows")
    labels = {
        "sex": [known(s) for s in sex],
        "race": [known(r) for r in race],
    }
    labels["sex_race"] = [
        f"{s}{INTERSECTION_SEPARATOR}{r}" if s is not None and r is not None else None
        for s, r in zip(labels["sex"], labels["race"], strict=True)
    ]
    groups: list[Group] = []
    for dimension in DIMENSIONS:
        column = np.array([label or "" for label in labels[dimension]], dtype=object)
        for name in sorted({label for label in labels[dimension] if label is not None}):
            groups.append(Group(dimension, name, column == name))
    return groups


def unknown_counts(sex: Sequence[str | None], race: Sequence[str | None]) -> dict[str, int]:
    """Rows whose label is unknown, per dimension (an intersection is unknown when either
    label is)."""
    sexes = [known(s) for s in sex]
    races = [known(r) for r in race]
    return {
        "sex": sum(s is None for s in sexes),
        "race": sum(r is None for r in races),
        "sex_race": sum(s is None or r is None for s, r in zip(sexes, races, strict=True)),
    }


def above_median(scores: FloatArray) -> BoolArray:
    """For each scoring (a row of ``scores``, one column per candidate; a 1-D array is one
    scoring), whether each candidate scores strictly above that scoring's median over the
    whole sample."""
    scores = np.asarray(scores, dtype=np.float64)
    medians = np.median(scores, axis=-1, keepdims=True)
    result: BoolArray = scores > medians
    return result


def group_rates(flags: BoolArray, groups: Sequence[Group]) -> FloatArray:
    """The share of each group's members flagged, per scoring: ``flags`` is (scorings x
    rows), or one row; the result is (scorings x groups), or one row. Counts over sizes,
    so a rate is exactly the fraction a person would compute."""
    flags = np.asarray(flags, dtype=bool)
    if not groups:
        return np.zeros((*flags.shape[:-1], 0))
    membership = np.stack([g.members for g in groups], axis=1).astype(np.int64)  # rows x groups
    counts = flags.astype(np.int64) @ membership
    sizes = membership.sum(axis=0)
    rates: FloatArray = counts / sizes
    return rates


def impact_ratios(rates: FloatArray, groups: Sequence[Group]) -> FloatArray:
    """Each group's rate over the highest rate of its dimension, per scoring (same shape as
    ``rates``); NaN where that highest rate is 0 (no ratio is defined)."""
    rates = np.asarray(rates, dtype=np.float64)
    ratios = np.full(rates.shape, np.nan)
    for dimension in DIMENSIONS:
        columns = [i for i, g in enumerate(groups) if g.dimension == dimension]
        if not columns:
            continue
        block = rates[..., columns]
        highest = block.max(axis=-1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[..., columns] = np.where(highest > 0, block / highest, np.nan)
    return ratios


def lowest_ratio(ratios: FloatArray, groups: Sequence[Group], dimension: str) -> FloatArray:
    """The lowest impact ratio of ``dimension``'s groups, per scoring (NaN ratios skipped;
    1.0 when the dimension has no group with a ratio)."""
    columns = [i for i, g in enumerate(groups) if g.dimension == dimension]
    ratios = np.asarray(ratios, dtype=np.float64)
    if not columns:
        return np.ones(ratios.shape[:-1])
    block = np.where(np.isnan(ratios[..., columns]), np.inf, ratios[..., columns])
    lowest = block.min(axis=-1)
    result: FloatArray = np.where(np.isinf(lowest), 1.0, lowest)
    return result
