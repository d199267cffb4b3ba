"""camlens.segment: seeds, seed quality, mean IoU (hand cases), a tiny end-to-end SEC training,
the ``camlens segment`` command."""

from __future__ import annotations

import math

import pytest
import torch

from camlens.segment import (
    GRID,
    TrainConfig,
    background_cues,
    class_maps,
    confusion,
    foreground_cues,
    make_cues,
    make_data,
    mask_cues,
    mean_iou,
    predict,
    present_mask,
    seed_quality,
    train_head,
    vgg_features,
)
from camlens.segment.seeds import gradient_saliency, padded_targets


def test_foreground_cues_threshold_at_20_percent_of_max() -> None:
    maps = torch.tensor([[[[1.0, 0.19], [0.21, 0.5]],          # class 0: max 1
                          [[-2.0, 0.0], [0.5, 5.0]],           # class 1: max 5 -> cut at 1
                          [[0.0, 0.0], [0.0, 0.0]],            # class 2: all zero, no cue
                          [[9.0, 9.0], [9.0, 9.0]]]])          # class 3: absent
    present = torch.tensor([[True, True, True, False]])
    cues = foreground_cues(maps, present, grid=2)               # same size: no resampling
    assert cues[0, 0].tolist() == [[True, False], [True, True]]
    assert cues[0, 1].tolist() == [[False, False], [False, True]]
    assert not cues[0, 2].any() and not cues[0, 3].any()
    # 14x14 -> 28x28: bilinear, then the threshold
    big = torch.zeros(1, 1, 14, 14)
    big[0, 0, 5, 5] = 1.0
    up = foreground_cues(big, torch.tensor([[True]]), grid=28)
    ref = torch.nn.functional.interpolate(big, size=(28, 28), mode="bilinear",
                                          align_corners=False)
    assert torch.equal(up[0, 0], ref[0, 0] > 0.2 * ref.max())  # 20% of the upsampled max
    assert 4 <= int(up.sum()) <= 16


def test_background_cue_is_lowest_saliency_share() -> None:
    sal = torch.tensor([[[5.0, 5.0, 1.0, 3.0],
                         [5.0, 5.0, 1.0, 1.0],
                         [0.0, 2.0, 7.0, 7.0],
                         [2.0, 0.0, 7.0, 7.0]]])
    # cell means (2x2 grid): 5, 1.5 / 1, 7 -> the lowest 25% (1 cell) is bottom-left
    bg = background_cues(sal, grid=2, fraction=0.25)
    assert bg[0].tolist() == [[False, False], [True, False]]
    bg = background_cues(sal, grid=2, fraction=0.5)
    assert bg[0].tolist() == [[False, True], [True, False]]


def test_make_cues_drops_conflicts() -> None:
    fg = torch.tensor([[[[True, True], [False, False]],
                        [[False, True], [False, True]]]])
    bg = torch.tensor([[[False, False], [True, True]]])
    cues = make_cues(fg, bg)
    assert cues.shape == (1, 3, 2, 2)
    assert cues[0, 0].tolist() == [[False, False], [True, False]]   # (1,1) also class 1
    assert cues[0, 1].tolist() == [[True, False], [False, False]]   # (0,1) also class 1
    assert cues[0, 2].tolist() == [[False, False], [False, False]]


def test_seed_quality_by_hand() -> None:
    truth = torch.tensor([[[0, 0, 1, 1],
                           [0, 0, 1, 1],
                           [0, 0, 0, 0],
                           [2, 2, 0, 0]]])
    cues = torch.zeros(1, 3, 2, 2, dtype=torch.bool)
    cues[0, 1, 0, 1] = True      # class 1 on its 4 pixels: right
    cues[0, 2, 1, 0] = True      # class 2 on 2 of its pixels + 2 background pixels
    cues[0, 0, 1, 1] = True      # background on 4 background pixels
    q = seed_quality(cues, truth)
    assert q.fg_precision == pytest.approx(6 / 8)
    assert q.fg_recall == pytest.approx(6 / 6)
    assert q.bg_precision == pytest.approx(1.0)
    assert q.bg_recall == pytest.approx(4 / 10)
    assert q.coverage == pytest.approx(12 / 16)


def test_mask_cues_are_cells_wholly_inside_a_mask() -> None:
    truth = torch.zeros(1, 4, 4, dtype=torch.long)
    truth[0, :2, :2] = 2          # class 1 fills cell (0, 0)
    truth[0, 2:, 1:3] = 1         # class 0 covers half of cells (1, 0) and (1, 1)
    truth[0, 0:2, 3] = 1
    fg = mask_cues(truth, grid=2, num_classes=3)
    assert fg.shape == (1, 3, 2, 2)
    assert fg[0, 1].tolist() == [[True, False], [False, False]]
    assert not fg[0, 0].any() and not fg[0, 2].any()


def test_mean_iou_by_hand() -> None:
    truth = torch.tensor([[[0, 0], [1, 1]]])
    pred = torch.tensor([[[0, 1], [1, 1]]])
    assert confusion(pred, truth, 3).tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    miou, ious = mean_iou(pred, truth, 3)
    assert ious[0] == pytest.approx(1 / 2) and ious[1] == pytest.approx(2 / 3)
    assert math.isnan(ious[2])
    assert miou == pytest.approx((1 / 2 + 2 / 3) / 2)
    # a label predicted but never true counts (IoU 0); totals over images, not per image
    pred = torch.tensor([[[0, 2], [1, 1]]])
    miou, _ = mean_iou(torch.cat([pred, truth]), torch.cat([truth, truth]), 3)
    assert miou == pytest.approx((3 / 4 + 4 / 4 + 0) / 3)
    with pytest.raises(ValueError, match="differ"):
        mean_iou(pred[:, :1], truth, 3)


def test_padded_targets_and_present_mask() -> None:
    assert padded_targets([[3], [1, 4, 5]]).tolist() == [[3, 3, 3], [1, 4, 5]]
    with pytest.raises(ValueError, match="at least one class"):
        padded_targets([[1], []])
    assert present_mask([[0, 2]], 4).tolist() == [[True, True, False, True]]


@pytest.fixture(scope="module")
def tiny() -> dict:
    """12 world v2 multi-object scenes, Grad-CAM seeds from the shipped vgg."""
    from camlens.synthetic.v2 import DEFAULT_LAYERS, NUM_CLASSES, load_pretrained

    torch.set_num_threads(1)
    data = make_data(12, seed=31)
    vgg = load_pretrained("vgg")
    maps = class_maps(vgg, data.images, data.labels, "gradcam", DEFAULT_LAYERS["vgg"],
                      NUM_CLASSES)
    present = present_mask(data.labels)
    bg = background_cues(gradient_saliency(vgg, data.images, data.labels), GRID)
    cues = make_cues(foreground_cues(maps, present[:, 1:], GRID), bg)
    return {"data": data, "present": present, "cues": cues,
            "feats": vgg_features(vgg, data.images)}


def test_tiny_sec_training_lowers_the_loss_and_beats_all_background(tiny: dict) -> None:
    data = tiny["data"]
    f2, f3 = tiny["feats"]
    config = TrainConfig(steps=60, batch=6, lr=3e-3)
    head, history = train_head(f2, f3, data.images, tiny["cues"], tiny["present"], config)
    first = sum(h["total"] for h in history[:5]) / 5
    last = sum(h["total"] for h in history[-5:]) / 5
    assert last < 0.7 * first
    pred = predict(head, f2, f3, size=112)
    miou, _ = mean_iou(pred, data.truth)
    baseline, _ = mean_iou(torch.zeros_like(data.truth), data.truth)
    # all background: background IoU (~0.7) over the ~1 + 3 labels present -> ~0.15
    assert baseline < 0.25
    assert miou > baseline + 0.1


def test_seeds_from_gradcam_are_better_than_chance(tiny: dict) -> None:
    q = seed_quality(tiny["cues"], tiny["data"].truth)
    fg_share = float((tiny["data"].truth > 0).float().mean())
    assert q.bg_precision > 0.9                  # lowest-saliency cells are background
    assert q.fg_precision > fg_share / 2          # a cue's class, not just any object
    assert 0.0 < q.coverage < 1.0


def test_cli_segment_runs_one_arm(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from camlens.cli import main

    code = main(["segment", "--n-train", "6", "--n-test", "4", "--steps", "3",
                 "--method", "gradcam", "--net", "vgg", "--json", str(tmp_path / "r.json"),
                 "--markdown", str(tmp_path / "r.md")])
    assert code == 0
    out = capsys.readouterr().out
    assert "gradcam on vgg" in out and "all background" in out
    assert "| Seeds |" in (tmp_path / "r.md").read_text()
    assert '"mious"' in (tmp_path / "r.json").read_text()


def test_cli_segment_compare_with_reference_and_repeats(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from camlens.cli import main

    code = main(["segment", "--compare", "--reference", "--repeats", "2", "--n-train", "6",
                 "--n-test", "4", "--steps", "2", "--json", str(tmp_path / "r.json")])
    assert code == 0
    out = capsys.readouterr().out
    for row in ("cam on vgg_gap", "gradcam on vgg ", "gradcam on vgg_gap", "exact masks"):
        assert row in out
    assert "±" in out and "2 trainings" in out
    record = json.loads((tmp_path / "r.json").read_text())      # strict JSON: no NaN
    arms = record["arms"]
    assert [len(a["mious"]) for a in arms] == [2, 2, 2, 2]
    assert None in arms[0]["per_label"]           # 4 test scenes cannot hold all 33 classes
    # Grad-CAM on a GAP + linear net is CAM up to a constant (Sec. 3.1): the same seeds, up to
    # float rounding at the 20% threshold (on 800 scenes one cell of 627,200 differed)
    assert arms[0]["seeds"] == pytest.approx(arms[2]["seeds"], abs=0.01)
    assert arms[3]["seeds"]["fg_precision"] == 1.0


@pytest.mark.parametrize("args,message", [
    (["--net", "vgg19"], "unknown world v2 net 'vgg19'"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--kind", "crowd"], "unknown scene kind 'crowd'"),
    (["--method", "cam", "--net", "vgg"], "CAM needs a global-average-pooling"),
    (["--compare", "--net", "vgg"], "--compare runs its own seeds"),
    (["--reference"], "use it with --compare"),
])
def test_cli_segment_bad_input_is_one_line(args: list[str], message: str, capsys) -> None:  # type: ignore[no-untyped-def]
    from camlens.cli import main

    code = main(["segment", "--n-train", "2", "--n-test", "2", "--steps", "1", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
