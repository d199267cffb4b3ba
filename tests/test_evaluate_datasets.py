"""Ground-truth readers: ILSVRC / VOC XML, COCO JSON (polygons, RLE), load_dataset specs."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from camlens.evaluate import (
    AnnotatedObject,
    Sample,
    coco_box,
    coco_mask,
    dataset_formats,
    datasets,
    load_dataset,
    polygon_mask,
    read_coco,
    read_ilsvrc_xml,
    read_synsets,
    read_voc_xml,
    register_format,
    rle_decode,
    rle_encode,
    wnid_to_index,
)

# ---------------------------------------------------------------- RLE


def test_compressed_rle_known_strings():
    # 3x3, middle column set: column-major runs 3 zeros, 3 ones, 3 zeros -> "333".
    m = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], bool)
    assert rle_encode(m) == {"size": [3, 3], "counts": "333"}
    np.testing.assert_array_equal(rle_decode({"size": [3, 3], "counts": "333"}), m)
    # Runs [1, 4, 2, 1, 1]: from the 4th count on the difference to two back is stored:
    # 1 - 4 = -3 -> 5-bit group 0b11101 (sign bit 0x10 set) = 29 -> chr(48 + 29) = "M";
    # 1 - 2 = -1 -> 0b11111 = 31 -> "O".
    m = np.array([[0, 1, 0], [1, 1, 1], [1, 0, 0]], bool)
    assert rle_encode(m)["counts"] == "142MO"
    np.testing.assert_array_equal(rle_decode({"size": [3, 3], "counts": b"142MO"}), m)
    np.testing.assert_array_equal(rle_decode({"size": [3, 3], "counts": [1, 4, 2, 1, 1]}), m)
    # 7x7 with the last 9 pixels (column-major) set: runs [40, 9].
    # 40 = 0b01000 + 1 << 5: groups 8 (more: +0x20 -> 40 -> "X") and 1 -> "1"; then 9 -> "9".
    m = np.zeros(49, bool)
    m[40:] = True
    m = m.reshape((7, 7), order="F")
    assert rle_encode(m)["counts"] == "X19"
    assert m[5:, 5].all() and m[:, 6].all() and m.sum() == 9
    # 49 = 0b10001 + 1 << 5: the first group has bit 0x10 set, so it needs a second group.
    assert rle_encode(np.zeros((7, 7), bool))["counts"] == "a1"
    # a mask that starts with foreground begins with an empty background run: [0, 16] ->
    # "0" then 16 = 0b10000 (sign bit set, so a second group follows): "`0"
    assert rle_encode(np.ones((4, 4), bool))["counts"] == "0`0"
    np.testing.assert_array_equal(rle_decode({"size": [4, 4], "counts": "0`0"}),
                                  np.ones((4, 4), bool))


def test_rle_round_trip_random():
    rng = np.random.default_rng(0)
    for _ in range(100):
        shape = tuple(int(v) for v in rng.integers(1, 30, 2))
        m = rng.random(shape) < rng.random()
        enc = rle_encode(m)
        assert enc["size"] == list(shape) and isinstance(enc["counts"], str)
        np.testing.assert_array_equal(rle_decode(enc), m)
        flat = m.ravel(order="F")
        change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
        runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
        runs = [0] + runs if flat[0] else runs
        np.testing.assert_array_equal(rle_decode({"size": list(shape), "counts": runs}), m)


def test_uncompressed_rle_is_column_major():
    m = rle_decode({"size": [2, 3], "counts": [1, 2, 3]})
    # column-major: (0,0)=0, (1,0)=1, (0,1)=1, then zeros
    np.testing.assert_array_equal(m, [[0, 1, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="cover 3 pixels"):
        rle_decode({"size": [2, 3], "counts": [1, 2]})
    with pytest.raises(ValueError, match="negative"):
        rle_decode({"size": [2, 3], "counts": [1, -2, 7]})
    with pytest.raises(ValueError):
        rle_decode({"counts": "333"})


def test_bad_compressed_rle_is_an_error_not_garbage():
    # "33" covers 6 of 9 pixels: pycocotools alone would leave the last 3 uninitialised
    with pytest.raises(ValueError, match="cover the 3x3 mask exactly"):
        rle_decode({"size": [3, 3], "counts": "33"})
    with pytest.raises(ValueError, match="do not decode"):  # runs past the end
        rle_decode({"size": [3, 3], "counts": "339"})
    assert rle_decode({"size": [0, 4], "counts": ""}).shape == (0, 4)


def test_missing_pycocotools_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    with pytest.raises(ImportError, match=r"pip install camlens\[eval\]"):
        rle_decode({"size": [3, 3], "counts": "333"})
    with pytest.raises(ImportError, match="COCO masks"):
        polygon_mask([[0, 0, 2, 0, 2, 2]], 4, 4)


# ---------------------------------------------------------------- polygons, boxes


def test_polygon_rectangle_is_exact():
    m = polygon_mask([[10, 20, 30, 20, 30, 40, 10, 40]], 60, 80)
    expected = np.zeros((60, 80), bool)
    expected[20:40, 10:30] = True
    np.testing.assert_array_equal(m, expected)


def test_polygon_triangle_centres_and_union():
    # Right triangle (0,0), (8,0), (0,8): pixel centres with x + y < 8 are inside.
    m = polygon_mask([[0, 0, 8, 0, 0, 8]], 10, 10)
    ys, xs = np.mgrid[0:10, 0:10]
    np.testing.assert_array_equal(m, (xs + 0.5) + (ys + 0.5) < 8)
    both = polygon_mask([[0, 0, 2, 0, 2, 2, 0, 2], [5, 5, 7, 5, 7, 7, 5, 7]], 10, 10)
    assert both.sum() == 8 and both[0, 0] and both[6, 6]
    # clipped to the image, degenerate polygons ignored
    assert polygon_mask([[-5, -5, 50, -5, 50, 50, -5, 50]], 4, 6).all()
    assert not polygon_mask([[1, 1, 3, 3]], 5, 5).any()


def test_coco_box_inclusive():
    assert coco_box([10, 20, 5, 3], 100, 100) == (10, 20, 14, 22)
    assert coco_box([10.4, 20.6, 5.2, 3.1], 100, 100) == (10, 20, 15, 23)
    assert coco_box([95, 0, 20, 1], 50, 100) == (95, 0, 99, 0)
    assert coco_box([3, 3, 0, 0], 10, 10) == (3, 3, 3, 3)


# ---------------------------------------------------------------- XML readers


ILSVRC_XML = """<annotation>
  <folder>val</folder>
  <filename>ILSVRC2012_val_00000001</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <object><name>n01751748</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>111</xmin><ymin>108</ymin><xmax>441</xmax><ymax>375</ymax></bndbox></object>
  <object><name>n01751748</name><difficult>0</difficult>
    <bndbox><xmin>0</xmin><ymin>10</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object>
</annotation>
"""

VOC_XML = """<annotation>
  <folder>VOC2007</folder>
  <filename>{name}.jpg</filename>
  <size><width>353</width><height>500</height><depth>3</depth></size>
  <object><name>dog</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>
    <bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox></object>
  <object><name>person</name><pose>Left</pose><truncated>1</truncated><difficult>1</difficult>
    <bndbox><xmin>8</xmin><ymin>12</ymin><xmax>352</xmax><ymax>498</ymax></bndbox></object>
</annotation>
"""


def test_read_ilsvrc_xml(tmp_path):
    xml = tmp_path / "ILSVRC2012_val_00000001.xml"
    xml.write_text(ILSVRC_XML)
    (tmp_path / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    s = read_ilsvrc_xml(xml, tmp_path)
    assert (s.width, s.height, s.image_id) == (500, 375, "ILSVRC2012_val_00000001")
    assert s.image_path == tmp_path / "ILSVRC2012_val_00000001.JPEG"
    # ymax 375 lies outside a 375-high image: clipped to the last row
    assert [(o.label, o.box) for o in s.objects] == [
        ("n01751748", (111, 108, 441, 374)),
        ("n01751748", (0, 10, 20, 30)),
    ]
    assert s.labels == ["n01751748"]
    assert read_ilsvrc_xml(xml, one_based=True).objects[1].box == (0, 9, 19, 29)
    assert read_ilsvrc_xml(xml).image_path is None


def test_read_voc_xml_shifts_to_zero_based_and_keeps_difficult(tmp_path):
    xml = tmp_path / "000001.xml"
    xml.write_text(VOC_XML.format(name="000001"))
    s = read_voc_xml(xml, tmp_path)
    dog, person = s.objects
    assert (dog.label, dog.box, dog.difficult) == ("dog", (47, 239, 194, 370), False)
    assert (person.label, person.box, person.difficult) == ("person", (7, 11, 351, 497), True)
    assert s.image_path == tmp_path / "000001.jpg"  # expected path, even before it exists
    assert s.boxes("person", include_difficult=False) == []
    gt = s.gt_mask("dog")
    assert gt.shape == (500, 353) and gt.sum() == (194 - 47 + 1) * (370 - 239 + 1)
    assert not s.gt_mask("person", include_difficult=False).any()
    assert not s.gt_mask("cat").any()


def test_synsets(tmp_path):
    f = tmp_path / "LOC_synset_mapping.txt"
    f.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\n\nn01751748 sea snake\n")
    assert read_synsets(f) == ["n01440764", "n01443537", "n01751748"]
    assert wnid_to_index(f)["n01751748"] == 2
    assert wnid_to_index(str(f)) == wnid_to_index(["n01440764", "n01443537", "n01751748"])
    f.write_text("n01440764\nn01440764\n")
    with pytest.raises(ValueError):
        read_synsets(f)


# ---------------------------------------------------------------- COCO


def coco_file(tmp_path: Path) -> Path:
    data = {
        "images": [
            {"id": 1, "file_name": "000000000001.jpg", "width": 8, "height": 6},
            {"id": 2, "file_name": "000000000002.jpg", "width": 8, "height": 6},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            {
                "id": 10, "image_id": 1, "category_id": 18, "iscrowd": 0,
                "bbox": [1.0, 1.0, 2.0, 3.0], "area": 6.0,
                "segmentation": [[1, 1, 3, 1, 3, 4, 1, 4]],
            },
            {
                "id": 11, "image_id": 1, "category_id": 1, "iscrowd": 1,  # crowd, RLE by hand
                "bbox": [4, 1, 3, 2], "area": 6.0,
                "segmentation": {"size": [6, 8], "counts": [25, 2, 4, 2, 4, 2, 9]},
            },
            {
                "id": 12, "image_id": 1, "category_id": 1, "iscrowd": 0,
                "bbox": [0, 5, 8, 1], "area": 8.0,
                "segmentation": rle_encode(np.eye(6, 8, dtype=bool)),
            },
        ],
    }  # fmt: skip
    ann_dir = tmp_path / "annotations"
    ann_dir.mkdir()
    path = ann_dir / "instances_val2017.json"
    path.write_text(json.dumps(data))
    return path


def test_read_coco(tmp_path):
    path = coco_file(tmp_path)
    samples = read_coco(path, tmp_path / "imgs")
    assert [s.image_id for s in samples] == [1, 2]
    first, second = samples
    assert second.objects == ()
    assert first.image_path == tmp_path / "imgs" / "000000000001.jpg"
    dog, crowd, _person = first.objects
    assert (dog.label, dog.box, dog.crowd) == ("dog", (1, 1, 2, 3), False)
    assert (crowd.label, crowd.box, crowd.crowd) == ("person", (4, 1, 6, 2), True)
    expected = np.zeros((6, 8), bool)
    expected[1:4, 1:3] = True
    np.testing.assert_array_equal(first.object_mask(dog), expected)
    np.testing.assert_array_equal(coco_mask({"segmentation": dog.segmentation}, 6, 8), expected)
    crowd_mask = first.object_mask(crowd)
    expected = np.zeros((6, 8), bool)
    expected[1:3, 4:7] = True
    np.testing.assert_array_equal(crowd_mask, expected)
    person_mask = first.gt_mask("person")
    np.testing.assert_array_equal(person_mask, crowd_mask | np.eye(6, 8, dtype=bool))
    with pytest.raises(ValueError):
        coco_mask({"size": [5, 5], "counts": "a0"}, 6, 8)
    with pytest.raises(ValueError):
        coco_mask(42, 6, 8)


def test_sample_with_array_masks():
    mask = np.zeros((4, 5), bool)
    mask[1, 1:3] = True
    objects = [AnnotatedObject("thing", (1, 1, 2, 1), mask=mask), AnnotatedObject(3, (4, 3, 4, 3))]
    s = Sample(None, 5, 4, objects)
    np.testing.assert_array_equal(s.gt_mask("thing"), mask)
    assert s.gt_mask(3).sum() == 1 and s.gt_mask(3, use_boxes=False).sum() == 0
    assert isinstance(s.objects, tuple)


# ---------------------------------------------------------------- load_dataset


def test_load_dataset_specs(tmp_path):
    ilsvrc = tmp_path / "ilsvrc"
    ilsvrc.mkdir()
    for i in (2, 1):
        (ilsvrc / f"ILSVRC2012_val_0000000{i}.xml").write_text(
            ILSVRC_XML.replace("ILSVRC2012_val_00000001", f"ILSVRC2012_val_0000000{i}")
        )
    samples = load_dataset(f"ilsvrc:{ilsvrc}")
    assert [s.image_id for s in samples] == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"]
    assert samples[0].image_path == ilsvrc / "ILSVRC2012_val_00000001.JPEG"
    images = tmp_path / "ilsvrc_images"
    images.mkdir()
    assert (
        load_dataset(f"ilsvrc:{ilsvrc}:{images}")[1].image_path
        == images / "ILSVRC2012_val_00000002.JPEG"
    )

    voc = tmp_path / "VOC2007"
    (voc / "Annotations").mkdir(parents=True)
    for name in ("000005", "000001", "000009"):
        (voc / "Annotations" / f"{name}.xml").write_text(VOC_XML.format(name=name))
    assert [s.image_id for s in load_dataset(f"voc:{voc}")] == ["000001", "000005", "000009"]
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "val.txt").write_text("000009\n000001\n")
    samples = load_dataset(f"voc:{voc}")
    assert [s.image_id for s in samples] == ["000009", "000001"]
    assert samples[0].image_path == voc / "JPEGImages" / "000009.jpg"

    coco_json = coco_file(tmp_path)
    (tmp_path / "val2017").mkdir()
    samples = load_dataset(f"coco:{coco_json}")
    assert samples[0].image_path == tmp_path / "val2017" / "000000000001.jpg"
    other = tmp_path / "elsewhere"
    assert load_dataset(f"COCO:{coco_json}:{other}")[1].image_path == other / "000000000002.jpg"


def test_load_dataset_errors_and_registration(tmp_path):
    with pytest.raises(ValueError, match="coco, ilsvrc, synthetic, voc"):
        load_dataset("kitti:/data")
    with pytest.raises(ValueError):
        load_dataset("no-format-here")
    with pytest.raises(FileNotFoundError):
        load_dataset(f"voc:{tmp_path / 'missing'}")
    with pytest.raises(FileNotFoundError):
        load_dataset(f"coco:{tmp_path / 'missing.json'}")
    register_format("toy", lambda rest: [Sample(None, 2, 2, (), image_id=rest)])
    try:
        assert load_dataset("toy:abc")[0].image_id == "abc"
        assert "toy" in dataset_formats()
    finally:
        datasets._LOADERS.pop("toy")
