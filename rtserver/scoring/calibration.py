"""Calibrating a job's competency weights on past candidates' later job performance.

A job's job-fit score is the weighted sum of its competency scores (0-100), the weights
non-negative and summing to 1 (``jobs.py``). Given past candidates' competency scores and a
later measure of how they performed, :func:`calibrate` re-weights: a non-negative fit of
performance on the scores, pulled toward prior weights (the job's current ones, or equal
ones) as hard as cross-validation says the data warrant, then scaled to sum to 1. Its
validity, the Pearson r of the weighted score with performance, is measured on rows the
fit never saw (nested cross-validation), beside the prior's own r on the same rows, each
with a bootstrap 95 % interval.

:func:`calibrate_fair` adds the bias audit's condition (``groups.py``): on the calibration
data, every group's share of candidates scoring above the whole sample's median must be at
least 0.8 of the best-off group's share in its dimension (the impact ratio of NYC Local Law
144's rules). It searches the weights on the simplex for the highest validity that meets
it, and reports what the condition cost.

Pure computation: the CSV reader is here because its errors must name the line, but
nothing here reads the store or the command line, and nothing decides: a person adopts
the weights or not.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import nnls

from rtserver.scoring.groups import (
    DIMENSIONS,
    FloatArray,
    Group,
    above_median,
    group_rates,
    groups_of,
    impact_ratios,
    known,
    lowest_ratio,
)

IntArray = npt.NDArray[np.int64]

MIN_OUTCOMES = 30
# Regularisation strengths tried, relative to the data: lambda = strength * n * (the mean
# variance of the competency columns), so that one strength means the same pull toward the
# prior whatever the sample's size and spread. 0 is the plain non-negative fit.
STRENGTHS = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
CHANCE_Z = 1.96  # a held-out r under CHANCE_Z / sqrt(n) is not told apart from 0
# Columns that are never a competency: the calibration's own, and those an export of
# outcomes or of an audit sample carries beside them.
RESERVED_COLUMNS = (
    "candidate",
    "performance",
    "sex",
    "race",
    "hired",
    "rated_at",
    "session",
    "score",
    "selected",
)
PRIOR_KINDS = ("current", "equal")
FAIR_THRESHOLD = 0.8  # the impact ratio every group must reach (the four-fifths rule)
# LL144's rules let an audit leave out of the impact ratios a category under 2 % of the
# data; the fair search does so only when no weighting meets the condition with them in.
SMALL_GROUP_SHARE = 0.02
MAX_PROBLEMS = 20  # CSV problems listed in one error

# The fair search: how many weightings it tries, all evaluated as one matrix.
DIRICHLET_SAMPLES = 2000
MIXTURE_STEPS = 20  # t = 0.05 .. 1 toward each simplex vertex
REFINE_ROUNDS = 30
REFINE_BATCH = 128
REFINE_STARTS = 4
REFINE_STEP = 0.1  # the first perturbations' scale, in weight units; halves on every miss
# In the fallback (no weighting meets the condition), validity only breaks ties between
# equally low ratios: a ratio moves in steps of at least 1/n, far above this.
TIE_BREAK = 1e-6


class CalibrationInvalid(ValueError):
    """Calibration data or arguments that cannot be used; the message says why (and, for a
    CSV, on which lines)."""


class TooFewOutcomes(CalibrationInvalid):
    """Fewer than :data:`MIN_OUTCOMES` candidates with a performance outcome."""

    def __init__(self, n: int) -> None:
        super().__init__(
            f"calibration needs at least {MIN_OUTCOMES} outcomes, has {n}: on small samples "
            "unit (equal) weights predict about as well as fitted regression weights "
            "(Dawes 1979; Schmidt 1971)"
        )
        self.n = n


@dataclass(frozen=True, eq=False)
class CalibrationData:
    """Past candidates' competency scores and their later performance, one row each."""

    candidates: tuple[str, ...]
    competencies: tuple[str, ...]  # competency ids, in the order of the score columns
    scores: FloatArray  # n x k, each 0-100
    performance: FloatArray  # n, on whatever scale the employer rates (higher is better)
    sex: tuple[str | None, ...]  # self-identified; all None when not given
    race: tuple[str | None, ...]

    def __post_init__(self) -> None:
        n, k = len(self.candidates), len(self.competencies)
        if np.shape(self.scores) != (n, k) or np.shape(self.performance) != (n,):
            raise CalibrationInvalid(
                f"scores must be {n} x {k} and performance {n} long, are "
                f"{np.shape(self.scores)} and {np.shape(self.performance)}"
            )
        if len(self.sex) != n or len(self.race) != n:
            raise CalibrationInvalid("sex and race must label every candidate (None: unknown)")

    @property
    def n(self) -> int:
        return len(self.candidates)


@dataclass(frozen=True)
class Validity:
    """How well a weighting predicts performance: Pearson r of the weighted score with
    performance, and its bootstrap percentile 95 % interval."""

    r: float
    ci: tuple[float, float]

    def to_wire(self) -> dict[str, Any]:
        return {"r": self.r, "ci": list(self.ci)}


@dataclass(frozen=True)
class Calibration:
    weights: dict[str, float]  # competency id -> weight, non-negative, summing to 1
    prior: dict[str, float]  # the weights it was pulled toward
    validity_prior: Validity  # the prior's r on all rows (nothing fitted)
    validity: Validity  # the calibrated weights' r on held-out rows (nested CV)
    n: int  # candidates
    strength: float  # chosen lambda over n * mean column variance (0: no pull to the prior)
    folds: int
    prior_kind: str  # "current" or "equal"
    validity_by_group: list[dict[str, Any]] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        # Weights at full precision: the weights a fairness check was made on are exactly
        # the ones reported and applied (rounded, a ratio at 0.80 could become 0.79).
        return {
            "weights": dict(self.weights),
            "validity": {
                "prior": self.validity_prior.to_wire(),
                "calibrated": self.validity.to_wire(),
            },
            "n": self.n,
            "prior_weights": dict(self.prior),
            "prior_kind": self.prior_kind,
            "strength": self.strength,
            "folds": self.folds,
            "validity_by_group": self.validity_by_group,
        }


@dataclass(frozen=True)
class FairCalibration:
    weights: dict[str, float]  # the fair weights, non-negative, summing to 1
    validity: Validity  # on held-out rows, the fair search rerun inside each training fold
    unconstrained: Calibration
    ratios_before: dict[str, float]  # lowest impact ratio per dimension, unconstrained weights
    ratios_after: dict[str, float]  # the same with the fair weights
    groups_before: list[dict[str, Any]]  # dimension, group, n, scoring_rate, impact_ratio
    groups_after: list[dict[str, Any]]
    feasible: bool  # whether every constrained group reaches the threshold
    excluded: tuple[str, ...]  # "<dimension>: <group>" left out of the impact ratios
    threshold: float = FAIR_THRESHOLD

    @property
    def validity_lost(self) -> float:
        """What the condition cost: the unconstrained r less the fair r (both held out)."""
        return self.unconstrained.validity.r - self.validity.r

    def to_wire(self) -> dict[str, Any]:
        # Weights at full precision: the weights a fairness check was made on are exactly
        # the ones reported and applied (rounded, a ratio at 0.80 could become 0.79).
        return {
            "weights": dict(self.weights),
            "validity": {
                "prior": self.unconstrained.validity_prior.to_wire(),
                "calibrated": self.validity.to_wire(),
                "unconstrained": self.unconstrained.validity.to_wire(),
            },
            "n": self.unconstrained.n,
            "prior_weights": dict(self.unconstrained.prior),
            "prior_kind": self.unconstrained.prior_kind,
            "strength": self.unconstrained.strength,
            "folds": self.unconstrained.folds,
            "fairness": {
                "unconstrained_weights": dict(self.unconstrained.weights),
                "ratios_before": self.ratios_before,
                "ratios_after": self.ratios_after,
                "groups_before": self.groups_before,
                "groups_after": self.groups_after,
                "validity_lost": self.validity_lost,
                "feasible": self.feasible,
                "excluded": list(self.excluded),
                "threshold": self.threshold,
            },
        }


# -- reading ------------------------------------------------------------------------------


def read_calibration_csv(path: Path, competencies: Sequence[str] | None = None) -> CalibrationData:
    """The calibration data in the CSV at ``path`` (UTF-8, a BOM allowed).

    Columns: ``candidate``, one per competency id (scores 0-100), ``performance``; optional
    ``sex`` and ``race`` (empty: unknown); ``hired`` and ``rated_at`` are ignored. The
    competency columns are every other column, or exactly ``competencies`` when given (then
    a missing one is an error and other columns are ignored). CalibrationInvalid lists every
    problem, each with its line number."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            return _parse_csv(csv.reader(file), path.name, competencies)
    except OSError as exc:
        raise CalibrationInvalid(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise CalibrationInvalid(f"{path.name} is not UTF-8 text: {exc.reason}") from exc
    except csv.Error as exc:
        raise CalibrationInvalid(f"{path.name} is not a valid CSV: {exc}") from exc


def _parse_csv(reader: Any, name: str, competencies: Sequence[str] | None) -> CalibrationData:
    header = [column.strip() for column in next(reader, [])]
    if not any(header):
        raise CalibrationInvalid(f"{name} is empty: line 1 must name the columns")
    problems = _header_problems(header, competencies)
    if problems:
        raise CalibrationInvalid(f"{name}, line 1: " + "; ".join(problems))
    column = {title: i for i, title in enumerate(header)}
    ids = tuple(competencies) if competencies is not None else _competency_columns(header)
    candidates: list[str] = []
    rows: list[list[float]] = []
    performance: list[float] = []
    sex: list[str | None] = []
    race: list[str | None] = []
    first_line: dict[str, int] = {}
    problems = []
    for fields in reader:
        line = reader.line_num
        if not any(field.strip() for field in fields):
            continue  # a blank line
        if len(fields) != len(header):
            problems.append(f"line {line}: {len(fields)} fields, the header has {len(header)}")
            continue
        candidate = fields[column["candidate"]].strip()
        if not candidate:
            problems.append(f"line {line}: the candidate is empty")
        elif candidate in first_line:
            problems.append(
                f"line {line}: candidate {candidate!r} is already on line {first_line[candidate]}"
            )
        else:
            first_line[candidate] = line
        # Any finite number: a competency is meant to be scored 0-100, but a fit does not
        # depend on the scale, and refusing a file over one rescaled column helps no one.
        row = [_number(fields[column[cid]], cid, line, problems) for cid in ids]
        outcome = _number(fields[column["performance"]], "performance", line, problems)
        candidates.append(candidate)
        rows.append(row)
        performance.append(outcome)
        sex.append(known(fields[column["sex"]]) if "sex" in column else None)
        race.append(known(fields[column["race"]]) if "race" in column else None)
    if problems:
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        raise CalibrationInvalid(
            f"{name}: " + "; ".join(shown) + (f"; and {more} more problems" if more else "")
        )
    return CalibrationData(
        candidates=tuple(candidates),
        competencies=ids,
        scores=np.array(rows, dtype=np.float64).reshape(len(rows), len(ids)),
        performance=np.array(performance, dtype=np.float64),
        sex=tuple(sex),
        race=tuple(race),
    )


def _header_problems(header: list[str], competencies: Sequence[str] | None) -> list[str]:
    problems = []
    duplicates = sorted({title for title in header if header.count(title) > 1})
    if duplicates:
        problems.append("columns named twice: " + ", ".join(duplicates))
    for required in ("candidate", "performance"):
        if required not in header:
            problems.append(f"no {required!r} column")
    if competencies is not None:
        missing = [cid for cid in competencies if cid not in header]
        if missing:
            problems.append("no column for competencies " + ", ".join(missing))
        reserved = [cid for cid in competencies if cid in RESERVED_COLUMNS]
        if reserved:
            problems.append("competency ids that name other columns: " + ", ".join(reserved))
    elif not _competency_columns(header):
        problems.append("no competency columns (one per competency id, scores 0-100)")
    return problems


def _competency_columns(header: list[str]) -> tuple[str, ...]:
    return tuple(title for title in header if title and title not in RESERVED_COLUMNS)


def _number(
    text: str,
    what: str,
    line: int,
    problems: list[str],
    low: float = -math.inf,
    high: float = math.inf,
) -> float:
    """``text`` as a finite number in [low, high]; a problem naming the line (and NaN) if
    it is not one."""
    try:
        value = float(text.strip())
    except ValueError:
        problems.append(f"line {line}: {what} {text.strip()!r} is not a number")
        return math.nan
    if not math.isfinite(value) or not low <= value <= high:
        bounds = f" between {low:g} and {high:g}" if math.isfinite(low) else ""
        problems.append(f"line {line}: {what} {text.strip()!r} is not a finite number{bounds}")
        return math.nan
    return value


# -- fitting ------------------------------------------------------------------------------


def calibrate(
    data: CalibrationData,
    prior: Mapping[str, float],
    *,
    folds: int = 5,
    seed: int = 0,
    prior_kind: str = "current",
    resamples: int = 2000,
) -> Calibration:
    """Weights for ``data``'s competencies (non-negative, summing to 1) that predict its
    performance, pulled toward ``prior`` (the job's current weights, or equal ones) by the
    strength that ``folds``-fold cross-validation on all rows finds best.

    The calibrated validity is nested: each of ``folds`` held-out folds (a ``seed``-ed
    shuffle) is predicted by weights fitted, strength chosen, on the other folds alone. The
    prior's validity is its r on all rows (nothing about it is fitted). Each interval is a
    ``resamples``-draw bootstrap over the rows. TooFewOutcomes under :data:`MIN_OUTCOMES`
    rows; CalibrationInvalid when nothing can be fitted (constant performance or scores)."""
    x, y, w0 = _checked(data, prior, folds, prior_kind, resamples)

    def fit(rows: IntArray, key: int) -> FloatArray:
        strength = _choose_strength(x[rows], y[rows], w0, folds, _rng(seed, key))
        return _fit(x[rows], y[rows], w0, (strength,))[0]

    held_out = _cross_validated(x, y, folds, seed, fit)
    strength = _choose_strength(x, y, w0, folds, _rng(seed, folds))
    weights = _fit(x, y, w0, (strength,))[0]
    return Calibration(
        weights=dict(zip(data.competencies, weights.tolist(), strict=True)),
        prior=dict(zip(data.competencies, w0.tolist(), strict=True)),
        validity_prior=_validity(x @ w0, y, resamples, seed),
        validity=_validity(held_out, y, resamples, seed),
        n=data.n,
        strength=strength,
        folds=folds,
        prior_kind=prior_kind,
        validity_by_group=validity_by_group(data, x @ w0, held_out),
    )


# A group's validity is shown from this many candidates up: under it, r is mostly noise.
MIN_GROUP_VALIDITY_N = 20


def validity_by_group(
    data: CalibrationData, prior: FloatArray, calibrated: FloatArray
) -> list[dict[str, Any]]:
    """Pearson r of the prior's and the calibrated (held-out) predictions with performance
    within each self-identified group of at least :data:`MIN_GROUP_VALIDITY_N`: the accuracy
    per group the EU AI Act (Art. 13) asks a high-risk system to state. Empty without
    demographics."""
    rows = []
    for group in groups_of(data.sex, data.race):
        if group.n < MIN_GROUP_VALIDITY_N:
            continue
        members = group.members
        y = data.performance[members]
        rows.append(
            {
                "dimension": group.dimension,
                "group": group.name,
                "n": group.n,
                "prior_r": _finite(pearson(prior[members], y)),
                "calibrated_r": _finite(pearson(calibrated[members], y)),
            }
        )
    return rows


def _finite(value: FloatArray | float) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _checked(
    data: CalibrationData,
    prior: Mapping[str, float],
    folds: int,
    prior_kind: str,
    resamples: int,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The scores, the performance and the prior as arrays, once everything is usable."""
    if data.n < MIN_OUTCOMES:
        raise TooFewOutcomes(data.n)
    if prior_kind not in PRIOR_KINDS:
        raise CalibrationInvalid(
            f"prior_kind is one of {', '.join(PRIOR_KINDS)}, not {prior_kind!r}"
        )
    if not 2 <= folds <= MIN_OUTCOMES // 3:
        # The inner folds split a training set of at least MIN_OUTCOMES * (1 - 1/folds) rows.
        raise CalibrationInvalid(f"folds must be between 2 and {MIN_OUTCOMES // 3}, not {folds}")
    if resamples < 1:
        raise CalibrationInvalid(f"resamples must be at least 1, not {resamples}")
    if set(prior) != set(data.competencies):
        raise CalibrationInvalid(
            "the prior must weight exactly the data's competencies "
            f"({', '.join(data.competencies)}), weights {', '.join(sorted(prior))}"
        )
    w0 = np.array([prior[cid] for cid in data.competencies], dtype=np.float64)
    if not (np.all(np.isfinite(w0)) and np.all(w0 >= 0) and w0.sum() > 0):
        raise CalibrationInvalid("the prior weights must be non-negative, not all zero")
    x = np.asarray(data.scores, dtype=np.float64)
    y = np.asarray(data.performance, dtype=np.float64)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise CalibrationInvalid("scores and performance must be finite numbers")
    if np.ptp(y) == 0:
        raise CalibrationInvalid(
            f"performance is {y[0]:g} for every candidate: there is nothing to predict"
        )
    constant = [
        cid for cid, spread in zip(data.competencies, np.ptp(x, axis=0), strict=True) if spread == 0
    ]
    if constant:
        # Its weight would be anything at all: it moves every candidate's score alike.
        raise CalibrationInvalid(
            "every candidate has the same score on "
            + ", ".join(constant)
            + ": its weight cannot be calibrated"
        )
    return x, y, w0 / w0.sum()


def _rng(seed: int, *path: int) -> np.random.Generator:
    """An independent stream for one step of one calibration, the same on every run."""
    return np.random.default_rng([seed, *path])


def _fold_indices(n: int, folds: int, rng: np.random.Generator) -> list[IntArray]:
    return np.array_split(rng.permutation(n).astype(np.int64), folds)


def _cross_validated(
    x: FloatArray,
    y: FloatArray,
    folds: int,
    seed: int,
    fit: Callable[[IntArray, int], FloatArray],
) -> FloatArray:
    """Every row's weighted score under weights ``fit`` on the other folds: weights sum to 1
    and carry no intercept, so the folds' predictions share one scale and pool."""
    predictions = np.empty(len(y))
    everything = np.arange(len(y), dtype=np.int64)
    for key, test in enumerate(_fold_indices(len(y), folds, _rng(seed))):
        train = np.setdiff1d(everything, test)
        predictions[test] = x[test] @ fit(train, key)
    return predictions


def _fit(x: FloatArray, y: FloatArray, w0: FloatArray, strengths: Sequence[float]) -> FloatArray:
    """Weights (one row per strength, each non-negative and summing to 1).

    With X and y centred, b minimises ||y - X b||^2 + lambda ||b - c w0||^2 subject to
    b >= 0, as one non-negative least squares on the stacked system
    [X; sqrt(lambda) I] b = [y; sqrt(lambda) c w0], with c putting the prior at the data's
    scale (below), so that lambda pulls b's direction toward w0 rather than its size toward
    zero. The weights are b over its sum; the prior when b is all zero (nothing fits)."""
    xc = x - x.mean(axis=0)
    yc = y - y.mean()
    n, k = xc.shape
    scale = n * float(xc.var(axis=0).mean())
    prior_score = xc @ w0
    # |slope|: a prior that predicts backwards on these rows still needs a target on the
    # positive side, at the data's scale, for the pull toward it to keep its direction.
    # The prior at the data's scale: c w0 gives the scores the spread of performance. (The
    # slope of y on X w0 would be the tighter fit, but it falls to about 0 wherever the prior
    # predicts little, as on noise, and the pull toward c w0 then turns into a pull toward
    # zero, which bends the direction as ridge does: measured, up to 0.06 off the prior at
    # the strongest pull on pure noise, against 0.000 with this scale.)
    c = math.sqrt(float(yc @ yc) / max(float(prior_score @ prior_score), 1e-300))
    weights = np.empty((len(strengths), k))
    for i, strength in enumerate(strengths):
        root = math.sqrt(strength * scale)
        system = np.vstack([xc, root * np.eye(k)])
        target = np.concatenate([yc, root * c * w0])
        b, _ = nnls(system, target)
        total = b.sum()
        weights[i] = b / total if total > 0 else w0
    return weights


def _choose_strength(
    x: FloatArray, y: FloatArray, w0: FloatArray, folds: int, rng: np.random.Generator
) -> float:
    """The strength in :data:`STRENGTHS` whose ``folds``-fold out-of-fold predictions
    correlate best with performance, pooled (a tie goes to the stronger pull); the
    strongest when even the best r is not above chance.

    On data that predict nothing every strength's r is noise around 0, and the best of
    them is the best of ten draws: the prior, which nothing was fitted to, is then the
    better bet. "Above chance" is r beyond the two-sided 5 % critical value of a zero
    correlation on n rows, about 1.96 / sqrt(n)."""
    predictions = np.empty((len(STRENGTHS), len(y)))
    everything = np.arange(len(y), dtype=np.int64)
    for test in _fold_indices(len(y), folds, rng):
        train = np.setdiff1d(everything, test)
        predictions[:, test] = _fit(x[train], y[train], w0, STRENGTHS) @ x[test].T
    rs = np.nan_to_num(pearson(predictions, y), nan=-np.inf)
    if rs.max() < CHANCE_Z / math.sqrt(len(y)):
        return STRENGTHS[-1]
    return STRENGTHS[int(np.flatnonzero(rs >= rs.max() - 1e-12)[-1])]


def pearson(predictions: FloatArray, outcomes: FloatArray) -> FloatArray:
    """Pearson r of each row of ``predictions`` with the matching row of ``outcomes`` (or
    with ``outcomes`` itself when it is one row); NaN where either is constant."""
    p = predictions - predictions.mean(axis=-1, keepdims=True)
    o = outcomes - outcomes.mean(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        r: FloatArray = (p * o).sum(axis=-1) / np.sqrt((p * p).sum(axis=-1) * (o * o).sum(axis=-1))
    return r


def _validity(predictions: FloatArray, y: FloatArray, resamples: int, seed: int) -> Validity:
    """r of ``predictions`` with ``y``, and the 2.5th and 97.5th percentiles of r over
    ``resamples`` bootstrap resamples of the (prediction, performance) pairs."""
    n = len(y)
    draws = _rng(seed, n, resamples).integers(0, n, size=(resamples, n))
    rs = pearson(predictions[draws], y[draws])
    low, high = np.nanpercentile(rs, [2.5, 97.5]) if np.isfinite(rs).any() else (np.nan,) * 2
    return Validity(r=float(pearson(predictions, y)), ci=(float(low), float(high)))


# -- the fairness-constrained variant ----------------------------------------------------


def calibrate_fair(
    data: CalibrationData,
    prior: Mapping[str, float],
    *,
    folds: int = 5,
    seed: int = 0,
    prior_kind: str = "current",
    min_ratio: float = FAIR_THRESHOLD,
    resamples: int = 2000,
) -> FairCalibration:
    """The weights of highest in-sample validity (r of the weighted score with performance,
    weights on the simplex) under which every group's impact ratio on ``data`` is at least
    ``min_ratio``, beside :func:`calibrate`'s unconstrained weights.

    A group's impact ratio is its share of candidates scoring strictly above the whole
    sample's median weighted score over the best-off group's share in its dimension (sex,
    race, and their intersection; ``groups.py``). The ratio moves in steps, so the weights
    are searched, not solved for: the unconstrained weights, the prior, the simplex's
    vertices, mixtures of the unconstrained weights with each vertex and seeded random
    weightings, all evaluated at once; the best that meets the condition is then refined by
    shrinking random steps on the simplex. When none meets it, groups under 2 % of the
    sample are left out (``excluded``) and the search reruns; when still none does, the
    weights with the highest lowest ratio come back with ``feasible`` False.

    The fair validity is nested like the unconstrained one: each held-out fold is predicted
    by weights that the whole procedure, search included, found on the other folds."""
    if all(known(s) is None for s in data.sex) and all(known(r) is None for r in data.race):
        raise CalibrationInvalid(
            "--fair needs sex and race columns (the candidates' voluntary "
            "self-identification, empty where unknown): without them no group's impact "
            "ratio can be measured"
        )
    if not 0 < min_ratio <= 1:
        raise CalibrationInvalid(f"min_ratio must be above 0 and at most 1, not {min_ratio}")
    x, y, w0 = _checked(data, prior, folds, prior_kind, resamples)
    unconstrained = calibrate(
        data, prior, folds=folds, seed=seed, prior_kind=prior_kind, resamples=resamples
    )

    def fit(rows: IntArray, key: int) -> FloatArray:
        # The same inner choices as calibrate's nested fit of this fold, then the search.
        strength = _choose_strength(x[rows], y[rows], w0, folds, _rng(seed, key))
        calibrated = _fit(x[rows], y[rows], w0, (strength,))[0]
        sex = [data.sex[i] for i in rows]
        race = [data.race[i] for i in rows]
        search = _fair_search(
            x[rows], y[rows], calibrated, w0, sex, race, min_ratio, _rng(seed, key, 1)
        )
        return search.weights

    held_out = _cross_validated(x, y, folds, seed, fit)
    calibrated = np.array([unconstrained.weights[cid] for cid in data.competencies])
    search = _fair_search(
        x, y, calibrated, w0, data.sex, data.race, min_ratio, _rng(seed, folds, 1)
    )
    ratios_before, groups_before = _group_table(calibrated, x, search.groups, search.excluded)
    ratios_after, groups_after = _group_table(search.weights, x, search.groups, search.excluded)
    return FairCalibration(
        weights=dict(zip(data.competencies, search.weights.tolist(), strict=True)),
        validity=_validity(held_out, y, resamples, seed),
        unconstrained=unconstrained,
        ratios_before=ratios_before,
        ratios_after=ratios_after,
        groups_before=groups_before,
        groups_after=groups_after,
        feasible=search.feasible,
        excluded=tuple(f"{g.dimension}: {g.name}" for g in search.excluded),
        threshold=min_ratio,
    )


@dataclass(frozen=True, eq=False)
class _Search:
    weights: FloatArray
    feasible: bool
    groups: list[Group]  # every group of the rows searched
    excluded: list[Group]  # those left out of the impact ratios


def _fair_search(
    x: FloatArray,
    y: FloatArray,
    calibrated: FloatArray,
    w0: FloatArray,
    sex: Sequence[str | None],
    race: Sequence[str | None],
    min_ratio: float,
    rng: np.random.Generator,
) -> _Search:
    """The search :func:`calibrate_fair` describes, on the rows ``x``, ``y``."""
    groups = groups_of(sex, race)
    small = [g for g in groups if g.n < SMALL_GROUP_SHARE * len(y)]
    candidates = _starting_points(calibrated, w0, rng)
    best = candidates[0]
    for excluded in [[], small] if small else [[]]:
        constrained = [g for g in groups if g not in excluded]
        best, feasible = _search(candidates, x, y, constrained, min_ratio, rng)
        if feasible:
            break
    return _Search(best, feasible, groups, excluded)


def _search(
    candidates: FloatArray,
    x: FloatArray,
    y: FloatArray,
    groups: Sequence[Group],
    min_ratio: float,
    rng: np.random.Generator,
) -> tuple[FloatArray, bool]:
    """The weights of highest validity among and around ``candidates`` whose lowest ratio
    over ``groups`` is at least ``min_ratio``, and True; or, when none is found, those of
    the highest lowest ratio, and False."""

    def fair_validity(weights: FloatArray) -> FloatArray:
        meets = _lowest_ratio(weights, x, groups) >= min_ratio
        return np.where(meets, _in_sample_r(weights, x, y), -np.inf)

    def fairest(weights: FloatArray) -> FloatArray:
        lowest = _lowest_ratio(weights, x, groups)
        return lowest + TIE_BREAK * np.nan_to_num(_in_sample_r(weights, x, y))

    keys = fair_validity(candidates)
    if np.isfinite(keys).any():
        starts = _best_rows(candidates, keys)
    else:
        # Feasible weightings can be a sliver of the simplex that no starting point hits
        # when many small groups each bind: climb the lowest ratio until it is reached.
        climbed = np.array(
            [_refine(w, fairest, rng) for w in _best_rows(candidates, fairest(candidates))]
        )
        keys = fair_validity(climbed)
        if not np.isfinite(keys).any():
            return climbed[int(np.argmax(fairest(climbed)))], False
        starts = climbed[np.isfinite(keys)]
    refined = np.array([_refine(w, fair_validity, rng) for w in starts])
    return refined[int(np.argmax(fair_validity(refined)))], True


def _best_rows(candidates: FloatArray, keys: FloatArray) -> FloatArray:
    """The :data:`REFINE_STARTS` rows of ``candidates`` with the highest finite ``keys``:
    the ratio's plateaus trap a single climb, so a few climb from different places."""
    order = np.argsort(-keys, kind="stable")[:REFINE_STARTS]
    return candidates[order[np.isfinite(keys[order])]]


def _starting_points(
    calibrated: FloatArray, w0: FloatArray, rng: np.random.Generator
) -> FloatArray:
    """Weightings to start the search from, one a row, every one on the simplex."""
    k = len(w0)
    vertices = np.eye(k)
    t = np.linspace(1 / MIXTURE_STEPS, 1, MIXTURE_STEPS)[:, None, None]
    mixtures = ((1 - t) * calibrated + t * vertices[None, :, :]).reshape(-1, k)
    samples = rng.dirichlet(np.ones(k), size=DIRICHLET_SAMPLES)
    return np.vstack([calibrated, w0, vertices, mixtures, samples])


def _refine(
    start: FloatArray, key: Callable[[FloatArray], FloatArray], rng: np.random.Generator
) -> FloatArray:
    """``start`` moved by random steps on the simplex while a batch of them finds a higher
    ``key``; the step halves whenever a batch finds none."""
    best, best_key = start, float(key(start[None, :])[0])
    step = REFINE_STEP
    for _ in range(REFINE_ROUNDS):
        trials = project_to_simplex(best + step * rng.standard_normal((REFINE_BATCH, len(best))))
        keys = key(trials)
        i = int(np.argmax(keys))
        if keys[i] > best_key:
            best, best_key = trials[i], float(keys[i])
        else:
            step /= 2
    return best


def project_to_simplex(points: FloatArray) -> FloatArray:
    """The nearest point (Euclidean) with non-negative coordinates summing to 1, for each
    row of ``points`` (Duchi, Shalev-Shwartz, Singer & Chandra 2008)."""
    k = points.shape[-1]
    ordered = -np.sort(-points, axis=-1)
    excess = np.cumsum(ordered, axis=-1) - 1
    positive = ordered - excess / np.arange(1, k + 1) > 0
    last = k - 1 - np.argmax(positive[..., ::-1], axis=-1)
    theta = np.take_along_axis(excess, last[..., None], axis=-1) / (last[..., None] + 1)
    projected: FloatArray = np.maximum(points - theta, 0)
    return projected


def _in_sample_r(weights: FloatArray, x: FloatArray, y: FloatArray) -> FloatArray:
    """r of each weighting's scores (a row of ``weights``) with ``y``, through the
    covariances, so thousands of weightings cost a k x k product each."""
    xc = x - x.mean(axis=0)
    yc = y - y.mean()
    covariance = xc.T @ yc
    gram = xc.T @ xc
    spread = np.einsum("ij,jk,ik->i", weights, gram, weights) * float(yc @ yc)
    with np.errstate(divide="ignore", invalid="ignore"):
        r: FloatArray = (weights @ covariance) / np.sqrt(spread)
    return r


def _lowest_ratio(weights: FloatArray, x: FloatArray, groups: Sequence[Group]) -> FloatArray:
    """The lowest impact ratio over ``groups``, for each weighting (a row of ``weights``)."""
    rates = group_rates(above_median(weights @ x.T), groups)
    ratios = impact_ratios(rates, groups)
    per_dimension = [lowest_ratio(ratios, groups, dimension) for dimension in DIMENSIONS]
    lowest: FloatArray = np.min(per_dimension, axis=0)
    return lowest


def _group_table(
    weights: FloatArray, x: FloatArray, groups: Sequence[Group], excluded: Sequence[Group]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Under ``weights``: the lowest impact ratio of each dimension that has groups, and each
    group's size, scoring rate and impact ratio (None when excluded or undefined), the
    ratios taken over the groups not excluded."""
    rates = group_rates(above_median(x @ weights), groups)
    kept = [i for i, g in enumerate(groups) if g not in excluded]
    ratios = np.full(len(groups), np.nan)
    ratios[kept] = impact_ratios(rates[kept], [groups[i] for i in kept])
    kept_groups = [groups[i] for i in kept]
    lowest = {
        dimension: float(lowest_ratio(ratios[kept], kept_groups, dimension))
        for dimension in DIMENSIONS
        if any(g.dimension == dimension for g in kept_groups)
    }
    table = [
        {
            "dimension": g.dimension,
            "group": g.name,
            "n": g.n,
            "scoring_rate": float(rate),
            "impact_ratio": None if math.isnan(ratio) else float(ratio),
        }
        for g, rate, ratio in zip(groups, rates, ratios, strict=True)
    ]
    return lowest, table
