"""Dataset-scale evaluation runner: CSV rows, resume after a crash, hand-checked summaries,
oracle and deliberately wrong models, box scaling, the synthetic dataset format."""

from __future__ import annotations

import argparse
import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from camlens.evaluate import (
    ArraySample,
    evaluate,
    evaluate_faithfulness,
    evaluate_localization,
    evaluate_pointing,
    load_dataset,
    to_unit_tensor,
)
from camlens.evaluate.cli import run_cli
from camlens.evaluate.datasets import AnnotatedObject, dataset_formats
from camlens.evaluate.tasks.localization import scale_box
from camlens.synthetic import make_dataset, save_coco
from models import TinyGAPNet

TINY_LAYER = TinyGAPNet.LAYER  # the tiny net's rectified last conv map


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a loaded machine two OpenMP threads are many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- hand-built models


class MeanHead(nn.Module):
    """logits[c] = mean of feature channel c: the explained layer is ``features``."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class Scale(nn.Module):
    """Identity up to a factor (a module whose output Grad-CAM can read)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


class Flip(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, dims=[-1])


def oracle() -> nn.Module:
    """Grad-CAM of class c at ``features`` is relu(x_c) / HW: exactly the object's mask."""
    return MeanHead(Scale()).eval()


def wrong() -> nn.Module:
    """Classifies like the oracle, but its feature maps are mirrored left-right, so every map
    lies on the far side of the image from its object."""
    return MeanHead(Flip()).eval()


def painted(n: int = 9, h: int = 24, w: int = 40) -> list[ArraySample]:
    """One rectangle per image in the left third, painted 255 in the channel of its class."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        c = i % 3
        x0, y0 = int(rng.integers(1, 5)), int(rng.integers(1, 8))
        x1, y1 = x0 + int(rng.integers(3, 8)), y0 + int(rng.integers(3, 12))
        pixels = np.zeros((h, w, 3), dtype=np.uint8)
        pixels[y0:y1 + 1, x0:x1 + 1, c] = 255
        mask = pixels[..., c] > 0
        obj = AnnotatedObject(label=c, box=(x0, y0, x1, y1), mask=mask)
        out.append(ArraySample(image_path=None, width=w, height=h, objects=(obj,),
                               image_id=f"img{i}", pixels=pixels))
    return out


class SimulatedCrash(Exception):
    """Not one of the errors camlens re-raises as InputError: it propagates like a kill."""


class Crash(nn.Module):
    """Wraps a net and raises on its ``limit``-th forward call (a simulated crash)."""

    def __init__(self, net: nn.Module, limit: int) -> None:
        super().__init__()
        self.net = net
        # a list: camlens runs each call on a private copy of the module, on which
        # `self.calls += 1` would rebind the attribute of the copy only
        self.calls = [0]
        self.limit = limit
        self.train(net.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls[0] += 1
        if self.calls[0] >= self.limit:
            raise SimulatedCrash("simulated crash")
        return self.net(x)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return TinyGAPNet().eval()


@pytest.fixture(scope="module")
def scenes():
    return make_dataset(10, seed=777)


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- oracle and wrong


def test_oracle_localization_error_is_zero():
    s = evaluate_localization(oracle(), painted(), method="gradcam", layer="features",
                              progress=False, top_k=5)
    assert s.k == 5 and s.n == 9
    assert s.top1_loc_error == 0.0 and s.topk_loc_error == 0.0
    assert s.top1_cls_error == 0.0 and s.topk_cls_error == 0.0
    for rec in s.records:
        assert rec.pred_boxes[0] == rec.gt[0][1]  # the exact box


def test_wrong_maps_localization_error_is_one():
    s = evaluate_localization(wrong(), painted(), method="gradcam", layer="features",
                              progress=False)
    assert s.top1_loc_error == 1.0 and s.topk_loc_error == 1.0
    assert s.top1_cls_error == 0.0  # it classifies perfectly: only the maps are wrong


def test_oracle_occlusion_localizes():
    # the score drop is positive exactly where a window overlaps the object (a 1 px dilation)
    s = evaluate_localization(oracle(), painted(), method="occlusion",
                              options={"window": 2, "stride": 1}, progress=False)
    assert s.top1_loc_error == 0.0


def test_all_boxes_gives_the_same_errors(scenes):
    a = evaluate_localization(tiny_net(), scenes, layer=TINY_LAYER, progress=False)
    b = evaluate_localization(tiny_net(), scenes, layer=TINY_LAYER, progress=False, all_boxes=True)
    assert (a.top1_loc_error, a.topk_loc_error) == (b.top1_loc_error, b.topk_loc_error)
    assert any(box is not None for rec in b.records for box in rec.pred_boxes[1:])


def test_boxes_are_scaled_back_when_preprocess_resizes():
    def twice(img: Image.Image) -> torch.Tensor:
        return to_unit_tensor(img.resize((img.width * 2, img.height * 2), Image.Resampling.NEAREST))

    s = evaluate_localization(oracle(), painted(), layer="features", preprocess=twice,
                              progress=False)
    assert s.top1_loc_error == 0.0
    for rec in s.records:
        assert rec.pred_boxes[0] == rec.gt[0][1]


def test_scale_box():
    assert scale_box((0, 0, 9, 9), (10, 10), (10, 10)) == (0, 0, 9, 9)
    assert scale_box((2, 4, 5, 7), (10, 10), (20, 30)) == (6, 8, 17, 15)
    assert scale_box((0, 0, 0, 0), (3, 3), (10, 10)) == (0, 0, 3, 3)  # [0, 3.33) -> 0..3
    assert scale_box((2, 2, 2, 2), (3, 3), (10, 10)) == (6, 6, 9, 9)


# --------------------------------------------------------------------------- CSV and resume


def _iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (_area(a) + _area(b) - inter)


def _area(r):
    return (r[2] - r[0] + 1) * (r[3] - r[1] + 1)


def _hits(k: int, gt, classes, boxes) -> tuple[bool, bool]:
    """(a top-k class is present, a top-k class is present with a box at IoU >= 0.5)."""
    cls = any(c in {g for g, _ in gt} for c in classes[:k])
    loc = any(b is not None and any(g == c and _iou(b, gb) >= 0.5 for g, gb in gt)
              for c, b in zip(classes[:k], boxes[:k]))
    return cls, loc


def test_csv_rows_and_summary_recomputed_by_hand(tmp_path, scenes):
    path = tmp_path / "loc.csv"
    s = evaluate_localization(tiny_net(), scenes, layer=TINY_LAYER, method="gradcam", csv_path=path,
                              progress=False, all_boxes=True, batch_size=4)
    rows = read_csv(path)
    assert [r["image_id"] for r in rows] == [f"{i:05d}" for i in range(len(scenes))]
    errs = {"top1_loc": [], "topk_loc": [], "top1_cls": [], "topk_cls": []}
    for r, scene in zip(rows, scenes):
        gt = [(c, tuple(b)) for c, b in json.loads(r["gt"])]
        assert gt == [(o.label, tuple(o.box)) for o in scene.objects]
        classes = json.loads(r["pred_classes"])
        boxes = json.loads(r["pred_boxes"])
        assert len(classes) == len(boxes) == 5
        # by hand, from the CSV's own columns
        (c1, l1), (c5, l5) = _hits(1, gt, classes, boxes), _hits(5, gt, classes, boxes)
        assert (r["top1_cls_ok"], r["top1_loc_ok"]) == (str(int(c1)), str(int(l1)))
        assert (r["topk_cls_ok"], r["topk_loc_ok"]) == (str(int(c5)), str(int(l5)))
        for key, v in (("top1_loc", l1), ("topk_loc", l5), ("top1_cls", c1), ("topk_cls", c5)):
            errs[key].append(not v)
    assert s.top1_loc_error == pytest.approx(np.mean(errs["top1_loc"]))
    assert s.topk_loc_error == pytest.approx(np.mean(errs["topk_loc"]))
    assert s.top1_cls_error == pytest.approx(np.mean(errs["top1_cls"]))
    assert s.topk_cls_error == pytest.approx(np.mean(errs["topk_cls"]))
    assert s.n == len(scenes) and s.resumed == 0


def _crash_then_resume(run, tmp_path, name, limit=5):
    """Run uninterrupted; run again crashing part-way; resume; return the three summaries and
    the CSV row counts."""
    # wrapped like the runs it is compared with: a test class is not layout-safe, so all three
    # run in the default layout (a bare camlens net would run channels-last: other rounding)
    full = run(Crash(tiny_net(), limit=10**9), tmp_path / f"{name}_full.csv")
    path = tmp_path / f"{name}_crash.csv"
    with pytest.raises(SimulatedCrash):
        run(Crash(tiny_net(), limit=limit), path)
    partial = {r["image_id"] for r in read_csv(path)}
    resumed = run(Crash(tiny_net(), limit=10**9), path)
    return full, resumed, partial, path


def test_localization_resume_after_crash_equals_uninterrupted(tmp_path, scenes):
    def run(model, path):
        return evaluate_localization(model, scenes, layer=None if isinstance(model, TinyGAPNet)
                                     else "net.features.13", csv_path=path, progress=False,
                                     batch_size=3)

    full, resumed, partial, path = _crash_then_resume(run, tmp_path, "loc")
    assert 0 < len(partial) < len(scenes)
    assert resumed.resumed == len(partial)
    for key in ("top1_loc_error", "topk_loc_error", "top1_cls_error", "topk_cls_error", "n"):
        assert getattr(resumed, key) == getattr(full, key)
    assert resumed.records == full.records
    a = read_csv(tmp_path / "loc_full.csv")
    b = read_csv(path)
    assert sorted(r["image_id"] for r in b) == sorted(r["image_id"] for r in a)
    def strip(rows):
        return sorted((r["image_id"], r["gt"], r["pred_classes"], r["pred_boxes"]) for r in rows)
    assert strip(a) == strip(b)


def test_pointing_resume_after_crash_equals_uninterrupted(tmp_path, scenes):
    def run(model, path):
        return evaluate_pointing(model, scenes, layer=None if isinstance(model, TinyGAPNet)
                                 else "net.features.13", csv_path=path, progress=False,
                                 batch_size=2, held_out=0.3)

    full, resumed, partial, _ = _crash_then_resume(run, tmp_path, "pt")
    assert 0 < len(partial) < len(scenes)
    for key in ("accuracy", "accuracy_rejection", "accuracy_topk", "threshold", "trials",
                "trials_topk", "n_images", "n_held_out"):
        assert getattr(resumed, key) == getattr(full, key)


def test_faithfulness_resume_after_crash_equals_uninterrupted(tmp_path, scenes):
    def run(model, path):
        layer = None if isinstance(model, TinyGAPNet) else "net.features.13"
        return evaluate_faithfulness(model, scenes[:6], method=[("gc", "gradcam", {}, layer),
                                                                "gradient"],
                                     window=16, stride=16, csv_path=path, progress=False,
                                     batch_size=2)

    # about six forwards per batch: logits, occlusion (base + windows), Grad-CAM, gradient
    full, resumed, partial, _ = _crash_then_resume(run, tmp_path, "fa", limit=10)
    assert 0 < len(partial) < 6
    assert resumed.mean_rho == full.mean_rho and resumed.n == full.n == 6


def test_a_row_cut_short_is_dropped_and_redone(tmp_path, scenes):
    path = tmp_path / "loc.csv"
    full = evaluate_localization(tiny_net(), scenes, layer=TINY_LAYER,
                                 csv_path=path, progress=False)
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:25])  # the last row, half written
    again = evaluate_localization(tiny_net(), scenes, layer=TINY_LAYER,
                                  csv_path=path, progress=False)
    assert again.resumed == len(scenes) - 1
    assert again.records == full.records
    assert path.read_text() == text


def test_resume_refuses_a_csv_of_another_configuration(tmp_path, scenes):
    path = tmp_path / "loc.csv"
    evaluate_localization(tiny_net(), scenes[:2], layer=TINY_LAYER, csv_path=path, progress=False)
    with pytest.raises(ValueError, match="resume=False"):
        evaluate_localization(tiny_net(), scenes[:2], layer=TINY_LAYER,
                              csv_path=path, progress=False,
                              options={"relu": False})
    s = evaluate_localization(tiny_net(), scenes[:2], layer=TINY_LAYER,
                              csv_path=path, progress=False,
                              options={"relu": False}, resume=False)
    assert s.resumed == 0 and len(read_csv(path)) == 2


class Shift(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - 0.5


def shouldered(n: int = 3) -> list[ArraySample]:
    """A 4x4 object (1.0 in its class's channel) on a 16x16 shoulder (0.35) on black."""
    out = []
    for i in range(n):
        pixels = np.zeros((24, 40, 3), dtype=np.uint8)
        pixels[2:18, 4 + i:20 + i, i] = round(0.35 * 255)
        pixels[8:12, 10 + i:14 + i, i] = 255
        obj = AnnotatedObject(label=i, box=(10 + i, 8, 13 + i, 11))
        out.append(ArraySample(image_path=None, width=40, height=24, objects=(obj,),
                               image_id=f"s{i}", pixels=pixels))
    return out


def test_threshold_relative_to_the_range_lets_the_negative_shoulder_in(tmp_path):
    # Grad-CAM of class c without the ReLU is x_c - 0.5: -0.5 on black, -0.15 on the shoulder,
    # 0.5 on the object. 15% of the max (0.075) keeps the object: exact boxes. 15% of the
    # range (-0.5 + 0.15) takes the shoulder too: IoU 16 / 256, every box wrong.
    model = MeanHead(Shift()).eval()
    common = dict(method="gradcam", layer="features", progress=False, top_k=1)
    norelu = {"relu": False}
    assert evaluate_localization(model, shouldered(), options=norelu,
                                 **common).top1_loc_error == 0.0
    path = tmp_path / "loc.csv"
    s = evaluate_localization(model, shouldered(), options=norelu, relative_to="range",
                              csv_path=path, **common)
    assert s.top1_loc_error == 1.0 and s.top1_cls_error == 0.0 and s.relative_to == "range"
    assert [r.pred_boxes[0] for r in s.records] == [(4 + i, 2, 19 + i, 17) for i in range(3)]
    # with the ReLU the shoulder is 0 like the background: the range changes nothing
    assert evaluate_localization(model, shouldered(), relative_to="range",
                                 **common).top1_loc_error == 0.0
    with pytest.raises(ValueError, match="resume=False"):  # a CSV of the other convention
        evaluate_localization(model, shouldered(), options=norelu, csv_path=path, **common)
    # a bad value is refused before any forward pass
    with pytest.raises(ValueError, match="relative_to"):
        evaluate_localization(Crash(model, 1), shouldered(), options=norelu,
                              relative_to="mean", **common)


# --------------------------------------------------------------------------- pointing, faithfulness


def test_oracle_pointing_and_rejection_are_perfect():
    s = evaluate_pointing(oracle(), painted(12), layer="features", progress=False, held_out=0.25)
    assert s.n_held_out == 3 and s.n_images == 9
    assert s.accuracy == 1.0
    assert s.accuracy_rejection == 1.0  # absent classes' maps are all zero: evidence 0
    assert s.accuracy_topk == pytest.approx(1 / 3)  # 3 classes ranked, one present
    assert s.accuracy_reject_all == pytest.approx(2 / 3)  # rejecting all: the 2 absent right
    assert 0.0 < s.threshold


def test_wrong_model_never_points_at_the_object():
    s = evaluate_pointing(wrong(), painted(12), layer="features", progress=False, tolerance=2)
    assert s.accuracy == 0.0


def test_pointing_with_separate_held_out_samples():
    data = painted(12)
    s = evaluate_pointing(oracle(), data[4:], layer="features", progress=False,
                          held_out=data[:4])
    assert (s.n_held_out, s.n_images) == (4, 8) and s.accuracy_rejection == 1.0


def test_occlusion_is_perfectly_faithful_to_itself():
    occ = {"window": 4, "stride": 2, "fill": 0.0}
    s = evaluate_faithfulness(oracle(), painted(), method=[("occ", "occlusion", occ), "gradient"],
                              window=4, stride=2, progress=False)
    assert s.mean_rho["occ"] == pytest.approx(1.0)
    # the oracle's input gradient is constant over the image: rank correlation undefined
    assert s.n_nan["gradient"] == 9 and math.isnan(s.mean_rho["gradient"]) and s.n == 9


# --------------------------------------------------------------------------- data, CLI, progress


def test_synthetic_format_registered_and_folder_equals_memory(tmp_path, scenes):
    assert "synthetic" in dataset_formats()
    mem = load_dataset("synthetic:seed=777,n=10")
    assert [s.image_id for s in mem[:2]] == ["777/00000", "777/00001"]
    save_coco(scenes, tmp_path / "ds")
    disk = load_dataset(f"synthetic:{tmp_path / 'ds'}")
    assert len(disk) == 10 and disk[0].image_path.is_file()
    a = evaluate_localization(tiny_net(), mem, layer=TINY_LAYER, progress=False)
    b = evaluate_localization(tiny_net(), disk, layer=TINY_LAYER, progress=False)
    assert a.records == b.records
    with pytest.raises(ValueError, match="give seed="):
        load_dataset("synthetic:n=3")


def test_evaluate_and_run_cli(capsys):
    ns = argparse.Namespace(task="localization", data="synthetic:seed=777,n=4", model=oracle(),
                            method="gradcam", layer="features", option=["relu=true"], csv=None,
                            progress=False, top_k=3)
    with pytest.raises(ValueError):  # labels 0..7 exceed the oracle's 3 classes
        run_cli(ns)
    ns.data = "synthetic:seed=777,n=4"
    ns.model = tiny_net()
    ns.layer = TINY_LAYER
    assert run_cli(ns) == 0
    out = capsys.readouterr().out
    assert "| Method | Top-1 loc error | Top-3 loc error |" in out
    s = evaluate("pointing", "synthetic:seed=777,n=8", model=tiny_net(), layer=TINY_LAYER,
                 progress=False, limit=6)
    assert s.n_images + s.n_held_out == 6


def test_progress_bar_on_stderr(capsys, scenes):
    evaluate_localization(tiny_net(), scenes[:3], layer=TINY_LAYER, progress=True)
    err = capsys.readouterr().err
    assert "localization gradcam" in err and "3/3" in err


def test_method_errors():
    with pytest.raises(ValueError, match="unknown method"):
        evaluate_localization(oracle(), painted(), method="nope", progress=False)
    with pytest.raises(ValueError, match="label_map"):
        bad = [ArraySample(image_path=None, width=4, height=4, image_id="x",
                           objects=(AnnotatedObject(label="cat", box=(0, 0, 1, 1)),),
                           pixels=np.zeros((4, 4, 3), np.uint8))]
        evaluate_localization(oracle(), bad, layer="features", progress=False)


def test_module_entry_point_with_a_resizing_model_spec(tmp_path, capsys):
    from camlens.evaluate.__main__ import main

    (tmp_path / "net.py").write_text(
        "import torch\nfrom models import TinyGAPNet\n\n"
        "def build():\n    torch.manual_seed(0)\n    return TinyGAPNet()\n"
    )
    csv_file = tmp_path / "rows.csv"
    code = main(["localization", "--data", "synthetic:seed=777,n=3", "--model",
                 f"{tmp_path / 'net.py'}:build", "--layer", "features.13", "--csv", str(csv_file),
                 "--no-progress", "--top-k", "2"])
    assert code == 0
    assert "| Method | Top-1 loc error | Top-2 loc error |" in capsys.readouterr().out
    rows = read_csv(csv_file)
    assert len(rows) == 3
    for r in rows:
        # the bundled preprocessing resizes 112 -> 224; boxes come back in 112x112 pixels
        assert (r["input_h"], r["input_w"], r["width"]) == ("224", "224", "112")
        for box in json.loads(r["pred_boxes"]):
            assert box is None or (0 <= box[0] <= box[2] <= 111 and 0 <= box[1] <= box[3] <= 111)


def test_runner_leaves_a_training_mode_model_in_training_mode() -> None:
    from camlens.synthetic import load_pretrained, make_dataset

    model = load_pretrained("vgg_gap").train()
    with pytest.warns(UserWarning, match="training mode"):
        evaluate_localization(model, make_dataset(2, seed=3), method="gradcam", progress=False)
    assert model.training and all(m.training for m in model.modules())
