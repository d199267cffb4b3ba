"""Faithfulness (Sec. 5.3): rank correlation; region ratio; map resizing."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from camlens.evaluate import (
    inside_outside_ratio,
    rank_correlation,
    rankdata,
    resize_map,
)


def test_rankdata_averages_ties():
    np.testing.assert_array_equal(rankdata([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (7, 9))
    np.testing.assert_allclose(rankdata(x), stats.rankdata(x.ravel()))


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(30):
        shape = tuple(rng.integers(2, 20, 2))
        a = rng.integers(0, 4, shape).astype(float)  # many ties
        b = a + rng.integers(0, 3, shape)
        expected = stats.spearmanr(a.ravel(), b.ravel()).statistic
        assert rank_correlation(a, b) == pytest.approx(expected, abs=1e-12)
        c = rng.random(shape)
        assert rank_correlation(c, torch.from_numpy(a)) == pytest.approx(
            stats.spearmanr(c.ravel(), a.ravel()).statistic, abs=1e-12
        )


def test_spearman_known_values():
    x = np.arange(12.0).reshape(3, 4)
    assert rank_correlation(x, x**3) == pytest.approx(1.0)  # monotone: 1
    assert rank_correlation(x, -x) == pytest.approx(-1.0)


def test_spearman_constant_and_shape_errors():
    x = np.arange(12.0).reshape(3, 4)
    assert math.isnan(rank_correlation(np.ones((3, 4)), x))
    with pytest.raises(ValueError, match="resize"):
        rank_correlation(x, np.ones((6, 8)))
    with pytest.raises(ValueError):
        rank_correlation(np.array([[np.nan, 1.0]]), np.array([[0.0, 1.0]]))


def test_resize_map_matches_torch_bilinear():
    rng = np.random.default_rng(2)
    for src, dst in [((7, 7), (224, 224)), ((14, 10), (5, 33)), ((3, 4), (3, 4)), ((1, 5), (4, 9))]:
        x = rng.random(src)
        ref = F.interpolate(
            torch.from_numpy(x)[None, None], size=dst, mode="bilinear", align_corners=False
        )
        np.testing.assert_allclose(resize_map(x, dst), ref[0, 0].numpy(), atol=1e-12)
    a = resize_map(rng.random((7, 7)), (28, 28))
    assert rank_correlation(a, resize_map(a, (28, 28))) == pytest.approx(1.0)


def test_inside_outside_ratio():
    hm = np.zeros((10, 10))
    hm[2:4, 2:4] = 4.0
    hm[8, 8] = 2.0
    # inside box (2, 2, 3, 3): mean 4; outside: 2 / 96
    assert inside_outside_ratio(hm, (2, 2, 3, 3)) == pytest.approx(4.0 / (2.0 / 96))
    mask = np.zeros((10, 10), bool)
    mask[8, 8] = True
    assert inside_outside_ratio(hm, mask) == pytest.approx(2.0 / (16.0 / 99))
    # outside mean zero: inf; both zero: nan
    only = np.zeros((10, 10))
    only[0, 0] = 1.0
    assert inside_outside_ratio(only, (0, 0, 1, 1)) == math.inf
    assert math.isnan(inside_outside_ratio(np.zeros((10, 10)), (0, 0, 1, 1)))
    # box clipped to the map
    assert inside_outside_ratio(only, (-5, -5, 0, 0)) == math.inf
    with pytest.raises(ValueError):
        inside_outside_ratio(hm, (20, 20, 30, 30))  # empty inside
    with pytest.raises(ValueError):
        inside_outside_ratio(hm, np.ones((10, 10), bool))  # nothing outside
    with pytest.raises(ValueError):
        inside_outside_ratio(hm, np.ones((5, 5), bool))


def test_missing_scipy_says_how_to_install(monkeypatch):
    import sys

    from camlens.evaluate import connected_components

    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    monkeypatch.setitem(sys.modules, "scipy.ndimage", None)
    with pytest.raises(ImportError, match=r"rank correlation .* pip install camlens\[eval\]"):
        rank_correlation(np.arange(4.0), np.arange(4.0)[::-1])
    with pytest.raises(ImportError, match=r"connected components .* pip install camlens\[eval\]"):
        connected_components(np.ones((2, 2), bool))
