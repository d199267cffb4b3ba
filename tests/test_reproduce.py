"""The one-command reproduction in its --quick mode, end to end on world v2 with the shipped
nets: its numbers are recomputed here by a second, direct path (camlens.explain and the
metric primitives, not the evaluation tasks) and must agree exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import camlens
from camlens.evaluate import reproduce as rp
from camlens.evaluate.faithfulness import rank_correlation, resize_map
from camlens.evaluate.findings import paired, verdict
from camlens.evaluate.localization import bbox_from_map, iou
from camlens.evaluate.paper import EARLIER_ROWS
from camlens.evaluate.pointing import pointing_hit
from camlens.evaluate.segmentation_report import segmentation_section
from camlens.synthetic.v2 import DEFAULT_LAYERS, load_pretrained, make_dataset, to_tensors

QUICK = rp.ReproduceConfig.quick_run()


@pytest.fixture(scope="module")
def results():
    return rp.reproduce(QUICK, progress=False, command="pytest --quick")


@pytest.fixture(scope="module")
def report(results):
    return rp.render(results)


def _logits(name: str, scenes) -> torch.Tensor:
    x, _ = to_tensors(scenes)
    with torch.no_grad():
        return load_pretrained(name)(x)


def test_structure(results):
    assert list(results.nets) == ["vgg", "vgg_gap", "alexnet", "resnet"]
    rows = ["Backprop", "c-MWP", "Grad-CAM", "Guided Backprop", "Guided Grad-CAM", "Occlusion"]
    for name, net in results.nets.items():
        assert not net.random_weights
        assert list(net.table1) == (rows[:3] + ["CAM"] + rows[3:] if net.gap else rows)
        assert net.table1["Grad-CAM"].n == QUICK.n_images
        assert net.table1["Occlusion"].n == QUICK.n_occlusion
        assert net.faithfulness.n == QUICK.n_faithfulness
        assert list(net.table3) == [r for r, _, _ in rp.TABLE3_ROWS] + list(EARLIER_ROWS)
        assert list(net.earlier_layers) == list(EARLIER_ROWS)
        assert list(net.earlier_layers.values()) == list(rp.EARLIER_LAYERS[name])
        for p in net.pointing.values():
            assert p.n_images == QUICK.n_pointing and p.n_held_out == QUICK.n_threshold
        assert ("CAM" in net.pointing) == net.gap == (net.identity is not None)
    assert results.nets["resnet"].map_size == (7, 7)
    assert results.nets["vgg"].map_size == (14, 14)
    assert results.heldout["seed"] == QUICK.eval_seed  # the nets' recorded held-out scenes


def test_classification_errors_match_the_nets_outputs(results):
    scenes = make_dataset(QUICK.n_images, QUICK.eval_seed)
    y = torch.tensor([s.label for s in scenes])
    for name, net in results.nets.items():
        top5 = _logits(name, scenes).topk(5, dim=1).indices
        top1_err = float((top5[:, 0] != y).float().mean())
        top5_err = float((top5 != y[:, None]).all(dim=1).float().mean())
        for s in list(net.table1.values())[:-1] + list(net.table3.values()):
            assert (s.top1_cls_error, s.topk_cls_error) == pytest.approx((top1_err, top5_err))


def test_gradcam_localisation_error_recomputed_directly(results):
    scenes = make_dataset(QUICK.n_images, QUICK.eval_seed)
    x, y = to_tensors(scenes)
    for name in ("vgg", "resnet"):
        model = load_pretrained(name)
        ex = camlens.explain(model, x, method="gradcam", layer=DEFAULT_LAYERS[name], top_k=1)
        wrong = 0
        for i, s in enumerate(scenes):
            box = bbox_from_map(resize_map(ex.raw[i, 0].numpy(), (112, 112)), 0.15)
            ok = (int(ex.targets[i, 0]) == int(y[i]) and box is not None
                  and iou(box, s.objects[0].box) >= 0.5)
            wrong += not ok
        assert results.nets[name].table1["Grad-CAM"].top1_loc_error == pytest.approx(
            wrong / len(scenes))


def test_pointing_standard_accuracy_recomputed_directly(results):
    scenes = make_dataset(QUICK.n_pointing, QUICK.pointing_seed, kind="multi")
    model = load_pretrained("alexnet")
    hits = trials = 0
    for s in scenes:
        img = torch.from_numpy(s.image).permute(2, 0, 1).float().div(255)[None]
        classes = sorted({o.label for o in s.objects})
        ex = camlens.explain(model, img, method="gradcam", layer=DEFAULT_LAYERS["alexnet"],
                             target=torch.tensor([classes]))
        for k, c in enumerate(classes):
            mask = np.any([o.mask for o in s.objects if o.label == c], axis=0)
            hits += pointing_hit(resize_map(ex.raw[0, k].numpy(), s.size), mask,
                                 QUICK.tolerance)
            trials += 1
    p = results.nets["alexnet"].pointing["Grad-CAM"]
    assert (p.trials, p.accuracy) == (trials, pytest.approx(hits / trials))


def test_faithfulness_recomputed_directly(results):
    scenes = make_dataset(QUICK.n_faithfulness, QUICK.pointing_seed, kind="multi")
    x = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float() / 255
    model = load_pretrained("vgg_gap")
    layer = DEFAULT_LAYERS["vgg_gap"]
    gc = camlens.explain(model, x, method="gradcam", layer=layer, top_k=1)
    occ = camlens.explain(model, x, method="occlusion", top_k=1, window=QUICK.occlusion_window,
                          stride=QUICK.occlusion_stride, fill=QUICK.occlusion_fill)
    rhos = [rank_correlation(resize_map(gc.raw[i, 0].numpy(), (112, 112)), occ.raw[i, 0].numpy())
            for i in range(len(scenes))]
    f = results.nets["vgg_gap"].faithfulness
    assert f.per_image["Grad-CAM"] == pytest.approx(rhos, abs=1e-6)
    assert f.mean_rho["Grad-CAM"] == pytest.approx(float(np.mean(rhos)), abs=1e-6)
    assert f.se_rho["Grad-CAM"] == pytest.approx(np.std(rhos, ddof=1) / math.sqrt(len(rhos)),
                                                 abs=1e-6)


def test_cam_is_z_gradcam_on_the_gap_nets(results):
    for name, z in (("vgg_gap", 14 * 14), ("resnet", 7 * 7)):
        net = results.nets[name]
        assert net.identity["Z"] == z and net.identity["max_relative_difference"] < 1e-5
        cam, gc = net.table1["CAM"], net.table1["Grad-CAM"]
        assert [r.pred_boxes for r in cam.records] == [r.pred_boxes for r in gc.records]
        # equal up to float32 rounding of the upsampled maps (a few near-tied pixel ranks)
        assert net.faithfulness.per_image["CAM"] == pytest.approx(
            net.faithfulness.per_image["Grad-CAM"], abs=1e-5)
        # nothing rectifies after the layer, and the gradient is uniform: ablations change nothing
        for row in ("Deconv ReLU backward", "Guided ReLU backward", "GMP gradients"):
            assert ([r.pred_boxes for r in net.table3[row].records]
                    == [r.pred_boxes for r in gc.records]), (name, row)


def test_claim_statistics():
    a = np.array([0, 0, 1, 1, 0, 0, 0, 0], dtype=float)
    b = np.array([1, 0, 1, 1, 1, 1, 0, 1], dtype=float)
    d, se = paired(a, b)  # b - a = [1,0,0,0,1,1,0,1]: mean 0.5, sd 0.5345
    assert d == pytest.approx(0.5) and se == pytest.approx(0.53452248 / math.sqrt(8))
    assert verdict(d, se) == "holds"  # 0.5 > 2 * 0.189
    assert verdict(-d, se) == "does not hold (the opposite holds)"
    assert verdict(0.2, se) == "not resolved at this precision"
    assert verdict(-0.2, se, no_worse=True) == "holds"
    assert verdict(-0.5, se, no_worse=True) == "does not hold"
    assert verdict(0.0, 0.0) == "tie: no image differs"
    assert verdict(0.3, 0.1, exact=True) == "tie: equal by construction"


def test_segmentation_section(results):
    assert "Not run here" in "\n".join(segmentation_section(None))
    seg = results.segmentation
    assert seg is not None and (seg.train.seed, seg.train.n) == (4200, QUICK.seg_train)
    assert (seg.test.seed, seg.test.n) == (20251, QUICK.seg_test)
    assert [a.arm.name for a in seg.arms] == ["cam on vgg_gap", "gradcam on vgg",
                                              "gradcam on vgg_gap", "exact masks (reference)"]
    text = "\n".join(segmentation_section(seg))
    grad, cam = seg.result("vgg", "gradcam").miou, seg.result("vgg_gap", "cam").miou
    assert ("Claim \"Grad-CAM seeds segment better than CAM seeds\" is not resolved (one "
            f"training per arm: run with --seg-repeats 3 or more): {grad:.1f} vs {cam:.1f} "
            f"mean IoU, {grad - cam:+.1f} points") in text
    # three trainings per arm: a verdict from their spread (2 standard errors)
    import dataclasses

    def arm(result, mious):
        return dataclasses.replace(result, mious=mious, mious_crf=mious)

    grad_arm, cam_arm = seg.result("vgg", "gradcam"), seg.result("vgg_gap", "cam")
    for g, c, verdict_ in (((30.0, 31.0, 32.0), (20.0, 21.0, 22.0), "holds"),
                           ((20.0, 21.0, 22.0), (30.0, 31.0, 32.0),
                            "does not hold (the opposite holds)"),
                           ((20.0, 25.0, 30.0), (21.0, 26.0, 28.0),
                            "is not resolved at this precision")):
        three = dataclasses.replace(seg, repeats=3, arms=tuple(
            arm(a, g if a is grad_arm else c if a is cam_arm else a.mious) for a in seg.arms))
        said = "\n".join(segmentation_section(three))
        assert f"seeds\" {verdict_}: {sum(g) / 3:.1f} vs {sum(c) / 3:.1f}" in said, said
    assert "| gradcam on vgg | 49.6 |" in text and "| cam on vgg_gap | 44.6 |" in text


def test_report_has_the_papers_numbers_and_ours(report, results):
    g = results.nets["vgg"].table1["Grad-CAM"]
    se = math.sqrt(g.top1_loc_error * (1 - g.top1_loc_error) / g.n)
    ours = f"{100 * g.top1_loc_error:.2f} ± {100 * se:.2f}"
    for text in ("# Grad-CAM paper, reproduced on world v2",
                 "| Grad-CAM | 56.51 | 46.41 | 30.38 | 10.89 |",
                 "| c-MWP | 70.92 | 63.04 | 30.38 | 10.89 |",
                 "| CAM (VGG-16-GAP) | 57.20 | 45.14 | 33.40 | 12.20 (?) |",
                 "| Grad-CAM | 0.254 |", "| Guided Grad-CAM | 0.261 |", "| c-MWP | 0.220 |",
                 "| CAM | 0.208 |", "| Guided Backprop | 0.168 |", "70.58", "60.30",
                 "## Weakly-supervised segmentation (Sec. 4.2)", "49.6", "CAM == Z * Grad-CAM",
                 "## The paper's claims, checked on our numbers", "Quick mode", ours,
                 "n/a: vgg has fully-connected layers", "pytest --quick"):
        assert text in report, text
    assert "RANDOM weights" not in report
    assert report.count("Grad-CAM localises better than Backprop") == 4


def test_main_quick_runs_the_quick_config(tmp_path, monkeypatch, results):
    seen = {}

    def fake(cfg, progress, command):
        seen["cfg"], seen["command"] = cfg, command
        return results

    monkeypatch.setattr(rp, "reproduce", fake)
    out = tmp_path / "r.md"
    assert rp.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    assert seen["cfg"] == QUICK
    assert seen["command"] == f"python -m camlens.evaluate.reproduce --quick --out {out} " \
                              "--no-progress"
    assert out.read_text().startswith("# Grad-CAM paper, reproduced on world v2")
    assert rp.main(["--out", str(out), "--n-images", "7", "--nets", "resnet"]) == 0
    assert seen["cfg"] == rp.ReproduceConfig(n_images=7, nets=("resnet",))
    with pytest.raises(SystemExit):
        rp.main(["--n-images", "0"])


def test_beyond_sections_are_run_in_order_and_rendered(monkeypatch, results):
    calls = []

    def fake(key, quick):
        calls.append((key, quick))
        return f"## {key} section\n\nbody of {key}\n\n"

    monkeypatch.setattr(rp, "_section", fake)
    cfg = rp.ReproduceConfig.quick_run(beyond=("sec8", "sec6"))
    text, seconds = rp._beyond(cfg, progress=False)
    assert calls == [("sec8", True), ("sec6", True)]
    assert text == {"sec8": "## sec8 section\n\nbody of sec8\n", "sec6": "## sec6 section\n\n"
                    "body of sec6\n"}
    assert list(seconds) == ["sec8", "sec6"] and all(v >= 0 for v in seconds.values())
    # random nets: nothing runs (the sections need the shipped models)
    calls.clear()
    assert rp._beyond(rp.ReproduceConfig.quick_run(beyond=rp.BEYOND, allow_random=True),
                      progress=False) == ({}, {})
    assert calls == []
    # rendered after the segmentation section, before the claims, with their times
    from dataclasses import replace

    report = rp.render(replace(results, beyond=text, beyond_seconds={"sec8": 61.0, "sec6": 2.0}))
    assert report.index("## Weakly-supervised segmentation") < report.index("## sec8 section") \
        < report.index("## sec6 section") < report.index("## The paper's claims")
    assert "including Sec. 6-8: sec8 61 s, sec6 2 s." in report
    assert "## sec8" not in rp.render(results)


def test_main_beyond_flag(monkeypatch, tmp_path, results):
    seen = {}

    def fake(cfg, progress, command):
        seen["cfg"] = cfg
        return results

    monkeypatch.setattr(rp, "reproduce", fake)
    out = tmp_path / "r.md"
    assert rp.ReproduceConfig().beyond == ("sec6", "sec7", "sec8") and QUICK.beyond == ()
    assert rp.main(["--out", str(out), "--beyond"]) == 0
    assert seen["cfg"].beyond == ()
    assert rp.main(["--quick", "--out", str(out), "--beyond", "sec7", "sec7", "sec6"]) == 0
    assert seen["cfg"] == rp.ReproduceConfig.quick_run(beyond=("sec7", "sec6"))
    with pytest.raises(SystemExit):
        rp.main(["--beyond", "sec9"])
