"""Sec. 8.2 for the reproduction (docs/results.md): the VQA net's quality and its answer maps'
rank correlations, beside the paper's numbers."""

from __future__ import annotations

import os

from camlens.vqa.data import KINDS
from camlens.vqa.measure import evaluate_vqa
from camlens.vqa.model import BUNDLED_DIR

__all__ = ["vqa_section", "accuracy_markdown"]


def accuracy_markdown() -> str:
    """The shipped net's held-out accuracy per question kind (from its ``accuracy.json``),
    beside always giving the kind's most frequent answer."""
    import json

    rec = json.loads((BUNDLED_DIR / "accuracy.json").read_text(encoding="utf-8"))
    h = rec["heldout"]
    lines = [f"The shipped VQA net (deeper LSTM Q + norm I on world v2's frozen `vgg`; "
             f"{rec['train_questions']} training questions from {rec['train_scenes']} scenes, "
             f"{rec['epochs']} epochs, {rec['wall_seconds'] / 60:.1f} min wall on "
             f"{rec['threads']} thread(s), load average {rec['load_average_start'][0]:.1f}"
             f"-{rec['load_average_end'][0]:.1f}) on {h['n']} questions about "
             f"{rec['heldout_scenes']} held-out scenes:", "",
             "| question kind | n | accuracy | majority answer | its accuracy |",
             "|---|---|---|---|---|"]
    for k in KINDS:
        p, b = h["per_kind"][k], h["majority_baseline"][k]
        lines.append(f"| {k} | {p['n']} | {p['accuracy']:.3f} | {b['answer']} | "
                     f"{b['accuracy']:.3f} |")
    lines.append(f"| all | {h['n']} | {h['overall']:.3f} | | |")
    return "\n".join(lines) + "\n"


def vqa_section(quick: bool, csv_path: str | os.PathLike[str] | None = None) -> str:
    """Markdown: the net's accuracy, then the rank correlations of its answer maps with
    occlusion and with the questioned objects' masks on 200 held-out scenes (20 when
    ``quick``), with the paper's numbers beside them. ``csv_path``: keep (and resume) rows."""
    s = evaluate_vqa(20 if quick else 200, csv_path=csv_path, progress=False)
    return ("### Sec. 8.2: visual question answering\n\n" + accuracy_markdown() + "\n"
            + s.markdown())
