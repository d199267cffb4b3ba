"""Train the VQA net (:mod:`camlens.vqa.model`): ``python -m camlens.vqa.train --out DIR``.

The CNN is world v2's shipped ``vgg`` and stays frozen (as Lu et al. keep their VGG fixed), so
its L2-normalised pool5 features are computed once per scene; then the question encoder,
the fusion and the answer classifier are trained with Adam on cross-entropy. Writes ``vqa.pt``
(float16: what ships), ``vocab.json`` and ``accuracy.json``: per-kind accuracy of the saved
(float16) weights on held-out scenes (world v2's held-out seed), the majority-answer-per-kind
baseline, wall time, threads and the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from camlens.synthetic.v2 import HELDOUT_SEED, load_pretrained
from camlens.synthetic.v2.graph import QA
from camlens.synthetic.v2.words import tokenize
from camlens.vqa.data import ANSWERS, KINDS, images, make_scenes, scene_questions
from camlens.vqa.model import PAD, Vocabulary, VQANet, load_bundled

TRAIN_SEED = 31337


def _features(model: VQANet, scenes: Sequence[Any], batch: int = 128) -> torch.Tensor:
    """Normalised pool5 features (N, 6272) of the scenes' images."""
    out = []
    with torch.no_grad():
        for i in range(0, len(scenes), batch):
            out.append(model.image_features(images(scenes[i:i + batch])))
    return torch.cat(out)


def _qas(scenes: Sequence[Any], seed: int) -> list[tuple[int, QA]]:
    rng = np.random.default_rng(seed)
    return [(i, qa) for i, s in enumerate(scenes) for qa in scene_questions(s, rng)]


def _encode(vocab: Vocabulary, qas: Sequence[tuple[int, QA]]) -> tuple[torch.Tensor, ...]:
    scene = torch.tensor([i for i, _ in qas])
    words = vocab.encode([q.question for _, q in qas])
    answers = torch.tensor([vocab.answers.index(q.answer) for _, q in qas])
    return scene, words, answers


def accuracy(model: VQANet, feats: torch.Tensor, vocab: Vocabulary,
             qas: Sequence[tuple[int, QA]]) -> dict[str, Any]:
    """Per-kind and overall accuracy of ``model`` on ``qas`` (scene index, QA), with the
    majority-answer-per-kind baseline (the answer most frequent among that kind's questions)."""
    scene, words, answers = _encode(vocab, qas)
    with torch.no_grad():
        pred = torch.cat([model.answer_scores(feats[scene[i:i + 512]], words[i:i + 512])
                          .argmax(1) for i in range(0, len(qas), 512)])
    hit = (pred == answers).numpy()
    kinds = np.array([q.kind for _, q in qas])
    out: dict[str, Any] = {"n": len(qas), "overall": float(hit.mean()), "per_kind": {},
                           "majority_baseline": {}}
    for k in KINDS:
        sel = kinds == k
        out["per_kind"][k] = {"n": int(sel.sum()), "accuracy": float(hit[sel].mean())}
        ans = [q.answer for (_, q), s in zip(qas, sel) if s]
        top = max(set(ans), key=ans.count)
        out["majority_baseline"][k] = {"answer": top, "accuracy": ans.count(top) / len(ans)}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m camlens.vqa.train", description=__doc__)
    p.add_argument("--out", required=True, help="folder for vqa.pt, vocab.json, accuracy.json")
    p.add_argument("--scenes", type=int, default=1500, help="training scenes")
    p.add_argument("--heldout", type=int, default=300, help="held-out scenes")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--minutes", type=float, default=22.0,
                   help="start no epoch after this long (data included)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 was faster than 2 on a loaded 2-core machine)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    start, load0 = time.time(), os.getloadavg()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    cnn = load_pretrained("vgg")
    train_scenes = make_scenes(a.scenes, TRAIN_SEED)
    held_scenes = make_scenes(a.heldout, HELDOUT_SEED)
    train_qa, held_qa = _qas(train_scenes, a.seed), _qas(held_scenes, a.seed + 1)
    words = sorted({t for _, q in train_qa for t in tokenize(q.question)})
    vocab = Vocabulary((PAD, *words), ANSWERS)
    unseen = sorted({t for _, q in held_qa for t in tokenize(q.question)} - set(words))
    held_qa = [(i, q) for i, q in held_qa if not set(tokenize(q.question)) & set(unseen)]
    model = VQANet(len(vocab.words), len(vocab.answers))
    model.cnn.load_state_dict(cnn.get_submodule("features").state_dict())
    for prm in model.cnn.parameters():
        prm.requires_grad_(False)
    model.eval()
    f_train, f_held = _features(model, train_scenes), _features(model, held_scenes)
    t_data = time.time() - start
    print(f"data: {len(train_qa)} train / {len(held_qa)} held-out questions, "
          f"{len(vocab.words)} words, {t_data:.0f} s", flush=True)

    scene, qwords, answers = _encode(vocab, train_qa)
    by_scene = [torch.nonzero(scene == i).flatten() for i in range(len(train_scenes))]
    head = [prm for prm in model.parameters() if prm.requires_grad]
    opt = torch.optim.Adam(head, lr=a.lr)
    chunk = 16  # scenes per step: each scene's image projection is computed once per step
    steps_per_epoch = (len(train_scenes) + chunk - 1) // chunk
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.epochs * steps_per_epoch)
    log = []
    epochs = 0
    for epoch in range(a.epochs):
        if time.time() - start > a.minutes * 60:
            break
        model.train()
        model.cnn.eval()
        order = torch.randperm(len(train_scenes))
        total = 0.0
        for i in range(0, len(order), chunk):
            pick = order[i:i + chunk]
            idx = torch.cat([by_scene[int(j)] for j in pick])
            local = torch.cat([torch.full((len(by_scene[int(j)]),), k)
                               for k, j in enumerate(pick)])
            loss = F.cross_entropy(model.answer_scores(f_train[pick], qwords[idx],
                                                       rows=local), answers[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        acc = accuracy(model, f_held, vocab, held_qa[:1000])["overall"]
        epochs += 1
        log.append({"epoch": epoch + 1, "loss": total / len(train_qa), "heldout_1000_accuracy": acc,
                    "seconds": time.time() - start})
        print(json.dumps(log[-1]), flush=True)

    state: dict[str, Any] = {k: v.half() for k, v in model.state_dict().items()}
    state["_config"] = {"embed": model.embed.embedding_dim, "hidden": model.lstm.hidden_size,
                        "common": model.image_fc.out_features}
    torch.save(state, out / "vqa.pt")
    vocab.save(out / "vocab.json")
    shipped, _ = load_bundled(out)  # measure what ships (float16 weights)
    result = {
        "command": "python -m camlens.vqa.train " + " ".join(argv if argv is not None
                                                             else sys.argv[1:]),
        "torch": torch.__version__, "python": platform.python_version(),
        "threads": a.threads, "train_seed": TRAIN_SEED, "heldout_seed": HELDOUT_SEED,
        "train_scenes": a.scenes, "heldout_scenes": a.heldout,
        "train_questions": len(train_qa), "epochs": epochs,
        "heldout_words_unseen": unseen,
        "heldout": accuracy(shipped, _features(shipped, held_scenes), vocab, held_qa),
        "log": log, "data_seconds": t_data, "wall_seconds": time.time() - start,
        "load_average_start": list(load0), "load_average_end": list(os.getloadavg()),
        "cpus": os.cpu_count(),
    }
    (out / "accuracy.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result["heldout"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
