"""Calibration of a job's competency weights (``rtserver/scoring/calibration.py``) on
synthetic populations with planted weights and gaps (``bench/population.py``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bench.population import DEFAULT_GAPS, DEFAULT_WEIGHTS, make_population, write_csv
from rtserver.scoring.calibration import (
    MIN_OUTCOMES,
    CalibrationData,
    CalibrationInvalid,
    TooFewOutcomes,
    calibrate,
    calibrate_fair,
    project_to_simplex,
    read_calibration_csv,
)

IDS = tuple(DEFAULT_WEIGHTS)
EQUAL = {cid: 1 / len(IDS) for cid in IDS}
# A "current" prior far from every planted vector below.
CURRENT = dict(zip(IDS, (0.05, 0.3, 0.05, 0.3, 0.05, 0.25), strict=True))
PLANTED = (
    DEFAULT_WEIGHTS,  # 0.3, 0.25, 0.2, 0.15, 0.1, 0
    dict(zip(IDS, (0.1, 0.1, 0.2, 0.3, 0.3, 0.0), strict=True)),
)
NOISE = 1.2  # the planted weighting's r is about 1 / sqrt(1 + 1.2^2) = 0.64
RECOVERY = 0.08  # largest error of any one weight on 1,000 rows


def weights_of(result: dict[str, float]) -> np.ndarray:
    return np.array([result[cid] for cid in IDS])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("planted", range(len(PLANTED)))
@pytest.mark.parametrize("prior_kind", ["equal", "current"])
def test_calibration_recovers_planted_weights(seed: int, planted: int, prior_kind: str) -> None:
    truth = PLANTED[planted]
    data, planted_truth = make_population(1000, truth, noise=NOISE, seed=seed)
    assert 0.55 < planted_truth["r"] < 0.72
    prior = EQUAL if prior_kind == "equal" else CURRENT
    result = calibrate(data, prior, seed=seed, prior_kind=prior_kind, resamples=200)
    error = np.abs(weights_of(result.weights) - weights_of(truth))
    assert error.max() < RECOVERY, (result.weights, result.strength)
    assert result.prior == pytest.approx(prior)
    assert result.n == 1000 and result.folds == 5 and result.prior_kind == prior_kind


def test_weights_are_non_negative_and_sum_to_one() -> None:
    data, _ = make_population(300, DEFAULT_WEIGHTS, noise=2.0, seed=5)
    result = calibrate(data, CURRENT, resamples=200)
    weights = weights_of(result.weights)
    assert np.all(weights >= 0)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    wire = result.to_wire()
    assert sum(wire["weights"].values()) == pytest.approx(1.0, abs=1e-12)
    assert wire["weights"] == result.weights  # reported as fitted, not rounded
    assert set(wire) >= {"weights", "validity", "n", "prior_weights", "strength", "folds"}
    assert set(wire["validity"]) == {"prior", "calibrated"}
    assert set(wire["validity"]["calibrated"]) == {"r", "ci"}


def test_validity_interval_brackets_r_and_the_fit_beats_a_wrong_prior() -> None:
    data, truth = make_population(1000, DEFAULT_WEIGHTS, noise=NOISE, seed=3)
    result = calibrate(data, CURRENT, resamples=1000)
    for validity in (result.validity, result.validity_prior):
        low, high = validity.ci
        assert low < validity.r < high
        assert high - low < 0.15
    assert result.validity.r > result.validity_prior.r
    assert abs(result.validity.r - truth["r"]) < 0.05


def test_on_noise_validity_is_near_zero_and_weights_stay_near_the_prior() -> None:
    data, _ = make_population(1000, DEFAULT_WEIGHTS, noise=NOISE, seed=4)
    signal = calibrate(data, CURRENT, resamples=500)
    noise = np.random.default_rng(4).normal(size=data.n)
    pure = CalibrationData(data.candidates, IDS, data.scores, noise, data.sex, data.race)
    result = calibrate(pure, CURRENT, resamples=500)
    assert abs(result.validity.r) < 0.1
    low, high = result.validity.ci
    assert low < 0 < high
    assert result.strength > signal.strength
    assert np.abs(weights_of(result.weights) - weights_of(CURRENT)).max() < 0.05


def test_fewer_than_thirty_outcomes_are_refused() -> None:
    data, _ = make_population(MIN_OUTCOMES - 1, DEFAULT_WEIGHTS, seed=0)
    with pytest.raises(TooFewOutcomes) as raised:
        calibrate(data, EQUAL)
    message = str(raised.value)
    assert "at least 30 outcomes, has 29" in message
    assert "Dawes 1979" in message and "Schmidt 1971" in message
    enough, _ = make_population(MIN_OUTCOMES, DEFAULT_WEIGHTS, seed=0)
    assert calibrate(enough, EQUAL, resamples=100).n == MIN_OUTCOMES


def test_unusable_data_and_arguments_are_refused() -> None:
    data, _ = make_population(100, DEFAULT_WEIGHTS, seed=0)
    flat = CalibrationData(
        data.candidates, IDS, data.scores, np.full(data.n, 3.0), data.sex, data.race
    )
    with pytest.raises(CalibrationInvalid, match="performance is 3 for every candidate"):
        calibrate(flat, EQUAL)
    scores = data.scores.copy()
    scores[:, 2] = 50.0
    constant = CalibrationData(data.candidates, IDS, scores, data.performance, data.sex, data.race)
    with pytest.raises(CalibrationInvalid, match="same score on collaboration"):
        calibrate(constant, EQUAL)
    with pytest.raises(CalibrationInvalid, match="exactly the data's competencies"):
        calibrate(data, {"problem_solving": 1.0})
    with pytest.raises(CalibrationInvalid, match="prior_kind"):
        calibrate(data, EQUAL, prior_kind="mine")
    with pytest.raises(CalibrationInvalid, match="folds"):
        calibrate(data, EQUAL, folds=1)


def test_a_written_population_reads_back_exactly(tmp_path: Path) -> None:
    data, _ = make_population(60, DEFAULT_WEIGHTS, unknown_share=0.2, seed=1)
    path = tmp_path / "past.csv"
    write_csv(data, path)
    back = read_calibration_csv(path)
    assert back.candidates == data.candidates
    assert back.competencies == IDS
    assert np.array_equal(back.scores, data.scores)
    assert np.array_equal(back.performance, data.performance)
    assert back.sex == data.sex and back.race == data.race
    assert None in back.sex


def write(tmp_path: Path, text: str, bom: bool = False) -> Path:
    path = tmp_path / "past.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_csv_with_a_bom_ignored_columns_and_no_demographics(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "candidate,hired,a,b,performance,rated_at\n"
        "x1,2024-01-02,70,80,3.5,2025-01-01\n"
        "\n"
        "x2,2024-02-02,60,65.5,2,2025-01-01\n",
        bom=True,
    )
    data = read_calibration_csv(path)
    assert data.competencies == ("a", "b")
    assert data.scores.tolist() == [[70, 80], [60, 65.5]]
    assert data.performance.tolist() == [3.5, 2]
    assert data.sex == (None, None) and data.race == (None, None)
    chosen = read_calibration_csv(path, ["b"])
    assert chosen.competencies == ("b",) and chosen.scores.tolist() == [[80], [65.5]]


@pytest.mark.parametrize(
    ("text", "competencies", "expected"),
    [
        ("candidate,a,performance\nx1,70,3\nx2,seventy,3\n", None, "line 3: a 'seventy'"),
        ("candidate,a,performance\nx1,70,3\nx2,inf,3\n", None, "line 3: a 'inf'"),
        ("candidate,a,performance\nx1,70,3\nx2,70,\n", None, "line 3: performance ''"),
        ("candidate,a,performance\nx1,70,3\n\nx2,70\n", None, "line 4: 2 fields"),
        ("candidate,a,performance\nx1,70,3\nx1,60,2\n", None, "line 3: candidate 'x1'"),
        ("candidate,a,performance\n,70,3\n", None, "line 2: the candidate is empty"),
        ("candidate,a\nx1,70\n", None, "line 1: no 'performance' column"),
        ("candidate,a,a,performance\n", None, "line 1: columns named twice: a"),
        ("candidate,performance\nx1,3\n", None, "line 1: no competency columns"),
        ("candidate,a,performance\nx1,70,3\n", ["a", "b"], "line 1: no column for competencies b"),
        ("", None, "is empty"),
    ],
)
def test_bad_csvs_name_the_line(
    tmp_path: Path, text: str, competencies: list[str] | None, expected: str
) -> None:
    with pytest.raises(CalibrationInvalid) as raised:
        read_calibration_csv(write(tmp_path, text), competencies)
    assert expected in str(raised.value)


def test_a_csv_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "past.csv"
    path.write_bytes("candidate,a,performance\nJosé,70,3\n".encode("latin-1"))
    with pytest.raises(CalibrationInvalid, match="not UTF-8"):
        read_calibration_csv(path)


def test_projection_onto_the_simplex() -> None:
    points = np.random.default_rng(0).normal(size=(500, 5))
    projected = project_to_simplex(points)
    assert np.all(projected >= 0)
    assert np.allclose(projected.sum(axis=1), 1.0)
    inside = np.random.default_rng(1).dirichlet(np.ones(5), size=10)
    assert np.allclose(project_to_simplex(inside), inside)


# -- the fairness-constrained variant ----------------------------------------------------


def independent_ratios(
    data: CalibrationData, weights: dict[str, float], leave_out: str | None = None
) -> dict[str, float]:
    """Every group's impact ratio under ``weights``, with plain NumPy (not groups.py): the
    share of the group strictly above the whole sample's median score over the best
    group's share in its dimension; groups whose name holds ``leave_out`` are left out."""
    scores = data.scores @ np.array([weights[cid] for cid in data.competencies])
    above = scores > np.median(scores)
    labels = {
        "sex": list(data.sex),
        "race": list(data.race),
        "sex_race": [
            f"{s} / {r}" if s is not None and r is not None else None
            for s, r in zip(data.sex, data.race, strict=True)
        ],
    }
    ratios = {}
    for dimension, column in labels.items():
        names = np.array([label or "" for label in column], dtype=object)
        rates = {
            name: above[names == name].mean()
            for name in set(column) - {None}
            if leave_out is None or leave_out not in name
        }
        best = max(rates.values())
        ratios.update({f"{dimension}: {name}": rate / best for name, rate in rates.items()})
    return ratios


FAIR_CASES = {
    "communication, Black": DEFAULT_GAPS,
    "problem solving, Female": {("problem_solving", "Female"): -12.0},
    "collaboration, Hispanic": {("collaboration", "Hispanic or Latino"): -15.0},
}


@pytest.mark.parametrize("case", list(FAIR_CASES))
def test_fair_weights_meet_the_four_fifths_rule_on_the_calibration_data(case: str) -> None:
    data, _ = make_population(1000, DEFAULT_WEIGHTS, gaps=FAIR_CASES[case], seed=0)
    result = calibrate_fair(data, EQUAL, prior_kind="equal", resamples=500)
    assert result.feasible and result.excluded == ()
    before = independent_ratios(data, result.unconstrained.weights)
    after = independent_ratios(data, result.weights)
    assert min(before.values()) < 0.8  # the planted gap costs the unconstrained weights
    assert min(after.values()) >= 0.8
    for dimension in ("sex", "race", "sex_race"):
        lowest = min(v for k, v in after.items() if k.startswith(f"{dimension}: "))
        assert result.ratios_after[dimension] == pytest.approx(lowest)
    weights = weights_of(result.weights)
    assert np.all(weights >= 0) and weights.sum() == pytest.approx(1.0)
    # The condition costs validity (held out), never buys much of it.
    wire = result.to_wire()
    fairness = wire["fairness"]
    assert fairness["validity_lost"] == pytest.approx(
        result.unconstrained.validity.r - result.validity.r
    )
    assert fairness["validity_lost"] > -0.02
    assert fairness["threshold"] == 0.8 and fairness["feasible"] is True
    assert set(wire["validity"]) == {"prior", "calibrated", "unconstrained"}
    assert sum(wire["weights"].values()) == pytest.approx(1.0, abs=1e-12)
    assert {g["group"] for g in fairness["groups_after"]} >= {"Female", "White"}
    assert set(fairness["groups_before"][0]) == {
        "dimension",
        "group",
        "n",
        "scoring_rate",
        "impact_ratio",
    }


def test_fair_calibration_that_cannot_succeed_says_so() -> None:
    # The same gap on every competency: every weighting puts the group as far behind.
    gaps = {(cid, "Female"): -20.0 for cid in IDS}
    data, _ = make_population(1000, DEFAULT_WEIGHTS, gaps=gaps, seed=1)
    result = calibrate_fair(data, EQUAL, prior_kind="equal", resamples=200)
    assert not result.feasible
    assert result.ratios_after["sex"] < 0.8
    # It returns the fairest weighting it found: no worse than the unconstrained one.
    assert result.ratios_after["sex"] >= result.ratios_before["sex"]
    weights = weights_of(result.weights)
    assert np.all(weights >= 0) and weights.sum() == pytest.approx(1.0)
    assert result.to_wire()["fairness"]["feasible"] is False


def test_fair_calibration_leaves_out_groups_under_two_percent_only_when_needed() -> None:
    races = {
        "White": 0.6,
        "Black or African American": 0.14,
        "Hispanic or Latino": 0.14,
        "Asian": 0.107,
        "American Indian or Alaska Native": 0.013,
    }
    tiny = "American Indian or Alaska Native"
    gaps = {(cid, tiny): -30.0 for cid in IDS}
    data, _ = make_population(1000, DEFAULT_WEIGHTS, gaps=gaps, race_shares=races, seed=2)
    result = calibrate_fair(data, EQUAL, prior_kind="equal", resamples=200)
    assert result.feasible
    assert f"race: {tiny}" in result.excluded
    assert all(tiny in name for name in result.excluded)
    assert independent_ratios(data, result.weights)[f"race: {tiny}"] < 0.8
    kept = independent_ratios(data, result.weights, leave_out=tiny)
    assert min(kept.values()) >= 0.8
    for dimension in ("sex", "race", "sex_race"):
        assert result.ratios_after[dimension] >= 0.8
    left_out = [g for g in result.to_wire()["fairness"]["groups_after"] if tiny in g["group"]]
    assert left_out and all(g["impact_ratio"] is None for g in left_out)


def test_fair_calibration_needs_demographics() -> None:
    data, _ = make_population(100, DEFAULT_WEIGHTS, unknown_share=1.0, seed=0)
    with pytest.raises(CalibrationInvalid, match="--fair needs sex and race columns"):
        calibrate_fair(data, EQUAL)


def test_validity_is_stated_per_group_from_the_held_out_predictions() -> None:
    data, _ = make_population(600, DEFAULT_WEIGHTS, seed=11)
    result = calibrate(data, CURRENT, resamples=100)
    groups = {(g["dimension"], g["group"]): g for g in result.validity_by_group}
    assert ("sex", "Female") in groups and ("race", "White") in groups
    assert all(g["n"] >= 20 for g in groups.values())
    female = groups[("sex", "Female")]
    members = np.array([s == "Female" for s in data.sex])
    prior = data.scores @ weights_of(CURRENT)
    expected = np.corrcoef(prior[members], data.performance[members])[0, 1]
    assert female["prior_r"] == pytest.approx(expected)
    assert 0.3 < female["calibrated_r"] < 0.9
    unlabelled = dataclasses.replace(data, sex=(None,) * data.n, race=(None,) * data.n)
    assert calibrate(unlabelled, CURRENT, resamples=100).validity_by_group == []
