"""Dataset bias (Sec. 6.3): how much of a model's Grad-CAM evidence lies on a suspected cue
rather than on the object, per class, and which annotated regions attract the most evidence.

For a map M >= 0 (Grad-CAM, Eq. 2, at image size) and a region R, the evidence share is
``share_R = sum_{p in R} M_p / sum_p M_p`` (a map with no evidence, sum 0, has no share and is
counted apart). Regions come from world v2's exact ground truth
(:func:`camlens.diagnose.regions.scene_regions`: object, other objects, decoys, cue band,
clutter, background) or from the user: named boxes per image (:func:`read_regions`), with
``object`` (the true class's annotation) and ``rest`` (nothing named) added. A region that
attracts evidence beyond its size has ``enrichment = mean share / mean area share > 1``: the
ranking a user reads to find a cue without knowing it in advance.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from camlens.diagnose.data import Item, class_maps, model_inputs, predict
from camlens.diagnose.html import Page, cam_panel
from camlens.diagnose.regions import scene_regions
from camlens.evaluate.localization import box_to_mask
from camlens.models.registry import ModelRecord
from camlens.plural import counted

__all__ = ["mass_shares", "rank_regions", "read_regions", "item_regions", "bias_study"]


def mass_shares(cam: np.ndarray, regions: Mapping[str, np.ndarray]) -> dict[str, float] | None:
    """``{name: share_R}`` of a non-negative (H, W) map over (H, W) bool regions; None when
    the map holds no evidence (all zero)."""
    m = np.asarray(cam, dtype=np.float64)
    if m.ndim != 2 or not np.all(np.isfinite(m)) or (m < 0).any():
        raise ValueError("cam must be a finite, non-negative (H, W) map")
    total = float(m.sum())
    if total <= 0:
        return None
    out = {}
    for name, r in regions.items():
        r = np.asarray(r, dtype=bool)
        if r.shape != m.shape:
            raise ValueError(f"region {name!r} has shape {r.shape}, the map {m.shape}")
        out[name] = float(m[r].sum() / total)
    return out


def rank_regions(shares: Sequence[Mapping[str, float]],
                 areas: Sequence[Mapping[str, float]]) -> list[dict[str, Any]]:
    """Regions ranked by enrichment (mean evidence share / mean area share, over the images
    where the region is not empty), then by mean share."""
    names = list(dict.fromkeys(k for a in areas for k in a))
    out = []
    for name in names:
        pairs = [(s[name], a[name]) for s, a in zip(shares, areas)
                 if a.get(name, 0.0) > 0 and name in s]
        if not pairs:
            continue
        share = float(np.mean([p[0] for p in pairs]))
        area = float(np.mean([p[1] for p in pairs]))
        out.append({"region": name, "images": len(pairs), "share": share, "area": area,
                    "enrichment": share / area})
    return sorted(out, key=lambda r: (-r["enrichment"], -r["share"], r["region"]))


def read_regions(path: str | Path) -> dict[str, dict[str, list[tuple[int, int, int, int]]]]:
    """A region annotation: JSON ``{image id or "*": {region name: [x0, y0, x1, y1] or a list
    of such inclusive boxes}}``; ``"*"`` applies to every image."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected {{image id or '*': {{region: boxes}}}}")
    out: dict[str, dict[str, list[tuple[int, int, int, int]]]] = {}
    for key, regs in data.items():
        if not isinstance(regs, dict):
            raise ValueError(f"{path}: {key!r} must map region names to boxes")
        out[str(key)] = {}
        for name, boxes in regs.items():
            if name in ("object", "rest"):
                raise ValueError(f"{path}: region name {name!r} is reserved (added for you)")
            arr = np.asarray(boxes, dtype=np.float64)
            if arr.ndim == 1:
                arr = arr[None]
            if arr.ndim != 2 or arr.shape[1] != 4 or not np.all(np.isfinite(arr)):
                raise ValueError(f"{path}: {key!r}/{name!r} must be [x0, y0, x1, y1] or a list "
                                 "of them")
            if (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
                raise ValueError(f"{path}: {key!r}/{name!r} has a box with x1 < x0 or y1 < y0")
            out[str(key)][str(name)] = [tuple(int(v) for v in b) for b in arr]  # type: ignore[misc]
    return out


def item_regions(item: Item, label: int,
                 user: Mapping[str, Mapping[str, list[tuple[int, int, int, int]]]] | None
                 ) -> dict[str, np.ndarray]:
    """The regions of ``item`` for class ``label``: the user's named boxes (with ``object``
    and ``rest``), else world v2's exact regions, else ``object`` and ``rest``."""
    if user is None and item.scene is not None:
        return scene_regions(item.scene, label)
    regions: dict[str, np.ndarray] = {"object": item.masks[label]}
    for key in ("*", item.id):
        for name, boxes in (user or {}).get(key, {}).items():
            m = regions.get(name, np.zeros(item.size, dtype=bool))
            for b in boxes:
                m = m | box_to_mask(b, item.size)
            regions[name] = m
    named = np.zeros(item.size, dtype=bool)
    for m in regions.values():
        named |= m
    regions["rest"] = ~named
    return regions


def bias_study(
    rec: ModelRecord, items: Sequence[Item], out: str | Path | None = None, *,
    regions: Mapping[str, Mapping[str, list[tuple[int, int, int, int]]]] | None = None,
    cue: str | None = None, batch_size: int = 16, examples: int = 3,
) -> dict[str, Any]:
    """Explain each item's top-1 class; evidence shares of every region, per true class and
    overall (ranked, :func:`rank_regions`); ``cue`` names the suspected cue region (default:
    ``"cue band"`` on world v2). Writes ``out``/report.html, bias.json, bias.csv when ``out``."""
    cue = cue or ("cue band" if regions is None and items and items[0].scene is not None
                  else None)
    rows: list[dict[str, Any]] = []
    cams: dict[str, np.ndarray] = {}
    for i in range(0, len(items), batch_size):
        its = items[i:i + batch_size]
        x = model_inputs(rec, its)
        pred = predict(rec.model, x).argmax(1)
        maps = (class_maps(rec, x, pred[:, None], its[0].size)
                if len({it.size for it in its}) == 1 else None)
        for j, it in enumerate(its):
            cam = (maps.gradcam[j, 0] if maps is not None else
                   class_maps(rec, x[j:j + 1], pred[j:j + 1, None], it.size).gradcam[0, 0])
            true = it.labels[0] if len(it.labels) == 1 else next(
                (c for c in it.labels if c == int(pred[j])), it.labels[0])
            regs = item_regions(it, true, regions)
            shares = mass_shares(cam, regs)
            rows.append({"id": it.id, "true": true, "predicted": int(pred[j]),
                         "correct": int(pred[j]) in it.labels,
                         "cue": it.scene.background.get("cue") if it.scene is not None else None,
                         "shares": shares,
                         "areas": {k: float(v.mean()) for k, v in regs.items()}})
            cams[it.id] = cam
    summary = _summary(rec, rows, cue)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "bias.json", "w", encoding="utf-8") as fh:
            json.dump({"summary": summary, "images": [_named(rec, r) for r in rows]}, fh,
                      indent=1)
        _csv(rec, rows, folder / "bias.csv")
        _html(rec, summary, rows, {it.id: it for it in items}, cams, cue, examples, folder)
    return summary


def _label(rec: ModelRecord, c: int) -> str:
    return rec.labels[c] if c < len(rec.labels) else str(c)


def _named(rec: ModelRecord, r: dict[str, Any]) -> dict[str, Any]:
    return {**r, "true": _label(rec, r["true"]), "predicted": _label(rec, r["predicted"])}


def _summary(rec: ModelRecord, rows: list[dict[str, Any]], cue: str | None) -> dict[str, Any]:
    ev = [r for r in rows if r["shares"] is not None]
    per_class = []
    for c in sorted({r["true"] for r in rows}):
        rs = [r for r in rows if r["true"] == c]
        es = [r for r in rs if r["shares"] is not None]
        row = {"class": _label(rec, c), "images": len(rs),
               "accuracy": float(np.mean([r["correct"] for r in rs])),
               "no_evidence": len(rs) - len(es),
               "object_share": float(np.mean([r["shares"]["object"] for r in es])) if es else None}
        if cue is not None:
            vals = [r["shares"].get(cue) for r in es if r["areas"].get(cue, 0.0) > 0]
            row["cue_share"] = float(np.mean(vals)) if vals else None
            row["cue_images"] = len(vals)
        per_class.append(row)
    s: dict[str, Any] = {"model": rec.name, "layer": rec.default_layer, "images": len(rows),
                         "accuracy": float(np.mean([r["correct"] for r in rows])) if rows else None,
                         "no_evidence": len(rows) - len(ev), "cue_region": cue,
                         "ranking": rank_regions([r["shares"] for r in ev],
                                                 [r["areas"] for r in ev]),
                         "per_class": per_class}
    if cue is not None and any(r["cue"] for r in rows):
        # world v2: accuracy when the cue agrees with the class, and when it does not
        from camlens.synthetic.v2 import CUE_COLOURS, class_cue

        agree = [r for r in rows if r["cue"] is not None
                 and CUE_COLOURS.index(r["cue"]) == class_cue(r["true"])]
        differ = [r for r in rows if r["cue"] is not None and r not in agree]
        s["accuracy_cue_agrees"] = float(np.mean([r["correct"] for r in agree])) if agree else None
        s["accuracy_cue_differs"] = (float(np.mean([r["correct"] for r in differ]))
                                     if differ else None)
        s["predicted_follows_cue"] = float(np.mean(
            [class_cue(r["predicted"]) == CUE_COLOURS.index(r["cue"]) for r in differ])) \
            if differ else None
    return s


def _csv(rec: ModelRecord, rows: list[dict[str, Any]], path: Path) -> None:
    names = list(dict.fromkeys(k for r in rows for k in r["areas"]))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "true", "predicted", "correct", "cue",
                    *[f"share:{n}" for n in names], *[f"area:{n}" for n in names]])
        for r in rows:
            sh = r["shares"] or {}
            w.writerow([r["id"], _label(rec, r["true"]), _label(rec, r["predicted"]),
                        r["correct"], r["cue"] or "", *[sh.get(n, "") for n in names],
                        *[r["areas"].get(n, "") for n in names]])


def _html(rec: ModelRecord, s: dict[str, Any], rows: list[dict[str, Any]],
          items: dict[str, Item], cams: dict[str, np.ndarray], cue: str | None,
          examples: int, folder: Path) -> None:
    page = Page(f"Where {rec.name} looks: evidence by region")
    page.text(f"{counted(s['images'], 'image')}, top-1 accuracy {s['accuracy']:.1%}; Grad-CAM "
              f"of the predicted class at {rec.default_layer}. Share: the part of the map's mass "
              "in a region; enrichment: share / the region's share of the image (> 1: the region "
              "attracts evidence beyond its size).")
    page.heading("Regions ranked by the evidence they attract")
    page.table(["region", "images", "mean share", "mean area", "enrichment"],
               [[r["region"], r["images"], r["share"], r["area"], r["enrichment"]]
                for r in s["ranking"]])
    page.heading("Per class")
    head = ["class", "images", "accuracy", "object share"] + (
        [f"{cue} share"] if cue else [])
    page.table(head, [[c["class"], c["images"], c["accuracy"],
                       "n/a" if c["object_share"] is None else c["object_share"]]
                      + ([("n/a" if c["cue_share"] is None else c["cue_share"])] if cue else [])
                      for c in s["per_class"]])
    if "accuracy_cue_agrees" in s:
        def pct(v: float | None) -> str:
            return "n/a (no such image)" if v is None else f"{v:.1%}"

        page.text(f"Accuracy where the cue agrees with the class: "
                  f"{pct(s['accuracy_cue_agrees'])}; where it does not: "
                  f"{pct(s['accuracy_cue_differs'])}; there the prediction is the class the cue "
                  f"stands for in {pct(s['predicted_follows_cue'])} of images.")
    page.heading(f"Examples: the images with the most evidence on {cue or 'a named region'}")
    key = cue or next((r["region"] for r in s["ranking"]), None)
    for c in sorted({r["true"] for r in rows}):
        rs = [r for r in rows if r["true"] == c and r["shares"] is not None]
        rs.sort(key=lambda r: -(r["shares"].get(key, 0.0) if key else 0.0))
        for r in rs[:examples]:
            it = items[r["id"]]
            panels = [("image", Image.fromarray(it.image)),
                      (f"Grad-CAM: {_label(rec, r['predicted'])}", cam_panel(it.image,
                                                                             cams[r["id"]]))]
            shares = ", ".join(f"{k} {v:.2f}" for k, v in r["shares"].items() if v >= 0.01)
            page.panels(panels, f"{r['id']}: true {_label(rec, r['true'])}, predicted "
                             f"{_label(rec, r['predicted'])}; shares: {shares}")
    page.write(folder / "report.html")
