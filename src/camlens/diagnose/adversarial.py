"""Adversarial noise (Sec. 6.2): a targeted iterative attack, then Grad-CAM of the classes
that are really there.

:func:`targeted_attack` is projected gradient descent on the cross-entropy of the target class
in an L-infinity ball (Kurakin et al.'s iterative targeted FGSM, Madry et al.'s PGD without the
random start)::

    x_0 = x,  x_{t+1} = clip_[lo,hi]( clip_[x-eps,x+eps]( x_t - a sign(grad_x CE(f(x_t), t)) ) )

stopping for each image once softmax(f(x_t))_t > ``goal`` (the paper: 0.9999). It runs on a
private view of the model in eval mode (:func:`camlens.view.private_view`): the model, its
mode, its buffers and its parameters' ``.grad`` are left as they were, and the input is never
written. (Written here: it needs the per-image stop at the goal and the private view; it is a
dozen lines, tested against a toy model whose answer is known.)

:func:`adversarial_study` attacks every item towards a class absent from it and outside the
confusable groups of the classes present, and compares the present classes' probabilities and
Grad-CAM localisation (pointing hit, box IoU) before and after, and where the target class's
map peaks and puts its mass.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from camlens.diagnose.data import Item, class_maps, model_inputs, predict
from camlens.diagnose.html import Page, cam_panel
from camlens.evaluate.localization import bbox_from_map, iou
from camlens.evaluate.pointing import pointing_hit
from camlens.models.registry import ModelRecord
from camlens.plural import counted
from camlens.targets import logits_of
from camlens.view import private_view

__all__ = ["AttackResult", "targeted_attack", "choose_targets", "adversarial_study"]


@dataclass(frozen=True)
class AttackResult:
    """``adversarial`` (B, C, H, W) the attacked inputs; ``success`` (B,) whether the target's
    probability passed the goal; ``steps`` (B,) steps taken; ``target_prob`` (B,) its final
    probability; ``probs`` (B, N) the final softmax."""

    adversarial: torch.Tensor
    success: torch.Tensor
    steps: torch.Tensor
    target_prob: torch.Tensor
    probs: torch.Tensor


Scalar = float | torch.Tensor


def targeted_attack(model: nn.Module, x: torch.Tensor, target: torch.Tensor | Sequence[int], *,
                    eps: Scalar = 16 / 255, step: Scalar = 4 / 255, steps: int = 30,
                    goal: float = 0.9999, bounds: tuple[Scalar, Scalar] = (0.0, 1.0)
                    ) -> AttackResult:
    """Targeted L-inf PGD (module docstring) of ``x`` (B, C, H, W) towards ``target`` (B,).
    ``eps``, ``step`` and ``bounds`` are in the model's input units: numbers, or tensors that
    broadcast against (C, 1, 1) for a normalised input (``eps / std`` per channel)."""
    if x.dim() != 4:
        raise ValueError(f"x must be an image batch (B, C, H, W), got shape {tuple(x.shape)}")
    e, a_ = (torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in (eps, step))
    if not (bool((e > 0).all()) and bool((a_ > 0).all()) and steps >= 1 and 0 < goal < 1):
        raise ValueError(f"need eps > 0, step > 0, steps >= 1 and 0 < goal < 1; got eps={eps}, "
                         f"step={step}, steps={steps}, goal={goal}")
    lo, hi = (torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in bounds)
    t = torch.as_tensor(target, dtype=torch.long, device=x.device).reshape(-1)
    if t.numel() != x.shape[0]:
        raise ValueError(f"one target per image: {x.shape[0]} images, {t.numel()} targets")
    net = private_view(model).root.eval()
    with torch.inference_mode(False):
        x0 = x.detach().clone()
        adv = x0.clone()
        taken = torch.zeros(len(t), dtype=torch.long)
        active = torch.ones(len(t), dtype=torch.bool, device=x.device)
        for _ in range(steps + 1):
            a = adv.clone().requires_grad_(True)
            logits = logits_of(net(a)).float()
            probs = torch.softmax(logits.detach(), 1)
            reached = probs.gather(1, t[:, None])[:, 0] > goal
            active &= ~reached
            if not active.any() or int(taken.max()) >= steps:
                break
            loss = nn.functional.cross_entropy(logits, t, reduction="sum")
            (grad,) = torch.autograd.grad(loss, a)
            moved = adv - a_ * grad.sign()
            moved = torch.min(torch.max(torch.min(torch.max(moved, x0 - e), x0 + e), lo), hi)
            adv = torch.where(active[:, None, None, None], moved, adv).detach()
            taken += active.cpu().long()
    p = probs.cpu()
    tp = p.gather(1, t.cpu()[:, None])[:, 0]
    return AttackResult(adv, tp > goal, taken, tp, p)


def choose_targets(labels: Sequence[Sequence[int]], n_classes: int, seed: int = 0,
                   groups: Sequence[str] | None = None) -> list[int]:
    """One absent class per image, drawn at random (``seed``) among the classes not present
    and, with ``groups`` (each class's confusable group), not in a present class's group."""
    rng = np.random.default_rng(seed)
    out = []
    for labs in labels:
        banned = {groups[c] for c in labs} if groups is not None else set()
        ok = [c for c in range(n_classes) if c not in labs
              and (groups is None or groups[c] not in banned)]
        if not ok:
            raise ValueError(f"no class is absent from an image with classes {list(labs)}")
        out.append(int(ok[int(rng.integers(len(ok)))]))
    return out


def _localise(cam: np.ndarray, item: Item, c: int, tolerance: float) -> tuple[bool, float]:
    hit = pointing_hit(cam, item.masks[c], tolerance) if cam.max() > 0 else False
    box = bbox_from_map(cam, 0.15)
    best = max((iou(box, b) for b in item.boxes[c]), default=0.0) if box else 0.0
    return hit, best


def _objects(item: Item) -> np.ndarray:
    m = np.zeros(item.size, dtype=bool)
    for v in item.masks.values():
        m |= v
    return m


def adversarial_study(
    rec: ModelRecord, items: Sequence[Item], out: str | Path | None = None, *,
    eps: float = 16 / 255, step: float = 4 / 255, steps: int = 30, goal: float = 0.9999,
    tolerance: float = 8.0, batch_size: int = 16, seed: int = 0, examples: int = 6,
) -> dict[str, Any]:
    """Attack every item (:func:`choose_targets`, :func:`targeted_attack`), explain its true
    classes before and after and the target after; write ``out``/report.html,
    adversarial.json and adversarial.csv (when ``out``) and return the summary. Pointing:
    the map's peak within ``tolerance`` px of the class's mask; IoU: the box of the largest
    segment above 15% of the map's maximum against the class's best-matching box. ``eps``
    and ``step`` are in pixel units (/255 of [0, 1]); the record's mean and std turn them and
    the pixel range into input units (a record without them is taken to take [0, 1] pixels)."""
    from camlens.synthetic.v2 import CLASS_SPECS, NUM_CLASSES

    if not items:
        raise ValueError("no image to attack")
    n_classes = int(predict(rec.model, model_inputs(rec, items[:1])).shape[1])
    groups = ([s.group for s in CLASS_SPECS] if n_classes == NUM_CLASSES
              and all(it.scene is not None for it in items) else None)
    targets = choose_targets([it.labels for it in items], n_classes, seed, groups)
    mean = torch.tensor(rec.mean or (0.0, 0.0, 0.0), dtype=torch.float32)[:, None, None]
    std = torch.tensor(rec.std or (1.0, 1.0, 1.0), dtype=torch.float32)[:, None, None]
    rows: list[dict[str, Any]] = []
    shown: list[tuple[Item, dict[str, Any], np.ndarray, np.ndarray, np.ndarray, Image.Image]] = []
    for i in range(0, len(items), batch_size):
        its = items[i:i + batch_size]
        x = model_inputs(rec, its)
        x_before = x.clone()
        tgt = torch.tensor(targets[i:i + batch_size])
        before = torch.softmax(predict(rec.model, x).double(), 1)
        res = targeted_attack(rec.model, x, tgt, eps=eps / std, step=step / std, steps=steps,
                              goal=goal, bounds=((0 - mean) / std, (1 - mean) / std))
        assert torch.equal(x, x_before)
        after = res.probs.double()
        for j, it in enumerate(its):
            cls = list(it.labels)
            k = [*cls, int(tgt[j])]
            m0 = class_maps(rec, x[j:j + 1], torch.tensor([k]), it.size)
            m1 = class_maps(rec, res.adversarial[j:j + 1], torch.tensor([k]), it.size)
            row: dict[str, Any] = {
                "id": it.id, "target": _label(rec, k[-1]), "success": bool(res.success[j]),
                "steps": int(res.steps[j]), "target_p_before": float(before[j, k[-1]]),
                "target_p_after": float(after[j, k[-1]]),
                "linf": float(((res.adversarial[j] - x[j]).abs() * std).max()),
                "classes": []}
            for q, c in enumerate(cls):
                h0, i0 = _localise(m0.gradcam[0, q], it, c, tolerance)
                h1, i1 = _localise(m1.gradcam[0, q], it, c, tolerance)
                row["classes"].append({
                    "class": _label(rec, c), "p_before": float(before[j, c]),
                    "p_after": float(after[j, c]), "hit_before": h0, "hit_after": h1,
                    "iou_before": i0, "iou_after": i1})
            cam_t = m1.gradcam[0, -1]
            objs = _objects(it)
            total = float(cam_t.sum())
            row["target_peak_on_objects"] = (bool(objs.flat[int(np.argmax(cam_t))])
                                             if total > 0 else None)
            row["target_mass_on_objects"] = float(cam_t[objs].sum() / total) if total > 0 else None
            row["object_area"] = float(objs.mean())
            rows.append(row)
            if len(shown) < examples and row["success"]:
                pix = res.adversarial[j].detach().cpu() * std + mean
                adv_img = (pix.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                shown.append((it, row, m0.gradcam[0], m1.gradcam[0], adv_img,
                              Image.fromarray(it.image)))
    summary = _summary(rows, rec, eps, step, steps, goal, tolerance)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "adversarial.json", "w", encoding="utf-8") as fh:
            json.dump({"summary": summary, "images": rows}, fh, indent=1)
        _csv(rows, folder / "adversarial.csv")
        _html(rec, summary, shown, folder)
    return summary


def _label(rec: ModelRecord, c: int) -> str:
    return rec.labels[c] if c < len(rec.labels) else str(c)


def _mean(v: Sequence[float | None]) -> float | None:
    vals = [float(a) for a in v if a is not None]
    return float(np.mean(vals)) if vals else None


def _summary(rows: list[dict[str, Any]], rec: ModelRecord, eps: float, step: float,
             steps: int, goal: float, tolerance: float) -> dict[str, Any]:
    ok = [r for r in rows if r["success"]]
    cls = [c for r in ok for c in r["classes"]]
    return {
        "model": rec.name, "layer": rec.default_layer, "images": len(rows),
        "attack": {"eps": eps, "step": step, "max_steps": steps, "goal": goal},
        "success_rate": len(ok) / len(rows) if rows else None,
        "steps_mean": _mean([r["steps"] for r in ok]),
        "linf_mean": _mean([r["linf"] for r in ok]),
        "successful": {
            "classes": len(cls),
            "p_true_before_mean": _mean([c["p_before"] for c in cls]),
            "p_true_after_mean": _mean([c["p_after"] for c in cls]),
            "p_true_after_max": max((c["p_after"] for c in cls), default=None),
            "pointing_before": _mean([c["hit_before"] for c in cls]),
            "pointing_after": _mean([c["hit_after"] for c in cls]),
            "iou_before": _mean([c["iou_before"] for c in cls]),
            "iou_after": _mean([c["iou_after"] for c in cls]),
            "target_peak_on_objects": _mean([r["target_peak_on_objects"] for r in ok]),
            "target_mass_on_objects": _mean([r["target_mass_on_objects"] for r in ok]),
            "object_area": _mean([r["object_area"] for r in ok]),
        },
        "tolerance_px": tolerance,
    }


def _csv(rows: list[dict[str, Any]], path: Path) -> None:
    import csv

    flat = [{**{k: v for k, v in r.items() if k != "classes"}, **{f"{k}": v for k, v in c.items()}}
            for r in rows for c in r["classes"]]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(flat[0]) if flat else ["id"])
        w.writeheader()
        w.writerows(flat)


def _html(rec: ModelRecord, s: dict[str, Any], shown: list[Any], folder: Path) -> None:
    page = Page(f"Adversarial noise and Grad-CAM: {rec.name}")
    a, r = s["attack"], s["successful"]
    page.text(f"Targeted L-inf PGD, eps {a['eps'] * 255:.3g}/255, step {a['step'] * 255:.3g}/255, "
              f"at most {counted(a['max_steps'], 'step')}, goal p(target) > {a['goal']}: "
              f"success on {s['success_rate']:.1%} of {counted(s['images'], 'image')}.")

    def f(v: Any) -> Any:
        return "n/a" if v is None else v

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    page.table(["over successful attacks", "before", "after"], [
        ["mean p(true class)", f(r["p_true_before_mean"]), f(r["p_true_after_mean"])],
        ["pointing hit rate (true class)", f(r["pointing_before"]), f(r["pointing_after"])],
        ["box IoU (true class)", f(r["iou_before"]), f(r["iou_after"])]])
    page.text(f"The target class's map (after): peak on an object in "
              f"{pct(r['target_peak_on_objects'])} of images, "
              f"{pct(r['target_mass_on_objects'])} of its mass on objects, which cover "
              f"{pct(r['object_area'])} of the image.")
    page.heading("Examples")
    for it, row, cams0, cams1, adv, img in shown:
        panels = [("image", img), ("adversarial image", Image.fromarray(adv))]
        for q, c in enumerate(row["classes"]):
            panels.append((f"Grad-CAM: {c['class']}, before", cam_panel(it.image, cams0[q])))
            panels.append((f"Grad-CAM: {c['class']}, after", cam_panel(adv, cams1[q])))
        panels.append((f"Grad-CAM: {row['target']} (target), after",
                       cam_panel(adv, cams1[-1])))
        probs = ", ".join(f"{c['class']} {c['p_before']:.3f} -> {c['p_after']:.2e}"
                          for c in row["classes"])
        page.panels(panels, f"{row['id']}: target {row['target']} p "
                            f"{row['target_p_after']:.5f} after {counted(row['steps'], 'step')}; "
                            f"{probs}")
    page.write(folder / "report.html")
