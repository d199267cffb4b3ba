"""Train the synthetic nets (multi-label) and record their held-out accuracy.

    python -m camlens.synthetic.train --out src/camlens/synthetic/weights

Multi-label (one sigmoid per class, ``BCEWithLogitsLoss``) so that a class absent from a scene
has a meaningful score (the pointing game asks about absent classes too). Each epoch trains on
freshly generated scenes (seed ``1000 * seed + epoch + 1``, never the held-out seed), both nets
on the same data. Deterministic for a given seed and thread count; a few minutes on 2 cores.

Writes ``<out>/<name>.pt`` (float32 state dicts) and ``<out>/accuracy.json``: per net, on the
held-out scenes ``make_dataset(n, seed=12345)``, the top-1 accuracy (the highest-scoring class
is present), exact-match accuracy (sigmoid > 0.5 gives exactly the present set), top-k set
accuracy (the k best classes are exactly the k present ones), mAP and per-class AP / precision /
recall, plus the command, seconds and torch version.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from camlens.synthetic import HELDOUT_SEED, NETS
from camlens.synthetic.world import CLASSES, Scene, make_dataset, to_tensors


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Non-interpolated AP: mean precision at the rank of each positive (ties: stable order)."""
    n_pos = int(positives.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(np.float64)
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float((precision * hits).sum() / n_pos)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[i : i + batch]) for i in range(0, len(images), batch)])


def metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Multi-label metrics of ``logits`` (N, C) against multi-hot ``labels`` (N, C)."""
    s = logits.detach().float().numpy()
    y = labels.numpy() > 0.5
    n = len(s)
    top1 = y[np.arange(n), s.argmax(1)].mean()
    pred = s > 0.0  # sigmoid > 0.5
    exact = (pred == y).all(1).mean()
    k = y.sum(1)
    ranks = np.argsort(-s, axis=1, kind="stable")
    topk = np.mean([set(ranks[i, : k[i]]) == set(np.flatnonzero(y[i])) for i in range(n)])
    per_class = {}
    for c, name in enumerate(CLASSES):
        tp = int((pred[:, c] & y[:, c]).sum())
        per_class[name] = {
            "ap": round(average_precision(s[:, c], y[:, c]), 4),
            "precision": round(tp / max(int(pred[:, c].sum()), 1), 4),
            "recall": round(tp / max(int(y[:, c].sum()), 1), 4),
            "positives": int(y[:, c].sum()),
        }
    aps = [v["ap"] for v in per_class.values() if not np.isnan(v["ap"])]
    return {
        "top1": round(float(top1), 4),
        "exact_match": round(float(exact), 4),
        "topk_set": round(float(topk), 4),
        "mAP": round(float(np.mean(aps)), 4),
        "per_class": per_class,
    }


def evaluate(model: nn.Module, scenes: list[Scene]) -> dict:
    images, labels = to_tensors(scenes)
    return metrics(predict(model, images), labels)


#: Peak learning rates (AdamW, one-cycle schedule). The plain (no batch-norm) VGG-style net
#: leaves whole classes unlearnt at 2e-3; the GAP net trains fastest there.
DEFAULT_LR = {"vggstyle": 1e-3, "gapnet": 2e-3}


def _train_seed(seed: int, epoch: int) -> int:
    s = 1000 * seed + epoch + 1
    assert s != HELDOUT_SEED, "training data must never use the held-out seed"
    return s


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="folder for <name>.pt and accuracy.json")
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--scenes-per-epoch", type=int, default=10000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate of every net (default: per net, see DEFAULT_LR)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-n", type=int, default=1000)
    args = p.parse_args(argv)
    command = "python -m camlens.synthetic.train " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t_start = time.perf_counter()
    models, opts, scheds, seconds = {}, {}, {}, {}
    steps = args.epochs * (args.scenes_per_epoch // args.batch)
    for i, name in enumerate(args.nets):
        torch.manual_seed(args.seed * 100 + i)
        # Module.to takes memory_format (documented); torch's overload stubs leave it out.
        m = NETS[name]().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        models[name] = m
        lr = args.lr if args.lr is not None else DEFAULT_LR[name]
        opts[name] = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=args.weight_decay)
        scheds[name] = torch.optim.lr_scheduler.OneCycleLR(
            opts[name], max_lr=lr, total_steps=steps, pct_start=0.15
        )
        seconds[name] = 0.0
    loss_fn = nn.BCEWithLogitsLoss()
    gen_seconds = 0.0
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        scenes = make_dataset(args.scenes_per_epoch, _train_seed(args.seed, epoch))
        x_all, y_all = to_tensors(scenes)
        x_all = x_all.contiguous(memory_format=torch.channels_last)
        gen_seconds += time.perf_counter() - t0
        order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(epoch))
        for name, m in models.items():
            t0 = time.perf_counter()
            m.train()
            total = 0.0
            nb = len(x_all) // args.batch
            for b in range(nb):
                idx = order[b * args.batch : (b + 1) * args.batch]
                loss = loss_fn(m(x_all[idx]), y_all[idx])
                opts[name].zero_grad(set_to_none=True)
                loss.backward()
                opts[name].step()
                scheds[name].step()
                total += loss.item()
            seconds[name] += time.perf_counter() - t0
            print(f"epoch {epoch + 1}/{args.epochs} {name}: loss {total / nb:.4f} "
                  f"({seconds[name]:.0f} s)", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    heldout = make_dataset(args.eval_n, HELDOUT_SEED)
    record = {
        "heldout": {"seed": HELDOUT_SEED, "n": args.eval_n, "size": 64, "n_objects": [1, 3],
                    "call": f"make_dataset({args.eval_n}, seed={HELDOUT_SEED})"},
        "task": "multi-label, BCEWithLogitsLoss; classes " + ", ".join(CLASSES),
        "command": command,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "scenes_seen_per_net": args.epochs * (args.scenes_per_epoch // args.batch) * args.batch,
        "data_generation_seconds": round(gen_seconds, 1),
        "nets": {},
    }
    for name, m in models.items():
        m = m.to(memory_format=torch.contiguous_format).eval()
        state = {k: v.detach().contiguous().clone() for k, v in m.state_dict().items()}
        path = args.out / f"{name}.pt"
        torch.save(state, path)
        # Measure the file as shipped: reload it exactly as users will.
        reloaded = NETS[name]()
        state = torch.load(path, map_location="cpu", weights_only=True)
        reloaded.load_state_dict(state, strict=True)
        res = evaluate(reloaded, heldout)
        res["params"] = sum(p.numel() for p in reloaded.parameters())
        res["file_bytes"] = path.stat().st_size
        res["train_seconds"] = round(seconds[name], 1)
        res["peak_lr"] = opts[name].defaults["lr"]
        record["nets"][name] = res
        print(f"{name}: top1 {res['top1']:.4f} exact {res['exact_match']:.4f} "
              f"topk {res['topk_set']:.4f} mAP {res['mAP']:.4f} params {res['params']}", flush=True)
    record["total_seconds"] = round(time.perf_counter() - t_start, 1)
    with open(args.out / "accuracy.json", "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    return record


if __name__ == "__main__":
    main()
