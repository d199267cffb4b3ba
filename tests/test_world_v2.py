"""World v2: deterministic scenes, exact masks and concepts, ILSVRC-like scales, the bias cue,
scene graphs with captions and questions, COCO files."""

from __future__ import annotations

import numpy as np
import pytest

from camlens.evaluate.datasets import load_dataset
from camlens.synthetic.v2 import (
    CLASS_SPECS,
    CLASSES,
    COLOURS,
    CUE_CHANCE,
    CUE_COLOURS,
    GROUPS,
    PARTS,
    QA,
    SCALE_TARGETS,
    SHAPES,
    TEXTURES,
    ObjectNode,
    SceneGraph,
    class_cue,
    load_coco,
    make_dataset,
    make_scene,
    save_coco,
)
from camlens.synthetic.v2.graph import relations
from camlens.synthetic.v2.primitives import capsule, ellipse, extent, inside, poly, rect, ring
from camlens.synthetic.v2.render import blur, decoy, place, rasterise, sample_object

FLAT = (1, 2, 3)  # darker than any object tone (tones are clipped to [0.02, 0.98])
KINDS = ("single", "multi", "two", "pair")


def _same(a, b) -> bool:
    return (
        np.array_equal(a.image, b.image)
        and a.background == b.background
        and all(np.array_equal(a.concepts[k], b.concepts[k]) for k in a.concepts)
        and len(a.objects) == len(b.objects)
        and all(o.label == p.label and o.box == p.box and np.array_equal(o.mask, p.mask)
                and o.parts == p.parts and o.pose == p.pose for o, p in zip(a.objects, b.objects))
    )


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_pixels_masks_and_concepts(kind):
    a, b = make_dataset(6, seed=3, kind=kind), make_dataset(6, seed=3, kind=kind)
    assert all(_same(x, y) for x, y in zip(a, b))
    assert all(x.graph().to_dict() == y.graph().to_dict() for x, y in zip(a, b))
    other = make_dataset(6, seed=4, kind=kind)
    assert not any(np.array_equal(x.image, y.image) for x, y in zip(a, other))
    # scene i depends on neither n nor start
    assert all(_same(x, y) for x, y in zip(make_dataset(3, seed=3, start=3, kind=kind), a[3:]))


def test_scene_kinds_have_their_object_counts():
    counts = {k: [len(s.objects) for s in make_dataset(25, seed=11, kind=k)] for k in KINDS}
    assert set(counts["single"]) == {1}
    assert set(counts["two"]) == {2} and set(counts["pair"]) == {2}
    assert set(counts["multi"]) <= {1, 2, 3, 4} and np.mean(counts["multi"]) > 2.4
    for s in make_dataset(25, seed=11, kind="two"):
        assert len(s.labels) == 2  # exactly two categories
    from camlens.synthetic.v2 import COOCCURRING

    pairs = {tuple(sorted(o.group for o in s.objects)) for s in make_dataset(25, 11, kind="pair")}
    assert pairs <= {tuple(sorted(p)) for p in COOCCURRING} and len(pairs) >= 4


@pytest.mark.parametrize("kind", KINDS)
def test_masks_exact_disjoint_parts_partition_boxes_are_extents(kind):
    for s in make_dataset(25, seed=5, kind=kind):
        obj_map, part_map = s.concepts["object"], s.concepts["part"]
        total = np.zeros(s.size, dtype=int)
        for i, o in enumerate(s.objects):
            assert o.mask.dtype == bool and o.mask.any()
            assert np.array_equal(o.mask, obj_map == i + 1)
            total += o.mask
            ys, xs = np.nonzero(o.mask)
            assert o.box == (xs.min(), ys.min(), xs.max(), ys.max())
            union = np.zeros(s.size, dtype=int)
            for name, rec in o.parts.items():
                pm = s.part_mask(i, name)
                assert pm.sum() == rec["pixels"] > 0
                union += pm
            assert union.max() == 1 and np.array_equal(union == 1, o.mask)  # a partition
        assert total.max() <= 1  # each pixel belongs to at most one object
        assert np.array_equal(part_map > 0, obj_map > 0)


def test_masks_are_exactly_the_painted_pixels_on_a_flat_background():
    for kind in KINDS:
        for s in make_dataset(15, seed=9, kind=kind, flat_background=FLAT):
            inside_any = s.concepts["object"] > 0
            flat = (s.image == np.array(FLAT, dtype=np.uint8)).all(-1)
            assert np.array_equal(flat, ~inside_any)
            for i, o in enumerate(s.objects):  # every part shows at most its two tones
                for name in o.parts:
                    tones = np.unique(s.image[s.part_mask(i, name)], axis=0)
                    assert 1 <= len(tones) <= 2


def test_decoys_resemble_other_classes_and_are_never_objects():
    # objects are laid out before the clutter is drawn: with and without decoys the same seed
    # gives the same objects, masks and parts; the decoys only change background pixels
    for i in range(12):
        a = make_scene(np.random.default_rng((4, i)), decoys=(0, 0), occluder_rate=0.0)
        b = make_scene(np.random.default_rng((4, i)), decoys=(3, 3), occluder_rate=0.0)
        assert [o.label for o in a.objects] == [o.label for o in b.objects]
        assert all(np.array_equal(o.mask, p.mask) and o.parts == p.parts
                   for o, p in zip(a.objects, b.objects))
        assert np.array_equal(a.concepts["part"], b.concepts["part"])
    rng = np.random.default_rng(0)
    pieces = [decoy(rng, 112, [0, 1, 2]) for _ in range(60)]
    kept = [p for p in pieces if p is not None]
    assert len(kept) >= 50
    for obj, win in kept:
        assert obj.label not in (0, 1, 2)  # never a class of the scene
        assert 1 <= len(np.unique(win.pid[win.pid >= 0])) <= 2  # one or two of its parts
        box = (win.pid >= 0).sum() / 112**2
        assert box <= 0.15


def test_blur_keeps_flat_images_and_mass_and_spreads_by_sigma():
    flat = np.full((20, 20, 3), 0.3)
    assert np.allclose(blur(flat, 1.0), flat)
    dot = np.zeros((41, 41, 3))
    dot[20, 20] = 1.0
    out = blur(dot, 1.2)[..., 0]
    assert out.sum() == pytest.approx(1.0, abs=1e-9)
    sd = np.sqrt((out.sum(0) * (np.arange(41) - 20) ** 2).sum())
    assert sd == pytest.approx(1.2, abs=0.05)


def test_unusual_views_turn_objects_further():
    angles = [abs(sample_object(np.random.default_rng(k), 5).angle) for k in range(200)]
    odd = [abs(sample_object(np.random.default_rng(k), 5, odd_view=1.0).angle)
           for k in range(200)]
    assert max(angles) <= 0.35 and max(odd) > 0.8 and np.mean(odd) > 2 * np.mean(angles)


def test_rasterised_mask_matches_the_analytic_extent():
    """The box of an object that the frame does not cut is its primitives' analytic extent
    (the pose transforms of ``extent`` and ``rasterise`` agree)."""
    rng = np.random.default_rng(0)
    checked = 0
    for label in range(len(CLASSES)):
        obj = sample_object(rng, label)
        place(rng, obj, 0.15, 112)
        win = rasterise(obj, 112)
        m = win.full_mask(112)
        ys, xs = np.nonzero(m)
        x0, y0, x1, y1 = obj.local_box
        s = obj.scale
        expected = (obj.cx + s * x0, obj.cy + s * y0, obj.cx + s * x1, obj.cy + s * y1)
        got = (xs.min() + 0.5, ys.min() + 0.5, xs.max() + 0.5, ys.max() + 0.5)  # pixel centres
        # every covered pixel centre lies in the analytic box; pointed tips (ears, beaks) may
        # cover no pixel centre near the extreme, so the raster box can be a little smaller
        assert got[0] >= expected[0] and got[1] >= expected[1]
        assert got[2] <= expected[2] and got[3] <= expected[3]
        assert max(abs(g - e) for g, e in zip(got, expected)) < 3.0
        # later parts cover earlier ones: the last part shows wherever its primitives are
        yy, xx = np.mgrid[win.y0 : win.y1, win.x0 : win.x1] + 0.5
        u0, v0 = (xx - obj.cx) / s, (yy - obj.cy) / s
        c, sn = np.cos(obj.angle), np.sin(obj.angle)
        u, v = c * u0 + sn * v0, -sn * u0 + c * v0
        u = -u if obj.flip else u
        last = np.zeros(u.shape, dtype=bool)
        for q in obj.parts[-1].prims:
            last |= inside(q, u, v)
        assert np.array_equal(win.pid == len(obj.parts) - 1, last) and last.any()
        checked += 1
    assert checked == 33


def test_primitives_by_hand():
    u, v = np.meshgrid(np.array([0.0, 0.9, 1.1, -1.5]), np.array([0.0, 0.5]))
    assert inside(ellipse(0, 0, 1.0, 0.5), u, v).tolist() == [[True, True, False, False],
                                                               [True, False, False, False]]
    assert inside(rect(0, 0, 1.0, 0.5), u, v).tolist() == [[True, True, False, False],
                                                            [True, True, False, False]]
    tri = poly(0, -1, 2, 1, -2, 1)  # apex up, base at v=1: half-width 1 at v=0, 1.5 at v=0.5
    assert inside(tri, u, v).tolist() == [[True, True, False, False], [True, True, True, True]]
    assert inside(poly(-2, 1, 2, 1, 0, -1), u, v).tolist() == inside(tri, u, v).tolist()
    assert inside(capsule(-1, 0, 1, 0, 0.2), u, v)[0].tolist() == [True, True, True, False]
    assert inside(ring(0, 0, 1.2, 1.0), u, v)[0].tolist() == [False, False, True, False]
    # a 90-degree turn maps the ellipse's x-extent onto y; mirroring negates x
    assert np.allclose(extent(ellipse(0.5, 0, 1.0, 0.25), np.pi / 2), (-0.25, -0.5, 0.25, 1.5))
    assert np.allclose(extent(ellipse(0.5, 0, 1.0, 0.25), 0.0, flip=True), (-1.5, -0.25, 0.5, 0.25))
    # turned and mirrored ellipses and rectangles against their boundary points, mapped as a
    # pose maps them (mirror u, then rotate)
    s = np.linspace(0, 2 * np.pi, 20001)
    for kind, th, angle, flip in (("ellipse", 0.3, 0.5, True), ("rect", 0.4, -0.7, True),
                                  ("ellipse", -0.6, 0.2, False)):
        if kind == "ellipse":
            p, bu, bv = ellipse(0.2, -0.1, 1.0, 0.3, th), np.cos(s), 0.3 * np.sin(s)
        else:
            p = rect(0.2, -0.1, 1.0, 0.3, th)
            bu, bv = np.clip(1.5 * np.cos(s), -1, 1), np.clip(1.5 * np.sin(s), -0.3, 0.3)
        x = 0.2 + bu * np.cos(th) - bv * np.sin(th)
        y = -0.1 + bu * np.sin(th) + bv * np.cos(th)
        x = -x if flip else x
        xr, yr = x * np.cos(angle) - y * np.sin(angle), x * np.sin(angle) + y * np.cos(angle)
        assert np.allclose(extent(p, angle, flip), (xr.min(), yr.min(), xr.max(), yr.max()),
                           atol=1e-6)


def test_concept_maps_agree_with_the_scene_graph():
    for s in make_dataset(20, seed=21, kind="multi") + make_dataset(20, seed=21):
        g = s.graph()
        assert (s.concepts["colour"] > 0).all() and (s.concepts["texture"] > 0).all()
        for i, (o, node) in enumerate(zip(s.objects, g.objects)):
            assert node.cls == o.name and node.box == o.box
            assert node.colour == o.main["colour"] and node.texture == o.main["texture"]
            for name, rec in o.parts.items():
                pm = s.part_mask(i, name)
                found = {k: set(np.unique(s.concepts[k][pm]).tolist()) for k in s.concepts}
                assert found["shape"] == {SHAPES.index(rec["shape"]) + 1}
                assert found["texture"] == {TEXTURES.index(rec["texture"]) + 1}
                assert found["part"] == {PARTS.index(name) + 1}
                tones = {COLOURS.index(c) + 1 for c in (rec["colour"], rec["colour2"]) if c}
                if rec["texture"] == "plain":
                    assert found["colour"] == {COLOURS.index(rec["colour"]) + 1}
                else:
                    assert found["colour"] <= tones


def test_object_scale_matches_the_ilsvrc_and_pascal_targets():
    def fractions(scenes):
        return np.array([(o.box[2] - o.box[0] + 1) * (o.box[3] - o.box[1] + 1) / 112**2
                         for s in scenes for o in s.objects])

    single = fractions(make_dataset(300, seed=31))
    assert abs(single.mean() - SCALE_TARGETS["ilsvrc"]["mean"]) < 0.035
    # the quartiles follow the target Beta (truncated) that the mean was set with
    a, b = SCALE_TARGETS["ilsvrc"]["beta"]
    draws = np.random.default_rng(0).beta(a, b, 200000)
    lo, hi = SCALE_TARGETS["ilsvrc"]["range"]
    draws = draws[(draws >= lo) & (draws <= hi)]
    assert np.allclose(np.quantile(single, [0.25, 0.5, 0.75]),
                       np.quantile(draws, [0.25, 0.5, 0.75]), atol=0.05)
    assert (single > 0.5).mean() > 0.2  # many objects fill most of the photo
    multi = fractions(make_dataset(80, seed=31, kind="multi"))
    assert abs(multi.mean() - SCALE_TARGETS["pascal"]["mean"]) < 0.04


def test_bias_cue_matches_the_class_at_the_asked_rate_and_not_at_test():
    n = 300
    for rate in (0.9, 0.6):
        scenes = make_dataset(n, seed=41, cue_rate=rate)
        cues = [CUE_COLOURS.index(s.background["cue"]) for s in scenes]
        hit = np.mean([c == class_cue(s.label) for c, s in zip(cues, scenes)])
        assert abs(hit - rate) < 3 * np.sqrt(rate * (1 - rate) / n) + 1e-9
    n = 450
    test = make_dataset(n, seed=42, cue_rate=CUE_CHANCE)
    table = np.zeros((3, 3))
    for s in test:
        table[class_cue(s.label), CUE_COLOURS.index(s.background["cue"])] += 1
    hit = np.trace(table) / n
    assert abs(hit - 1 / 3) < 3 * np.sqrt(2 / 9 / n)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    cramers_v = np.sqrt(((table - expected) ** 2 / expected).sum() / (n * 2))
    assert cramers_v < 0.1
    # the band is where it says, and the cue changes no object
    plain = make_dataset(30, seed=43)
    cued = make_dataset(30, seed=43, cue_rate=0.9)
    for p, c in zip(plain, cued):
        assert p.background["cue"] is None and c.background["cue"] in CUE_COLOURS
        assert [o.label for o in p.objects] == [o.label for o in c.objects]
        assert all(np.array_equal(o.mask, q.mask) for o, q in zip(p.objects, c.objects))
        band = c.concepts["colour"][-11:] == COLOURS.index(c.background["cue"]) + 1
        bare = (c.concepts["object"][-11:] == 0) & (c.concepts["shape"][-11:] == 0)
        assert np.array_equal(band, bare)  # under objects and occluders, over clutter
        assert not np.isin(p.concepts["colour"], [COLOURS.index(k) + 1 for k in CUE_COLOURS]).any()


def test_cue_is_the_place_in_the_confusable_group():
    assert [class_cue(c) for c in GROUPS["feline"]] == [0, 1, 2]
    assert CLASS_SPECS[GROUPS["feline"][1]].name == "tiger cat"


def _hand_graph() -> SceneGraph:
    cat = ObjectNode(0, "tiger cat", "feline", "animal", "ginger", "striped", "ellipse", "large",
                     (10, 40, 60, 100), (35.0, 70.0), 2000,
                     {"body": {"shape": "ellipse", "colour": "ginger", "colour2": "brown",
                               "texture": "striped", "pixels": 1500},
                      "head": {"shape": "disk", "colour": "ginger", "colour2": None,
                               "texture": "plain", "pixels": 500}})
    dog = ObjectNode(1, "boxer", "canine", "animal", "ginger", "plain", "ellipse", "medium",
                     (70, 50, 105, 95), (88.0, 72.0), 900,
                     {"body": {"shape": "ellipse", "colour": "ginger", "colour2": None,
                               "texture": "plain", "pixels": 900}})
    rel = [(0, "left of", 1), (1, "right of", 0), (0, "near", 1), (1, "near", 0)]
    return SceneGraph([cat, dog], rel, {"texture": "bricks", "colours": ["grey"], "cue": None},
                      (112, 112))


def test_caption_and_questions_from_a_hand_built_graph():
    g = _hand_graph()
    assert g.caption() == "A large ginger striped tiger cat next to a medium ginger boxer."
    qa = g.questions()
    assert qa == [
        QA("Is there a tiger cat?", "yes", "existence"),
        QA("Is there a boxer?", "yes", "existence"),
        QA("Is there a tabby?", "no", "existence"),
        QA("Is there a bull mastiff?", "no", "existence"),
        QA("How many objects are there?", "two", "count"),
        QA("How many animals are there?", "two", "count"),
        QA("What colour is the tiger cat?", "ginger", "colour"),
        QA("What shape is the body of the tiger cat?", "ellipse", "shape"),
        QA("What shape is the head of the tiger cat?", "disk", "shape"),
        QA("What colour is the boxer?", "ginger", "colour"),
        QA("What shape is the body of the boxer?", "ellipse", "shape"),
        QA("Where is the tiger cat?", "left", "position"),
        QA("Where is the boxer?", "right", "position"),
        QA("Is the tiger cat to the left of the boxer?", "yes", "position"),
        QA("Is the tiger cat above the boxer?", "no", "position"),
    ]
    single = SceneGraph([g.objects[1]], [], {"texture": "bricks"}, (112, 112))
    assert single.caption() == "A medium ginger boxer on a brick background."
    on = SceneGraph(g.objects, [(1, "on", 0)], {}, (112, 112))
    assert on.caption() == "A medium ginger boxer on a large ginger striped tiger cat."
    assert SceneGraph.from_dict(g.to_dict()) == g


def test_relations_by_hand():
    small, big, far = (np.zeros((40, 40), dtype=bool) for _ in range(3))
    small[10:15, 10:20] = True  # rests on top of big
    big[15:30, 5:30] = True
    far[0:5, 36:40] = True
    masks = [small, big, far]
    cents = [(15.0, 12.5), (16.0, 22.5), (38.0, 2.5)]  # given, not measured: rules only
    boxes = [(10, 10, 19, 14), (5, 15, 29, 29), (36, 0, 39, 4)]
    rel = set(relations(masks, cents, boxes, 40))
    assert (0, "on", 1) in rel and (1, "on", 0) not in rel
    assert (0, "above", 1) in rel and (1, "below", 0) in rel
    assert (0, "left of", 2) in rel and (2, "right of", 0) in rel
    assert (0, "near", 1) not in rel  # "on" wins over "near"
    assert (2, "near", 1) not in rel and (0, "near", 2) not in rel  # 16 px apart > 3.2 px
    assert (0, "left of", 1) not in rel  # centroids 1 px apart: less than 4% of 40 px
    cents[1] = (17.0, 22.5)  # 2 px apart: more than 1.6 px
    assert (0, "left of", 1) in set(relations(masks, cents, boxes, 40))


def test_generated_scene_graph_answers_match_the_ground_truth():
    s = make_dataset(1, seed=8, kind="pair")[0]
    g = s.graph()
    answers = {q.question: q.answer for q in g.questions()}
    assert answers["How many objects are there?"] == "two"
    for o in s.objects:
        assert answers[f"Is there {'an' if o.name[0] in 'aeiou' else 'a'} {o.name}?"] == "yes"
        if sum(p.label == o.label for p in s.objects) == 1:
            assert answers[f"What colour is the {o.name}?"] == o.main["colour"]


def test_coco_round_trip_and_the_evaluation_reader(tmp_path):
    scenes = make_dataset(6, seed=51, kind="pair") + make_dataset(4, seed=51, cue_rate=0.5)
    path = save_coco(scenes, tmp_path, split="val")
    assert path == tmp_path / "annotations" / "instances_val.json"
    back = load_coco(tmp_path, split="val")
    assert len(back) == len(scenes) and all(_same(a, b) for a, b in zip(scenes, back))
    assert all(a.kind == b.kind and a.graph().to_dict() == b.graph().to_dict()
               for a, b in zip(scenes, back))
    samples = load_dataset(f"coco:{path}")  # the layout: annotations/instances_val.json -> val/
    assert len(samples) == len(scenes)
    for smp, s in zip(samples, scenes):
        assert smp.image_path is not None and smp.image_path.is_file()
        assert (smp.height, smp.width) == s.size
        assert smp.labels == [o.name for o in s.objects]
        for ann, o in zip(smp.objects, s.objects):
            assert ann.box == o.box
            assert np.array_equal(smp.object_mask(ann), o.mask)
    with pytest.raises(FileNotFoundError, match="save_coco"):
        load_coco(tmp_path, split="train")


def test_bad_options_are_clear_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown scene kind"):
        make_scene(rng, kind="crowd")
    with pytest.raises(ValueError, match="cue_rate"):
        make_scene(rng, cue_rate=1.5)
    with pytest.raises(ValueError, match="class indices"):
        make_scene(rng, labels=[99])
    with pytest.raises(ValueError, match="scale"):
        make_scene(rng, scale="coco")
    s = make_scene(rng, kind="two")
    with pytest.raises(ValueError, match="single label"):
        _ = s.label
    with pytest.raises(ValueError, match="unknown part"):
        s.part_mask(0, "wing tip")


def test_vocabularies():
    assert len(CLASSES) == 33 and len(set(CLASSES)) == 33
    assert all(len(v) == 3 for v in GROUPS.values()) and len(GROUPS) == 11
    assert len(set(PARTS)) == len(PARTS)
    # every class's parts are named in PARTS and its colours in the palette
    for label in range(33):
        obj = sample_object(np.random.default_rng(label), label)
        assert all(p.name in PARTS and p.colour in COLOURS for p in obj.parts)


def test_stats_report_scales_and_speed():
    from camlens.synthetic.v2.stats import measure, target_quantiles

    r = measure(n=16, seed=1)
    assert set(r["kinds"]) == set(KINDS) and r["kinds"]["single"]["boxes"] == 16
    assert r["kinds"]["two"]["objects_per_scene"] == 2.0
    assert r["kinds"]["single"]["scenes_per_second"] > 0
    q = target_quantiles("ilsvrc")
    assert q == sorted(q) and abs(q[2] - 0.336) < 0.01  # the target Beta's median
