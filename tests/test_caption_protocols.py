"""``camlens evaluate word-pointing`` / ``region-ratio`` on hand-made maps with known answers,
their CSV rows and resume."""

from __future__ import annotations

import csv as csv_module
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from camlens.evaluate import tasks
from camlens.evaluate.tasks import captioning
from camlens.evaluate.tasks.captioning import (
    caption_scenes,
    evaluate_region_ratio,
    evaluate_word_pointing,
)

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = "synthetic:seed=5,n=4,kind=two"


@pytest.fixture()
def scenes() -> list[Any]:
    return caption_scenes(DATA)


def test_word_pointing_on_hand_made_maps(scenes: list[Any], monkeypatch: Any,
                                         tmp_path: Path) -> None:
    """Maps that peak inside an object the word names on even scenes and on the background on
    odd ones: exactly the even scenes' words are hits."""
    from camlens.captioning import load_vocabulary
    from camlens.captioning.explain import world_visual

    vocab = load_vocabulary()
    calls = []

    def fake(res: Any, x: torch.Tensor, tokens: torch.Tensor, target: Any, *_: Any) -> Any:
        b, k = target.words.shape
        maps = torch.zeros(b, k, *x.shape[-2:])
        for i in range(b):
            s = scenes[i]
            words = [vocab.words[t] for t in tokens[i].tolist()]
            classes = {q + 1: c for q, c in world_visual(words[1:])}
            for j, p in enumerate(target.words[i].tolist()):
                if p < 0:
                    continue
                named = [o for o in s.objects if o.name in classes[p]]
                anywhere = np.any([o.mask for o in s.objects], axis=0)
                ys, xs = np.nonzero(named[0].mask if i % 2 == 0 else ~anywhere)
                maps[i, j, ys[0], xs[0]] = 1.0
        calls.append(b)
        return maps, torch.full((b, k), -1.5)

    monkeypatch.setattr(captioning, "_explain", fake)
    csv = tmp_path / "wp.csv"
    s = evaluate_word_pointing(data=DATA, csv_path=csv, progress=False)
    assert calls == [4]  # one batch
    rows = list(csv_module.DictReader(csv.open()))
    n_even = sum(int(r["image_id"]) % 2 == 0 for r in rows)
    assert s.n_images == 4 and s.words == s.scored == len(rows) >= 8  # two objects a scene
    assert all((r["hit"] == "1") == (int(r["image_id"]) % 2 == 0) for r in rows)
    assert s.accuracy == pytest.approx(n_even / len(rows))
    hits = np.array([int(r["image_id"]) % 2 == 0 for r in rows], dtype=float)
    assert s.sem == pytest.approx(hits.std(ddof=1) / np.sqrt(len(hits)))
    again = evaluate_word_pointing(data=DATA, csv_path=csv, progress=False)  # resumed
    assert again.resumed == 4 and calls == [4] and again.accuracy == s.accuracy


def test_region_ratio_on_hand_made_maps(scenes: list[Any], monkeypatch: Any) -> None:
    """A map of 1 inside each region's box and 0.25 outside has ratio 4; a uniform map 1."""
    for value_out, expected in ((0.25, 4.0), (1.0, 1.0)):
        def fake(res: Any, x: torch.Tensor, tokens: torch.Tensor, target: Any, *_: Any,
                 out: float = value_out) -> Any:
            n = x.shape[0]
            boxes = [o.box for s in scenes for o in s.objects]  # one batch, in order
            maps = torch.full((n, 1, *x.shape[-2:]), out)
            for i, (x0, y0, x1, y1) in enumerate(boxes):
                maps[i, 0, y0:y1 + 1, x0:x1 + 1] = 1.0
            return maps, torch.zeros(n, 1)

        monkeypatch.setattr(captioning, "_explain", fake)
        s = evaluate_region_ratio(data=DATA, progress=False)
        assert s.regions == sum(len(sc.objects) for sc in scenes)
        assert s.mean == pytest.approx(expected) and s.median == pytest.approx(expected)
        assert s.sem == pytest.approx(0.0, abs=1e-12) and s.skipped == 0 and s.infinite == 0


@pytest.mark.parametrize("method", ["gradcam", "guided-backprop"])
def test_region_ratio_runs_the_bundled_captioner(method: str) -> None:
    """End to end, a layer method and an input-space one: region captions get finite ratios
    from real maps."""
    s = tasks.evaluate("region-ratio", "synthetic:seed=5,n=2,kind=two", method=method,
                       progress=False)
    assert s.regions == 4 and s.n_images == 2
    assert s.mean > 0 and np.isfinite(s.mean)


def test_caption_scenes_refuses_other_data() -> None:
    with pytest.raises(ValueError, match="unknown data spec 'coco:/tmp/x'; synthetic data is "
                                         "written synthetic:seed=S,n=N"):
        caption_scenes("coco:/tmp/x")
    with pytest.raises(ValueError, match="kind must be one of"):
        caption_scenes("synthetic:seed=1,n=2,kind=odd")
