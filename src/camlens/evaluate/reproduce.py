"""Reproduce the Grad-CAM paper's quantitative comparisons on the synthetic world, in one command:

    python -m camlens.evaluate.reproduce --out docs/results.md [--n-images N]

On held-out synthetic scenes (``make_dataset(N, seed=12345)``; N = 1000 by default, the very
scenes the shipped nets' accuracies were measured on, a seed training never uses), for both
shipped nets
(``vggstyle``: convolutions then fully-connected layers, like VGG-16; ``gapnet``: global
average pooling + one linear layer, the CAM architecture):

- weakly-supervised localisation error (Sec. 4.1, Table 1): Grad-CAM, Backprop (Simonyan et
  al.'s gradient), Guided Backprop, Guided Grad-CAM, CAM (``gapnet`` only), occlusion;
- Grad-CAM ablations (Table 3): no ReLU, global max pooling of the gradients, guided and
  deconvnet ReLUs in the backward pass, and each earlier convolutional block;
- the pointing game (Sec. 4.3), standard and top-5 + rejection, the threshold chosen on a
  separate held-out split (``make_dataset(M, seed=54321)``);
- faithfulness (Sec. 5.3): mean Spearman rank correlation with occlusion maps of the same
  image and class;
- the identity CAM == Z * Grad-CAM on ``gapnet`` (Sec. 3.1, Z = number of spatial cells).

It writes a markdown report with the paper's numbers beside ours. ``--allow-random`` runs with
randomly initialised nets when the shipped weights are missing (for testing the pipeline; the
report then says so at the top).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import camlens
from camlens.allocator import keep_freed_memory
from camlens.evaluate.explainer import MapCache
from camlens.evaluate.findings import render
from camlens.evaluate.paper import (
    EARLIER_LAYERS,
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

__all__ = ["EARLIER_LAYERS", "PAPER", "TABLE3_ROWS", "ReproduceConfig", "main", "render",
           "reproduce"]

NETS = ("vggstyle", "gapnet")
EVAL_SEED = 12345  # camlens.synthetic.HELDOUT_SEED
THRESHOLD_SEED = 54321  # a second held-out split, for the pointing game's rejection threshold


@dataclass
class ReproduceConfig:
    """Everything that determines the numbers."""

    n_images: int = 1000
    n_pointing: int | None = None  # None: all evaluation images
    n_threshold: int = 500
    n_faithfulness: int | None = None  # None: all evaluation images
    eval_seed: int = EVAL_SEED
    threshold_seed: int = THRESHOLD_SEED
    top_k: int = 5
    threshold: float = 0.15
    tolerance: float = 15
    occlusion_window: int = 16
    occlusion_stride: int = 8
    occlusion_fill: float = 0.5
    threshold_sweep: tuple[float, ...] = (0.3, 0.5)  # Grad-CAM's boxes at other thresholds
    batch_size: int = 50
    threads: int | None = 1
    nets: tuple[str, ...] = NETS
    allow_random: bool = False
    csv_dir: str | None = None

    def first(self, n: int | None) -> int:
        """How many evaluation images a part runs on: ``n`` of them, or all (None)."""
        return self.n_images if n is None else min(int(n), self.n_images)


@dataclass
class NetResults:
    name: str
    random_weights: bool
    default_layer: str
    table1: dict[str, LocalizationSummary] = field(default_factory=dict)
    table3: dict[str, LocalizationSummary] = field(default_factory=dict)
    sweep: dict[float, LocalizationSummary] = field(default_factory=dict)
    pointing: dict[str, PointingSummary] = field(default_factory=dict)
    faithfulness: FaithfulnessSummary | None = None
    identity: dict[str, float] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, Any] | None = None


@dataclass
class Results:
    config: ReproduceConfig
    nets: dict[str, NetResults]
    seconds: float
    command: str
    versions: dict[str, str]


def _load_net(name: str, allow_random: bool) -> tuple[nn.Module, bool, dict | None]:
    from camlens.synthetic import NETS as NET_CLASSES
    from camlens.synthetic import WEIGHTS_DIR, load_pretrained, recorded_accuracy

    if (WEIGHTS_DIR / f"{name}.pt").is_file():
        try:
            acc = recorded_accuracy()["nets"].get(name)
        except (OSError, KeyError, ValueError):
            acc = None
        return _fast(load_pretrained(name)), False, acc
    if not allow_random:
        raise FileNotFoundError(
            f"{WEIGHTS_DIR / (name + '.pt')} is missing: train the nets "
            "(python -m camlens.synthetic.train --out src/camlens/synthetic/weights) or pass "
            "--allow-random to exercise the pipeline on random nets"
        )
    torch.manual_seed(0)
    return _fast(NET_CLASSES[name]().eval()), True, None


def _fast(model: nn.Module) -> nn.Module:
    """Channels-last weights: the CPU convolutions then run in that layout (about 2x faster
    for these nets); same function, float rounding aside."""
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


def _reproduce(cfg: ReproduceConfig, progress: bool, command: str) -> Results:
    from camlens.synthetic import DEFAULT_LAYERS, make_dataset, to_tensors

    t_start = time.perf_counter()
    scenes = make_dataset(cfg.n_images, cfg.eval_seed)
    samples = scenes_to_samples(scenes, prefix=f"{cfg.eval_seed}/")
    held = scenes_to_samples(make_dataset(cfg.n_threshold, cfg.threshold_seed),
                             prefix=f"{cfg.threshold_seed}/")
    faith = samples[: cfg.first(cfg.n_faithfulness)]
    point = samples[: cfg.first(cfg.n_pointing)]
    occ = {"window": cfg.occlusion_window, "stride": cfg.occlusion_stride,
           "fill": cfg.occlusion_fill}
    common: dict[str, Any] = {"batch_size": cfg.batch_size, "progress": progress}
    out: dict[str, NetResults] = {}
    for name in cfg.nets:
        model, random_weights, acc = _load_net(name, cfg.allow_random)
        layer = DEFAULT_LAYERS[name]
        gap = name == "gapnet"
        res = NetResults(name, random_weights, layer, accuracy=acc)
        cache = MapCache()  # maps shared by Table 1, the pointing game and faithfulness
        t0 = time.perf_counter()
        for row, method, options, needs_gap in TABLE1_ROWS:
            if needs_gap and not gap:
                continue
            opts = dict(occ) if method == "occlusion" else dict(options)
            # occlusion runs on the faithfulness images, and costs the same for 1 or 5 classes:
            # keep all five, the faithfulness reference reuses them
            res.table1[row] = evaluate_localization(
                model, faith if method == "occlusion" else samples, method=method, layer=layer,
                options=opts, top_k=cfg.top_k,
                threshold=cfg.threshold, csv_path=_csv(cfg, name, f"loc_{row}"), label=row,
                all_boxes=method == "occlusion", cache=cache, **common)
        res.seconds["table1"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for row, options, relative_to in TABLE3_ROWS:
            if row == "Grad-CAM":
                res.table3[row] = res.table1["Grad-CAM"]
                continue
            res.table3[row] = evaluate_localization(
                model, samples, method="gradcam", layer=layer, options=options, top_k=cfg.top_k,
                threshold=cfg.threshold, relative_to=relative_to,
                csv_path=_csv(cfg, name, f"abl_{row}"), label=row, **common)
        for row, lay in EARLIER_LAYERS:
            res.table3[row] = evaluate_localization(
                model, samples, method="gradcam", layer=lay, top_k=cfg.top_k,
                threshold=cfg.threshold, csv_path=_csv(cfg, name, f"abl_{lay}"), label=row,
                **common)
        for thr in cfg.threshold_sweep:
            res.sweep[thr] = evaluate_localization(
                model, samples, method="gradcam", layer=layer, top_k=cfg.top_k, threshold=thr,
                csv_path=_csv(cfg, name, f"thr_{thr}"), label=f"Grad-CAM at {thr:.0%}", **common)
        res.seconds["table3"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for row, method in POINTING_ROWS:
            if method == "cam" and not gap:
                continue
            res.pointing[row] = evaluate_pointing(
                model, point, method=method, layer=layer, top_k=cfg.top_k,
                tolerance=cfg.tolerance, held_out=held, csv_path=_csv(cfg, name, f"pt_{row}"),
                label=row, cache=cache, **common)
        res.seconds["pointing"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        specs: list[Any] = [(row, method, {}, layer) for row, method in FAITHFULNESS_ROWS
                 if gap or method != "cam"]
        res.faithfulness = evaluate_faithfulness(
            model, faith, method=specs, window=cfg.occlusion_window, stride=cfg.occlusion_stride,
            fill=cfg.occlusion_fill, csv_path=_csv(cfg, name, "faithfulness"), cache=cache,
            **common)
        res.seconds["faithfulness"] = time.perf_counter() - t0
        if gap:
            t0 = time.perf_counter()
            x, _ = to_tensors(scenes)
            res.identity = cam_gradcam_identity(model, x, layer, cfg.top_k)
            res.seconds["identity"] = time.perf_counter() - t0
        del cache
        out[name] = res
    versions = {"camlens": getattr(camlens, "__version__", "?"), "torch": torch.__version__,
                "numpy": np.__version__, "python": platform.python_version(),
                "threads": str(torch.get_num_threads())}
    return Results(cfg, out, time.perf_counter() - t_start, command, versions)



# --------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    keep_freed_memory()
    p = argparse.ArgumentParser(prog="python -m camlens.evaluate.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs/results.md"), help="markdown report")
    d = ReproduceConfig()
    p.add_argument("--n-images", type=int, default=d.n_images, help="evaluation images")
    p.add_argument("--n-pointing", type=int, default=d.n_pointing,
                   help="images for the pointing game (the first N; default all)")
    p.add_argument("--n-threshold", type=int, default=d.n_threshold,
                   help="held-out images for the rejection threshold")
    p.add_argument("--n-faithfulness", type=int, default=d.n_faithfulness,
                   help="images for the rank correlation with occlusion and the occlusion row "
                        "of Table 1 (the first N; default all)")
    p.add_argument("--nets", nargs="+", default=list(d.nets), choices=list(NETS))
    p.add_argument("--threads", type=int, default=d.threads,
                   help="torch intra-op threads (default 1: fastest on a shared machine)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--csv-dir", default=None,
                   help="keep per-image CSV rows here (a rerun resumes from them)")
    p.add_argument("--allow-random", action="store_true",
                   help="use randomly initialised nets when the shipped weights are missing")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True)
    args = p.parse_args(argv)
    cfg = ReproduceConfig(n_images=args.n_images, n_pointing=args.n_pointing,
                          n_threshold=args.n_threshold,
                          n_faithfulness=args.n_faithfulness, nets=tuple(args.nets),
                          threads=args.threads, batch_size=args.batch_size,
                          allow_random=args.allow_random, csv_dir=args.csv_dir)
    shown = list(sys.argv[1:] if argv is None else argv)
    command = "python -m camlens.evaluate.reproduce " + " ".join(shlex.quote(a) for a in shown)
    res = reproduce(cfg, progress=args.progress, command=command.strip())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(res), encoding="utf-8")
    print(f"wrote {args.out} ({res.seconds:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
