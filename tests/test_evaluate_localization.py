"""Weakly-supervised localisation (Sec. 4.1): components, boxes, IoU, top-k error."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from camlens.evaluate import (
    ImageLocalization,
    bbox_from_map,
    box_to_mask,
    connected_components,
    iou,
    largest_component,
    localization_error,
    localization_table,
    mask_to_box,
)


def gaussian(shape, cy, cx, sigma, peak=1.0):
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    return peak * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2.0 * sigma**2))


# ---------------------------------------------------------------- connected components


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("density", [0.2, 0.45, 0.6, 0.8])
def test_connected_components_match_scipy(connectivity, density):
    rng = np.random.default_rng(int(density * 100) + connectivity)
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    for shape in [(1, 1), (1, 17), (13, 1), (37, 53), (64, 64)]:
        mask = rng.random(shape) < density
        labels, n = connected_components(mask, connectivity)
        ref, n_ref = ndimage.label(mask, structure)
        assert n == n_ref
        # Same numbering too: raster order of each segment's first pixel.
        np.testing.assert_array_equal(labels, ref)


def test_connected_components_empty_and_full():
    labels, n = connected_components(np.zeros((5, 7), bool))
    assert n == 0 and labels.shape == (5, 7) and not labels.any()
    labels, n = connected_components(np.ones((5, 7), bool), 4)
    assert n == 1 and (labels == 1).all()


def test_connected_components_serpentine_is_one_segment():
    # A long snake: the worst case for naive label propagation.
    m = np.zeros((41, 41), bool)
    m[::2, :] = True
    for r in range(1, 41, 2):
        m[r, 40 if (r // 2) % 2 == 0 else 0] = True
    assert connected_components(m, 4)[1] == 1


def test_four_versus_eight_connectivity_on_a_diagonal():
    m = np.eye(5, dtype=bool)
    assert connected_components(m, 8)[1] == 1
    assert connected_components(m, 4)[1] == 5


def test_connectivity_is_validated():
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(np.ones((2, 2)), 6)


def test_largest_component_and_ties():
    m = np.zeros((10, 10), bool)
    m[0:2, 0:2] = True  # 4 pixels, first in raster order
    m[6:8, 6:8] = True  # 4 pixels
    m[0, 6:9] = True  # 3 pixels
    first = largest_component(m)
    assert first.sum() == 4 and first[0, 0]
    priority = np.zeros((10, 10))
    priority[7, 7] = 1.0
    assert largest_component(m, priority=priority)[7, 7]
    assert not largest_component(np.zeros((3, 3), bool)).any()


# ---------------------------------------------------------------- boxes


def test_mask_box_round_trip_inclusive():
    m = box_to_mask((2, 3, 5, 4), (8, 9))
    assert m.sum() == (5 - 2 + 1) * (4 - 3 + 1)
    assert mask_to_box(m) == (2, 3, 5, 4)
    assert mask_to_box(np.zeros((3, 3))) is None
    # clipped to the image
    assert box_to_mask((-5, -5, 100, 1), (4, 4)).sum() == 8


def test_gaussian_blob_box_is_analytic():
    # exp(-d^2 / 2 sigma^2) >= 0.15 <=> d <= r = sigma * sqrt(2 ln(1 / 0.15)).
    sigma, cy, cx = 10.0, 50, 70
    r = sigma * math.sqrt(2 * math.log(1 / 0.15))  # 19.48...: far from an integer
    hm = gaussian((100, 140), cy, cx, sigma)
    half = math.floor(r)
    assert bbox_from_map(hm) == (cx - half, cy - half, cx + half, cy + half)
    # Another threshold, and a blob cut by the border.
    r50 = sigma * math.sqrt(2 * math.log(2))  # 11.77
    assert math.floor(r50) == 11
    assert bbox_from_map(hm, threshold=0.5) == (cx - 11, cy - 11, cx + 11, cy + 11)
    edge = gaussian((60, 60), 5, 58, sigma)
    assert bbox_from_map(edge) == (58 - half, 0, 59, 5 + half)


def test_box_accepts_tensors_and_any_scale():
    hm = gaussian((64, 64), 30, 20, 6.0)
    box = bbox_from_map(hm)
    assert bbox_from_map(torch.from_numpy(hm).float()) == box
    assert bbox_from_map(hm * 1e-3) == box


def test_larger_segment_wins_over_higher_peak():
    small = gaussian((128, 160), 30, 30, 3.0, peak=1.0)
    large = gaussian((128, 160), 70, 110, 12.0, peak=0.9)
    hm = small + large
    # Threshold 0.15 * 1.0 on the large blob: d^2 <= 2 * 144 * ln(0.9 / 0.15) = 516.0 -> |d| <= 22.
    assert bbox_from_map(hm) == (110 - 22, 70 - 22, 110 + 22, 70 + 22)


def test_equal_segments_tie_goes_to_the_maximum_then_raster_order():
    hm = np.zeros((20, 20))
    hm[2:5, 2:5] = 0.5
    hm[12:15, 12:15] = 0.5
    hm[13, 13] = 1.0  # same size, this one holds the maximum
    assert bbox_from_map(hm) == (12, 12, 14, 14)
    hm[13, 13] = 0.5
    assert bbox_from_map(hm) == (2, 2, 4, 4)


def test_connectivity_changes_the_box():
    hm = np.zeros((12, 12))
    for i, v in enumerate([0.5, 0.6, 1.0, 0.7, 0.5]):
        hm[i, i] = v  # a diagonal of 5 pixels
    hm[9, 3:5] = 0.4  # a horizontal pair
    assert bbox_from_map(hm, connectivity=8) == (0, 0, 4, 4)
    assert bbox_from_map(hm, connectivity=4) == (3, 9, 4, 9)


def test_no_box_for_empty_maps():
    assert bbox_from_map(np.zeros((8, 8))) is None
    assert bbox_from_map(-np.ones((8, 8))) is None
    with pytest.raises(ValueError):
        bbox_from_map(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError):
        bbox_from_map(np.full((4, 4), np.nan))
    with pytest.raises(ValueError):
        bbox_from_map(np.ones((4, 4)), threshold=1.5)


def test_threshold_relative_to_the_range():
    # A bump of 1.0 on a floor of -1.0. Of the maximum: cut 0.15, only the bump's core.
    # Of the range: cut -1 + 0.15 * 2 = -0.7, so the -0.6 shoulder joins the segment.
    hm = np.full((10, 12), -1.0)
    hm[3:8, 2:9] = -0.6  # shoulder, x 2..8, y 3..7
    hm[4:7, 4:7] = 1.0   # bump, x 4..6, y 4..6
    assert bbox_from_map(hm) == (4, 4, 6, 6)
    assert bbox_from_map(hm, relative_to="range") == (2, 3, 8, 7)
    # A non-negative map with minimum 0 gives the same box both ways.
    blob = gaussian((40, 40), 20, 20, 5.0)
    blob -= blob.min()
    assert bbox_from_map(blob, relative_to="range") == bbox_from_map(blob)
    # All negative: nothing of the maximum; of the range, the top of the map still stands out.
    assert bbox_from_map(hm - 5) is None
    assert bbox_from_map(hm - 5, relative_to="range") == (2, 3, 8, 7)
    assert bbox_from_map(np.full((4, 4), -2.0), relative_to="range") is None
    with pytest.raises(ValueError, match="'max', 'range'"):
        bbox_from_map(hm, relative_to="min")


# ---------------------------------------------------------------- IoU


def test_iou_inclusive_convention():
    assert iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert iou((0, 0, 9, 9), (20, 20, 29, 29)) == 0.0
    assert iou((0, 0, 9, 9), (10, 0, 19, 9)) == 0.0  # adjacent: no shared pixel
    # 10x10 boxes sharing a 5x5 corner: 25 / (100 + 100 - 25)
    assert iou((0, 0, 9, 9), (5, 5, 14, 14)) == pytest.approx(1 / 7)
    # sharing one column of 10 pixels
    assert iou((0, 0, 9, 9), (9, 0, 18, 9)) == pytest.approx(10 / 190)
    # a single pixel is a 1x1 box
    assert iou((3, 3, 3, 3), (3, 3, 3, 3)) == 1.0
    with pytest.raises(ValueError):
        iou((5, 0, 4, 9), (0, 0, 9, 9))


def test_iou_agrees_with_pixel_masks():
    rng = np.random.default_rng(1)
    for _ in range(50):
        a = tuple(sorted(rng.integers(0, 30, 2)))
        b = tuple(sorted(rng.integers(0, 30, 2)))
        c = tuple(sorted(rng.integers(0, 30, 2)))
        d = tuple(sorted(rng.integers(0, 30, 2)))
        box1 = (a[0], b[0], a[1], b[1])
        box2 = (c[0], d[0], c[1], d[1])
        m1, m2 = box_to_mask(box1, (30, 30)), box_to_mask(box2, (30, 30))
        assert iou(box1, box2) == pytest.approx((m1 & m2).sum() / (m1 | m2).sum())


# ---------------------------------------------------------------- top-k error


def test_localization_error_top1_top5():
    gt = [(7, (10, 10, 49, 49))]
    good, bad = (12, 12, 50, 50), (60, 60, 90, 90)
    records = [
        # right class first, good box: correct for k=1 and k=5
        ImageLocalization([7, 1, 2, 3, 4], [good, bad, bad, bad, bad], gt),
        # right class first, bad box: classification ok, localisation wrong
        ImageLocalization([7, 1, 2, 3, 4], [bad, bad, bad, bad, bad], gt),
        # right class third with a good box: top-5 only
        ImageLocalization([1, 2, 7, 3, 4], [good, good, good, bad, bad], gt),
        # never predicted: wrong class with a good box does not count
        ImageLocalization([1, 2, 3, 4, 5], [good] * 5, gt),
    ]
    top1 = localization_error(records, k=1)
    assert (top1.loc_error, top1.cls_error, top1.n) == (0.75, 0.5, 4)
    assert top1.loc_correct == (True, False, False, False)
    top5 = localization_error(records, k=5)
    assert (top5.loc_error, top5.cls_error) == (0.5, 0.25)
    table = localization_table(records)
    assert table[1] == top1 and table[5] == top5


def test_localization_needs_the_box_of_the_predicted_class():
    # Two ground-truth objects: a good box for class 2 does not localise class 1.
    rec = ImageLocalization([1], [(0, 0, 9, 9)], [(1, (50, 50, 60, 60)), (2, (0, 0, 9, 9))])
    assert localization_error([rec]).loc_error == 1.0
    # Any of several boxes of the class may be matched; IoU exactly 0.5 counts.
    rec = ImageLocalization([1], [(0, 0, 9, 9)], [(1, (50, 50, 60, 60)), (1, (0, 0, 9, 19))])
    assert iou((0, 0, 9, 9), (0, 0, 9, 19)) == 0.5
    assert localization_error([rec]).loc_error == 0.0
    # A missing box (None) never localises.
    rec = ImageLocalization([1], [None], [(1, (0, 0, 9, 9))])
    result = localization_error([rec])
    assert (result.loc_error, result.cls_error) == (1.0, 0.0)


def test_localization_records_are_validated():
    with pytest.raises(ValueError):
        ImageLocalization([1, 2], [None], [(1, (0, 0, 1, 1))])
    with pytest.raises(ValueError):
        ImageLocalization([1], [None], [])
    with pytest.raises(ValueError):
        localization_error([])
    with pytest.raises(ValueError):
        localization_error([ImageLocalization([1], [None], [(1, (0, 0, 1, 1))])], k=0)
