"""Sec. 8's measurements (word pointing, region ratio, answer-map rank correlations, mean +-
standard error) and world v2's word-to-category map, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from camlens.evaluate import (
    inside_outside_ratio,
    mask_rank_correlation,
    mean_sem,
    rank_correlation,
    word_pointing_hit,
)
from camlens.synthetic.v2 import CLASSES, make_dataset
from camlens.synthetic.v2.words import WORD_CATEGORIES, named_classes, tokenize, visual_words


def square(y0: int, x0: int, size: int = 3, shape: tuple[int, int] = (10, 10)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


OBJECTS = [("tabby", square(0, 0)), ("beagle", square(6, 6)), ("tabby", square(6, 0))]


def test_word_pointing_by_hand() -> None:
    hm = np.zeros((10, 10))
    hm[7, 1] = 1.0  # inside the second tabby
    assert word_pointing_hit(hm, {"tabby"}, OBJECTS) is True
    assert word_pointing_hit(hm, {"beagle"}, OBJECTS) is False
    assert word_pointing_hit(hm, {"boxer"}, OBJECTS) is None  # no boxer to point at: not scored
    assert word_pointing_hit(hm, {"beagle"}, OBJECTS, tolerance=5) is True  # (7, 1) to (7, 6)
    assert word_pointing_hit(np.ones((10, 10)), {"tabby"}, OBJECTS) is False  # points nowhere


def test_word_pointing_tolerance_is_euclidean() -> None:
    hm = np.zeros((10, 10))
    hm[4, 4] = 1.0  # the beagle's nearest pixel (6, 6) is sqrt(8) = 2.83 away
    assert word_pointing_hit(hm, {"beagle"}, OBJECTS, tolerance=2.8) is False
    assert word_pointing_hit(hm, {"beagle"}, OBJECTS, tolerance=2.83) is True


def test_region_ratio_uniform_map_is_one_and_a_hand_case() -> None:
    box = (2, 2, 5, 5)  # inclusive: 16 pixels inside, 84 outside
    assert inside_outside_ratio(np.full((10, 10), 0.3), box) == pytest.approx(1.0)
    hm = np.ones((10, 10))
    hm[2:6, 2:6] = 4.0
    assert inside_outside_ratio(hm, box) == pytest.approx(4.0)


def test_answer_map_rank_correlations_by_hand() -> None:
    # 2 x 2 map [[3, 1], [2, 0]] against the mask [[1, 0], [1, 0]]: ranks (4, 2, 3, 1) and
    # (3.5, 1.5, 3.5, 1.5); Pearson of the ranks = 4 / sqrt(5 * 4) = 0.894
    hm = np.array([[3.0, 1.0], [2.0, 0.0]])
    objects = [("mug", np.array([[True, False], [True, False]]))]
    assert mask_rank_correlation(hm, {"mug"}, objects) == pytest.approx(4 / math.sqrt(20))
    assert rank_correlation(hm, np.array([[0.9, 0.1], [0.5, 0.0]])) == pytest.approx(1.0)
    assert math.isnan(mask_rank_correlation(np.ones((2, 2)), {"mug"}, objects))
    with pytest.raises(ValueError, match="cover none"):
        mask_rank_correlation(hm, {"teapot"}, objects)


def test_mean_sem_by_hand() -> None:
    s = mean_sem([1.0, 2.0, 3.0, 6.0, None, float("nan")])
    # mean 3, sample sd sqrt(((4 + 1 + 0 + 9) / 3)) = sqrt(14 / 3), sem = that / 2
    assert (s.mean, s.n, s.skipped) == (3.0, 4, 2)
    assert s.sem == pytest.approx(math.sqrt(14 / 3) / 2)
    lo, hi = s.ci95
    assert hi - lo == pytest.approx(2 * 1.96 * s.sem)
    hits = mean_sem([True, False, True, True, None])  # accuracy 0.75 of 4 scored words
    assert (hits.mean, hits.n, hits.skipped) == (0.75, 4, 1)
    assert hits.sem == pytest.approx(0.5 / 2)
    assert math.isnan(mean_sem([2.0]).sem) and mean_sem([2.0]).mean == 2.0
    assert math.isnan(mean_sem([]).mean)


def test_word_map_covers_every_class_and_prefers_the_longest_phrase() -> None:
    assert all(WORD_CATEGORIES[tuple(c.split())] == {c} for c in CLASSES)
    words = tokenize("A large green wine bottle next to a small ginger tiger cat.")
    found = {(words[p], frozenset(c)) for p, c in visual_words(words)}
    assert found == {("wine", frozenset({"wine bottle"})), ("bottle", frozenset({"wine bottle"})),
                     ("tiger", frozenset({"tiger cat"})), ("cat", frozenset({"tiger cat"}))}
    assert named_classes("Is there a bottle?") == {"wine bottle", "beer bottle", "water bottle"}
    assert named_classes("How many household items are there?") == named_classes(
        "crockery bottle")
    assert named_classes("How many objects are there?") == set(CLASSES)
    assert named_classes("What colour is it?") == frozenset()


def test_every_generated_caption_names_its_objects() -> None:
    """World v2's captions name each of their objects by class: the word map finds them all."""
    for scene in make_dataset(12, seed=5, kind="pair"):
        graph = scene.graph()
        named = named_classes(graph.caption())
        assert named == {o.cls for o in graph.objects}, graph.caption()
