"""The study results recover the paper's numbers from simulated participants (Table 2)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from camlens.study import StudyStore, stats, summarise, write_csv
from camlens.study.results import PAPER_ACCURACY, PAPER_RELIABILITY, score
from camlens.study.store import latin_square_order
from study_support import class_study, trust_study

#: The paper's correct ratings of 810 (90 pairs x 9 ratings) per method: 432/810 = 53.33%,
#: 360/810 = 44.44%, 489/810 = 60.37%, 496/810 = 61.23%.
PAPER_CORRECT = {"deconvnet": 432, "guided-backprop": 360, "deconv-gradcam": 489,
                 "guided-gradcam": 496}


def answer_all(store: StudyStore, tokens: list[str], choose) -> int:
    """Every participant answers every trial with ``choose(trial_record) -> value``."""
    by_id = {t.id: t for t in store.trials()}
    n = 0
    for token in tokens:
        who = store.participant(token)
        while (trial := store.next_trial(who)) is not None:
            store.submit(who, trial.id, choose(by_id[trial.id]))
            n += 1
    return n


def other(trial) -> str:
    return next(v for v, _ in trial.options if v != trial.answer)


def test_class_discrimination_recovers_the_papers_accuracies(tmp_path: Path) -> None:
    """The paper's design (45 images = 90 pairs, 4 methods, 9 ratings: 72 participants of 45
    trials) with exactly the paper's number of correct ratings per method."""
    store, _ = class_study(tmp_path / "s.sqlite", images=45, ratings=9)
    tokens = store.invite(72)
    rng = np.random.default_rng(0)
    # which (participant, trial) ratings are correct: exactly PAPER_CORRECT[m] of each method's
    slots: dict[str, list[tuple[int, str]]] = {m: [] for m in PAPER_CORRECT}
    trials = {t.id: t for t in store.trials()}
    for p in range(72):
        for tid in latin_square_order(p, list(trials.values()), store.study.seed):
            slots[trials[tid].method].append((p, tid))
    correct = set()
    for m, s in slots.items():
        assert len(s) == 810
        for i in rng.choice(810, PAPER_CORRECT[m], replace=False):
            correct.add(s[int(i)])
    for p, token in enumerate(tokens):  # in each participant's order, without page views
        who = store.participant(token)
        for tid in latin_square_order(p, list(trials.values()), store.study.seed):
            t = trials[tid]
            store.submit(who, tid, t.answer if (p, tid) in correct else other(t))
    res = summarise(store)
    assert (res.participants, res.started, res.finished, res.responses) == (72, 72, 72, 3240)
    assert res.ratings_per_trial == (9, 9.0, 9)
    for row in res.methods:
        assert (row.ratings, row.trials, row.correct) == (810, 90, PAPER_CORRECT[row.method])
        assert round(100 * row.estimate.estimate, 2) == PAPER_ACCURACY[row.method] == row.paper
        assert row.estimate.contains(PAPER_ACCURACY[row.method] / 100)
        assert row.estimate.high - row.estimate.low < 0.07  # about ±3.4 points at n = 810
        assert row.kappa is not None and -0.2 < row.kappa < 0.2  # random raters: near 0
    tests = {t.comparison: t for t in res.tests}
    assert tests["all methods"].test.startswith("Pearson chi-square")
    assert tests["all methods"].p < 1e-6
    gb_vs_ggc = tests["Guided Backprop vs Guided Grad-CAM"]
    assert gb_vs_ggc.statistic < -6 and gb_vs_ggc.p_holm < 1e-6  # 44.44 vs 61.23: z ≈ -6.8
    dgc_vs_ggc = tests["Deconvolution Grad-CAM vs Guided Grad-CAM"]
    assert dgc_vs_ggc.p > 0.5  # 60.37 vs 61.23: no evidence of a difference
    # z by hand from the counts, e.g. (432 - 489) / 810 / sqrt(p (1 - p) 2 / 810), p = 921/1620
    for pair, (k1, k2) in {"Guided Backprop vs Guided Grad-CAM": (360, 496),
                           "Deconvolution vs Deconvolution Grad-CAM": (432, 489),
                           "Deconvolution Grad-CAM vs Guided Grad-CAM": (489, 496)}.items():
        pooled = (k1 + k2) / 1620
        z = (k1 - k2) / 810 / np.sqrt(pooled * (1 - pooled) * 2 / 810)
        assert tests[pair].statistic == pytest.approx(z, rel=1e-12)
    assert tests["Deconvolution vs Deconvolution Grad-CAM"].statistic == pytest.approx(-2.8593,
                                                                                       abs=1e-4)
    text = res.markdown()
    for acc in PAPER_ACCURACY.values():
        assert f"{acc:.2f}% [" in text  # ours equal the paper's here
    assert "| Guided Grad-CAM | 810 | 90 | 61.23% [" in text


def test_wilson_intervals_cover_the_papers_rates_95_percent_of_the_time() -> None:
    """Bernoulli raters at the paper's accuracies, 810 ratings per method, 4000 simulated
    studies: each method's 95% Wilson interval contains the true rate in 93.5-96.5% of them
    (the binomial sd of the coverage is 0.34 points)."""
    rng = np.random.default_rng(1)
    for method, acc in PAPER_ACCURACY.items():
        p = acc / 100
        ks = rng.binomial(810, p, size=4000)
        inside = {int(k): stats.wilson(int(k), 810).contains(p) for k in np.unique(ks)}
        covered = np.mean([inside[int(k)] for k in ks])
        assert 0.935 <= covered <= 0.965, (method, covered)


def test_random_participants_through_the_store(tmp_path: Path) -> None:
    """Bernoulli raters at the paper's accuracies answering through the store: estimates
    within 4 standard errors of the true rates (160 ratings per method)."""
    store, _ = class_study(tmp_path / "s.sqlite", images=20, ratings=4)
    rng = np.random.default_rng(1)
    answer_all(store, store.invite(32),
               lambda t: t.answer if rng.random() < PAPER_ACCURACY[t.method] / 100
               else other(t))
    for row in summarise(store).methods:
        p = PAPER_ACCURACY[row.method] / 100
        assert row.ratings == 160 and row.trials == 40
        assert abs(row.estimate.estimate - p) < 4 * np.sqrt(p * (1 - p) / 160)
        assert row.estimate.low < row.estimate.estimate < row.estimate.high


def test_trust_recovers_the_papers_relative_reliability(tmp_path: Path) -> None:
    """50 images, 2 methods, 6 ratings (12 participants of 50 trials): 300 ratings per method
    with model-A scores summing to 300 (Guided Backprop, mean 1.00) and 381 (Guided Grad-CAM,
    1.27); answers given on the shown scale, which flips with A's position."""
    store, _ = trust_study(tmp_path / "t.sqlite", images=50, ratings=6)
    tokens = store.invite(12)
    rng = np.random.default_rng(2)
    pools = {}
    for m, total in (("guided-backprop", 300), ("guided-gradcam", 381)):
        # 300 scores in -2..2 with the given sum: start from all +1 and move units
        s = np.ones(300, dtype=int)
        extra = total - 300
        idx = rng.choice(300, abs(extra), replace=False)
        s[idx] += 1 if extra > 0 else -1
        flip = rng.choice(np.flatnonzero(s == 1), 40, replace=False)  # spread: 1 -> 0/2 pairs
        s[flip[:20]] = 0
        s[flip[20:]] = 2
        rng.shuffle(s)
        pools[m] = list(s)

    def choose(t) -> str:
        value = int(pools[t.method].pop())  # model A's score
        return str(value if t.answer == "2" else -value)

    assert answer_all(store, tokens, choose) == 600
    res = summarise(store)
    rows = {r.method: r for r in res.methods}
    for m, paper in PAPER_RELIABILITY.items():
        assert rows[m].ratings == 300 and rows[m].paper == paper
        assert rows[m].estimate.estimate == pytest.approx(paper, abs=1e-12)
        assert rows[m].estimate.contains(paper)
    # the shown answers' mean is near 0 (A's side is balanced): scoring undoes the flip
    shown = [int(r.choice) for r in store.responses()]
    assert abs(np.mean(shown)) < 0.5
    assert all(score(r.trial, r.choice) in (-2, -1, 0, 1, 2) for r in store.responses())
    tests = {t.comparison: t for t in res.tests}
    assert tests["Guided Grad-CAM: model A vs no preference"].p < 1e-6
    assert tests["Guided Backprop vs Guided Grad-CAM"].test == "Welch t"
    assert tests["Guided Backprop vs Guided Grad-CAM"].statistic < 0
    assert "+1.27 [" in res.markdown() and "| +1.00 |" in res.markdown()
    json.dumps(res.as_json(), allow_nan=False)


def test_csv_export_and_empty_results(tmp_path: Path) -> None:
    store, _ = class_study(tmp_path / "s.sqlite", images=2, ratings=1)
    empty = summarise(store)
    assert all(r.estimate is None and r.note == "no ratings yet" for r in empty.methods)
    assert empty.tests == () and "n/a" in empty.markdown()
    json.dumps(empty.as_json(), allow_nan=False)
    answer_all(store, store.invite(2), lambda t: t.answer)
    path = write_csv(store, tmp_path / "out.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 4
    by_id = {t.id: t for t in store.trials()}
    for row in rows:
        t = by_id[row["trial"]]
        assert row["method"] == t.method and row["choice"] == t.answer
        assert row["score"] == "1.0" and row["category"] == row["choice_label"]
        assert int(row["response_ms"]) >= 0 and row["answered_at"] >= row["shown_at"]
