"""The synthetic world's ground truth is exact and the shipped nets keep their accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camlens.synthetic import (
    CLASSES,
    DEFAULT_LAYERS,
    HELDOUT_SEED,
    LAST_CONV,
    NETS,
    NUM_CLASSES,
    load_pretrained,
    load_synthetic,
    make_dataset,
    make_scene,
    recorded_accuracy,
    rle_decode,
    rle_encode,
    save_dataset,
    to_tensors,
)

FLAT = (1, 2, 3)  # no object tone can be this dark (tones are clipped to [0.05, 0.95])


def _same(a, b) -> bool:
    return (
        np.array_equal(a.image, b.image)
        and len(a.objects) == len(b.objects)
        and all(
            o.label == p.label and o.box == p.box and np.array_equal(o.mask, p.mask)
            for o, p in zip(a.objects, b.objects)
        )
    )


def test_determinism_per_seed():
    a, b, c = make_dataset(20, seed=7), make_dataset(20, seed=7), make_dataset(20, seed=8)
    assert all(_same(x, y) for x, y in zip(a, b))
    assert not any(np.array_equal(x.image, y.image) for x, y in zip(a, c))
    # scene i does not depend on n: a smaller set is a prefix of a larger one
    assert all(_same(x, y) for x, y in zip(make_dataset(5, seed=7), a))


def test_scene_format_and_counts():
    scenes = make_dataset(60, seed=3)
    counts = set()
    for s in scenes:
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert 1 <= len(s.objects) <= 3
        counts.add(len(s.objects))
        labels = [o.label for o in s.objects]
        assert len(set(labels)) == len(labels)  # distinct classes by default
        for o in s.objects:
            assert 0 <= o.label < NUM_CLASSES and o.mask.shape == (64, 64) and o.mask.dtype == bool
    assert counts == {1, 2, 3}
    assert make_scene(np.random.default_rng(0), size=96, n_objects=2).image.shape == (96, 96, 3)
    x, y = to_tensors(scenes)
    assert x.shape == (60, 3, 64, 64) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y.shape == (60, NUM_CLASSES)
    assert torch.equal(y.sum(1), torch.tensor([float(len(s.labels)) for s in scenes]))
    assert torch.equal(x[0].permute(1, 2, 0), torch.from_numpy(scenes[0].image).float() / 255)


@pytest.mark.parametrize("seed", range(40))
def test_masks_are_exactly_the_object_pixels(seed):
    kw = dict(size=64, n_objects=(1, 3))
    clutter = make_scene(np.random.default_rng(seed), **kw)
    flat = make_scene(np.random.default_rng(seed), background=FLAT, **kw)
    ids = make_scene(np.random.default_rng(seed), background=FLAT, object_fill="index", **kw)
    # the layout does not depend on the background or the fill
    for a, b in ((clutter, flat), (clutter, ids)):
        assert [(o.label, o.box) for o in a.objects] == [(o.label, o.box) for o in b.objects]
        assert all(np.array_equal(o.mask, p.mask) for o, p in zip(a.objects, b.objects))
    # on a flat background, the union of masks is exactly the non-background pixels
    not_bg = (flat.image != np.array(FLAT, np.uint8)).any(-1)
    union = np.zeros_like(not_bg)
    for o in flat.objects:
        assert not (union & o.mask).any()  # visible masks are disjoint
        union |= o.mask
    assert np.array_equal(union, not_bg)
    # with object i painted a colour unique to i, mask i is exactly the pixels of that colour
    # (so occlusion by later objects is accounted for)
    for i, o in enumerate(ids.objects):
        colour = np.round(np.array([(16 + 9 * i) % 256, 200, 90])).astype(np.uint8)
        assert np.array_equal(o.mask, (ids.image == colour).all(-1))
        assert o.mask.any()
    # a textured object's pixels keep its own colours wherever it is visible
    for o in flat.objects:
        assert np.array_equal(flat.image[o.mask], clutter.image[o.mask])


def test_boxes_are_the_mask_extents():
    for s in make_dataset(50, seed=11):
        for o in s.objects:
            rows, cols = np.nonzero(o.mask)
            assert o.box == (cols.min(), rows.min(), cols.max(), rows.max())
            x0, y0, x1, y1 = o.box
            outside = o.mask.copy()
            outside[y0 : y1 + 1, x0 : x1 + 1] = False
            assert not outside.any()


def test_occlusion_is_limited():
    for s in make_dataset(50, seed=5, n_objects=3):
        for o in s.objects:
            assert o.area >= 40  # every object stays clearly visible


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    for m in (rng.random((7, 5)) > 0.5, np.ones((4, 3), bool), np.zeros((3, 4), bool)):
        assert np.array_equal(rle_decode(rle_encode(m)), m)
    # COCO convention: column-major, first run counts zeros
    m = np.array([[1, 0], [1, 1]], bool)  # column-major runs: 0 zeros, 2 ones, 1 zero, 1 one
    assert np.array_equal(rle_decode({"size": [2, 2], "counts": [0, 2, 1, 1]}), m)
    assert np.array_equal(rle_decode(rle_encode(m)), m)  # the compressed string form


def test_save_load_round_trip(tmp_path):
    scenes = make_dataset(6, seed=2)
    save_dataset(scenes, tmp_path)
    assert (tmp_path / "annotations.json").is_file()
    assert len(list((tmp_path / "images").glob("*.png"))) == 6
    back = load_synthetic(tmp_path)
    assert len(back) == 6 and all(_same(a, b) for a, b in zip(scenes, back))


def test_nets_layout():
    for name, cls in NETS.items():
        net = cls()
        modules = dict(net.named_modules())
        assert isinstance(modules[LAST_CONV[name]], torch.nn.Conv2d)
        assert isinstance(modules[DEFAULT_LAYERS[name]], torch.nn.ReLU)
        convs = [n for n, m in modules.items() if isinstance(m, torch.nn.Conv2d)]
        assert convs[-1] == LAST_CONV[name]
        assert net(torch.zeros(2, 3, 64, 64)).shape == (2, len(CLASSES))
    gap = NETS["gapnet"]()
    assert (
        isinstance(gap.fc, torch.nn.Linear) and gap.fc.in_features == gap.features[12].out_channels
    )


# Held-out check of the shipped weights. The recorded accuracy is on the first 1000 scenes of
# seed 12345; re-evaluating all 1000 takes too long here, so we use the first 300 of that same
# set. A 300-scene subset's top-1 accuracy differs from the 1000-scene figure by sampling alone:
# at the required >= 95 % the binomial standard error of a 300-scene mean is at most 1.3 points,
# so 2 points tolerates the subset (the recorded figure is 100 %, where the subset cannot be
# lower unless the net or the generator changed), plus float differences across CPUs / BLAS
# builds that can flip near-tie scores, while a degraded net or a changed generator still fails.
TOLERANCE = 0.02


@pytest.fixture(scope="module")
def heldout():
    return make_dataset(300, seed=HELDOUT_SEED)


@pytest.mark.parametrize("name", sorted(NETS))
def test_shipped_nets_keep_recorded_accuracy(name, heldout):
    from camlens.synthetic.train import evaluate

    record = recorded_accuracy()
    assert record["heldout"]["seed"] == HELDOUT_SEED
    recorded = record["nets"][name]["top1"]
    assert recorded >= 0.95
    model = load_pretrained(name)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    res = evaluate(model, heldout)
    assert res["top1"] >= recorded - TOLERANCE, (name, res["top1"], recorded)
    assert res["mAP"] >= record["nets"][name]["mAP"] - TOLERANCE, (name, res["mAP"])


def test_load_pretrained_rejects_unknown_name():
    with pytest.raises(KeyError):
        load_pretrained("resnet")
