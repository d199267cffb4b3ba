"""Reproduce the Grad-CAM paper's quantitative comparisons on world v2, in one command:

    python -m camlens.evaluate.reproduce --out docs/results.md     # full (committed)
    python -m camlens.evaluate.reproduce --quick --out /tmp/r.md   # a CI-sized smoke run

On world v2 (:mod:`camlens.synthetic.v2`, 112x112, 33 classes, exact masks), for the four
shipped nets (``vgg``: VGG-16-like with fully-connected layers; ``vgg_gap``: its GAP + linear
variant, CAM's net; ``alexnet``; ``resnet``):

- weakly-supervised localisation (Sec. 4.1, Table 1) on ILSVRC-style single-object scenes,
  ``make_dataset(N, seed=HELDOUT_SEED)``, the first N of the scenes the nets' accuracies in
  weights/accuracy.json were measured on: Backprop, c-MWP, Grad-CAM, CAM (GAP nets), Guided
  Backprop, Guided Grad-CAM, occlusion; classification error beside localisation error;
- Grad-CAM ablations (Table 3) and earlier layers (Appendix B);
- the pointing game (Sec. 4.3), standard and top-5 + rejection, on PASCAL/COCO-style
  multi-object scenes (``kind="multi"``, seed :data:`POINTING_SEED`), the rejection threshold
  chosen on a separate split (seed :data:`THRESHOLD_SEED`);
- faithfulness (Sec. 5.3): Spearman rank correlation with occlusion on the first multi-object
  scenes;
- the identity CAM == Z * Grad-CAM on the GAP nets (Sec. 3.1);
- weakly-supervised segmentation (Sec. 4.2): SEC from CAM and Grad-CAM seeds;
- the paper's uses (:data:`BEYOND`): diagnosing failures, adversarial noise and dataset bias
  (Sec. 6, :mod:`camlens.diagnose.report`), textual explanations from the shipped dissections
  (Sec. 7, :mod:`camlens.dissect.report`), and the captioner's and VQA net's maps (Sec. 8,
  :mod:`camlens.captioning.report`, :mod:`camlens.vqa.report`), each at its own documented
  full size (or its quick size with ``--quick --beyond ...``).

The markdown report has the paper's numbers beside ours, standard errors, and the paper's
claims checked. ``--allow-random`` runs randomly initialised nets when shipped weights are
missing (to test the pipeline; the report then says so at the top).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

import camlens
from camlens.allocator import keep_freed_memory
from camlens.evaluate.explainer import MapCache
from camlens.evaluate.findings import render
from camlens.evaluate.paper import (
    EARLIER_LAYERS,
    EARLIER_ROWS,
    FAITHFULNESS_ROWS,
    PAPER,
    POINTING_ROWS,
    TABLE1_ROWS,
    TABLE3_ROWS,
)
from camlens.evaluate.synthetic_data import scenes_to_samples
from camlens.evaluate.tasks import (
    FaithfulnessSummary,
    LocalizationSummary,
    PointingSummary,
    evaluate_faithfulness,
    evaluate_localization,
    evaluate_pointing,
)

if TYPE_CHECKING:
    from camlens.segment import SegmentComparison

__all__ = ["BEYOND", "EARLIER_LAYERS", "PAPER", "TABLE3_ROWS", "ReproduceConfig", "main", "render",
           "reproduce", "NETS", "GAP_NETS"]

NETS = ("vgg", "vgg_gap", "alexnet", "resnet")
#: The sections on the paper's uses of Grad-CAM, each measured by its own package.
BEYOND = ("sec6", "sec7", "sec8")
#: Nets whose default layer feeds global average pooling and one linear layer: CAM applies.
GAP_NETS = ("vgg_gap", "resnet")
EVAL_SEED = 20251  # camlens.synthetic.v2.HELDOUT_SEED: the nets' recorded held-out scenes
POINTING_SEED = 20252  # multi-object scenes for the pointing game and faithfulness
THRESHOLD_SEED = 20253  # a second multi-object split, for the rejection threshold


@dataclass
class ReproduceConfig:
    """Everything that determines the numbers (defaults: the full run)."""

    n_images: int = 1000  # single-object scenes for Table 1 and Table 3
    n_occlusion: int = 120  # the first N of them for Table 1's occlusion row
    n_pointing: int = 500  # multi-object scenes for the pointing game
    n_threshold: int = 250  # multi-object scenes to choose the rejection threshold on
    n_faithfulness: int = 120  # the first N pointing scenes for faithfulness
    eval_seed: int = EVAL_SEED
    pointing_seed: int = POINTING_SEED
    threshold_seed: int = THRESHOLD_SEED
    top_k: int = 5
    threshold: float = 0.15
    tolerance: float = 4
    occlusion_window: int = 16
    occlusion_stride: int = 8
    occlusion_fill: float = 0.4
    threshold_sweep: tuple[float, ...] = (0.3, 0.5)  # Grad-CAM's boxes at other thresholds
    batch_size: int = 50
    threads: int | None = 1
    nets: tuple[str, ...] = NETS
    allow_random: bool = False
    csv_dir: str | None = None
    quick: bool = False
    #: Sec. 4.2 (camlens.segment.compare_seeds): multi-object training / test scenes (the
    #: first N of camlens.segment.TRAIN's seed 4200 and TEST's held-out seed 20251), SEC
    #: training steps, trainings per arm; seg_train 0 skips the section.
    seg_train: int = 800
    seg_test: int = 300
    seg_steps: int = 400
    seg_repeats: int = 3
    #: Which of :data:`BEYOND` to run (the quick run: none; they have their own smoke tests).
    beyond: tuple[str, ...] = BEYOND

    @classmethod
    def quick_run(cls, **kw: Any) -> ReproduceConfig:
        """A run CI affords (10-40 s on 2 cores): every table and net, a dozen images."""
        base = cls(n_images=12, n_occlusion=2, n_pointing=10, n_threshold=6,
                   n_faithfulness=3, quick=True, seg_train=8, seg_test=4, seg_steps=3,
                   seg_repeats=1, beyond=())
        return replace(base, **kw)

    def first(self, n: int, of: int) -> int:
        return min(int(n), int(of))


@dataclass
class NetResults:
    name: str
    random_weights: bool
    default_layer: str
    table1: dict[str, LocalizationSummary] = field(default_factory=dict)
    table3: dict[str, LocalizationSummary] = field(default_factory=dict)
    earlier_layers: dict[str, str] = field(default_factory=dict)  # row -> layer name
    sweep: dict[float, LocalizationSummary] = field(default_factory=dict)
    pointing: dict[str, PointingSummary] = field(default_factory=dict)
    faithfulness: FaithfulnessSummary | None = None
    identity: dict[str, float] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, Any] | None = None
    map_size: tuple[int, int] = (0, 0)

    @property
    def gap(self) -> bool:
        return self.name in GAP_NETS


@dataclass
class Results:
    config: ReproduceConfig
    nets: dict[str, NetResults]
    seconds: float
    command: str
    versions: dict[str, str]
    cpu_seconds: float = 0.0  # CPU time of this process (wall time on a quiet machine)
    heldout: dict[str, Any] | None = None  # accuracy.json's description of its held-out set
    #: Sec. 4.2's weakly-supervised segmentation (camlens.segment.compare_seeds), rendered by
    #: findings.segmentation_section; None: not run (``seg_train`` 0).
    segmentation: SegmentComparison | None = None
    #: Markdown of the :data:`BEYOND` sections that ran, and their wall seconds, by key.
    beyond: dict[str, str] = field(default_factory=dict)
    beyond_seconds: dict[str, float] = field(default_factory=dict)


def _load_net(name: str, allow_random: bool) -> tuple[nn.Module, bool, dict | None]:
    from camlens.synthetic.v2 import NETS as NET_CLASSES
    from camlens.synthetic.v2 import WEIGHTS_DIR, load_pretrained, recorded_accuracy

    if (WEIGHTS_DIR / f"{name}.pt").is_file():
        try:
            acc = recorded_accuracy()["nets"].get(name)
        except (OSError, KeyError, ValueError):
            acc = None
        return _fast(load_pretrained(name)), False, acc
    if not allow_random:
        raise FileNotFoundError(
            f"{WEIGHTS_DIR / (name + '.pt')} is missing: train the nets (python -m "
            f"camlens.synthetic.v2.train --out {WEIGHTS_DIR}) or pass --allow-random to exercise "
            "the pipeline on random nets"
        )
    torch.manual_seed(0)
    return _fast(NET_CLASSES[name]().eval()), True, None


def _heldout() -> dict[str, Any] | None:
    from camlens.synthetic.v2 import recorded_accuracy

    try:
        return dict(recorded_accuracy()["heldout"])
    except (OSError, KeyError, ValueError):
        return None


def _fast(model: nn.Module) -> nn.Module:
    """Channels-last weights: the CPU convolutions then run in that layout (faster for these
    nets); same function, float rounding aside."""
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def _csv(cfg: ReproduceConfig, net: str, key: str) -> Path | None:
    if cfg.csv_dir is None:
        return None
    safe = "".join(ch if ch.isalnum() else "_" for ch in key).strip("_")
    return Path(cfg.csv_dir) / f"{net}_{safe}.csv"


def cam_gradcam_identity(model: nn.Module, x: torch.Tensor, layer: str, top_k: int,
                         batch_size: int = 100) -> dict[str, float]:
    """max |CAM - Z * Grad-CAM| / max |CAM| over every (image, class) map (Sec. 3.1).

    Compared before the ReLU (``relu=False`` for both): the ReLU is then applied to equal maps.
    After it, a class whose map is almost all negative keeps a tiny positive part, and the
    ratio to that tiny maximum measures float32 cancellation rather than the identity.
    """
    worst, z = 0.0, None
    for s in range(0, x.shape[0], batch_size):
        xb = x[s:s + batch_size]
        gc = camlens.explain(model, xb, method="gradcam", layer=layer, top_k=top_k,
                             relu=False).raw.double()
        cam = camlens.explain(model, xb, method="cam", layer=layer, top_k=top_k,
                              relu=False).raw.double()
        z = gc.shape[-1] * gc.shape[-2]
        diff = (cam - z * gc).abs().amax(dim=(-2, -1))
        scale = cam.abs().amax(dim=(-2, -1)).clamp_min(1e-30)
        worst = max(worst, float((diff / scale).max()))
    return {"max_relative_difference": worst, "Z": float(z or 0), "maps": float(x.shape[0] * top_k)}


def reproduce(cfg: ReproduceConfig, progress: bool = True, command: str = "") -> Results:
    """Run every comparison; see the module docstring."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    try:
        return _reproduce(cfg, progress, command)
    finally:
        torch.set_num_threads(threads)


def _data(cfg: ReproduceConfig) -> dict[str, Any]:
    from camlens.synthetic.v2 import make_dataset

    singles = make_dataset(cfg.n_images, cfg.eval_seed, kind="single")
    multi = make_dataset(cfg.n_pointing, cfg.pointing_seed, kind="multi")
    held = make_dataset(cfg.n_threshold, cfg.threshold_seed, kind="multi")
    samples = scenes_to_samples(singles, prefix=f"{cfg.eval_seed}/")
    point = scenes_to_samples(multi, prefix=f"{cfg.pointing_seed}/")
    return {"singles": singles, "samples": samples, "point": point,
            "occ": samples[: cfg.first(cfg.n_occlusion, cfg.n_images)],
            "faith": point[: cfg.first(cfg.n_faithfulness, cfg.n_pointing)],
            "held": scenes_to_samples(held, prefix=f"{cfg.threshold_seed}/")}


def _run_net(name: str, cfg: ReproduceConfig, data: dict[str, Any], progress: bool) -> NetResults:
    from camlens.synthetic.v2 import DEFAULT_LAYERS, to_tensors

    model, random_weights, acc = _load_net(name, cfg.allow_random)
    layer = DEFAULT_LAYERS[name]
    res = NetResults(name, random_weights, layer, accuracy=acc)
    occ = {"window": cfg.occlusion_window, "stride": cfg.occlusion_stride,
           "fill": cfg.occlusion_fill}
    common: dict[str, Any] = {"batch_size": cfg.batch_size, "progress": progress,
                              "top_k": cfg.top_k}
    loc: dict[str, Any] = {**common, "threshold": cfg.threshold}
    samples = data["samples"]
    cache = MapCache()  # maps shared by Table 1, the pointing game and faithfulness
    t0 = time.perf_counter()
    for row, method, options, needs_gap in TABLE1_ROWS:
        if needs_gap and not res.gap:
            continue
        is_occ = method == "occlusion"
        # occlusion costs the same for 1 or 5 classes: keep all five boxes
        res.table1[row] = evaluate_localization(
            model, data["occ"] if is_occ else samples, method=method,
            layer=None if method in ("gradient", "guided-backprop", "occlusion") else layer,
            options=dict(occ) if is_occ else dict(options), all_boxes=is_occ,
            csv_path=_csv(cfg, name, f"loc_{row}"), label=row, cache=cache, **loc)
    res.seconds["table1"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for row, options, relative_to in TABLE3_ROWS:
        if row == "Grad-CAM":
            res.table3[row] = res.table1["Grad-CAM"]
            continue
        res.table3[row] = evaluate_localization(
            model, samples, method="gradcam", layer=layer, options=options,
            relative_to=relative_to, csv_path=_csv(cfg, name, f"abl_{row}"), label=row, **loc)
    for row, lay in zip(EARLIER_ROWS, EARLIER_LAYERS[name]):
        res.earlier_layers[row] = lay
        res.table3[row] = evaluate_localization(
            model, samples, method="gradcam", layer=lay, csv_path=_csv(cfg, name, f"abl_{lay}"),
            label=row, **loc)
    for thr in cfg.threshold_sweep:
        res.sweep[thr] = evaluate_localization(
            model, samples, method="gradcam", layer=layer, csv_path=_csv(cfg, name, f"thr_{thr}"),
            label=f"Grad-CAM at {thr:.0%}", **{**loc, "threshold": thr})
    res.seconds["table3"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for row, method in POINTING_ROWS:
        if method == "cam" and not res.gap:
            continue
        res.pointing[row] = evaluate_pointing(
            model, data["point"], method=method,
            layer=None if method in ("gradient", "guided-backprop") else layer,
            tolerance=cfg.tolerance, held_out=data["held"],
            csv_path=_csv(cfg, name, f"pt_{row}"), label=row, cache=cache, **common)
    res.seconds["pointing"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    specs: list[Any] = [(row, method, {}, None if method in ("gradient", "guided-backprop")
                         else layer) for row, method in FAITHFULNESS_ROWS
                        if res.gap or method != "cam"]
    res.faithfulness = evaluate_faithfulness(
        model, data["faith"], method=specs, window=cfg.occlusion_window,
        stride=cfg.occlusion_stride, fill=cfg.occlusion_fill,
        csv_path=_csv(cfg, name, "faithfulness"), cache=cache, batch_size=cfg.batch_size,
        progress=progress)
    res.seconds["faithfulness"] = time.perf_counter() - t0
    x, _ = to_tensors(data["singles"][:1])
    with torch.no_grad():
        out = camlens.explain(model, x, method="gradcam", layer=layer, top_k=1)
    res.map_size = (int(out.raw.shape[-2]), int(out.raw.shape[-1]))
    if res.gap:
        t0 = time.perf_counter()
        x, _ = to_tensors(data["singles"])
        res.identity = cam_gradcam_identity(model, x, layer, cfg.top_k)
        res.seconds["identity"] = time.perf_counter() - t0
    return res


def _reproduce(cfg: ReproduceConfig, progress: bool, command: str) -> Results:
    t_start, cpu_start = time.perf_counter(), time.process_time()
    data = _data(cfg)
    out = {name: _run_net(name, cfg, data, progress) for name in cfg.nets}
    seg = _segment(cfg, progress)
    beyond, beyond_seconds = _beyond(cfg, progress)
    versions = {"camlens": getattr(camlens, "__version__", "?"), "torch": torch.__version__,
                "numpy": np.__version__, "python": platform.python_version(),
                "threads": str(torch.get_num_threads())}
    return Results(cfg, out, time.perf_counter() - t_start, command, versions,
                   time.process_time() - cpu_start, _heldout(), seg, beyond, beyond_seconds)


def _sec8(quick: bool) -> str:
    from camlens.captioning.report import caption_section
    from camlens.vqa.report import vqa_section

    return ("## Grad-CAM for image captioning and VQA (Sec. 8)\n\n" + caption_section(quick)
            + "\n" + vqa_section(quick))


def _section(key: str, quick: bool) -> str:
    """The markdown of one of :data:`BEYOND` (``quick``: its package's smoke size)."""
    if key == "sec6":
        from camlens.diagnose.report import section as sec6

        return sec6(quick)
    if key == "sec7":
        from camlens.dissect.report import section as sec7

        return sec7(quick)
    return _sec8(quick)


def _beyond(cfg: ReproduceConfig, progress: bool) -> tuple[dict[str, str], dict[str, float]]:
    """Run ``cfg.beyond``'s sections (none with random nets: they need the shipped ones)."""
    text: dict[str, str] = {}
    seconds: dict[str, float] = {}
    if cfg.allow_random:
        return text, seconds
    for key in cfg.beyond:
        if progress:
            print(f"{key}: measuring", file=sys.stderr)
        t = time.perf_counter()
        text[key] = _section(key, cfg.quick).rstrip() + "\n"
        seconds[key] = time.perf_counter() - t
    return text, seconds


def _segment(cfg: ReproduceConfig, progress: bool) -> SegmentComparison | None:
    """Sec. 4.2: SEC from CAM seeds (vgg_gap) and Grad-CAM seeds (vgg, vgg_gap), plus the
    exact-mask reference; None when ``seg_train`` is 0 or the run uses random nets."""
    if cfg.seg_train < 1 or cfg.allow_random:
        return None
    from camlens.segment import TEST, TRAIN, compare_seeds

    def say(msg: str) -> None:
        if progress:
            print(f"segmentation: {msg}", file=sys.stderr)

    return compare_seeds(replace(TRAIN, n=cfg.seg_train), replace(TEST, n=cfg.seg_test),
                         cfg.seg_steps, repeats=cfg.seg_repeats, reference=True, progress=say)


# --------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    keep_freed_memory()
    p = argparse.ArgumentParser(prog="python -m camlens.evaluate.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs/results.md"), help="markdown report")
    p.add_argument("--quick", action="store_true",
                   help="few images per table (CI; about half a minute), not the committed run")
    d = ReproduceConfig()
    for flag, help_text in (
            ("n-images", "single-object scenes for Tables 1 and 3"),
            ("n-occlusion", "the first N of them for Table 1's occlusion row"),
            ("n-pointing", "multi-object scenes for the pointing game"),
            ("n-threshold", "multi-object scenes to choose the rejection threshold on"),
            ("n-faithfulness", "the first N pointing scenes for faithfulness"),
            ("seg-train", "multi-object training scenes for Sec. 4.2's SEC (0: skip it)"),
            ("seg-test", "held-out scenes SEC's mean IoU is measured on"),
            ("seg-steps", "SEC training steps per arm"),
            ("seg-repeats", "SEC trainings per arm (mean and sd)")):
        p.add_argument(f"--{flag}", type=int, default=None,
                       help=f"{help_text} (default {getattr(d, flag.replace('-', '_'))})")
    p.add_argument("--nets", nargs="+", default=list(d.nets), choices=list(NETS))
    p.add_argument("--beyond", nargs="*", default=None, choices=list(BEYOND),
                   help="the sections on the paper's uses to run: Sec. 6 diagnoses, Sec. 7 "
                        "textual explanations, Sec. 8 captioning and VQA (default: all of "
                        "them, none with --quick; give no value to skip them)")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="torch intra-op threads (default 1: fastest on a shared machine)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--csv-dir", default=None,
                   help="keep per-image CSV rows here (a rerun resumes from them)")
    p.add_argument("--allow-random", action="store_true",
                   help="use randomly initialised nets when the shipped weights are missing")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True)
    args = p.parse_args(argv)
    counts = {k: getattr(args, k) for k in ("n_images", "n_occlusion", "n_pointing",
                                            "n_threshold", "n_faithfulness", "seg_train",
                                            "seg_test", "seg_steps", "seg_repeats")
              if getattr(args, k) is not None}
    for k, v in counts.items():
        if v < (0 if k == "seg_train" else 1):
            p.error(f"--{k.replace('_', '-')} must be at least "
                    f"{0 if k == 'seg_train' else 1}, got {v}")
    rest = {"nets": tuple(args.nets), "threads": args.threads, "batch_size": args.batch_size,
            "allow_random": args.allow_random, "csv_dir": args.csv_dir}
    if args.beyond is not None:
        rest["beyond"] = tuple(dict.fromkeys(args.beyond))
    cfg = (ReproduceConfig.quick_run(**counts, **rest) if args.quick
           else ReproduceConfig(**counts, **rest))
    shown = list(sys.argv[1:] if argv is None else argv)
    command = "python -m camlens.evaluate.reproduce " + " ".join(shlex.quote(a) for a in shown)
    res = reproduce(cfg, progress=args.progress, command=command.strip())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(res), encoding="utf-8")
    print(f"wrote {args.out} ({res.seconds:.0f} s, {res.cpu_seconds:.0f} s CPU)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
