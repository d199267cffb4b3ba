"""The pointing game (Sec. 4.3): hits with a 15 px tolerance, ties, rejection."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from camlens.evaluate import (
    PointingTrial,
    choose_rejection_threshold,
    max_locations,
    pointing_game,
    pointing_hit,
)


def peak_map(shape, y, x):
    hm = np.zeros(shape)
    hm[y, x] = 1.0
    return hm


def point_mask(shape, y, x):
    m = np.zeros(shape, bool)
    m[y, x] = True
    return m


@pytest.mark.parametrize(
    "dy, dx, hit",
    [
        (0, 15, True),  # exactly 15 px: a hit
        (0, 16, False),  # 16 px: a miss
        (15, 0, True),
        (-16, 0, False),
        (9, 12, True),  # sqrt(81 + 144) = 15
        (-12, -9, True),
        (11, 11, False),  # 15.56
        (10, 11, True),  # 14.87
        (10, 12, False),  # 15.62
        (0, 0, True),
    ],
)
def test_tolerance_is_a_euclidean_disk(dy, dx, hit):
    shape = (60, 60)
    hm = peak_map(shape, 30, 30)
    assert pointing_hit(hm, point_mask(shape, 30 + dy, 30 + dx)) is hit


def test_tolerance_parameter():
    shape = (40, 40)
    hm = peak_map(shape, 20, 20)
    gt = point_mask(shape, 20, 25)
    assert pointing_hit(hm, gt, tolerance=5)
    assert not pointing_hit(hm, gt, tolerance=4.9)
    assert not pointing_hit(hm, gt, tolerance=0)
    assert pointing_hit(hm, point_mask(shape, 23, 24), tolerance=5.0)  # 3-4-5
    with pytest.raises(ValueError):
        pointing_hit(hm, gt, tolerance=-1)


def test_agrees_with_a_distance_transform():
    rng = np.random.default_rng(3)
    for _ in range(60):
        shape = tuple(rng.integers(20, 70, 2))
        gt = rng.random(shape) < rng.choice([0.001, 0.01, 0.05])
        if not gt.any():
            continue
        hm = rng.random(shape)
        y, x = np.unravel_index(np.argmax(hm), shape)
        tol = float(rng.choice([3, 7.5, 15]))
        distance = ndimage.distance_transform_edt(~gt)[y, x]
        assert pointing_hit(hm, gt, tolerance=tol) == (distance <= tol)


def test_gt_at_the_border_and_tensors():
    shape = (32, 32)
    hm = torch.zeros(shape)
    hm[0, 0] = 2.0
    assert pointing_hit(hm, torch.from_numpy(point_mask(shape, 15, 0)))
    assert not pointing_hit(hm, point_mask(shape, 31, 31))


def test_tied_maxima():
    shape = (50, 50)
    hm = np.zeros(shape)
    hm[5, 5] = 1.0  # first in raster order, far from the object
    hm[40, 40] = 1.0  # on the object
    gt = point_mask(shape, 42, 42)
    assert pointing_hit(hm, gt, ties="any")
    assert not pointing_hit(hm, gt, ties="first")
    ys, xs = max_locations(hm)
    assert list(zip(ys, xs)) == [(5, 5), (40, 40)]
    assert list(zip(*max_locations(hm, ties="first"))) == [(5, 5)]
    with pytest.raises(ValueError):
        pointing_hit(hm, gt, ties="last")


def test_constant_maps_and_empty_masks_miss():
    shape = (20, 20)
    everywhere = np.ones(shape, bool)
    assert not pointing_hit(np.zeros(shape), everywhere)  # no maximum to point with
    assert not pointing_hit(np.full(shape, 0.7), everywhere)  # every pixel is "the maximum"
    assert max_locations(np.zeros(shape))[0].size == 0
    assert not pointing_hit(peak_map(shape, 3, 3), np.zeros(shape, bool))  # class absent
    with pytest.raises(ValueError):
        pointing_hit(np.zeros(shape), np.zeros((10, 10), bool))


# ---------------------------------------------------------------- the game


def test_trial_from_map():
    shape = (30, 30)
    hm = 3.0 * peak_map(shape, 10, 10)
    t = PointingTrial.from_map(hm, point_mask(shape, 12, 12))
    assert (t.present, t.hit, t.evidence) == (True, True, 3.0)
    t = PointingTrial.from_map(hm, point_mask(shape, 29, 29), evidence=0.2)
    assert (t.present, t.hit, t.evidence) == (True, False, 0.2)
    for absent in (None, np.zeros(shape, bool)):
        t = PointingTrial.from_map(hm, absent)
        assert (t.present, t.hit) == (False, False)
    with pytest.raises(ValueError):
        PointingTrial(present=False, hit=True, evidence=1.0)


def test_standard_game_counts_present_classes_only():
    trials = [
        PointingTrial(True, True, 0.9),
        PointingTrial(True, False, 0.8),
        PointingTrial(True, True, 0.1),
        PointingTrial(False, False, 0.5),
    ]
    result = pointing_game(trials)
    assert (result.accuracy, result.hits, result.misses, result.n) == (2 / 3, 2, 1, 3)
    with pytest.raises(ValueError):
        pointing_game([PointingTrial(False, False, 0.1)])


def test_game_with_rejection():
    trials = [
        PointingTrial(True, True, 0.9),  # accepted hit
        PointingTrial(True, True, 0.2),  # rejected although it hit: miss
        PointingTrial(True, False, 0.8),  # accepted, pointed wrong: miss
        PointingTrial(False, False, 0.1),  # absent and rejected: correct rejection
        PointingTrial(False, False, 0.7),  # absent but accepted: miss
    ]
    result = pointing_game(trials, threshold=0.5)
    assert (result.hits, result.correct_rejections, result.misses, result.n) == (1, 1, 3, 5)
    assert result.accuracy == pytest.approx(0.4)
    # evidence equal to the threshold is accepted
    assert pointing_game([PointingTrial(True, True, 0.5)], threshold=0.5).hits == 1
    with pytest.raises(ValueError):
        pointing_game([PointingTrial(True, True)], threshold=0.5)  # no evidence


def test_choose_rejection_threshold_is_optimal():
    trials = [
        PointingTrial(True, True, 0.9),
        PointingTrial(True, True, 0.6),
        PointingTrial(False, False, 0.4),
        PointingTrial(False, False, 0.3),
        PointingTrial(True, True, 0.2),
        PointingTrial(False, False, 0.1),
    ]
    thr = choose_rejection_threshold(trials)
    # Best: reject 0.3 and 0.4 (and 0.2, 0.1): split between 0.4 and 0.6 -> 5 / 6 correct.
    assert thr == pytest.approx(0.5)
    assert pointing_game(trials, thr).accuracy == pytest.approx(5 / 6)
    # Brute force over many random sets: nothing beats the chosen threshold.
    rng = np.random.default_rng(7)
    for _ in range(40):
        n = int(rng.integers(1, 30))
        ev = np.round(rng.random(n), 1)  # repeated values on purpose
        present = rng.random(n) < 0.5
        hit = present & (rng.random(n) < 0.7)
        ts = [PointingTrial(bool(p), bool(h), float(e)) for p, h, e in zip(present, hit, ev)]
        best = pointing_game(ts, choose_rejection_threshold(ts)).accuracy
        for cand in [-math.inf, math.inf, *np.linspace(-0.05, 1.05, 45)]:
            assert pointing_game(ts, float(cand)).accuracy <= best + 1e-12


def test_threshold_extremes_and_ties():
    # Only absent classes: rejecting everything is best.
    assert choose_rejection_threshold([PointingTrial(False, False, 0.3)]) == math.inf
    # Only hits: rejecting nothing is best.
    assert choose_rejection_threshold([PointingTrial(True, True, 0.3)]) == -math.inf
    # A tie between splits goes to the lowest threshold.
    ts = [PointingTrial(True, True, 0.2), PointingTrial(False, False, 0.8)]
    assert choose_rejection_threshold(ts) == -math.inf
    with pytest.raises(ValueError):
        choose_rejection_threshold([])


def test_held_out_fraction_must_lie_strictly_between_0_and_1():
    from camlens.evaluate.tasks.pointing import held_out_positions

    assert held_out_positions(4, 0.5) == {1, 3}
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="held_out must be a fraction in"):
            held_out_positions(4, bad)


def test_summary_counts_held_out_images_and_names_a_missing_held_out_set():
    from camlens.evaluate.tasks.pointing import PointingRow, summarize

    def image(split, hit):
        return [PointingRow(split=split, class_index=0, rank=1, in_topk=True, is_gt=True,
                            present=True, hit=hit, evidence=1.0)]

    images = [image("held_out", True), image("held_out", False), image("test", True)]
    s = summarize(images, top_k=1, tolerance=15, method="gradcam")
    assert (s.n_held_out, s.n_images, s.trials) == (2, 1, 1)
    test = [PointingTrial(present=True, hit=True, evidence=1.0)]
    assert s.threshold == choose_rejection_threshold(
        [PointingTrial(present=True, hit=h, evidence=1.0) for h in (True, False)])
    assert s.accuracy_rejection == pointing_game(test, s.threshold).accuracy
    assert s.accuracy_topk == s.accuracy == 1.0
    with pytest.raises(ValueError) as err:
        summarize([image("test", True)], top_k=1, tolerance=15)
    assert str(err.value) == "no held-out trials to choose the rejection threshold on"
