"""Markdown tables of evaluation results, rendered from data by one helper,
:func:`markdown_table`: a summary's own table, and the reproduction's comparisons with the
paper (:mod:`camlens.evaluate.paper`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from camlens.evaluate.localization import iou
from camlens.evaluate.paper import (
    EARLIER_ROWS,
    FAITHFULNESS_ROWS,
    PAPER_FAITHFULNESS,
    PAPER_POINTING,
    PAPER_TABLE1,
    PAPER_TABLE1_UNSURE,
    PAPER_TABLE3,
    TABLE1_ROWS,
    TABLE3_ROWS,
)

if TYPE_CHECKING:
    from camlens.evaluate.reproduce import NetResults, Results
    from camlens.evaluate.tasks import (
        FaithfulnessSummary,
        LocalizationSummary,
        PointingSummary,
    )


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> str:
    """A markdown table; ``align`` has one letter per column, ``l`` or ``r``."""
    def line(cells: Sequence[str]) -> str:
        return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"

    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def pct(v: float | None) -> str:
    """A fraction as a percentage with two decimals; ``–`` for None or NaN."""
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def paper_value(v: float | None, unsure: bool = False) -> str:
    """One of the paper's numbers (already in %); ``(?)`` marks an unverified one."""
    if v is None:
        return "–"
    return f"{v:.2f}" + (" (?)" if unsure else "")


def _errors(s: LocalizationSummary) -> list[str]:
    return [pct(s.top1_loc_error), pct(s.topk_loc_error), pct(s.top1_cls_error),
            pct(s.topk_cls_error)]


def _loc_header(k: int) -> list[str]:
    return ["Method", "Top-1 loc error", f"Top-{k} loc error", "Top-1 cls error",
            f"Top-{k} cls error"]


def localization_markdown(rows: Sequence[LocalizationSummary],
                          labels: Sequence[str] | None = None) -> str:
    """The layout of Table 1: method | top-1 loc error | top-k loc error | top-1 cls error |
    top-k cls error (in %)."""
    k = rows[0].k if rows else 5
    return markdown_table(_loc_header(k), ([labels[i] if labels else r.method, *_errors(r)]
                                           for i, r in enumerate(rows)), "lrrrr")


def pointing_markdown(rows: Sequence[PointingSummary],
                      labels: Sequence[str] | None = None) -> str:
    k = rows[0].k if rows else 5
    header = ["Method", "Pointing accuracy (gt classes)", f"Top-{k} without rejection",
              f"Top-{k} + rejection", "Rejection threshold", "Reject all (baseline)"]
    return markdown_table(header, ([labels[i] if labels else r.method, pct(r.accuracy),
                                    pct(r.accuracy_topk), pct(r.accuracy_rejection),
                                    f"{r.threshold:.4g}", pct(r.accuracy_reject_all)]
                                   for i, r in enumerate(rows)), "lrrrrr")


def faithfulness_markdown(summary: FaithfulnessSummary,
                          labels: Mapping[str, str] | None = None) -> str:
    header = ["Method", "Rank correlation with occlusion", "Images", "Undefined (constant map)"]
    return markdown_table(header, ([(labels or {}).get(m, m), f"{summary.mean_rho[m]:.3f}",
                                    str(summary.n), str(summary.n_nan[m])]
                                   for m in summary.methods), "lrrr")


# --------------------------------------------------------------------------------------------
# the reproduction (camlens.evaluate.reproduce)


def se_binomial(p: float, n: int) -> float:
    """Standard error of a proportion ``p`` measured on ``n`` independent trials."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / n) if n > 0 else math.nan


def pct_se(p: float, n: int) -> str:
    """A fraction with its binomial standard error, both in %: ``56.51 ± 1.57``."""
    return f"{pct(p)} ± {100 * se_binomial(p, n):.2f}"


def _row_name(row: str, s: LocalizationSummary | None, n: int) -> str:
    return f"{row} (first {s.n} images)" if s is not None and s.n != n else row


def _pair(s: LocalizationSummary) -> str:
    return f"{pct_se(s.top1_loc_error, s.n)} / {pct(s.topk_loc_error)}"


def table1_ours(net: NetResults, k: int) -> str:
    """One net's Table 1, standard errors of the localisation errors."""
    rows = []
    n = net.table1["Grad-CAM"].n
    for row, _, _, _ in TABLE1_ROWS:
        s = net.table1.get(row)
        if s is None:
            rows.append([row, (f"n/a: {net.name} has fully-connected layers after the "
                         "convolutions, so CAM does not apply"), "", "", ""])
        else:
            rows.append([_row_name(row, s, n), pct_se(s.top1_loc_error, s.n),
                         pct_se(s.topk_loc_error, s.n), pct(s.top1_cls_error),
                         pct(s.topk_cls_error)])
    return markdown_table(_loc_header(k), rows, "lrrrr")


def table1_paper() -> str:
    """The paper's Table 1."""
    rows = [["CAM (VGG-16-GAP)" if row == "CAM" else row,
             *(paper_value(v, (row, i) in PAPER_TABLE1_UNSURE) for i, v in enumerate(vals))]
            for row, vals in PAPER_TABLE1.items()]
    return markdown_table(_loc_header(5), rows, "lrrrr")


def side_by_side(res: Results) -> str:
    """Table 1's localisation errors, the paper's beside each net's, and classification."""
    nets = list(res.nets.values())
    header = ["Method", "Paper top-1 / top-5 (VGG-16, ILSVRC-15 val)",
              *(f"Ours {n.name} top-1 / top-5" for n in nets)]
    rows = []
    for row, _, _, _ in TABLE1_ROWS:
        p = PAPER_TABLE1.get(row)
        first = next((n.table1[row] for n in nets if row in n.table1), None)
        rows.append([_row_name(row, first, res.config.n_images),
                     f"{p[0]:.2f} / {p[1]:.2f}" if p else "not in Table 1",
                     *("n/a (FC layers)" if row not in n.table1 else _pair(n.table1[row])
                       for n in nets)])
    cls = PAPER_TABLE1["Grad-CAM"]
    rows.append(["*Classification error* (top-1 / top-5)", f"{cls[2]:.2f} / {cls[3]:.2f}",
                 *(f"{pct_se(g.top1_cls_error, g.n)} / {pct(g.topk_cls_error)}"
                   for g in (n.table1["Grad-CAM"] for n in nets))])
    return markdown_table(header, rows, "lr" + "r" * len(nets))


def table3(res: Results) -> str:
    """The Grad-CAM ablations and earlier layers, the paper's beside each net's."""
    nets = list(res.nets.values())
    header = ["Grad-CAM variant", "Paper top-1 loc error (unverified)",
              *(f"{n.name} top-1 / top-{res.config.top_k}" for n in nets)]
    names = [r for r, _, _ in TABLE3_ROWS] + list(EARLIER_ROWS)
    rows = [[row, paper_value(PAPER_TABLE3.get(row), True) if row in PAPER_TABLE3 else "–",
             *(_pair(n.table3[row]) for n in nets)] for row in names]
    return markdown_table(header, rows, "lr" + "r" * len(nets))


def pointing_table(res: Results) -> str:
    """Every net's pointing accuracies, with the paper's top-5 + rejection numbers."""
    k = res.config.top_k
    header = ["Net", "Method", "Standard (gt classes)", f"Top-{k}, no rejection",
              f"Top-{k} + rejection", "Threshold (max of map)", "Paper, top-5 + rejection"]
    rows = []
    for n in res.nets.values():
        rows += [[n.name, row, pct_se(p.accuracy, p.trials), pct(p.accuracy_topk),
                  pct_se(p.accuracy_rejection, p.trials_topk), f"{p.threshold:.4g}",
                  paper_value(PAPER_POINTING[row]) if row in PAPER_POINTING else "–"]
                 for row, p in n.pointing.items()]
        if n.pointing:  # the same top-k trials for every method of a net
            p = next(iter(n.pointing.values()))
            rows.append([n.name, "*reject every class (no map)*", "–", "–",
                         pct_se(p.accuracy_reject_all, p.trials_topk), "inf", "–"])
    return markdown_table(header, rows, "llrrrrr")


def faithfulness_table(res: Results) -> str:
    """Mean rank correlations with occlusion (± standard error), the paper's beside ours."""
    nets = list(res.nets.values())
    header = ["Method", "Paper (PASCAL VOC 07 val)", *(n.name for n in nets)]
    rows = []
    for row, _ in FAITHFULNESS_ROWS:
        p = PAPER_FAITHFULNESS.get(row)
        rows.append([row, f"{p:.3f}" if p else "–",
                     *(f"{n.faithfulness.mean_rho[row]:.3f} ± {n.faithfulness.se_rho[row]:.3f}"
                       if n.faithfulness and row in n.faithfulness.mean_rho else
                       "n/a (FC layers)" for n in nets)])
    return markdown_table(header, rows, "lr" + "r" * len(nets))


def box_stats(summary: LocalizationSummary) -> dict[str, float]:
    """Top-1 boxes of correctly classified images against the best ground-truth box of that
    class: median IoU, median area ratio (predicted / ground truth), and the fraction of boxes
    that contain the ground-truth box."""
    def area(b: Sequence[int]) -> int:
        return (b[2] - b[0] + 1) * (b[3] - b[1] + 1)

    ious, ratios, contains = [], [], 0
    for rec in summary.records:
        c, box = rec.pred_classes[0], rec.pred_boxes[0]
        boxes = [g for gc, g in rec.gt if gc == c]
        if box is None or not boxes:
            continue
        g = max(boxes, key=lambda b: iou(box, b))
        ious.append(iou(box, g))
        ratios.append(area(box) / area(g))
        contains += box[0] <= g[0] and box[1] <= g[1] and box[2] >= g[2] and box[3] >= g[3]
    if not ious:
        return {"iou": math.nan, "ratio": math.nan, "contains": math.nan, "n": 0}
    return {"iou": float(np.median(ious)), "ratio": float(np.median(ratios)),
            "contains": contains / len(ious), "n": len(ious)}


def box_table(res: Results) -> str:
    """Why boxes succeed or fail: :func:`box_stats` of each Table 1 row and earlier layer."""
    nets = list(res.nets.values())
    header = ["Map", *(f"{n.name}: median IoU / area ratio / contains gt" for n in nets)]
    pick = [(r, lambda n, r=r: n.table1.get(r)) for r, _, _, _ in TABLE1_ROWS]
    pick += [(f"Grad-CAM, {r}", lambda n, r=r: n.table3.get(r))
             for r in ("GMP gradients", *EARLIER_ROWS)]
    rows = []
    for name, get in pick:
        cells = []
        for n in nets:
            summ = get(n)
            b = box_stats(summ) if summ is not None else None
            cells.append("n/a" if b is None else
                         f"{b['iou']:.2f} / {b['ratio']:.2f} / {100 * b['contains']:.0f}%")
        rows.append([name, *cells])
    return markdown_table(header, rows, "l" + "r" * len(nets))


def sweep_table(res: Results) -> str:
    """Grad-CAM's boxes at the paper's threshold and the other thresholds of the sweep."""
    nets = list(res.nets.values())
    cfg = res.config
    header = ["Grad-CAM binarised at", *(f"{n.name} top-1 / top-{cfg.top_k}" for n in nets)]
    rows = []
    for thr in [cfg.threshold, *cfg.threshold_sweep]:
        paper = thr == cfg.threshold
        rows.append([f"{thr:.0%} of the maximum" + (" (the paper's)" if paper else ""),
                     *(_pair(n.table1["Grad-CAM"] if paper else n.sweep[thr]) for n in nets)])
    return markdown_table(header, rows, "l" + "r" * len(nets))
