"""Evaluation tasks: the shared map cache, the maps compared with ground truth, images that
cannot be read, --weights, and the table helper."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

import camlens
from camlens.errors import DataError
from camlens.evaluate import (
    AnnotatedObject,
    ArraySample,
    MapCache,
    evaluate_localization,
    resolve_model,
)
from camlens.evaluate.cli import main
from camlens.evaluate.explainer import Explainer
from camlens.evaluate.report import markdown_table, pointing_markdown
from camlens.evaluate.tasks import PointingSummary
from camlens.synthetic import make_dataset, save_coco
from models import TinyGAPNet

TINY_LAYER = TinyGAPNet.LAYER  # the tiny net's rectified last conv map


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyGAPNet().eval()


class MeanHead(nn.Module):
    """logits[c] = mean of channel c of (x - 0.5): Grad-CAM without its ReLU is x_c - 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x - 0.5).mean(dim=(2, 3))


def shouldered(n: int = 3) -> list[ArraySample]:
    """A bright 4x4 object on a dim 16x16 shoulder: with the ReLU the box is the object; without
    it, at 15% of the range, the box is the shoulder."""
    out = []
    for i in range(n):
        pixels = np.zeros((24, 40, 3), dtype=np.uint8)
        pixels[2:18, 4 + i:20 + i, i] = round(0.35 * 255)
        pixels[8:12, 10 + i:14 + i, i] = 255
        obj = AnnotatedObject(label=i, box=(10 + i, 8, 13 + i, 11))
        out.append(ArraySample(image_path=None, width=40, height=24, objects=(obj,),
                               image_id=f"s{i}", pixels=pixels))
    return out


# --------------------------------------------------------------------------- the map cache


def test_a_shared_cache_keeps_option_variants_apart():
    model, data = MeanHead().eval(), shouldered()
    common = {"layer": "features", "top_k": 1, "relative_to": "range", "progress": False}
    cache = MapCache()
    with_relu = evaluate_localization(model, data, cache=cache, **common)
    n = len(cache)
    assert n == 3
    without = evaluate_localization(model, data, options={"relu": False}, cache=cache, **common)
    alone = evaluate_localization(model, data, options={"relu": False}, **common)
    assert len(cache) == 2 * n  # its own maps
    assert without.records == alone.records
    assert without.top1_loc_error == 1.0 and with_relu.top1_loc_error == 0.0  # they differ
    # the method's defaults spelled out name the same maps: nothing new is computed
    again = evaluate_localization(model, data, options={"relu": True, "pooling": "gap"},
                                  cache=cache, **common)
    assert len(cache) == 2 * n and again.records == with_relu.records


def test_a_plain_dict_still_works_as_the_cache():
    store: dict = {}
    evaluate_localization(MeanHead().eval(), shouldered(), layer="features", top_k=1,
                          cache=store, progress=False)
    assert len(store) == 3
    with pytest.raises(TypeError, match="MapCache"):
        evaluate_localization(MeanHead().eval(), shouldered(), layer="features", cache=[],
                              progress=False)


# --------------------------------------------------------------------------- maps


def literal_saliency(model: nn.Module, x: torch.Tensor, classes: list[list[int]]) -> list:
    """max over channels of |dy^c/dx|, one image and one class at a time."""
    out = []
    for b, cls in enumerate(classes):
        per = {}
        for c in cls:
            leaf = x[b:b + 1].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(model(leaf)[0, c], leaf)
            per[c] = g[0].abs().amax(dim=0).numpy()
        out.append(per)
    return out


def test_gradient_and_pixel_space_maps_are_the_channel_max_of_the_absolute_map():
    model = tiny_net()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    classes = [[1, 3], [0]]
    res = resolve_model(model)
    maps = Explainer(res, "gradient", None, {}).maps(x, ["a", "b"], classes)
    ref = literal_saliency(model, x, classes)
    for b in range(2):
        assert sorted(maps[b]) == sorted(ref[b])
        for c in ref[b]:
            np.testing.assert_allclose(maps[b][c], ref[b][c], rtol=1e-5, atol=1e-8)
    guided = Explainer(res, "guided-backprop", None, {}).maps(x, ["a", "b"], classes)
    raw = camlens.explain(model, x[:1], method="guided-backprop", target=[[1, 3]]).raw
    np.testing.assert_allclose(guided[0][3], raw[0, 1].abs().amax(dim=0).numpy(), rtol=1e-6)
    assert not np.allclose(guided[0][3], maps[0][3])  # a different map


def test_unknown_method_or_option_is_refused_before_any_forward():
    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise AssertionError("no forward pass should run")

    with pytest.raises(ValueError, match="unknown method 'nope'.*gradient"):
        evaluate_localization(Boom(), shouldered(), method="nope", progress=False)
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['relu'\]"):
        evaluate_localization(Boom(), shouldered(), method="gradient", options={"relu": False},
                              progress=False)


# --------------------------------------------------------------------------- unreadable images


def test_an_unreadable_image_is_skipped_reported_and_retried_on_resume(tmp_path):
    scenes = make_dataset(5, seed=31)
    folder = tmp_path / "ds"
    save_coco(scenes, folder)
    spec = f"synthetic:{folder}"
    full = evaluate_localization(tiny_net(), spec, layer=TINY_LAYER, progress=False)
    victim = sorted((folder / "val").glob("*.png"))[2]
    content = victim.read_bytes()
    victim.write_bytes(b"not a png")
    path = tmp_path / "loc.csv"
    with pytest.warns(UserWarning, match=r"1 image\(s\) skipped .*00002.*not an image"):
        part = evaluate_localization(tiny_net(), spec, layer=TINY_LAYER,
                                     csv_path=path, progress=False)
    assert (part.n, part.failed) == (4, 1)
    assert [r for r in part.records] == [r for i, r in enumerate(full.records) if i != 2]
    victim.write_bytes(content)  # fixed: a resume evaluates just that image
    again = evaluate_localization(tiny_net(), spec, layer=TINY_LAYER, csv_path=path, progress=False)
    assert (again.n, again.failed, again.resumed) == (5, 0, 4)
    assert sorted(map(repr, again.records)) == sorted(map(repr, full.records))
    for png in (folder / "val").glob("*.png"):
        png.unlink()
    with pytest.raises(DataError, match="no image could be evaluated.*no such file"):
        evaluate_localization(tiny_net(), spec, layer=TINY_LAYER, progress=False)


# --------------------------------------------------------------------------- command line


def test_weights_for_the_evaluated_model(tmp_path, capsys):
    """README: camlens evaluate ... --model SPEC --weights FILE."""
    (tmp_path / "net.py").write_text(
        "import torch\nfrom models import TinyGAPNet\n\n"
        "def build(seed=0):\n    torch.manual_seed(seed)\n    return TinyGAPNet()\n\n"
        "def build_seed1():\n    return build(1)\n"
    )
    torch.manual_seed(1)
    torch.save(TinyGAPNet().state_dict(), tmp_path / "seed1.pt")

    def scores(model: str, *extra: str) -> list[str]:
        out = tmp_path / f"{len(list(tmp_path.glob('*.csv')))}.csv"
        assert main(["localization", "--data", "synthetic:seed=777,n=3", "--model", model,
                     "--layer", "features.13", "--csv", str(out), "--no-progress",
                     *extra]) == 0
        with open(out, newline="") as fh:
            return [r["pred_scores"] for r in csv.DictReader(fh)]

    seed0 = scores(f"{tmp_path / 'net.py'}:build")
    loaded = scores(f"{tmp_path / 'net.py'}:build", "--weights", str(tmp_path / "seed1.pt"))
    seed1 = scores(f"{tmp_path / 'net.py'}:build_seed1")
    assert loaded == seed1 and loaded != seed0
    capsys.readouterr()


# --------------------------------------------------------------------------- tables


def test_markdown_table_from_data():
    text = markdown_table(["Method", "Error", "Note"], [["a", "1.00", ""], ["b", "", "x"]],
                          "lrl")
    assert text == ("| Method | Error | Note |\n|---|---:|---|\n| a | 1.00 | |\n"
                    "| b | | x |")


def test_an_undefined_pointing_accuracy_is_a_dash_not_nan():
    s = PointingSummary(method="m", n_images=3, n_held_out=1, accuracy=float("nan"),
                        accuracy_rejection=0.5, accuracy_topk=0.25, accuracy_reject_all=0.75,
                        threshold=0.125, trials=0,
                        trials_topk=3, tolerance=15, k=5)
    last = pointing_markdown([s]).splitlines()[-1]
    assert last == "| m | – | 25.00 | 50.00 | 0.125 | 75.00 |"
