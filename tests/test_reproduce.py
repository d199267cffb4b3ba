"""The one-command reproduction, on a handful of images: structure and relations that must hold
whatever the weights (the shipped nets when present, else seeded random ones)."""

from __future__ import annotations

import math

import pytest

from camlens.evaluate import reproduce as rp


@pytest.fixture(scope="module")
def results():
    cfg = rp.ReproduceConfig(n_images=16, n_pointing=10, n_threshold=6, n_faithfulness=6,
                             batch_size=16, allow_random=True)
    return rp.reproduce(cfg, progress=False, command="pytest")


@pytest.fixture(scope="module")
def report(results):
    return rp.render(results)


def test_structure(results):
    assert list(results.nets) == ["vggstyle", "gapnet"]
    vgg, gap = results.nets["vggstyle"], results.nets["gapnet"]
    rows = ["Backprop", "Guided Backprop", "Grad-CAM", "Guided Grad-CAM", "Occlusion"]
    assert list(vgg.table1) == rows  # CAM does not apply to a net with FC layers
    assert set(gap.table1) == set(rows) | {"CAM"}
    ablations = [r for r, _, _ in rp.TABLE3_ROWS] + [r for r, _ in rp.EARLIER_LAYERS]
    for net in (vgg, gap):
        assert list(net.table3) == ablations
        assert net.table1["Grad-CAM"].n == 16
        assert net.table1["Occlusion"].n == 6  # the faithfulness images
        assert net.faithfulness.n == 6
        for p in net.pointing.values():
            assert p.n_images == 10 and p.n_held_out == 6
    assert "CAM" not in vgg.pointing and "CAM" in gap.pointing
    assert "CAM" not in vgg.faithfulness.mean_rho and "CAM" in gap.faithfulness.mean_rho


def test_values_are_in_range(results):
    for net in results.nets.values():
        for s in list(net.table1.values()) + list(net.table3.values()):
            for v in (s.top1_loc_error, s.topk_loc_error, s.top1_cls_error, s.topk_cls_error):
                assert 0.0 <= v <= 1.0
            assert s.topk_loc_error <= s.top1_loc_error  # more guesses never hurt
            assert s.topk_cls_error <= s.top1_cls_error
            assert s.top1_loc_error >= s.top1_cls_error  # localised implies classified
        for p in net.pointing.values():
            for v in (p.accuracy, p.accuracy_rejection, p.accuracy_topk):
                assert math.isnan(v) or 0.0 <= v <= 1.0
        for rho in net.faithfulness.mean_rho.values():
            assert math.isnan(rho) or -1.0 <= rho <= 1.0


def test_classification_does_not_depend_on_the_method(results):
    for net in results.nets.values():
        errs = {(s.top1_cls_error, s.topk_cls_error) for s in net.table3.values()}
        errs |= {(s.top1_cls_error, s.topk_cls_error) for k, s in net.table1.items()
                 if k != "Occlusion"}
        assert len(errs) == 1


def test_cam_equals_z_times_gradcam_on_the_gap_net(results):
    gap = results.nets["gapnet"]
    assert gap.identity["Z"] == 16 * 16
    assert gap.identity["max_relative_difference"] <= 1e-5
    assert results.nets["vggstyle"].identity is None
    # the same maps up to a factor give the same boxes (the threshold is relative)
    cam, gc = gap.table1["CAM"], gap.table1["Grad-CAM"]
    same = sum(a.pred_boxes == b.pred_boxes for a, b in zip(cam.records, gc.records))
    assert same >= len(gc.records) - 1


def test_backward_rules_change_nothing_on_the_gap_net(results):
    # no rectifier between the GAP net's last conv maps and its output
    t3 = results.nets["gapnet"].table3
    for row in ("Deconv ReLU backward", "Guided ReLU backward"):
        boxes = [r.pred_boxes for r in t3[row].records]
        assert boxes == [r.pred_boxes for r in t3["Grad-CAM"].records]


def test_report_has_the_papers_rows(report, results):
    assert report.startswith("# Grad-CAM paper, reproduced on the synthetic world")
    for text in ("| Grad-CAM | 56.51 | 46.41 | 30.38 | 10.89 |",
                 "| Backprop | 61.12 | 51.46 | 30.38 | 10.89 |",
                 "| c-MWP | 70.92 | 63.04 | 30.38 | 10.89 |",
                 "| CAM (VGG-16-GAP) | 57.20 | 45.14 |",
                 "70.58", "60.30", "0.261", "0.168",
                 "## Localisation (Table 1)", "## Grad-CAM ablations (Table 3)",
                 "## Pointing game (Sec. 4.3)", "## Faithfulness", "CAM == Z * Grad-CAM",
                 "## The paper's claims, checked on our numbers",
                 "## Where and why we disagree with the paper",
                 "## Why the boxes succeed or fail", "30% of the maximum",
                 "n/a: vggstyle has fully-connected layers", "without ReLU", "GMP gradients",
                 "block 1 (features.3, 64x64)", "Occlusion (first 6 images)", "pytest"):
        assert text in report, text
    random = any(n.random_weights for n in results.nets.values())
    assert ("RANDOM weights" in report) == random


def test_main_writes_the_report(tmp_path):
    out = tmp_path / "results.md"
    assert rp.main(["--out", str(out), "--nets", "gapnet", "--n-images", "4", "--n-pointing",
                    "4", "--n-threshold", "3", "--n-faithfulness", "2", "--allow-random",
                    "--no-progress"]) == 0
    text = out.read_text()
    assert "python -m camlens.evaluate.reproduce --out" in text and "gapnet" in text
