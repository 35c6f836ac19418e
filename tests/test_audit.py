"""The bias audit (scoring/audit.py), its HTML (scoring/audit_report.py) and the synthetic
populations with planted gaps (bench/audit_population.py).

The truths are independent of the audit's code: planned populations whose every count is
known exactly (``expected_audit`` works in fractions from the plan), fairlearn's MetricFrame
as an oracle of rates and ratios, and scipy's Fisher test called on tables built by hand.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame, selection_rate
from scipy.stats import fisher_exact

from bench.audit_population import (
    DEFAULT_CELLS,
    NHPI,
    PlantedGroup,
    expected_audit,
    main,
    make_audit_population,
    write_csv,
)
from rtserver.scoring.audit import (
    AuditInvalid,
    AuditRow,
    competency_effects,
    read_audit_csv,
    run_audit,
)
from rtserver.scoring.audit_report import audit_fragment, audit_html

RESAMPLES = 400  # enough for the intervals' properties, cheap on two cores


def random_plan(rng: np.random.Generator) -> list[PlantedGroup]:
    """A random plan: 2-3 sexes x 2-4 races, some cells empty, one race tiny (often under
    2 %), and unknown rows; every cell has fewer than half its rows above, so the whole
    sample does too."""
    sexes = ["Female", "Male", "Nonbinary"][: int(rng.integers(2, 4))]
    races = ["Asian", "Black", "White", "Other"][: int(rng.integers(2, 5))]
    cells = []
    for sex in [*sexes, None]:
        for race in [*races, None]:
            size = int(rng.integers(1, 4)) if race == races[-1] else int(rng.integers(0, 90))
            if size == 0:
                continue
            selected = int(rng.integers(0, size + 1))
            above = int(rng.integers(0, (size - 1) // 2 + 1))
            cells.append(PlantedGroup(sex, race, size, selected, above))
    return cells


def by_key(audit: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(g["dimension"], g["group"]): g for g in audit["groups"]}


def person_ratio(groups: dict[tuple[str, str], Any], key: tuple[str, str], rate: str) -> float:
    """The ratio as a person computes it in floats: count / n over the best count / n."""
    top = max(float(g[rate]) for k, g in groups.items() if k[0] == key[0])
    return float(groups[key][rate]) / top


@pytest.mark.parametrize("seed", range(6))
def test_planted_population_is_reproduced_exactly(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    cells = random_plan(rng)
    rows = make_audit_population(cells, seed)
    truth = expected_audit(cells)
    audit = run_audit(rows, seed=seed, resamples=50)

    assert audit["n"] == truth["n"] == len(rows)
    assert audit["selected"] == truth["selected"]
    assert audit["median_score"] == 40.0
    assert audit["unknown"] == truth["unknown"]
    got = by_key(audit)
    assert set(got) == set(truth["groups"])
    order = [(g["dimension"], g["group"]) for g in audit["groups"]]
    dims = {"sex": 0, "race": 1, "sex_race": 2}
    assert order == sorted(order, key=lambda k: (dims[k[0]], k[1]))
    for key, want in truth["groups"].items():
        g = got[key]
        assert (g["n"], g["selected"], g["above"]) == (want["n"], want["selected"], want["above"])
        # Rates are count / n in float64: exactly the fraction, correctly rounded.
        assert g["selection_rate"] == float(want["selection_rate"])
        assert g["scoring_rate"] == float(want["scoring_rate"])
        for rate, ratio, flag in (
            ("selection_rate", "impact_ratio", "below_four_fifths"),
            ("scoring_rate", "scoring_impact_ratio", "scoring_below_four_fifths"),
        ):
            if want[ratio] is None:
                assert g[ratio] is None
            else:
                assert g[ratio] == person_ratio(truth["groups"], key, rate)
                assert g[ratio] == pytest.approx(float(want[ratio]), rel=1e-14)
            assert g[flag] is want[flag], (key, flag)
        assert g["under_2pct"] is want["under_2pct"], key
    json.dumps(audit, allow_nan=False)  # strict JSON: no NaN anywhere


def test_random_plans_exercise_the_flags() -> None:
    """The random plans above do plant gaps and tiny groups (else they prove little)."""
    flags = {"below_four_fifths": 0, "under_2pct": 0, "scoring_below_four_fifths": 0}
    for seed in range(6):
        truth = expected_audit(random_plan(np.random.default_rng(1000 + seed)))
        for g in truth["groups"].values():
            for flag in flags:
                flags[flag] += bool(g[flag])
    assert all(count > 0 for count in flags.values()), flags


def test_four_fifths_flag_is_exact_at_the_boundary() -> None:
    """4/7 over 5/7 is exactly 0.8, though in floats it lands a hair under: not flagged."""
    cells = [PlantedGroup("A", "x", 7, 4, 0), PlantedGroup("B", "x", 7, 5, 0)]
    audit = run_audit(make_audit_population(cells, 0), resamples=10)
    a = by_key(audit)[("sex", "A")]
    assert a["impact_ratio"] < 0.8  # the float
    assert a["below_four_fifths"] is False
    cells[0] = PlantedGroup("A", "x", 7, 3, 0)
    assert by_key(run_audit(make_audit_population(cells, 0)))[("sex", "A")]["below_four_fifths"]


def test_default_population_plants_its_gap(tmp_path: Path) -> None:
    out = tmp_path / "population.csv"
    assert main(["--out", str(out), "--seed", "7"]) == 0
    audit = run_audit(read_audit_csv(out), resamples=RESAMPLES)
    groups = by_key(audit)
    assert audit["n"] == sum(c.n for c in DEFAULT_CELLS) == 1000
    assert groups[("sex", "Female")]["impact_ratio"] == pytest.approx(0.6, rel=1e-12)
    assert groups[("sex", "Female")]["below_four_fifths"] is True
    assert groups[("sex", "Male")]["impact_ratio"] == 1.0
    assert groups[("race", NHPI)]["under_2pct"] is True
    assert not groups[("race", "White")]["under_2pct"]
    assert audit["unknown"] == expected_audit(DEFAULT_CELLS)["unknown"]
    assert all(v > 0 for v in audit["unknown"].values())


def random_rows(seed: int, size: int) -> list[AuditRow]:
    """Unplanned rows: continuous scores with ties, unequal rates, unknown labels."""
    rng = np.random.default_rng(seed)
    sexes = rng.choice(np.array(["F", "M", ""], dtype=object), size, p=[0.45, 0.45, 0.1])
    races = rng.choice(np.array(["A", "B", "C", ""], dtype=object), size, p=[0.4, 0.3, 0.2, 0.1])
    scores = np.round(rng.uniform(0, 100, size), 0)  # rounding makes ties
    bias = np.where(sexes == "F", 0.2, 0.35) + np.where(races == "C", -0.1, 0.0)
    selected = rng.random(size) < bias
    return [
        AuditRow(f"c{i}", float(scores[i]), bool(selected[i]), sexes[i] or None, races[i] or None)
        for i in range(size)
    ]


def fairlearn_ratios(
    rows: list[AuditRow], features: list[str], decision: str
) -> dict[str, tuple[float, float]]:
    """MetricFrame's selection rate per group and its ratio to the best group, over the
    rows whose every label in ``features`` is known."""
    frame = pd.DataFrame(
        {
            "sex": [r.sex for r in rows],
            "race": [r.race for r in rows],
            "selected": [r.selected for r in rows],
            # The median of the whole sample, unknowns included, computed independently.
            "above": [r.score > statistics.median(r.score for r in rows) for r in rows],
        }
    )
    frame = frame.dropna(subset=features)
    flags = frame[decision].astype(int)
    metric = MetricFrame(
        metrics=selection_rate, y_true=flags, y_pred=flags, sensitive_features=frame[features]
    )
    by_group = metric.by_group
    ratios = by_group / by_group.max()
    out = {}
    for label, rate in by_group.items():
        name = " / ".join(label) if isinstance(label, tuple) else str(label)
        out[name] = (float(rate), float(ratios[label]))
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_rates_and_ratios_agree_with_fairlearn(seed: int) -> None:
    rows = random_rows(seed, 700)
    audit = run_audit(rows, resamples=20)
    for dimension, features in (
        ("sex", ["sex"]),
        ("race", ["race"]),
        ("sex_race", ["sex", "race"]),
    ):
        ours = {g["group"]: g for g in audit["groups"] if g["dimension"] == dimension}
        for decision, rate, ratio in (
            ("selected", "selection_rate", "impact_ratio"),
            ("above", "scoring_rate", "scoring_impact_ratio"),
        ):
            oracle = fairlearn_ratios(rows, features, decision)
            assert set(oracle) == set(ours)
            assert len(oracle) >= 2
            for name, (want_rate, want_ratio) in oracle.items():
                assert ours[name][rate] == pytest.approx(want_rate, rel=1e-12, abs=0)
                assert ours[name][ratio] == pytest.approx(want_ratio, rel=1e-12, abs=0)


def labelled_rows(plan: list[tuple[str | None, int, int, int]]) -> list[AuditRow]:
    """Rows from (sex, n, selected, above) with one race: the scores of ``above`` rows are
    high and distinct, the rest 10.0."""
    rows = []
    for sex, size, selected, above in plan:
        for i in range(size):
            score = 90.0 - len(rows) * 1e-3 if i < above else 10.0
            rows.append(AuditRow(f"{sex}{i}", score, i < selected, sex, "r"))
    return rows


def test_fisher_p_values_match_scipy_on_hand_built_tables() -> None:
    # F: 10 of 40 selected, M: 25 of 50, X: 5 of 10; above the median: F 8, M 20, X 4 (of
    # 100 rows, 32 above: the median is 10.0).
    rows = labelled_rows([("F", 40, 10, 8), ("M", 50, 25, 20), ("X", 10, 5, 4), (None, 5, 2, 0)])
    groups = by_key(run_audit(rows, resamples=20))
    want = fisher_exact([[10, 30], [30, 30]], alternative="two-sided").pvalue
    assert groups[("sex", "F")]["p_value"] == pytest.approx(want, rel=1e-12)
    want = fisher_exact([[25, 25], [15, 35]], alternative="two-sided").pvalue
    assert groups[("sex", "M")]["p_value"] == pytest.approx(want, rel=1e-12)
    want = fisher_exact([[8, 32], [24, 36]], alternative="two-sided").pvalue
    assert groups[("sex", "F")]["scoring_p_value"] == pytest.approx(want, rel=1e-12)
    assert groups[("sex", "F")]["p_value"] < 0.05 < groups[("sex", "X")]["p_value"]
    # Race has one group only: nothing to test it against.
    assert groups[("race", "r")]["p_value"] is None


def scaled(cells: tuple[PlantedGroup, ...], factor: int) -> list[PlantedGroup]:
    return [
        PlantedGroup(c.sex, c.race, c.n * factor, c.selected * factor, c.above * factor)
        for c in cells
    ]


def test_bootstrap_interval_holds_the_ratio_and_narrows_with_size() -> None:
    small = run_audit(make_audit_population(DEFAULT_CELLS, 0), seed=3, resamples=RESAMPLES)
    big = run_audit(
        make_audit_population(scaled(DEFAULT_CELLS, 10), 0), seed=3, resamples=RESAMPLES
    )
    for g in small["groups"]:
        for ratio, ci in (("impact_ratio", "ci"), ("scoring_impact_ratio", "scoring_ci")):
            low, high = g[ci]
            assert 0 <= low <= g[ratio] <= high <= 1, (g["group"], ratio)
    width = {
        size: {k: g["ci"][1] - g["ci"][0] for k, g in by_key(audit).items()}
        for size, audit in (("small", small), ("big", big))
    }
    female = ("sex", "Female")
    assert width["big"][female] < 0.5 * width["small"][female]
    assert by_key(big)[female]["impact_ratio"] == pytest.approx(0.6, rel=1e-12)
    # Seeded: the same seed gives the same intervals.
    again = run_audit(make_audit_population(DEFAULT_CELLS, 0), seed=3, resamples=RESAMPLES)
    assert again["groups"] == small["groups"]


def test_no_one_selected_gives_null_ratios_and_strict_json() -> None:
    rows = labelled_rows([("F", 10, 0, 2), ("M", 10, 0, 3)])
    audit = run_audit(rows, resamples=20)
    for g in audit["groups"]:
        assert g["impact_ratio"] is None and g["ci"] is None
        assert g["below_four_fifths"] is False
        assert g["scoring_impact_ratio"] is not None
    json.dumps(audit, allow_nan=False)


def test_empty_sample_is_invalid() -> None:
    with pytest.raises(AuditInvalid):
        run_audit([])


def test_read_audit_csv_good_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.csv"
    path.write_text(
        "\ufeffcandidate,extra,score,selected,sex,race\n"
        "a1,x,72.5,1,Female,Asian\n"
        'a2,y,40,0,,"Black or African American"\n'
        "a3,z,100,1,Male,\n",
        encoding="utf-8",
    )
    assert read_audit_csv(path) == [
        AuditRow("a1", 72.5, True, "Female", "Asian"),
        AuditRow("a2", 40.0, False, None, "Black or African American"),
        AuditRow("a3", 100.0, True, "Male", None),
    ]


def test_write_csv_reads_back_identical(tmp_path: Path) -> None:
    rows = make_audit_population(DEFAULT_CELLS, 5)
    write_csv(rows, tmp_path / "p.csv")
    assert read_audit_csv(tmp_path / "p.csv") == rows


HEADER = "candidate,score,selected,sex,race\n"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("", 1, "empty"),
        (HEADER, 2, "no candidate"),
        ("candidate,score,sex,race\na,1,F,A\n", 1, "selected"),
        (HEADER + "a,50,1,F,A\nb,high,0,M,B\n", 3, "not a number"),
        (HEADER + "a,inf,1,F,A\n", 2, "finite"),
        (HEADER + "a,nan,1,F,A\n", 2, "finite"),
        (HEADER + "a,50,maybe,F,A\n", 2, "1 or 0"),
        (HEADER + "a,50,1,F,A\nb,50,0,M,B\na,60,0,M,B\n", 4, "line 2"),
        (HEADER + ",50,1,F,A\n", 2, "candidate is empty"),
        (HEADER + "a,50\n", 2, "1 or 0"),
    ],
)
def test_read_audit_csv_bad_input_names_the_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AuditInvalid, match=rf"^line {line}: .*{re.escape(words)}"):
        read_audit_csv(path)


def test_read_audit_csv_refuses_what_is_not_utf8_csv(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes((HEADER + "a,50,1,Fé,A\n").encode("latin-1"))
    with pytest.raises(AuditInvalid, match="not UTF-8"):
        read_audit_csv(path)
    path.write_text(HEADER + "a,50,1,F" + "x" * 200_000 + ",A\n", encoding="utf-8")
    with pytest.raises(AuditInvalid, match=r"^line 2: "):
        read_audit_csv(path)


def test_competency_effects_find_the_competency_that_carries_the_gap() -> None:
    rng = np.random.default_rng(11)
    size = 400
    sex = ["F" if i % 2 else "M" for i in range(size)]
    race = ["A" if (i // 2) % 2 else "B" for i in range(size)]
    scores = rng.uniform(30, 90, (size, 3))
    scores[np.array(sex) == "F", 0] -= 15  # the gap lives in competency "c0" only
    weights = [0.5, 0.3, 0.2]
    effects = competency_effects(scores, weights, ["c0", "c1", "c2"], sex, race)

    assert [e["competency"] for e in effects] == ["c0", "c1", "c2"]
    c0 = effects[0]
    assert c0["lowest"]["sex"]["with"] < 0.8 <= c0["lowest"]["sex"]["without"]
    assert c0["lowest"]["sex"]["without"] - c0["lowest"]["sex"]["with"] < 0.5  # not trivial
    assert "sex" in c0["drives_gap"] and "sex_race" in c0["drives_gap"]
    for other in effects[1:]:
        assert "sex" not in other["drives_gap"]
        assert other["lowest"]["sex"]["without"] < 0.8
    assert all(type(v) is float for e in effects for p in e["lowest"].values() for v in p.values())
    # "with" is the same scoring for every competency, and it is the audit's scoring ratio.
    assert {e["lowest"]["sex"]["with"] for e in effects} == {c0["lowest"]["sex"]["with"]}
    weighted = scores @ np.array(weights)
    rows = [AuditRow(str(i), float(weighted[i]), False, sex[i], race[i]) for i in range(size)]
    audit = by_key(run_audit(rows, resamples=10))
    f = next(g for g in c0["groups"] if (g["dimension"], g["group"]) == ("sex", "F"))
    assert f["with"] == audit[("sex", "F")]["scoring_impact_ratio"]
    # Without c0 the scoring is c1 and c2 at 0.6 and 0.4.
    rows = [
        AuditRow(str(i), float(0.6 * scores[i, 1] + 0.4 * scores[i, 2]), False, sex[i], race[i])
        for i in range(size)
    ]
    without = by_key(run_audit(rows, resamples=10))[("sex", "F")]["scoring_impact_ratio"]
    assert f["without"] == pytest.approx(without, rel=1e-12)


def test_competency_effects_single_competency_has_no_without() -> None:
    effects = competency_effects(
        np.array([[10.0], [20.0], [30.0]]), [1.0], ["only"], ["F", "M", "F"], ["A", "A", "A"]
    )
    assert effects[0]["lowest"]["sex"]["without"] is None
    assert effects[0]["drives_gap"] == []
    with pytest.raises(ValueError):
        competency_effects(np.ones((3, 2)), [0.5, 0.6], ["a", "b"], ["F"] * 3, ["A"] * 3)


EVIL = "<script>alert(1)</script>"


def evil_audit() -> dict[str, Any]:
    rows = labelled_rows([(EVIL, 30, 5, 5), ("M & co", 30, 15, 10), ("W", 2, 1, 0)])
    return run_audit(rows, resamples=50)


def test_fragment_escapes_labels_and_has_no_style_or_script() -> None:
    audit = evil_audit()
    effects = competency_effects(
        np.random.default_rng(0).uniform(0, 100, (62, 2)),
        [0.5, 0.5],
        ["<b>talk</b>", "code"],
        [g for g, n in ((EVIL, 30), ("M & co", 30), ("W", 2)) for _ in range(n)],
        ["r"] * 62,
    )
    html = audit_fragment(audit, effects)
    assert "<script" not in html.lower() and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "M &amp; co" in html and "&lt;b&gt;talk&lt;/b&gt;" in html
    assert not re.search(r"\sstyle\s*=", html)
    assert 'class="four-fifths"' in html and "stroke-dasharray" in html and ">0.8<" in html
    # The flagged group's bar is of class "below", the best one's is not.
    bars = re.findall(r'<rect class="([^"]*)"', html)
    assert "bar below" in bars and "bar" in bars
    assert html.count("<table") == 3 + 1  # sex, race, sex_race, competencies
    assert "audit-effects" in html
    assert "audit-effects" not in audit_fragment(audit)


def test_standalone_document_prints_and_states_its_limits() -> None:
    from datetime import UTC, datetime

    html = audit_html(evil_audit(), "Audit <Q3>", generated=datetime(2025, 3, 1, tzinfo=UTC))
    assert html.startswith("<!DOCTYPE html>")
    assert "<title>Audit &lt;Q3&gt;</title>" in html and "2025-03-01" in html
    assert "@media print" in html and "page-break-inside: avoid" in html
    for phrase in (
        "What these figures mean",
        "6 RCNY § 5-301",
        "29 CFR 1607.4(D)",
        "rule of thumb",
        "2 %",
        "unknown",
        "synthetic",
        "independent auditor",
    ):
        assert phrase in html, phrase
    assert "&lt;script&gt;" in html and "<script" not in html


def test_read_audit_csv_takes_any_scale_and_common_spellings_of_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "other_tool.csv"
    path.write_text("candidate,score,selected,sex,race\na,150,true,F,A\nb,-2.5,no,M,\nc,3,1.0,,B\n")
    rows = read_audit_csv(path)
    assert [(r.score, r.selected, r.sex, r.race) for r in rows] == [
        (150.0, True, "F", "A"),
        (-2.5, False, "M", None),
        (3.0, True, None, "B"),
    ]
