"""Train world v2's nets on scenes generated on the fly and record their held-out accuracy.

    python -m camlens.synthetic.v2.train --out DIR [--minutes N | --steps N] [--nets vgg ...]

Single-label (softmax cross-entropy) on ``kind="single"`` scenes, as ILSVRC classification.
Batch ``k`` holds scenes ``k * batch ...`` of the training stream ``default_rng((1000000 +
seed, i))``, never the held-out seed :data:`HELDOUT_SEED`; every net takes one AdamW step on
each batch (warm-up, then cosine decay to zero over ``--steps``). With ``--minutes`` the
number of steps is set once from the measured cost of a batch of data and of two steps of each
net (on copies: the run itself is as with ``--steps``) so that the whole run fits the budget on
a quiet machine, and recorded, so ``--steps`` repeats the run exactly (given the thread count).

The plain nets train with batch norm and are saved folded (see ``nets.fold_batchnorm``).
``--init DIR`` starts every net from ``DIR/<net>.pt`` (as shipped: the plain nets folded, so
they are fine-tuned without batch norm) instead of from scratch, and records that run's
``accuracy.json`` under ``"init"``.
Writes ``DIR/<net>.pt`` (float32 state dicts of the shipped architectures) and
``DIR/accuracy.json``: per net, on ``HELDOUT_N`` held-out scenes, top-1 / top-5 error,
per-class accuracy, the confusion matrix, the most frequent confusions and the share of errors
that stay within a confusable group; plus the command, versions, steps, seconds and images/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from camlens.synthetic.v2.catalogue import CLASS_SPECS, CLASSES, NUM_CLASSES
from camlens.synthetic.v2.nets import FOLDED, INPUT_SIZE, NETS, fold_batchnorm
from camlens.synthetic.v2.world import CUE_CHANCE, HELDOUT_SEED, make_scene

__all__ = ["HELDOUT_SEED", "TRAIN_SEED_BASE", "batch", "evaluate", "main"]

#: Training streams are ``TRAIN_SEED_BASE + seed`` (never :data:`HELDOUT_SEED`).
TRAIN_SEED_BASE = 1_000_000
HELDOUT_N = 2000
DEFAULT_LR = {"vgg": 1e-3, "vgg_gap": 1e-3, "alexnet": 1e-3, "resnet": 2e-3}


def batch(
    seed: int, start: int, n: int, cue_rate: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes ``start .. start+n-1`` of stream ``seed`` as images (n, 3, 112, 112) float32 in
    [0, 1], channels-last, and class indices (n,) int64."""
    images = np.empty((n, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    for k in range(n):
        s = make_scene(np.random.default_rng((seed, start + k)), INPUT_SIZE, "single",
                       cue_rate=cue_rate)
        images[k], labels[k] = s.image, s.label
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last), torch.from_numpy(labels)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 250
) -> dict[str, Any]:
    """Top-1 / top-5 error, per-class accuracy, confusion matrix (rows: true class), the ten
    most frequent confusions and the share of top-1 errors inside the true class's group."""
    model.eval()
    logits = torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    top5 = logits.topk(5, dim=1).indices.numpy()
    truth = y.numpy()
    pred = top5[:, 0]
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(conf, (truth, pred), 1)
    wrong = pred != truth
    same_group = [CLASS_SPECS[t].group == CLASS_SPECS[p].group for t, p in zip(truth, pred)]
    pairs = [(int(conf[i, j]), CLASSES[i], CLASSES[j]) for i in range(NUM_CLASSES)
             for j in range(NUM_CLASSES) if i != j and conf[i, j]]
    per_class = conf.diagonal() / np.maximum(conf.sum(1), 1)
    return {
        "top1_error": round(float(wrong.mean()), 4),
        "top5_error": round(float((top5 != truth[:, None]).all(1).mean()), 4),
        "errors_within_group": round(float(np.mean([s for s, w in zip(same_group, wrong) if w]))
                                     if wrong.any() else 0.0, 4),
        "per_class_accuracy": {c: round(float(a), 4) for c, a in zip(CLASSES, per_class)},
        "top_confusions": [{"true": t, "predicted": p, "count": n}
                           for n, t, p in sorted(pairs, key=lambda q: (-q[0], q[1], q[2]))[:10]],
        "confusion_matrix": conf.tolist(),
    }


def _lr_at(step: int, steps: int, peak: float, warmup: float = 0.05) -> float:
    w = max(int(warmup * steps), 1)
    if step < w:
        return peak * (step + 1) / w
    return 0.5 * peak * (1.0 + math.cos(math.pi * (step - w) / max(steps - w, 1)))


def _fit_steps(models: dict[str, nn.Module], args: argparse.Namespace) -> int:
    """Steps that fit ``args.minutes``: time the data and two steps of each net on copies (the
    nets, optimisers and random state are left as they were), keep time for the evaluation."""
    import copy

    rng_state = torch.get_rng_state()
    t0 = time.perf_counter()
    x, y = batch(TRAIN_SEED_BASE + args.seed, 0, args.batch, args.cue_rate)
    per_step = time.perf_counter() - t0
    for name, m in models.items():
        mc = copy.deepcopy(m).train()
        oc = torch.optim.AdamW(mc.parameters(), lr=DEFAULT_LR[name])
        for k in range(3):
            t0 = time.perf_counter()
            loss = nn.functional.cross_entropy(mc(x), y)
            oc.zero_grad(set_to_none=True)
            loss.backward()
            oc.step()
            if k:
                per_step += (time.perf_counter() - t0) / 2
    torch.set_rng_state(rng_state)
    eval_seconds = args.eval_n * (per_step / args.batch) + 20.0
    steps = max(int((args.minutes * 60.0 - eval_seconds) / per_step), 1)
    print(f"{per_step:.2f} s a step (all nets and the data): {steps} steps fit "
          f"{args.minutes} minutes", flush=True)
    return steps


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for <net>.pt and accuracy.json")
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="wall-clock budget of the whole run")
    budget.add_argument("--steps", type=int, help="exact number of steps per net")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate of every net (default: per net, DEFAULT_LR)")
    p.add_argument("--eval-n", type=int, default=HELDOUT_N)
    p.add_argument("--cue-rate", type=float, default=None,
                   help="train with the bias cue at this rate (held-out: cue at chance)")
    p.add_argument("--init", type=Path, default=None,
                   help="start from the nets in this folder (<net>.pt and accuracy.json)")
    args = p.parse_args(argv)
    if args.steps is None and args.minutes is None:
        p.error("give --minutes or --steps")
    if (args.steps or 1) < 1 or (args.minutes if args.minutes is not None else 1) <= 0:
        p.error("--steps and --minutes must be positive")
    command = "python -m camlens.synthetic.v2.train " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    train_seed = TRAIN_SEED_BASE + args.seed
    if train_seed == HELDOUT_SEED:
        raise ValueError("the training stream would be the held-out stream: choose another --seed")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t_start = time.perf_counter()
    models, opts, seconds = {}, {}, {}
    lrs = {n: args.lr if args.lr is not None else DEFAULT_LR[n] for n in args.nets}
    init: dict[str, Any] | None = None
    if args.init is not None:
        from camlens.synthetic.v2 import load_pretrained, recorded_accuracy

        before = recorded_accuracy(args.init)
        init = {"folder": str(args.init), "command": before["command"],
                "steps": before["steps"], "images_per_net": before["images_per_net"],
                "top1_error": {n: before["nets"][n]["top1_error"] for n in args.nets},
                "init": before.get("init")}
    fold = {n: n in FOLDED and init is None for n in args.nets}
    for i, name in enumerate(args.nets):
        torch.manual_seed(1000 * args.seed + i)
        if args.init is not None:
            m = load_pretrained(name, args.init)
        else:
            m = NETS[name](batch_norm=True) if fold[name] else NETS[name]()
        m = m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        models[name] = m
        opts[name] = torch.optim.AdamW(m.parameters(), lr=lrs[name],
                                       weight_decay=args.weight_decay)
        seconds[name] = 0.0
    gen_seconds = 0.0
    steps = args.steps if args.steps is not None else _fit_steps(models, args)
    load: list[float] = []  # the machine's 1-minute load average, every 100 steps
    for step in range(steps):
        if step % 100 == 0:
            load.append(os.getloadavg()[0])
        t0 = time.perf_counter()
        x, y = batch(train_seed, step * args.batch, args.batch, args.cue_rate)
        gen_seconds += time.perf_counter() - t0
        for name, m in models.items():
            t0 = time.perf_counter()
            m.train()
            for group in opts[name].param_groups:
                group["lr"] = _lr_at(step, steps, lrs[name])
            loss = nn.functional.cross_entropy(m(x), y)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            seconds[name] += time.perf_counter() - t0
            if step % 100 == 0 or step == steps - 1:
                print(f"step {step + 1}/{steps} {name}: loss {loss.item():.3f}", flush=True)
    train_seconds = time.perf_counter() - t_start
    args.out.mkdir(parents=True, exist_ok=True)
    cue = CUE_CHANCE if args.cue_rate is not None else None
    t0 = time.perf_counter()
    xh, yh = batch(HELDOUT_SEED, 0, args.eval_n, cue)
    gen_seconds += time.perf_counter() - t0
    record: dict[str, Any] = {
        "command": command, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "threads": args.threads, "batch": args.batch,
        "steps": steps, "images_per_net": steps * args.batch, "train_seed": train_seed,
        "cue_rate": args.cue_rate, "init": init,
        "heldout": {"seed": HELDOUT_SEED, "n": args.eval_n, "kind": "single", "cue_rate": cue,
                    "call": f"batch({HELDOUT_SEED}, 0, {args.eval_n}, cue_rate={cue})"},
        "train_seconds": round(train_seconds, 1),
        "data_generation_seconds": round(gen_seconds, 1),
        "cpus": os.cpu_count(),
        "load_average": {"mean": round(float(np.mean(load)), 2), "min": round(min(load), 2),
                         "max": round(max(load), 2), "every": "100 steps, 1-minute average"},
        "nets": {},
    }
    for name, m in models.items():
        m = m.to(memory_format=torch.contiguous_format).eval()
        if fold[name]:
            m = fold_batchnorm(m)
        path = args.out / f"{name}.pt"
        torch.save({k: v.detach().contiguous().clone() for k, v in m.state_dict().items()}, path)
        reloaded = NETS[name]()
        state = torch.load(path, map_location="cpu", weights_only=True)
        reloaded.load_state_dict(state, strict=True)
        res = evaluate(reloaded, xh, yh)
        res.update(params=sum(q.numel() for q in reloaded.parameters()),
                   file_bytes=path.stat().st_size, train_seconds=round(seconds[name], 1),
                   images_per_second=round(steps * args.batch / max(seconds[name], 1e-9), 1),
                   peak_lr=lrs[name])
        record["nets"][name] = res
        print(f"{name}: top-1 error {res['top1_error']:.4f}, top-5 error {res['top5_error']:.4f}, "
              f"{res['errors_within_group']:.0%} of errors within the group", flush=True)
    record["total_seconds"] = round(time.perf_counter() - t_start, 1)
    with open(args.out / "accuracy.json", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    return record


if __name__ == "__main__":
    main()
