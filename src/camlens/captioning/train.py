"""Train the world v2 captioner and record its held-out caption quality.

    python -m camlens.captioning.train --out DIR [--train 10000] [--epochs 15]
        [--finetune-epochs 8] [--cache FILE]

Data: scene ``i`` of the training stream is ``make_scene(default_rng((TRAIN_SEED, i)),
kind=KIND_CYCLE[i % 4])`` (single, two, pair and multi scenes in turn) with its scene graph's
caption; the held-out scenes use world v2's :data:`HELDOUT_SEED` the same way. The CNN is world
v2's shipped ``vgg`` net (trained on this world: its conv features tell the 33 classes apart,
and with them colour and texture). Training runs in two stages, as Show and Tell's does:

1. ``--epochs`` passes with the CNN **frozen**: only the decoder (``reduce``, ``project``,
   ``embed``, ``lstm``, ``head``) learns, at ``--lr`` on a cosine to 0.
2. ``--finetune-epochs`` passes that **fine-tune** the CNN's last conv block
   (``features[TOP_BLOCK:]``, VGG's conv5: three 3x3 convolutions at 14 x 14) with the decoder,
   the block at ``--cnn-lr`` and the decoder at ``--finetune-lr``, both on a cosine to 0.
   (Fine-tuning before the decoder has learnt would send the LSTM's early, random gradients
   into the CNN.)

Each image's pool4 (the block's input) is computed once (in ``--workers`` processes, with the
scenes), so the run spends its budget on the block and the decoder, not on the frozen lower
layers. Both stages: Adam, cross-entropy of every word and ``<end>`` under teacher forcing,
gradient norm clipped at 5 (``--minutes`` only stops a run that overruns; recorded if it did).

Writes ``DIR/captioner.pt`` (float32 state of the decoder and of the fine-tuned block; the
other CNN layers are ``camlens/synthetic/v2/weights/vgg.pt``'s), ``DIR/vocab.json`` and
``DIR/accuracy.json``: BLEU-4 and exact-attribute accuracy (:mod:`camlens.captioning.quality`)
of greedy and beam decoding on ``--val`` held-out scenes, per scene kind too, with the
command, versions, wall times and the machine's load average while training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from camlens.captioning.decode import beam_search, greedy
from camlens.captioning.model import TOP_BLOCK, Captioner, shipped_cnn
from camlens.captioning.quality import attribute_scores, bleu4
from camlens.captioning.vocab import Vocabulary, world_vocabulary
from camlens.synthetic.v2.graph import SceneGraph
from camlens.synthetic.v2.spec import MIXED_CYCLE, SyntheticSpec
from camlens.synthetic.v2.words import tokenize
from camlens.synthetic.v2.world import HELDOUT_SEED, Scene

__all__ = ["TRAIN_SEED", "KIND_CYCLE", "scene", "main"]

TRAIN_SEED = 3_000_001
KIND_CYCLE = MIXED_CYCLE


def scene(seed: int, i: int) -> Scene:
    """Scene ``i`` of stream ``seed`` (kind ``KIND_CYCLE[i % 4]``): scene ``i`` of
    ``synthetic:seed=SEED,n=...,kind=mixed``."""
    return SyntheticSpec(seed, 1, kind="mixed", start=i).scene(0)


def _chunk(seed: int, start: int, n: int) -> tuple[np.ndarray, list[str]]:
    """pool4 (n, 64, 14, 14) float16 of scenes start..start+n-1 and their captions."""
    torch.set_num_threads(1)
    scenes = [scene(seed, i) for i in range(start, start + n)]
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2)
    net = Captioner(4)
    net.features.load_state_dict(shipped_cnn())
    with torch.no_grad():
        feats = net.pool4(images.float() / 255.0)
    return feats.half().numpy(), [s.graph().caption() for s in scenes]


def features(seed: int, n: int, workers: int, chunk: int = 250) -> tuple[torch.Tensor, list[str]]:
    """pool4 features (n, 64, 14, 14) float16 and captions of scenes 0..n-1 of ``seed``."""
    starts = list(range(0, n, chunk))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        parts = list(pool.map(_chunk, [seed] * len(starts), starts,
                              [min(chunk, n - s) for s in starts]))
    return (torch.from_numpy(np.concatenate([p[0] for p in parts])),
            [c for p in parts for c in p[1]])


def encode(vocab: Vocabulary, captions: list[str]) -> torch.Tensor:
    """(N, T) ids, ``<start>`` ... ``<end>`` padded with ``<pad>``."""
    ids = [vocab.encode(c) for c in captions]
    out = torch.full((len(ids), max(map(len, ids))), vocab.pad, dtype=torch.long)
    for i, row in enumerate(ids):
        out[i, :len(row)] = torch.tensor(row)
    return out


def quality(model: Captioner, vocab: Vocabulary, n: int, beam: int) -> dict[str, Any]:
    """Greedy and beam BLEU-4 / attribute scores on held-out scenes 0..n-1, overall and per
    kind, and a few examples."""
    scenes = [scene(HELDOUT_SEED, i) for i in range(n)]
    graphs = [s.graph() for s in scenes]
    refs = [tokenize(g.caption()) for g in graphs]
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2) / 255.0
    hyps: dict[str, list[list[str]]] = {"greedy": [], "beam": []}
    for s in range(0, n, 100):
        batch = images[s:s + 100].float()
        hyps["greedy"] += [vocab.decode(d.ids).split() for d in greedy(model, batch)]
        hyps["beam"] += [vocab.decode(b[0].ids).split()
                         for b in beam_search(model, batch, beam)]
    out: dict[str, Any] = {"n": n, "seed": HELDOUT_SEED, "beam_width": beam}
    for how, hy in hyps.items():
        res = _scores(graphs, refs, hy)
        res["per_kind"] = {k: _scores(graphs[j::4], refs[j::4], hy[j::4])
                           for j, k in enumerate(KIND_CYCLE) if j < n}
        out[how] = res
    out["examples"] = [{"reference": " ".join(refs[i]), "greedy": " ".join(hyps["greedy"][i]),
                        "beam": " ".join(hyps["beam"][i])} for i in range(min(8, n))]
    return out


def _scores(graphs: list[SceneGraph], refs: list[list[str]],
            hyps: list[list[str]]) -> dict[str, Any]:
    return {"bleu4": bleu4(refs, hyps), "exact_caption": float(np.mean([r == h for r, h in
                                                                        zip(refs, hyps)])),
            "attributes": attribute_scores(graphs, hyps)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m camlens.captioning.train",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="folder for the weights and JSON")
    p.add_argument("--train", type=int, default=10000, help="training scenes (default 10000)")
    p.add_argument("--val", type=int, default=150, help="held-out scenes (default 150)")
    p.add_argument("--epochs", type=int, default=15,
                   help="passes with the CNN frozen, decoder only (default 15)")
    p.add_argument("--finetune-epochs", type=int, default=8,
                   help="then passes fine-tuning the CNN's last conv block with the decoder "
                        "(default 8; 0 keeps the CNN frozen)")
    p.add_argument("--minutes", type=float, default=30.0,
                   help="stop training after this many minutes whatever the epoch (default "
                        "30; a safety cap, the schedule follows --epochs)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="decoder, frozen stage")
    p.add_argument("--finetune-lr", type=float, default=1e-3, help="decoder, fine-tune stage")
    p.add_argument("--cnn-lr", type=float, default=1e-4, help="CNN block, fine-tune stage")
    p.add_argument("--embed", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for training (default 1: the decoder's small matrix "
                        "products do not scale, and on a busy machine 2 threads ran 10x slower)")
    p.add_argument("--workers", type=int, default=2, help="processes making the data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None,
                   help="keep the training scenes' pool4 features and captions in this file "
                        "(made if missing, read if there: a rerun skips the data)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    vocab = world_vocabulary()
    cache = args.cache
    if cache is not None and cache.is_file():
        saved = torch.load(cache, weights_only=True)
        feats, captions = saved["pool4"][:args.train], saved["captions"][:args.train]
        if len(captions) < args.train:
            raise SystemExit(f"{cache} holds {len(captions)} scenes, fewer than --train")
    else:
        feats, captions = features(TRAIN_SEED, args.train, args.workers)
        if cache is not None:
            torch.save({"pool4": feats, "captions": captions}, cache)
    tokens = encode(vocab, captions)
    t_data = time.time() - t0
    print(f"data: {args.train} scenes in {t_data:.0f} s", flush=True)

    model = Captioner(len(vocab), args.embed, args.hidden)
    model.features.load_state_dict(shipped_cnn())
    block = model.features[TOP_BLOCK:]
    block_params = list(block.parameters())
    decoder = [q for n, q in model.named_parameters() if not n.startswith("features.")]
    with torch.no_grad():
        pool5 = torch.cat([block(feats[s:s + 500].float()) for s in range(0, args.train, 500)])
    loss_fn = nn.CrossEntropyLoss(ignore_index=vocab.pad)
    gen = torch.Generator().manual_seed(args.seed)
    t1, load, losses, stopped = time.time(), [], [], False
    stages = [("frozen", args.epochs, [(decoder, args.lr)]),
              ("fine-tune", args.finetune_epochs,
               [(decoder, args.finetune_lr), (block_params, args.cnn_lr)])]
    done_epochs = {"frozen": 0, "fine-tune": 0}
    steps = 0
    model.train()
    for stage, epochs, groups in stages:
        if epochs == 0 or stopped:
            continue
        opt = torch.optim.Adam([{"params": ps, "lr": lr} for ps, lr in groups])
        trained = [q for ps, _ in groups for q in ps]
        total_steps, step = epochs * -(-args.train // args.batch), 0
        for epoch in range(1, epochs + 1):
            order = torch.randperm(args.train, generator=gen)
            total = 0.0
            for s in range(0, args.train, args.batch):
                idx = order[s:s + args.batch]
                tok = tokens[idx]
                p5 = pool5[idx] if stage == "frozen" else block(feats[idx].float())
                logits = model.decode(p5, tok[:, :-1])
                loss = loss_fn(logits.reshape(-1, len(vocab)), tok[:, 1:].reshape(-1))
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(trained, 5.0)
                cosine = 0.5 * (1 + math.cos(math.pi * min((step + 1) / total_steps, 1.0)))
                for group, (_, lr) in zip(opt.param_groups, groups):
                    group["lr"] = lr * cosine
                opt.step()
                total += loss.item() * len(idx)
                step += 1
                if step % 50 == 0:
                    load.append(os.getloadavg()[0])
            losses.append(total / args.train)
            done_epochs[stage] = epoch
            print(f"{stage} epoch {epoch}: loss {losses[-1]:.4f} ({time.time() - t1:.0f} s)",
                  flush=True)
            if time.time() - t1 > 60 * args.minutes:
                print(f"stopped after {args.minutes} minutes", flush=True)
                stopped = True
                break
        steps += step
    t_train = time.time() - t1
    model.eval()
    t2 = time.time()
    q = quality(model, vocab, args.val, args.beam)
    t_eval = time.time() - t2
    tuned = {f"features.{k}" for k in block.state_dict()} if done_epochs["fine-tune"] else set()
    torch.save({k: v for k, v in model.state_dict().items()
                if not k.startswith("features.") or k in tuned}, args.out / "captioner.pt")
    vocab.save(args.out / "vocab.json")
    record = {
        "command": "python -m camlens.captioning.train " + shlex.join(sys.argv[1:] if argv is None
                                                                      else argv),
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "threads": args.threads, "workers": args.workers, "cpus": os.cpu_count(),
        "model": {"vocab_size": len(vocab), "embed": args.embed, "hidden": args.hidden,
                  "cnn": ("camlens.synthetic.v2 'vgg', pool5 7x7x128; "
                          + (f"features.{TOP_BLOCK}-18 fine-tuned" if tuned else "frozen")),
                  "finetuned": sorted(tuned),
                  "decoder_parameters": sum(q.numel() for q in decoder),
                  "finetuned_parameters": sum(q.numel() for q in block_params) if tuned else 0},
        "train": {"scenes": args.train, "seed": TRAIN_SEED, "kinds": list(KIND_CYCLE),
                  "epochs": done_epochs["frozen"], "finetune_epochs": done_epochs["fine-tune"],
                  "steps": steps, "batch": args.batch, "lr": args.lr,
                  "finetune_lr": args.finetune_lr, "cnn_lr": args.cnn_lr, "stopped": stopped,
                  "loss_per_epoch": [round(v, 4) for v in losses]},
        "seconds": {"data": round(t_data, 1), "train": round(t_train, 1),
                    "eval": round(t_eval, 1), "total": round(time.time() - t0, 1)},
        "cpu_seconds": {"note": "user + system time of this process and its data workers: "
                                "about the wall time on one quiet core",
                        "total": round(sum(getattr(resource.getrusage(who), f)
                                           for who in (resource.RUSAGE_SELF,
                                                       resource.RUSAGE_CHILDREN)
                                           for f in ("ru_utime", "ru_stime")), 1)},
        "load_average": {"mean": round(float(np.mean(load)), 2) if load else None,
                         "min": round(min(load), 2) if load else None,
                         "max": round(max(load), 2) if load else None,
                         "every": "50 steps, 1-minute average"},
        "heldout": q,
    }
    (args.out / "accuracy.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: q[k] for k in ("greedy", "beam")}, indent=1)[:2000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
