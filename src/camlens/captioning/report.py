"""Sec. 8.1 for the reproduction: the captioner's quality and the captioning measurements
beside the paper's numbers, as markdown (:func:`caption_section`).

    python -m camlens.captioning.report [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from camlens.captioning.model import WEIGHTS_DIR

__all__ = ["METHODS", "quality_table", "measure", "caption_section"]

#: The methods Sec. 8.1 compares.
METHODS = ("guided-backprop", "gradcam", "guided-gradcam")


def quality_table(folder: str | Path | None = None) -> str:
    """The shipped captioner's held-out BLEU-4 and attribute accuracies (its accuracy.json)."""
    rec = json.loads((Path(folder or WEIGHTS_DIR) / "accuracy.json").read_text("utf-8"))
    h = rec["heldout"]
    lines = [f"Held-out world v2 scenes: {h['n']} (seed {h['seed']}; single, two, pair and "
             "multi in turn). BLEU-4: nltk `corpus_bleu`, one reference (the scene graph's "
             "caption). Attributes: over the objects whose class the caption names.", "",
             "| decoding | BLEU-4 | exact caption | objects named | size | colour | texture "
             "| all three |", "|---|---|---|---|---|---|---|---|"]
    for how in ("greedy", "beam"):
        r, a = h[how], h[how]["attributes"]
        name = "greedy" if how == "greedy" else f"beam {h['beam_width']}"
        lines.append(f"| {name} | {r['bleu4']:.3f} | {100 * r['exact_caption']:.1f}% | "
                     f"{100 * a['recall']:.1f}% | {100 * a['size']:.1f}% | "
                     f"{100 * a['colour']:.1f}% | {100 * a['texture']:.1f}% | "
                     f"{100 * a['exact']:.1f}% |")
    lines += ["", "| kind (beam) | BLEU-4 | objects named | all three attributes |",
              "|---|---|---|---|"]
    for kind, r in h["beam"]["per_kind"].items():
        lines.append(f"| {kind} | {r['bleu4']:.3f} | {100 * r['attributes']['recall']:.1f}% | "
                     f"{100 * r['attributes']['exact']:.1f}% |")
    s, load, t = rec["seconds"], rec["load_average"], rec["train"]
    tuned = (f" + {t['finetune_epochs']} fine-tuning the CNN's last conv block"
             if t.get("finetune_epochs") else "")
    lines += ["", f"Training: `{rec['command']}`, {t['scenes']} scenes, "
              f"{t['epochs']} epochs with the CNN frozen{tuned} ({t['steps']} steps); "
              f"{s['total'] / 60:.1f} min wall ({s['data'] / 60:.1f} data, "
              f"{s['train'] / 60:.1f} training, {s['eval'] / 60:.1f} evaluation) on "
              f"{rec['cpus']} cores at a load average of {load['mean']} "
              f"({load['min']}-{load['max']})."]
    return "\n".join(lines)


def measure(n: int, csv_dir: str | Path | None = None, progress: bool = False
            ) -> dict[str, dict[str, Any]]:
    """Word pointing and region ratio of :data:`METHODS` on ``n`` held-out scenes (the mixed
    stream of seed 20251); summaries as dicts, by task and method."""
    from camlens.evaluate.tasks.captioning import evaluate_region_ratio, evaluate_word_pointing

    data = f"synthetic:seed=20251,n={n},kind=mixed"
    out: dict[str, dict[str, Any]] = {"word-pointing": {}, "region-ratio": {}}
    for task, run in (("word-pointing", evaluate_word_pointing),
                      ("region-ratio", evaluate_region_ratio)):
        for m in METHODS:
            csv = None if csv_dir is None else Path(csv_dir) / f"{task}_{m}.csv"
            out[task][m] = run(data=data, method=m, csv_path=csv, progress=progress).__dict__
    return out


def _table(res: dict[str, dict[str, Any]]) -> str:
    from camlens.evaluate.tasks.captioning import PAPER

    wp, rr = res["word-pointing"], res["region-ratio"]
    n = next(iter(wp.values()))["n_images"]
    lines = [f"On {n} held-out world v2 scenes (seed 20251, mixed kinds); mean ± standard "
             "error over words / regions.", "",
             "| Method | word pointing | paper (COCO, 1000 images) | region ratio (mean ± s.e.) "
             "| median | paper (DenseCap) |", "|---|---|---|---|---|---|"]
    for m in METHODS:
        w, r = wp[m], rr[m]
        pw = PAPER["word-pointing"].get(m)
        pr = PAPER["region-ratio"][m]
        inf = f", {r['infinite']} infinite left out" if r["infinite"] else ""
        paper_wp = f"{100 * pw[0]:.1f}%" if pw else "-"
        lines.append(f"| {m} | {100 * w['accuracy']:.1f}% ± {100 * w['sem']:.1f} "
                     f"({w['scored']} words) | {paper_wp} | {r['mean']:.2f} ± {r['sem']:.2f} "
                     f"({r['regions'] - r['skipped'] - r['infinite']} regions{inf}) | "
                     f"{r['median']:.2f} | {pr[0]:.2f} ± {pr[1]:.2f} |")
    lines.append("| uniform map | - | - | 1.00 (by definition) | 1.00 | 1.00 |")
    return "\n".join(lines)


def caption_section(quick: bool = False) -> str:
    """Sec. 8.1 as markdown: the captioner's quality (shipped accuracy.json) and word pointing
    / region ratios measured now (``quick``: 40 scenes, else 200)."""
    t = time.time()
    res = measure(40 if quick else 200)
    took = time.time() - t
    return ("### Captioning (Sec. 8.1)\n\n#### The captioner\n\n" + quality_table()
            + "\n\n#### Word pointing and region ratios\n\n" + _table(res)
            + f"\n\n(measured in {took / 60:.1f} min, load average "
              f"{os.getloadavg()[0]:.1f})\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m camlens.captioning.report",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="held-out scenes (default 200)")
    p.add_argument("--csv-dir", type=Path, default=None, help="per-image CSV rows (resumable)")
    p.add_argument("--json", type=Path, default=None, help="also write the summaries")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown")
    args = p.parse_args(argv)
    if args.csv_dir:
        args.csv_dir.mkdir(parents=True, exist_ok=True)
    t = time.time()
    res = measure(args.n, args.csv_dir, progress=True)
    text = quality_table() + "\n\n" + _table(res) + (
        f"\n\n(measured in {(time.time() - t) / 60:.1f} min, load average "
        f"{os.getloadavg()[0]:.1f})\n")
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
