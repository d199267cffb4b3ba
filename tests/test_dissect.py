"""Network dissection and textual explanations (Sec. 7) against known answers."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from camlens.cli import main
from camlens.dissect import (
    BrodenConcepts,
    Concept,
    Dissection,
    Sample,
    TopQuantile,
    UnitName,
    WorldV2Concepts,
    dissect,
    explain_text,
    textual_explanation,
)
from camlens.errors import DataError, LayerError
from test_contract import assert_same, prepared_model, snapshot


class Probe(nn.Module):
    """Its layer ``feat`` outputs the input itself, so a test sets the activations exactly;
    the class scores are y = W GAP(A) (alpha_k^c = W[c, k] / (h w))."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.feat = nn.Identity()
        self.head = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.head.weight.copy_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feat(x).mean(dim=(2, 3)))


class Listed:
    """A ConceptData from lists."""

    def __init__(self, images: Sequence[torch.Tensor], labels: Sequence[dict[str, np.ndarray]],
                 concepts: Sequence[Concept]) -> None:
        self.images, self.labels, self._concepts = images, labels, list(concepts)

    @property
    def concepts(self) -> Sequence[Concept]:
        return self._concepts

    @property
    def name(self) -> str:
        return "listed"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Sample:
        return Sample(self.images[i], np.zeros((8, 8, 3), np.uint8), self.labels[i])


def hand_built() -> tuple[Probe, Listed]:
    """5 units on 4 images of 8x8. Shape concepts 1-3 fill rows 0-2 (cols 0-3) of every
    image; colour concept 4 fills row 3 of images 0 and 1, the only images whose colour is
    annotated. Unit k < 3 fires exactly on concept k + 1; unit 3 on row 5 plus the pixel
    (0, 0) of image 0 instead of (5, 0) (one pixel of concept 1: IoU 1/31, unnamed); unit 4
    on row 3 of every image (IoU 1 with concept 4 on the annotated images). Every unit fires
    on 16 of the 256 positions."""
    concepts = [Concept("disk", "shape"), Concept("ring", "shape"), Concept("stick", "shape"),
                Concept("red", "colour")]
    images, labels = [], []
    for i in range(4):
        a = torch.zeros(5, 8, 8)
        shape = np.zeros((1, 8, 8), np.int64)
        for c in range(3):
            a[c, c, :4] = 1.0
            shape[0, c, :4] = c + 1
        a[3, 5, :4] = 1.0
        if i == 0:
            a[3, 5, 0], a[3, 0, 0] = 0.0, 1.0
        a[4, 3, :4] = 1.0
        lab = {"shape": shape}
        if i < 2:
            colour = np.zeros((1, 8, 8), np.int64)
            colour[0, 3, :4] = 4
            lab["colour"] = colour
        images.append(a)
        labels.append(lab)
    return Probe(torch.eye(5)).eval(), Listed(images, labels, concepts)


def test_dissection_of_a_hand_built_net() -> None:
    model, data = hand_built()
    n, m = 4 * 64, 16
    q = (m - 0.5) / (n - 1)  # puts T_k half-way between 0 and 1 (linear interpolation)
    d = dissect(model, data, "feat", quantile=q, batch_size=3)
    np.testing.assert_allclose([u.threshold for u in d.units], 0.5, atol=1e-9)
    assert [u.concept for u in d.units] == ["disk", "ring", "stick", None, "red"]
    assert [u.category for u in d.units] == ["shape", "shape", "shape", None, "colour"]
    assert d.iou is not None
    np.testing.assert_allclose(d.iou[[0, 1, 2, 4], [0, 1, 2, 3]], 1.0)
    assert d.units[3].best == "disk" and d.units[3].iou == pytest.approx(1 / 31)
    np.testing.assert_allclose(d.iou[3, 1:], 0.0)
    # a threshold of 1/31 < min_iou names unit 3 too
    assert dissect(model, data, "feat", quantile=q, min_iou=0.03).units[3].concept == "disk"
    # the file round trip keeps the names
    back = Dissection.from_dict(d.to_dict())
    assert [u.label for u in back.units] == [u.label for u in d.units]


def test_iou_against_a_literal_implementation() -> None:
    """A random conv net on 3 world v2 scenes: thresholds by np.quantile, masks and IoUs by
    the definition, image by image and concept by concept."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.ReLU())
    data = WorldV2Concepts(3, categories=("shape", "texture"))
    d = dissect(model, data, "1", batch_size=2)
    acts = [model(data[i].image[None]).detach()[0] for i in range(3)]
    t = np.quantile(np.stack([a.numpy() for a in acts], 1).reshape(4, -1).astype(np.float64),
                    1 - 0.005, axis=1)
    np.testing.assert_allclose([u.threshold for u in d.units], t, rtol=1e-6)
    inter = np.zeros((4, len(data.concepts)))
    union = np.zeros((4, len(data.concepts)))
    for i, a in enumerate(acts):
        up = F.interpolate(a[None], size=(112, 112), mode="bilinear", align_corners=False)[0]
        for k in range(4):
            mk = up[k].numpy() > np.float32(d.units[k].threshold)
            for j, c in enumerate(data.concepts):
                lc = data[i].labels[c.category][0] == j + 1
                inter[k, j] += (mk & lc).sum()
                union[k, j] += (mk | lc).sum()
    expected = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    assert d.iou is not None
    np.testing.assert_allclose(d.iou, expected, atol=1e-12)


@pytest.mark.parametrize("q", [0.005, 0.05, 0.5, 0.0001])
def test_streamed_quantile_equals_numpy(q: float) -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(3, 1000)).astype(np.float32)
    values[1, :400] = 2.0  # ties
    tq = TopQuantile(3, 1000, q)
    for lo, hi in ((0, 1), (1, 250), (250, 251), (251, 1000)):  # uneven batches
        tq.update(torch.from_numpy(values[:, lo:hi]))
    np.testing.assert_allclose(tq.threshold(), np.quantile(values.astype(np.float64), 1 - q,
                                                           axis=1), rtol=1e-12)
    assert tq.top.shape[1] == tq.m <= int(q * 1000) + 2  # memory: the top q only
    with pytest.raises(ValueError, match="more than"):
        tq.update(torch.zeros(3, 1))


def write_broden(root: Path) -> None:
    """A two-image Broden folder: colour PNGs, two part layers, an image-level scene."""
    (root / "images").mkdir(parents=True)
    for name in ("a", "b"):
        Image.fromarray(np.full((6, 6, 3), 100, np.uint8)).save(root / "images" / f"{name}.png")

    def seg(path: str, numbers: np.ndarray) -> None:
        rgb = np.zeros((*numbers.shape, 3), np.uint8)
        rgb[..., 0], rgb[..., 1] = numbers % 256, numbers // 256
        Image.fromarray(rgb).save(root / "images" / path)

    red = np.zeros((3, 3), np.int64)
    red[0] = 300  # label 300 = R 44 + 256 * G 1
    red[1, 0] = 2
    seg("a_color.png", red)
    seg("a_part1.png", np.array([[0, 7, 7], [0, 0, 0], [0, 0, 0]]))
    seg("a_part2.png", np.array([[0, 0, 0], [9, 0, 0], [0, 0, 0]]))
    rows = [["image", "split", "ih", "iw", "sh", "sw", "color", "part", "scene"],
            ["a.png", "train", "6", "6", "3", "3", "a_color.png", "a_part1.png;a_part2.png",
             "5"],
            ["b.png", "val", "6", "6", "3", "3", "", "", "5"]]
    labels = [["number", "name", "category", "frequency", "coverage", "syns"],
              ["0", "-", "", "0", "0", ""], ["2", "black", "color(1)", "1", "0.1", ""],
              ["5", "kitchen", "scene(2)", "2", "1.0", ""], ["7", "ear", "part(1)", "1", "0", ""],
              ["9", "leg", "part(1)", "1", "0", ""], ["300", "red", "color(1)", "1", "0.3", ""]]
    cats = {"color": [["1", "2", "black"], ["2", "300", "red"]],
            "part": [["1", "7", "ear"], ["2", "9", "leg"]], "scene": [["1", "5", "kitchen"]]}
    for name, table in [("index", rows), ("label", labels)] + [
            (f"c_{c}", [["code", "number", "name"], *t]) for c, t in cats.items()]:
        with open(root / f"{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows(table)


def test_broden_reader(tmp_path: Path) -> None:
    write_broden(tmp_path)
    data = BrodenConcepts(tmp_path)
    assert [str(c) for c in data.concepts] == [
        "black (color)", "red (color)", "ear (part)", "leg (part)", "kitchen (scene)"]
    a = data[0]
    assert a.image.shape == (3, 6, 6) and float(a.image.max()) == pytest.approx(100 / 255)
    np.testing.assert_array_equal(a.labels["color"][0],
                                  [[2, 2, 2], [1, 0, 0], [0, 0, 0]])
    assert a.labels["part"].shape == (2, 3, 3)
    assert a.labels["part"][0, 0, 1] == 3 and a.labels["part"][1, 1, 0] == 4
    np.testing.assert_array_equal(a.labels["scene"], np.full((1, 3, 3), 5))
    b = data[1]
    assert set(b.labels) == {"scene"}  # colour and parts not annotated there
    assert len(BrodenConcepts(tmp_path, split="val")) == 1
    assert len(BrodenConcepts(tmp_path, categories=["part"]).concepts) == 2
    with pytest.raises(DataError, match="no category"):
        BrodenConcepts(tmp_path, categories=["material"])
    with pytest.raises(DataError, match="no index.csv"):
        BrodenConcepts(tmp_path / "images")


def test_sentence_from_hand_derived_alphas() -> None:
    """y = W GAP(A) on a 2x2 layer: alpha_k^c = W[c, k] / 4."""
    w = torch.tensor([[0.8, -0.4, 0.0, 0.2, -0.1, 0.6, 0.0],
                      [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1]])
    model = Probe(w).eval()
    x = torch.ones(1, 7, 2, 2)  # y = (1.1, 0.1): class 0 predicted
    names = {0: ("dog", "object"), 5: ("sky", "colour"), 1: ("water", "material")}
    units = tuple(UnitName(k, *(names.get(k) or (None, None)), 0.2 if k in names else 0.01,
                           "x", "y", 0.0) for k in range(7))
    d = Dissection("probe", "feat", "hand", 0.005, 0.05, 1, units)
    t = explain_text(model, x, d, labels=["cat", "dog"])[0]
    assert [u.unit for u in t.evidence_for] == [0, 5, 3]  # only the 3 positive alphas
    assert [u.alpha for u in t.evidence_for] == pytest.approx([0.2, 0.15, 0.05])
    assert [u.unit for u in t.evidence_against] == [1, 4]
    assert t.sentence == (
        "predicted cat: evidence for dog (object; unit 0, alpha +0.2), sky (colour; unit 5, "
        "alpha +0.15), unnamed (unit 3, alpha +0.05); evidence against water (material; "
        "unit 1, alpha -0.1), unnamed (unit 4, alpha -0.025)")
    other = explain_text(model, x, d, target=torch.tensor([1]), labels=["cat", "dog"])[0]
    assert other.sentence == ("class dog: evidence for unnamed (unit 6, alpha +0.025); "
                              "evidence against none")
    bare = textual_explanation(t.evidence_for[0].alpha * torch.eye(7)[0], 0, "cat", None,
                               missing="no dissection here")
    assert bare.sentence == "predicted cat: evidence for unit 0 (alpha +0.2); evidence against none"
    assert bare.to_dict()["names_missing"] == "no dissection here"
    with pytest.raises(LayerError, match="channels"):
        textual_explanation(torch.ones(3), 0, "cat", d)


@pytest.mark.filterwarnings("ignore:.*training mode")
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_dissection_leaves_the_model_untouched(training: bool) -> None:
    model = prepared_model(training)
    images = [torch.randn(3, 8, 8) for _ in range(3)]
    labels = [{"shape": np.random.default_rng(i).integers(0, 3, (1, 8, 8))} for i in range(3)]
    data = Listed(images, labels, [Concept("a", "shape"), Concept("b", "shape")])
    before = snapshot(model)
    copies = [im.clone() for im in images]
    dissect(model, data, "features", batch_size=2)
    assert_same(before, snapshot(model))
    model.boom.armed = True  # a forward that raises half-way
    with pytest.raises(Exception, match="injected failure"):
        dissect(model, data, "features")
    model.boom.armed = False
    assert_same(before, snapshot(model))
    assert all(torch.equal(a, b) for a, b in zip(images, copies))


def test_cli_dissect_and_explain_text(tmp_path: Path) -> None:
    out = tmp_path / "d"
    assert main(["dissect", "--model", "synthetic:alexnet", "--data", "synthetic:seed=20252,n=4",
                 "--batch-size", "4", "--out", str(out), "-q"]) == 0
    doc = json.loads((out / "dissection.json").read_text())
    assert doc["layer"] == "features.11" and doc["images"] == 4 and len(doc["units"]) > 0
    html = (out / "index.html").read_text()
    assert "Network dissection of synthetic:alexnet" in html
    named = [u for u in doc["units"] if u["concept"]]
    assert all(u["iou"] > 0.05 for u in named)
    assert all(f"units/unit_{u['unit']}.png" in html for u in doc["units"])
    img = tmp_path / "scene.png"
    Image.fromarray(WorldV2Concepts(1, seed=5)[0].picture).save(img)
    ex = tmp_path / "ex"
    assert main(["explain", str(img), "--model", "synthetic:alexnet", "--method", "gradcam",
                 "--dissection", str(out / "dissection.json"), "--top-k", "1", "--out",
                 str(ex), "-q"]) == 0
    rec = json.loads((ex / "scene" / "explanation.json").read_text())
    text = rec["textual_explanations"][0]
    assert text["sentence"].startswith(f"predicted {rec['predictions'][0]['name']}: evidence")
    names = {u["unit"]: u["concept"] for u in doc["units"]}
    assert all(u["concept"] == names[u["unit"]] for u in text["evidence_for"])
    assert Image.open(ex / "scene" / "summary.png").width > 2 * 224  # the text column


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["dissect", "--model", "synthetic:alexnet", "--out", str(tmp_path / "o")]
    for argv, message in [
        (base + ["--data", "synthetic:seed=20252,n=0"], "n must be an integer >= 1"),
        (base + ["--data", "imagenet"], "synthetic data is written synthetic:seed=S,n=N"),
        (base + ["--data", "world-v2:2"], "unknown data spec 'world-v2:2'"),
        (base + ["--data", f"broden:{tmp_path}"], "no index.csv"),
        (base + ["--data", "synthetic:seed=20252,n=2", "--layer", "nope"], "no layer named"),
        (base + ["--data", "synthetic:seed=20252,n=2", "--quantile", "0"], "strictly between"),
        (base + ["--data", "synthetic:seed=20252,n=2", "--categories", "smell"], "categories"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(img)
    ex = ["explain", str(img), "--model", "synthetic:alexnet", "--out", str(tmp_path / "e")]
    for argv, message in [(ex + ["--dissection", str(bad)], "not a dissection"),
                          (ex + ["--text", "--method", "gradcam", "--layer", "features.8",
                                 "--dissection", str(Path(__file__).parent / "nope.json")],
                           "cannot read"),
                          (ex + ["--text", "--method", "guided-backprop"], "include gradcam")]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_defining_concepts_and_the_baseline() -> None:
    from camlens.dissect.report import defining_concepts, measure
    from camlens.synthetic.v2 import CLASSES

    tabby = defining_concepts(CLASSES.index("tabby"))
    assert tabby == {"part": {"body", "head", "ear", "tail", "leg"},
                     "shape": {"ellipse", "disk", "triangle", "stick"},
                     "colour": {"brown", "tan", "black"}, "texture": {"striped"}}
    sedan = defining_concepts(CLASSES.index("sedan"))  # random paint is not defining
    assert sedan["colour"] == {"sky", "black"} and sedan["texture"] == set()
    assert defining_concepts(CLASSES.index("church"))["part"] >= {"steeple", "wall", "roof"}
    # units named "ear" (part) and "striped" (texture) only; a "tabby" net's prediction of
    # anything: the random baseline is the exact share of units with a defining name
    units = tuple(UnitName(k, *(("ear", "part") if k < 2 else ("striped", "texture") if k == 2
                                else (None, None)), 0.1, "x", "y", 0.0) for k in range(128))
    d = Dissection("synthetic:vgg", "features.18", "hand", 0.005, 0.05, 1, units)
    m = measure("vgg", 3, dissection=d, batch_size=3)
    defs = [defining_concepts(c) for c in range(len(CLASSES))]
    assert 0.0 <= m.top_hit <= 1.0 and m.named_units == 3 and m.units == 128
    assert m.top_ci[0] <= m.top_hit <= m.top_ci[1]
    expected = [(2 * ("ear" in defs[c]["part"]) + ("striped" in defs[c]["texture"])) / 128
                for c in m.predictions]
    assert m.random_hit == pytest.approx(float(np.mean(expected)))
