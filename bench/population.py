"""Synthetic calibration populations: past candidates with planted competency weights and
planted group gaps, to check calibration (``rtserver/scoring/calibration.py``) against a
known truth.

    python -m bench.population --out FILE [--n 1000] [--seed N]

Each candidate's competency scores (0-100) are correlated normals (mean 60, sd 15, every
pair correlated 0.3 by default), clipped to 0-100. A planted gap shifts one group's scores
on one competency by some points (a negative shift puts the group behind), before the
clipping, so it leaks into every job-fit score that weights that competency and into its
impact ratios. Performance depends only on the scores, through the planted weights, plus
noise: ``performance = X w + noise * sd(X w) * N(0, 1)``, so the planted weighting's true
validity is about ``1 / sqrt(1 + noise^2)`` (0.64 at the default 1.2). Sex and race are
drawn from the given shares (EEO-1 labels); each label is then hidden (unknown) with
probability ``unknown_share``, after the gaps were applied by the true group, as
self-identification is voluntary.

The CLI writes the default population: six competencies, one weighted 0, and a gap of
-15 points for Black or African American candidates on communication.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rtserver.scoring.calibration import CalibrationData

DEFAULT_WEIGHTS = {
    "problem_solving": 0.3,
    "communication": 0.25,
    "collaboration": 0.2,
    "ownership": 0.15,
    "learning": 0.1,
    "attention_to_detail": 0.0,
}
DEFAULT_GAPS = {("communication", "Black or African American"): -15.0}
SEX_SHARES = {"Female": 0.5, "Male": 0.5}
RACE_SHARES = {
    "White": 0.58,
    "Black or African American": 0.14,
    "Hispanic or Latino": 0.14,
    "Asian": 0.09,
    "Two or More Races": 0.05,
}
SCORE_MEAN = 60.0
SCORE_SD = 15.0


def make_population(
    n: int,
    weights: Mapping[str, float],
    *,
    noise: float = 1.2,
    gaps: Mapping[tuple[str, str], float] | None = None,
    sex_shares: Mapping[str, float] = SEX_SHARES,
    race_shares: Mapping[str, float] = RACE_SHARES,
    unknown_share: float = 0.05,
    correlation: float = 0.3,
    seed: int = 0,
) -> tuple[CalibrationData, dict[str, Any]]:
    """``n`` candidates whose performance follows ``weights`` (competency id -> weight,
    summing to 1) plus ``noise`` (sd, as a multiple of the weighted score's sd); ``gaps``
    maps (competency id, sex or race label) to that group's shift on that competency, in
    points. The truth: the weights, the gaps, the noise, the planted weighting's r on this
    sample (``r``) and in the population (``r_expected``)."""
    ids = tuple(weights)
    k = len(ids)
    w = np.array([weights[cid] for cid in ids], dtype=np.float64)
    if k == 0 or np.any(w < 0) or not math.isclose(w.sum(), 1.0, abs_tol=1e-9):
        raise ValueError("weights must be non-negative and sum to 1")
    rng = np.random.default_rng(seed)
    sex = _draw(rng, sex_shares, n)
    race = _draw(rng, race_shares, n)
    covariance = SCORE_SD**2 * (correlation * np.ones((k, k)) + (1 - correlation) * np.eye(k))
    scores = rng.multivariate_normal(np.full(k, SCORE_MEAN), covariance, size=n)
    for (competency, label), shift in (gaps or {}).items():
        members = (sex == label) | (race == label)
        scores[members, ids.index(competency)] += shift
    scores = np.clip(scores, 0.0, 100.0)
    fit = scores @ w
    performance = fit + noise * fit.std() * rng.standard_normal(n)
    data = CalibrationData(
        candidates=tuple(f"c{i:05d}" for i in range(n)),
        competencies=ids,
        scores=scores,
        performance=performance,
        sex=_hidden(rng, sex, unknown_share),
        race=_hidden(rng, race, unknown_share),
    )
    truth = {
        "weights": dict(weights),
        "gaps": {
            f"{competency} / {label}": shift for (competency, label), shift in (gaps or {}).items()
        },
        "noise": noise,
        "r": float(np.corrcoef(fit, performance)[0, 1]),
        "r_expected": 1 / math.sqrt(1 + noise**2),
    }
    return data, truth


def _draw(rng: np.random.Generator, shares: Mapping[str, float], n: int) -> np.ndarray:
    labels = list(shares)
    p = np.array([shares[label] for label in labels], dtype=np.float64)
    return np.array(labels, dtype=object)[rng.choice(len(labels), size=n, p=p / p.sum())]


def _hidden(rng: np.random.Generator, labels: np.ndarray, share: float) -> tuple[str | None, ...]:
    hide = rng.random(len(labels)) < share
    return tuple(None if hidden else str(label) for label, hidden in zip(labels, hide, strict=True))


def write_csv(data: CalibrationData, path: Path) -> None:
    """``data`` as a calibration CSV (``read_calibration_csv`` reads it back exactly):
    candidate, the competency columns, performance, sex, race (empty: unknown)."""
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["candidate", *data.competencies, "performance", "sex", "race"])
        for i, candidate in enumerate(data.candidates):
            writer.writerow(
                [
                    candidate,
                    *(repr(float(s)) for s in data.scores[i]),
                    repr(float(data.performance[i])),
                    data.sex[i] or "",
                    data.race[i] or "",
                ]
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the CSV to write")
    parser.add_argument("--n", type=int, default=1000, help="candidates (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data, truth = make_population(args.n, DEFAULT_WEIGHTS, gaps=DEFAULT_GAPS, seed=args.seed)
    write_csv(data, args.out)
    planted = ", ".join(f"{cid} {w:g}" for cid, w in truth["weights"].items())
    print(f"wrote {data.n} candidates to {args.out}")
    print(f"planted weights: {planted}")
    print(f"planted gaps: {', '.join(f'{g} {s:+g} points' for g, s in truth['gaps'].items())}")
    print(f"planted weighting's r: {truth['r']:.3f} (population {truth['r_expected']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
