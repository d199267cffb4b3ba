"""camlens.diagnose (Sec. 6): known answers for failure grouping, evidence shares and the
targeted attack, world v2's regions, and the CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from camlens.cli import main as cli
from camlens.diagnose import (
    Prediction,
    choose_targets,
    find_failures,
    group_failures,
    mass_shares,
    rank_regions,
    read_regions,
    targeted_attack,
)
from camlens.diagnose.bias import item_regions
from camlens.diagnose.bias_experiment import SMALL_LAYER, scenes, small_net
from camlens.diagnose.data import Item, items_from_scenes, load_items
from camlens.diagnose.regions import cue_mask, decoy_masks, point_category, scene_regions
from camlens.synthetic.v2 import CLASS_SPECS, CLASSES, COLOURS, CUE_COLOURS, GROUPS, make_scene
from test_contract import assert_same, prepared_model, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------- failures (Sec. 6.1)

def test_failures_found_and_grouped_by_pair_most_frequent_first() -> None:
    preds = [
        Prediction("a", (3,), (3, 1, 2, 4, 5), (0.5, 0.2, 0.1, 0.1, 0.1)),   # right
        Prediction("b", (3,), (1, 3, 2, 4, 5), (0.6, 0.3, 0.05, 0.03, 0.02)),  # top-1 failure
        Prediction("c", (3,), (1, 2, 4, 5, 6)),                              # top-5 failure
        Prediction("d", (7,), (2, 8, 9, 10, 7)),                             # top-1: 7 is 5th
        Prediction("e", (7,), (2, 1, 0, 4, 5)),                              # top-5
        Prediction("f", (3,), (1, 0, 2, 4, 5)),                              # top-5
        Prediction("g", (4, 7), (9, 7, 4, 1, 2)),                            # multi: 7 ranks first
    ]
    fails = find_failures(preds, k=5)
    assert [(f.id, f.true, f.predicted, f.kind) for f in fails] == [
        ("b", 3, 1, "top-1"), ("c", 3, 1, "top-5"), ("d", 7, 2, "top-1"), ("e", 7, 2, "top-5"),
        ("f", 3, 1, "top-5"), ("g", 7, 9, "top-1")]
    assert fails[0].p_true == 0.3 and fails[0].p_predicted == 0.6 and fails[1].p_true is None
    groups = group_failures(fails)
    assert [(g.true, g.predicted, g.count) for g in groups] == [(3, 1, 3), (7, 2, 2), (7, 9, 1)]
    assert [f.id for f in groups[0].failures] == ["b", "c", "f"]
    # with k = 1 every failure is a top-k ("top-5") failure
    assert {f.kind for f in find_failures(preds, k=1)} == {"top-5"}
    with pytest.raises(ValueError, match="k must be"):
        find_failures(preds, k=0)


# -------------------------------------------------------------------------- bias (Sec. 6.3)

def test_mass_shares_on_a_hand_made_map() -> None:
    cam = np.array([[0.0, 1.0, 1.0, 0.0],
                    [0.0, 2.0, 0.0, 0.0],
                    [0.0, 0.0, 0.0, 0.0],
                    [4.0, 0.0, 0.0, 0.0]])     # total 8
    obj = np.zeros((4, 4), bool)
    obj[:2, 1:3] = True                        # 1 + 1 + 2 = 4
    cue = np.zeros((4, 4), bool)
    cue[3] = True                              # 4
    shares = mass_shares(cam, {"object": obj, "cue": cue, "rest": ~(obj | cue)})
    assert shares == {"object": 0.5, "cue": 0.5, "rest": 0.0}
    assert mass_shares(np.zeros((4, 4)), {"object": obj}) is None
    with pytest.raises(ValueError, match="non-negative"):
        mass_shares(-cam, {"object": obj})
    with pytest.raises(ValueError, match="shape"):
        mass_shares(cam, {"object": obj[:2]})


def test_rank_regions_by_enrichment() -> None:
    shares = [{"object": 0.5, "cue": 0.5, "rest": 0.0}, {"object": 0.3, "cue": 0.3, "rest": 0.4}]
    areas = [{"object": 0.25, "cue": 0.25, "rest": 0.5}, {"object": 0.25, "cue": 0.05,
                                                          "rest": 0.7}]
    ranked = rank_regions(shares, areas)
    assert [r["region"] for r in ranked] == ["cue", "object", "rest"]
    assert ranked[0]["share"] == pytest.approx(0.4) and ranked[0]["area"] == pytest.approx(0.15)
    assert ranked[0]["enrichment"] == pytest.approx(0.4 / 0.15)
    assert ranked[1]["enrichment"] == pytest.approx(1.6)
    assert ranked[2]["enrichment"] == pytest.approx(0.2 / 0.6)
    # a region empty in an image does not count there
    ranked = rank_regions([{"a": 1.0, "b": 0.0}], [{"a": 0.5, "b": 0.0}])
    assert [r["region"] for r in ranked] == ["a"]


def test_read_regions_and_item_regions(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"*": {"cue": [0, 3, 3, 3]},
                                "img1": {"face": [[0, 0, 0, 0], [1, 1, 1, 1]]}}))
    regs = read_regions(path)
    assert regs == {"*": {"cue": [(0, 3, 3, 3)]}, "img1": {"face": [(0, 0, 0, 0), (1, 1, 1, 1)]}}
    obj = np.zeros((4, 4), bool)
    obj[0, 2] = True
    item = Item("img1", np.zeros((4, 4, 3), np.uint8), (5,), {5: obj}, {5: [(2, 0, 2, 0)]})
    r = item_regions(item, 5, regs)
    assert set(r) == {"object", "cue", "face", "rest"}
    assert r["cue"][3].all() and r["cue"].sum() == 4
    assert r["face"][0, 0] and r["face"][1, 1] and r["face"].sum() == 2
    assert r["rest"].sum() == 16 - 4 - 2 - 1
    for bad, msg in (({"*": {"cue": [0, 1, 2]}}, "x0, y0, x1, y1"),
                     ({"*": {"cue": [3, 0, 0, 1]}}, "x1 < x0"),
                     ({"*": {"object": [0, 0, 1, 1]}}, "reserved"), ([1], "expected")):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=msg):
            read_regions(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        read_regions(path)


def test_world_regions_are_a_partition_and_the_cue_band_is_exact() -> None:
    for i in range(6):
        s = make_scene(np.random.default_rng((11, i)), kind="multi", cue_rate=0.5)
        r = scene_regions(s, s.objects[0].label)
        total = sum(m.astype(int) for m in r.values())
        assert (total == 1).all()
        band = cue_mask(s)
        assert band[:100].sum() == 0 and band.any()
        assert (s.concepts["colour"][band] == 1 + COLOURS.index(s.background["cue"])).all()
        for label, m in decoy_masks(s):
            assert (s.concepts["object"][m] == 0).all() and label not in s.labels
            if not m.any():  # covered by what was painted later
                continue
            y, x = np.argwhere(m)[0]
            assert point_category(s, y, x, label) == "lookalike decoy"
        o = s.objects[0]
        y, x = np.argwhere(o.mask)[0]
        assert point_category(s, y, x, o.label) == "class c"
        sibling = next(c for c in GROUPS[o.group] if c != o.label)
        if sibling not in s.labels:
            assert point_category(s, y, x, sibling) == "lookalike object"
        y, x = np.argwhere(band)[0]
        assert point_category(s, y, x, o.label) == "cue band"


def test_bias_experiment_scenes_differ_only_in_the_cue_band() -> None:
    cls = GROUPS["feline"]
    a = scenes(cls, 4, 5, cue_rate=1.0)
    b = scenes(cls, 4, 5, cue_rate=0.0)
    for s, t in zip(a, b):
        assert s.label == t.label and s.background["cue"] != t.background["cue"]
        assert s.background["cue"] == CUE_COLOURS[GROUPS["feline"].index(s.label)]
        assert np.array_equal(s.image[:90], t.image[:90])  # the band and blur: rows >= 97
    net = small_net()
    assert dict(net.named_modules())[SMALL_LAYER].__class__ is nn.ReLU
    assert net(torch.zeros(1, 3, 112, 112)).shape == (1, len(CLASSES))


# ------------------------------------------------------------------ adversarial (Sec. 6.2)

def _toy(k: float = 20.0) -> nn.Module:
    """logits = (k x0, k x1, 0) of a 1x1x2 image."""
    lin = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[k, 0.0], [0.0, k], [0.0, 0.0]]))
    return nn.Sequential(nn.Flatten(), lin)


def test_attack_reaches_the_target_in_the_hand_derived_number_of_steps() -> None:
    # CE gradient towards class 1 is k (p0, p1 - 1, .): sign (+, -), so after t steps of 0.05
    # x = (0.5 - 0.05 t, 0.5 + 0.05 t), z1 - z0 = 2t, z1 - z2 = 10 + t, and
    # p1 = 1 / (1 + e^-2t + e^-(10+t)) first exceeds 0.9999 at t = 5
    p = [1 / (1 + math.exp(-2 * t) + math.exp(-(10 + t))) for t in range(7)]
    assert p[4] < 0.9999 < p[5]
    model = _toy()
    x = torch.full((1, 1, 1, 2), 0.5)
    x0 = x.clone()
    res = targeted_attack(model, x, [1], eps=0.5, step=0.05, steps=50)
    assert torch.equal(x, x0)
    assert bool(res.success[0]) and int(res.steps[0]) == 5
    torch.testing.assert_close(res.adversarial, torch.tensor([[[[0.25, 0.75]]]]))
    assert float(res.target_prob[0]) == pytest.approx(p[5], rel=1e-6)
    # the ball: eps 0.1 keeps x in [0.4, 0.6]: z1 - z0 = 4 at most, never 0.9999
    res = targeted_attack(model, x, [1], eps=0.1, step=0.05, steps=7)
    assert not bool(res.success[0]) and int(res.steps[0]) == 7
    torch.testing.assert_close(res.adversarial, torch.tensor([[[[0.4, 0.6]]]]))
    # the pixel range: bounds (0.45, 1) stop x0 at 0.45
    res = targeted_attack(model, x, [1], eps=0.5, step=0.05, steps=3, bounds=(0.45, 1.0))
    torch.testing.assert_close(res.adversarial, torch.tensor([[[[0.45, 0.65]]]]))
    with pytest.raises(ValueError, match="eps > 0"):
        targeted_attack(model, x, [1], eps=0.0)
    with pytest.raises(ValueError, match="one target per image"):
        targeted_attack(model, x, [1, 2])


@pytest.mark.filterwarnings("ignore:.*training mode")
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_attack_never_changes_the_model_nor_the_input(training: bool) -> None:
    model = prepared_model(training)
    before = snapshot(model)
    x = torch.rand(2, 3, 8, 8)
    x0 = x.clone()
    res = targeted_attack(model, x, [1, 2], eps=0.2, step=0.05, steps=4, goal=0.99)
    assert_same(before, snapshot(model))
    assert torch.equal(x, x0)
    assert (res.adversarial - x).abs().max() <= 0.2 + 1e-6
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    # a model that raises inside leaves everything as it was too
    model.boom.armed = True
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="injected"):
        targeted_attack(model, x, [1, 2], steps=2)
    assert_same(before, snapshot(model))


def test_choose_targets_avoids_present_classes_and_their_groups() -> None:
    groups = [s.group for s in CLASS_SPECS]
    labels = [(0,), (3, 10), (32,)] * 20
    ts = choose_targets(labels, len(CLASSES), seed=1, groups=groups)
    for labs, t in zip(labels, ts):
        assert t not in labs and groups[t] not in {groups[c] for c in labs}
    assert choose_targets(labels, len(CLASSES), seed=1, groups=groups) == ts
    with pytest.raises(ValueError, match="no class is absent"):
        choose_targets([(0, 1)], 2)


# ------------------------------------------------------------------------------ data and CLI

def test_load_items_synthetic_spec_keeps_scenes_and_cue() -> None:
    items = load_items("synthetic:seed=4,n=3,kind=two,cue_rate=1")
    assert len(items) == 3 and all(len(it.labels) == 2 and it.scene is not None for it in items)
    for it in items:
        assert it.scene is not None and it.scene.background["cue"] in CUE_COLOURS
        for c in it.labels:
            assert it.masks[c].any() and it.boxes[c]
    assert [it.id for it in items_from_scenes([items[0].scene], "p/")] == ["p/00000"]
    for spec, msg in (("synthetic:seed=1,n=2,cue_rate=2", r"cue_rate must be a number in \[0, 1\]"),
                      ("synthetic:seed=1,n=0", "n must be an integer >= 1"),
                      ("synthetic:seed=1,m=2", "unknown key 'm'")):
        with pytest.raises(ValueError, match=msg):
            load_items(spec)


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f"
    assert cli(["diagnose", "failures", "--data", "synthetic:seed=3,n=12", "--model",
                "synthetic:vgg", "--out", str(out), "--examples", "1", "--pairs", "1"]) == 0
    doc = json.loads((out / "failures.json").read_text())
    s, rows = doc["summary"], doc["failures"]
    assert s["images"] == 12 and s["top1_failures"] + s["top5_failures"] == len(rows) > 0
    assert sum(p["count"] for p in s["pairs"]) == len(rows)
    assert sum(s["predicted_peak"].values()) == len(rows)
    assert all(r["true"] != r["predicted"] for r in rows)
    html = (out / "report.html").read_text()
    # one example: its five panels, each titled in text
    assert html.count("<img src=\"data:image/png;base64,") == 5 and "Confusion pairs" in html
    assert html.count("<figcaption>Guided Grad-CAM: ") == 2
    assert html.count("<figcaption>Grad-CAM: ") == 2
    assert (out / "failures.csv").read_text().count("\n") == len(rows) + 1

    out = tmp_path / "b"
    regions = tmp_path / "regions.json"
    regions.write_text(json.dumps({"*": {"bottom": [0, 101, 111, 111]}}))
    assert cli(["diagnose", "bias", "--data", "synthetic:seed=3,n=4,cue_rate=1", "--out",
                str(out), "--regions", str(regions), "--cue", "bottom", "--examples", "1"]) == 0
    s = json.loads((out / "bias.json").read_text())["summary"]
    assert s["cue_region"] == "bottom" and {r["region"] for r in s["ranking"]} <= {
        "object", "bottom", "rest"}
    for r in json.loads((out / "bias.json").read_text())["images"]:
        if r["shares"] is not None:
            assert sum(v for k, v in r["shares"].items() if k != "object") <= 1 + 1e-9

    out = tmp_path / "a"
    assert cli(["diagnose", "adversarial", "--data", "synthetic:seed=3,n=1", "--out", str(out),
                "--steps", "2", "--step", "2", "--examples", "1"]) == 0
    rows = json.loads((out / "adversarial.json").read_text())["images"]
    assert len(rows) == 1 and rows[0]["steps"] <= 2 and rows[0]["linf"] <= 4 / 255 + 1e-6
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["failures", "--data", "synthetic:seed=1,n=2,kind=odd"], "kind must be one of"),
    (["failures", "--data", "nowhere:x"], "unknown dataset spec"),
    (["failures", "--data", "synthetic:seed=1,n=2", "--model", "synthetic:nope"],
     "unknown synthetic net"),
    (["adversarial", "--data", "synthetic:seed=1,n=2", "--eps", "300"], "--eps"),
    (["adversarial", "--data", "synthetic:seed=1,n=2", "--goal", "1.5"], "--goal"),
    (["bias", "--data", "synthetic:seed=1,n=2", "--regions", "/no/such.json"], "such.json"),
    (["bias", "--data", "synthetic:seed=1,n=2", "--examples", "-1"], "--examples"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["diagnose", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_report_markdown_puts_the_numbers_beside_the_papers() -> None:
    from camlens.diagnose.report import markdown

    ranking = [{"region": "cue band", "share": 0.25, "area": 0.1, "enrichment": 2.5, "images": 9},
               {"region": "object", "share": 0.5, "area": 0.3, "enrichment": 1.6, "images": 9}]
    study = {"accuracy": 0.75, "accuracy_cue_agrees": 1.0, "accuracy_cue_differs": 0.5,
             "ranking": ranking}
    m = {"quick": False,
         "failures": {"images": 10, "top1_failures": 3, "top5_failures": 1,
                      "predicted_peak_resembling": 0.5, "resembling_area_mean": 0.125,
                      "predicted_peak_related": 0.25},
         "adversarial": {"images": 4, "success_rate": 0.75, "successful": {
             "p_true_before_mean": 0.8, "p_true_after_mean": 1e-5, "pointing_before": 1.0,
             "pointing_after": 0.5, "iou_before": 0.6, "iou_after": 0.4,
             "target_mass_on_objects": 0.2, "object_area": 0.3}},
         "bias": {"models": {"biased": {"study": study}, "balanced": {"study": study}}}}
    text = markdown(m)
    assert "| attack success (p(target) > 0.9999) | shown on examples | | 75.0% of 4 |" in text
    assert "| pointing hit (true class) | \"correctly localize\" | 100.0% | 50.0% |" in text
    assert "| biased model: test accuracy (cue at chance) | 82% | 75.0% (cue agrees 100.0%, " \
           "differs 50.0%); evidence on the cue band 25.0%, rank 1 of 2 regions |" in text
    assert "in 50.0% of failures (those pixels cover 12.5% of an image)" in text


@pytest.mark.filterwarnings("ignore:.*training mode")
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_the_studies_leave_the_model_and_the_images_as_they_were(training: bool,
                                                                 tmp_path: Path) -> None:
    from types import SimpleNamespace

    from camlens.diagnose import adversarial_study, bias_study, diagnose_failures, load_record

    model = prepared_model(training)
    rec = load_record(SimpleNamespace(model=model, labels=list("abcde"), default_layer="features",
                                      name="toy"))
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        mask = np.zeros((8, 8), bool)
        mask[2:5, 1:6] = True
        items.append(Item(f"i{i}", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (i % 5,),
                          {i % 5: mask}, {i % 5: [(1, 2, 5, 4)]}))
    pixels = [it.image.copy() for it in items]
    before = snapshot(model)
    diagnose_failures(rec, items, tmp_path / "f", examples=1)
    bias_study(rec, items, tmp_path / "b", examples=1)
    adversarial_study(rec, items, tmp_path / "a", steps=2, examples=1)
    assert_same(before, snapshot(model))
    assert all(np.array_equal(p, it.image) for p, it in zip(pixels, items))
    for name in ("f", "b", "a"):
        assert (tmp_path / name / "report.html").read_text().startswith("<!DOCTYPE html>")
