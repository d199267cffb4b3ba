"""A study's results: per-method accuracy (class discrimination, Sec. 5.1) or mean relative
reliability (trust, Sec. 5.2) with 95% intervals, Fleiss' kappa, tests of the difference
between methods, and the per-response CSV; the paper's Table 2 numbers beside ours.

Scoring. Class discrimination: a rating is correct when the participant picks the category
the visualisation was made for; accuracy per method is correct / ratings (the paper's "9
ratings ... evaluated against the ground truth and averaged", the same number when every trial
has the same number of ratings). Trust: the answer on the -2..+2 scale (model 1 clearly more
trustworthy ... model 2 clearly more) is turned into the relative reliability of model A over
model B: the answer when A was shown as model 2, its negative when A was model 1.
"""

from __future__ import annotations

import csv
import io
import itertools
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from camlens.study import stats
from camlens.study.store import Response, StudyStore, Trial

__all__ = ["METHOD_NAMES", "PAPER_ACCURACY", "PAPER_RELIABILITY", "MethodResult", "TestResult",
           "StudyResults", "summarise", "score", "csv_rows", "write_csv"]

METHOD_NAMES = {
    "deconvnet": "Deconvolution", "guided-backprop": "Guided Backprop",
    "deconv-gradcam": "Deconvolution Grad-CAM", "guided-gradcam": "Guided Grad-CAM",
    "gradcam": "Grad-CAM", "gradient": "Backprop",
}

#: Sec. 5.1 / Table 2: human classification accuracy (%), 43 AMT workers, 90 image-category
#: pairs x 9 ratings per method (PASCAL VOC 2007 val, VGG-16 and AlexNet). From the text:
#: "Guided Grad-CAM ... 61.23% of cases (compared to 44.44% for Guided Backpropagation" and
#: "Grad-CAM helps make Deconvolution more class-discriminative (from 53.33% -> 60.37%)".
#: All four are k / 810: 432, 360, 489 and 496 correct ratings.
PAPER_ACCURACY = {"deconvnet": 53.33, "guided-backprop": 44.44, "deconv-gradcam": 60.37,
                  "guided-gradcam": 61.23}

#: Sec. 5.2 / Table 2: mean relative reliability of VGG-16 over AlexNet (54 AMT workers).
PAPER_RELIABILITY = {"guided-backprop": 1.00, "guided-gradcam": 1.27}


def score(trial: Trial, choice: str) -> float:
    """The rating's value: class discrimination 1.0 (correct) or 0.0; trust the relative
    reliability of model A over model B in -2..+2."""
    if "model_a" in trial.meta:
        value = int(choice)
        return float(value if trial.answer == "2" else -value)
    return 1.0 if choice == trial.answer else 0.0


@dataclass(frozen=True)
class MethodResult:
    """One method's row. ``estimate``: accuracy (fraction, Wilson interval) or mean relative
    reliability (t interval); None with fewer ratings than it needs (see ``note``)."""

    method: str
    name: str
    ratings: int
    trials: int
    correct: int | None
    estimate: stats.Interval | None
    kappa: float | None
    paper: float | None
    median_response_ms: float | None
    note: str = ""


@dataclass(frozen=True)
class TestResult:
    """A test of a difference: what was compared, the test, its statistic and p value
    (``p_holm``: Holm-adjusted over the family of pairwise tests)."""

    comparison: str
    test: str
    statistic: float
    p: float
    p_holm: float | None = None


@dataclass(frozen=True)
class StudyResults:
    kind: str
    title: str
    participants: int
    started: int
    finished: int
    responses: int
    target_ratings: int
    ratings_per_trial: tuple[int, float, int]
    methods: tuple[MethodResult, ...]
    overall_kappa: float | None
    tests: tuple[TestResult, ...]
    notes: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        """Plain data; intervals as ``{estimate, low, high, confidence}``, missing values
        null (with a ``note`` saying why)."""
        return asdict(self)

    def markdown(self) -> str:
        """The results as markdown tables, the paper's numbers beside ours."""
        lo, mean, hi = self.ratings_per_trial
        lines = [f"# {self.title}", "",
                 f"{self.participants} participants invited, {self.started} started, "
                 f"{self.finished} finished; {self.responses} responses; ratings per trial "
                 f"min {lo} / mean {mean:.2f} / max {hi} (target {self.target_ratings}).", ""]
        if self.kind == "class-discrimination":
            lines += ["| method | ratings | trials | human classification accuracy (95% Wilson) "
                      "| paper (Table 2) | Fleiss' κ | median response |",
                      "|---|---:|---:|---|---:|---:|---:|"]
        else:
            lines += ["| method | ratings | trials | relative reliability of model A (95% t) "
                      "| paper (Table 2) | Fleiss' κ | median response |",
                      "|---|---:|---:|---|---:|---:|---:|"]
        for r in self.methods:
            lines.append(f"| {r.name} | {r.ratings} | {r.trials} | {self._estimate(r)} | "
                         f"{self._paper(r.paper)} | {_num(r.kappa, 3)} | "
                         f"{_ms(r.median_response_ms)} |")
        lines += ["", f"Fleiss' κ over all trials: {_num(self.overall_kappa, 3)}."]
        if self.tests:
            lines += ["", "| comparison | test | statistic | p | p (Holm) |",
                      "|---|---|---:|---:|---:|"]
            for t in self.tests:
                lines.append(f"| {t.comparison} | {t.test} | {t.statistic:.3f} | "
                             f"{_p(t.p)} | {_p(t.p_holm)} |")
        notes = list(self.notes) + [f"{r.name}: {r.note}" for r in self.methods if r.note]
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        return "\n".join(lines) + "\n"

    def _estimate(self, r: MethodResult) -> str:
        e = r.estimate
        if e is None:
            return "n/a"
        if self.kind == "class-discrimination":
            return f"{100 * e.estimate:.2f}% [{100 * e.low:.2f}, {100 * e.high:.2f}]"
        return f"{e.estimate:+.2f} [{e.low:+.2f}, {e.high:+.2f}]"

    def _paper(self, value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.2f}%" if self.kind == "class-discrimination" else f"{value:+.2f}"


def _num(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _p(p: float | None) -> str:
    return "-" if p is None else ("< 0.0001" if p < 1e-4 else f"{p:.4f}")


def _ms(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f} s"


def _kappa(rows: Sequence[Response], categories: Sequence[float]) -> float | None:
    by_trial: dict[str, Counter[float]] = defaultdict(Counter)
    for r in rows:
        by_trial[r.trial.id][score(r.trial, r.choice)] += 1
    if not by_trial:
        return None
    table = np.array([[c[k] for k in categories] for c in by_trial.values()])
    return stats.fleiss_kappa(table)


def summarise(store: StudyStore, confidence: float = 0.95) -> StudyResults:
    """The results of the study in ``store`` (see the module docstring)."""
    study = store.study
    responses = store.responses()
    trials = store.trials()
    trust = study.kind == "trust"
    categories = [-2.0, -1.0, 0.0, 1.0, 2.0] if trust else [0.0, 1.0]
    by_method: dict[str, list[Response]] = defaultdict(list)
    for r in responses:
        by_method[r.trial.method].append(r)
    rows = []
    for method in study.methods:
        rs = by_method.get(method, [])
        values = [score(r.trial, r.choice) for r in rs]
        est: stats.Interval | None = None
        correct = None
        note = ""
        if trust:
            if len(values) >= 2:
                est = stats.mean_interval(values, confidence)
            else:
                note = f"{len(values)} rating(s): a mean's interval needs at least 2"
        else:
            correct = int(sum(values))
            if values:
                est = stats.wilson(correct, len(values), confidence)
            else:
                note = "no ratings yet"
        times = [r.response_ms for r in rs if r.response_ms is not None]
        paper = (PAPER_RELIABILITY if trust else PAPER_ACCURACY).get(method)
        rows.append(MethodResult(
            method, METHOD_NAMES.get(method, method), len(rs), len({r.trial.id for r in rs}),
            correct, est, _kappa(rs, categories), paper,
            float(statistics.median(times)) if times else None, note))
    tests = _trust_tests(study.methods, by_method) if trust else _accuracy_tests(rows)
    counts = Counter(r.trial.id for r in responses)
    per_trial = [counts.get(t.id, 0) for t in trials]
    invited, started, finished = store.completion()
    notes = []
    if any(r.kappa is None and r.ratings for r in rows):
        notes.append("κ n/a: undefined (every rating in one category) or no trial with two "
                     "ratings")
    if tests:
        notes.append("Ratings by one participant are not independent; the tests treat them "
                     "as independent, as the paper's averages do.")
    return StudyResults(
        study.kind, study.title, invited, started, finished, len(responses),
        study.ratings,
        (min(per_trial), float(np.mean(per_trial)), max(per_trial)) if per_trial else (0, 0, 0),
        tuple(rows), _kappa(responses, categories), tuple(tests), tuple(notes))


def _accuracy_tests(rows: Sequence[MethodResult]) -> list[TestResult]:
    """Chi-square of homogeneity over all methods, then pooled two-proportion z-tests of every
    pair (Holm-adjusted)."""
    rated = [r for r in rows if r.ratings and r.correct is not None]
    out: list[TestResult] = []
    if len(rated) < 2:
        return out
    table = [[r.correct or 0, r.ratings - (r.correct or 0)] for r in rated]
    chi = stats.chi_square(table)
    if chi is not None:
        out.append(TestResult("all methods", f"Pearson chi-square of homogeneity "
                              f"({chi[1]} df)", chi[0], chi[2]))
    pairs = []
    for a, b in itertools.combinations(rated, 2):
        z, p = stats.two_proportion_z(a.correct or 0, a.ratings, b.correct or 0, b.ratings)
        pairs.append((f"{a.name} vs {b.name}", z, p))
    adjusted = stats.holm([p for _, _, p in pairs])
    out += [TestResult(c, "two-proportion z (pooled)", z, p, ph)
            for (c, z, p), ph in zip(pairs, adjusted)]
    return out


def _trust_tests(methods: Sequence[str], by_method: dict[str, list[Response]]
                 ) -> list[TestResult]:
    """Per method a one-sample t-test of the relative reliability against 0 (no preference),
    then Welch's t-test of every pair of methods (Holm-adjusted)."""
    values = {m: [score(r.trial, r.choice) for r in by_method.get(m, [])] for m in methods}
    out: list[TestResult] = []
    for m in methods:
        res = stats.one_sample_t(values[m])
        if res is not None:
            out.append(TestResult(f"{METHOD_NAMES.get(m, m)}: model A vs no preference",
                                  "one-sample t against 0", res[0], res[1]))
    pairs = []
    for a, b in itertools.combinations(methods, 2):
        res = stats.welch_t(values[a], values[b])
        if res is not None:
            pairs.append((f"{METHOD_NAMES.get(a, a)} vs {METHOD_NAMES.get(b, b)}", *res))
    adjusted = stats.holm([p for _, _, p in pairs])
    out += [TestResult(c, "Welch t", t, p, ph) for (c, t, p), ph in zip(pairs, adjusted)]
    return out


CSV_COLUMNS = ("participant", "trial", "method", "item", "image", "category", "choice",
               "choice_label", "score", "model_a_position", "shown_at", "answered_at",
               "response_ms")


def csv_rows(store: StudyStore) -> list[dict[str, Any]]:
    """One row per response (:data:`CSV_COLUMNS`): ``score`` is 1/0 (correct) for class
    discrimination, the relative reliability of model A for trust; ``category`` the visualised
    (class discrimination) or predicted (trust) category."""
    out = []
    for r in store.responses():
        t = r.trial
        labels = dict(t.options)
        out.append({
            "participant": r.participant, "trial": t.id, "method": t.method, "item": t.item,
            "image": t.meta.get("image", ""), "category": t.meta.get("category", ""),
            "choice": r.choice, "choice_label": labels.get(r.choice, ""),
            "score": score(t, r.choice),
            "model_a_position": t.answer if "model_a" in t.meta else "",
            "shown_at": r.shown_at or "", "answered_at": r.answered_at,
            "response_ms": "" if r.response_ms is None else r.response_ms,
        })
    return out


def csv_text(store: StudyStore) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(store))
    return buf.getvalue()


def write_csv(store: StudyStore, path: str | Path) -> Path:
    """Write :func:`csv_rows` to ``path`` atomically."""
    from camlens.io import atomic_path

    dest = Path(path)
    with atomic_path(dest, make_parents=False) as tmp:
        Path(tmp).write_text(csv_text(store), encoding="utf-8")
    return dest
