"""Evaluations pass their parameters through and keep their documented defaults, checked
against references built here from public pieces (`camlens.explain`, scipy):

- faithfulness = Spearman's rho (scipy.stats.spearmanr) between each method's localisation
  map and the occlusion map (with the given window, stride, fill) for the top-1 or the first
  ground-truth class; localisation maps: raw layer maps bilinearly upsampled, the channel
  maximum of |raw| for pixel-space methods and for the plain input gradient ("gradient");
- the pointing game's `tolerance`; a shared map cache keeps option variants apart;
- boxes use 8-connectivity and 15% of the map's maximum by default, in the library and in
  `camlens evaluate`;
- resume redoes an image whose CSV rows were cut at a row boundary;
- the Gaussian blur of the deletion/insertion baselines is scipy.ndimage.gaussian_filter's.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import camlens
from camlens.cli import main
from camlens.evaluate import (
    AnnotatedObject,
    Sample,
    bbox_from_map,
    connected_components,
    deletion_curve,
    evaluate,
    evaluate_faithfulness,
    evaluate_localization,
    evaluate_pointing,
    gaussian_blur,
    insertion_curve,
    largest_component,
)
from camlens.synthetic import make_dataset
from models import TinyGAPNet

SYNTHETIC = "synthetic:seed=4242,n=8"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a loaded machine two OpenMP threads are many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- models and data


class MeanHead(nn.Module):
    """logits[c] = mean of feature channel c (the explained layer is ``features``)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = Scale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


def oracle() -> nn.Module:
    """Grad-CAM of class c at ``features`` is relu(x_c) / (H W): the image's channel c."""
    return MeanHead().eval()


def tiny_gapnet() -> nn.Module:
    """An untrained GAP net: its top-1 class often differs from the ground truth."""
    torch.manual_seed(0)
    return TinyGAPNet().eval()


def write_sample(folder: Path, name: str, channel: np.ndarray, label: int,
                 box: tuple[int, int, int, int], mask: np.ndarray | None = None) -> Sample:
    """A PNG whose channel ``label`` is ``channel`` (uint8, others 0), as a Sample on disk."""
    pixels = np.zeros(channel.shape + (3,), dtype=np.uint8)
    pixels[..., label] = channel
    path = folder / f"{name}.png"
    Image.fromarray(pixels).save(path)
    h, w = channel.shape
    return Sample(image_path=path, width=w, height=h, image_id=name,
                  objects=(AnnotatedObject(label=label, box=box, mask=mask),))


@pytest.fixture(scope="module")
def scenes() -> list[Any]:
    return make_dataset(6, seed=31)


def unit_batch(scenes: list[Any]) -> torch.Tensor:
    """The synthetic nets' input: RGB in [0, 1], no resizing."""
    return torch.stack([torch.from_numpy(s.image.astype(np.float32) / 255.0).permute(2, 0, 1)
                        for s in scenes])


# --------------------------------------------------------------------------- faithfulness


def localisation_maps(model: nn.Module, x: torch.Tensor, method: str, classes: torch.Tensor,
                      fill: float = 0.0) -> np.ndarray:
    """(B, H, W) maps at the input's resolution: what the evaluations compare."""
    target = classes.view(-1, 1)
    if method == "gradient":
        leaf = x.clone().requires_grad_(True)
        score = model(leaf).gather(1, target).sum()
        (grad,) = torch.autograd.grad(score, leaf)
        return grad.abs().amax(dim=1).numpy()
    layer = TinyGAPNet.LAYER if camlens.METHODS[method].needs_layer else None
    kw: dict[str, Any] = {"window": 16, "stride": 8, "fill": fill} if method == "occlusion" else {}
    ex = camlens.explain(model, x, method=method, layer=layer, target=target, **kw)
    raw = ex.raw.float()
    if raw.dim() == 5:  # pixel space (B, 1, 3, H, W)
        return raw[:, 0].abs().amax(dim=1).numpy()
    if method == "occlusion":
        return raw[:, 0].numpy()
    return F.interpolate(raw, size=tuple(x.shape[-2:]), mode="bilinear",
                         align_corners=False)[:, 0].numpy()


FAITH_METHODS = ["gradcam", "guided-backprop", "deconvnet", "guided-gradcam", "deconv-gradcam",
                 "gradient"]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(scipy.stats.spearmanr(a.ravel(), b.ravel()).statistic)


def expected_rho(model: nn.Module, scenes: list[Any], target: str, fill: float
                 ) -> dict[str, tuple[float, int]]:
    x = unit_batch(scenes)
    with torch.no_grad():
        top1 = model(x).argmax(dim=1)
    classes = top1 if target == "top1" else torch.tensor([s.objects[0].label for s in scenes])
    occ = localisation_maps(model, x, "occlusion", classes, fill)
    out = {}
    for method in FAITH_METHODS:
        maps = localisation_maps(model, x, method, classes)
        rhos = np.array([spearman(maps[b], occ[b]) for b in range(len(scenes))])
        ok = rhos[~np.isnan(rhos)]
        out[method] = (float(ok.mean()), int(np.isnan(rhos).sum()))
    return out


@pytest.mark.parametrize("target,fill", [("top1", 0.0), ("gt", 0.5)])
def test_faithfulness_is_spearman_with_occlusion(target: str, fill: float,
                                                 scenes: list[Any]) -> None:
    model = tiny_gapnet()
    specs = [(m, m, {}, TinyGAPNet.LAYER) for m in FAITH_METHODS]
    s = evaluate_faithfulness(model, scenes, method=specs, window=16, stride=8,
                              fill=fill, target=target, progress=False)
    want = expected_rho(model, scenes, target, fill)
    assert s.n == len(scenes)
    for method in FAITH_METHODS:
        assert s.mean_rho[method] == pytest.approx(want[method][0], abs=1e-3), method
        assert s.n_nan[method] == want[method][1], method


def test_faithfulness_parameters_change_the_reference(scenes: list[Any]) -> None:
    """What makes the test above able to fail: fill and target change the numbers, and the
    channel maximum of |raw| is not the channel mean, nor the maximum of raw."""
    model = tiny_gapnet()
    x = unit_batch(scenes)
    with torch.no_grad():
        top1 = model(x).argmax(dim=1).tolist()
    assert top1 != [s.objects[0].label for s in scenes]
    a, b = expected_rho(model, scenes, "top1", 0.0), expected_rho(model, scenes, "top1", 0.5)
    assert max(abs(a[m][0] - b[m][0]) for m in FAITH_METHODS) > 0.01
    ex = camlens.explain(model, x, method="guided-backprop", target=0)
    raw = ex.raw[:, 0]
    assert not torch.allclose(raw.abs().amax(1), raw.amax(1))
    assert not torch.allclose(raw.abs().amax(1), raw.abs().mean(1))


# --------------------------------------------------------------------------- pointing tolerance


@pytest.fixture(scope="module")
def pointing_samples(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    """A single bright pixel (the map's maximum) 10 px left of the object's mask."""
    folder = tmp_path_factory.mktemp("pointing")
    out = []
    for i in range(4):
        channel = np.zeros((24, 40), dtype=np.uint8)
        y = 6 + 3 * i
        channel[y, 5] = 255
        mask = np.zeros((24, 40), dtype=bool)
        mask[2:20, 15:30] = True
        out.append(write_sample(folder, f"p{i}", channel, i % 3, (15, 2, 29, 19), mask))
    return out


@pytest.mark.parametrize("tolerance,accuracy", [(8, 0.0), (10, 1.0), (12, 1.0), (9.5, 0.0)])
def test_pointing_tolerance_is_used(tolerance: float, accuracy: float,
                                    pointing_samples: list[Sample]) -> None:
    s = evaluate_pointing(oracle(), pointing_samples, layer="features", tolerance=tolerance,
                          top_k=1, held_out=0.25, progress=False)
    assert s.n_images == 3 and s.accuracy == accuracy
    e = evaluate("pointing", pointing_samples, model=oracle(), layer="features", top_k=1,
                 tolerance=tolerance, progress=False)
    assert e.accuracy == accuracy  # type: ignore[union-attr]


# --------------------------------------------------------------------------- the CLI's flags


def cli_table(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(["evaluate", *argv, "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.strip()


@pytest.mark.parametrize("task,flag,value,kwargs", [
    ("pointing", "--tolerance", "2", {"tolerance": 2.0, "method": "guided-backprop"}),
    ("faithfulness", "--fill", "0.5", {"fill": 0.5}),
    ("localization", "--threshold", "0.6", {"threshold": 0.6}),
])
def test_cli_flags_reach_the_evaluation(task: str, flag: str, value: str,
                                        kwargs: dict[str, Any],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    kwargs = dict(kwargs)
    common: dict[str, Any] = {"model": "synthetic:vgg", "progress": False,
                              "method": kwargs.pop("method", "gradcam")}
    extra = ["--method", common["method"]]
    if task == "faithfulness":
        common.update(window=32, stride=32)
        extra += ["--window", "32", "--stride", "32"]
    # pointing is a multi-object protocol: on single-object scenes every tolerance hits
    data = SYNTHETIC + (",kind=multi" if task == "pointing" else "")
    got = cli_table(capsys, task, "--data", data, "--model", "synthetic:vgg",
                    flag, value, *extra)
    assert got == evaluate(task, data, **common, **kwargs).markdown().strip()
    assert got != evaluate(task, data, **common).markdown().strip()  # the flag matters


# --------------------------------------------------------------------------- defaults


def test_connectivity_is_8_by_default() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[0:2, 0:2] = True
    mask[2:5, 2:5] = True  # touches the first square at a corner only
    labels, n = connected_components(mask)
    assert n == 1 and labels[0, 0] == labels[4, 4] == 1
    assert largest_component(mask).sum() == 4 + 9
    heat = mask.astype(float)
    assert bbox_from_map(heat) == (0, 0, 4, 4)
    assert bbox_from_map(heat, connectivity=4) == (2, 2, 4, 4)


@pytest.fixture(scope="module")
def diagonal_samples(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    """Two 6x6 squares touching at a corner: one object, its box around both."""
    folder = tmp_path_factory.mktemp("diagonal")
    out = []
    for i in range(3):
        channel = np.zeros((20, 24), dtype=np.uint8)
        channel[2 + i:8 + i, 2:8] = 255
        channel[8 + i:14 + i, 8:14] = 255
        out.append(write_sample(folder, f"d{i}", channel, i, (2, 2 + i, 13, 13 + i)))
    return out


def test_localization_joins_diagonal_neighbours(diagonal_samples: list[Sample]) -> None:
    s = evaluate_localization(oracle(), diagonal_samples, layer="features", top_k=1,
                              progress=False)
    assert s.top1_loc_error == 0.0 and s.top1_cls_error == 0.0
    for rec, sample in zip(s.records, diagonal_samples):
        assert rec.pred_boxes[0] == sample.objects[0].box


@pytest.fixture(scope="module")
def shoulder_samples(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    """An object at 255, a shoulder at 41 (16.1% of it, inside the box) and an outer band at
    31 (12.2%, outside): only a threshold in (0.122, 0.161] finds the box."""
    folder = tmp_path_factory.mktemp("shoulder")
    out = []
    for i in range(3):
        channel = np.zeros((16, 40), dtype=np.uint8)
        channel[2:13, 2:6] = 255
        channel[2:13, 6:18] = 41
        channel[2:13, 18:38] = 31
        out.append(write_sample(folder, f"s{i}", channel, i, (2, 2, 17, 12)))
    return out


def test_threshold_is_15_percent_of_the_maximum_by_default(shoulder_samples: list[Sample]
                                                            ) -> None:
    s = evaluate_localization(oracle(), shoulder_samples, layer="features", top_k=1,
                              progress=False)
    assert s.threshold == 0.15 and s.top1_loc_error == 0.0
    e = evaluate("localization", shoulder_samples, model=oracle(), layer="features", top_k=1,
                 progress=False)
    assert e.threshold == 0.15 and e.top1_loc_error == 0.0  # type: ignore[union-attr]
    for threshold in (0.1, 0.2):  # what a different default would give
        other = evaluate_localization(oracle(), shoulder_samples, layer="features", top_k=1,
                                      threshold=threshold, progress=False)
        assert other.top1_loc_error == 1.0


def test_cli_threshold_default_is_0_15(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    args = ["localization", "--data", SYNTHETIC, "--model", "synthetic:vgg_gap"]
    plain = cli_table(capsys, *args, "--csv", str(tmp_path / "a.csv"))
    explicit = cli_table(capsys, *args, "--threshold", "0.15", "--csv", str(tmp_path / "b.csv"))
    assert plain == explicit
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    library = evaluate("localization", SYNTHETIC, model="synthetic:vgg_gap", threshold=0.15,
                       progress=False)
    assert plain == library.markdown().strip()


# --------------------------------------------------------------------------- the map cache


def test_a_shared_cache_keeps_option_variants_apart(scenes: list[Any]) -> None:
    model = tiny_gapnet()
    fresh = {c: evaluate_localization(model, scenes, layer=TinyGAPNet.LAYER,
                                      options={"counterfactual": c},
                                      all_boxes=True, progress=False).records
             for c in (False, True)}
    assert fresh[False] != fresh[True]  # the option changes the boxes
    cache: dict[Any, Any] = {}
    for c in (True, False):
        again = evaluate_localization(model, scenes, layer=TinyGAPNet.LAYER,
                                      options={"counterfactual": c},
                                      all_boxes=True, cache=cache, progress=False)
        assert again.records == fresh[c], c

    faith = {f: evaluate_faithfulness(model, scenes, layer=TinyGAPNet.LAYER, window=32,
                                      stride=16, fill=f,
                                      progress=False).mean_rho for f in (0.0, 0.7)}
    assert faith[0.0] != faith[0.7]
    shared: dict[Any, Any] = {}
    for f in (0.0, 0.7):
        got = evaluate_faithfulness(model, scenes, layer=TinyGAPNet.LAYER, window=32,
                                      stride=16, fill=f, cache=shared,
                                    progress=False).mean_rho
        assert got == faith[f], f


# --------------------------------------------------------------------------- resume


def test_resume_redoes_an_image_cut_at_a_row_boundary(tmp_path: Path,
                                                      scenes: list[Any]) -> None:
    path = tmp_path / "pointing.csv"

    def run() -> Any:
        return evaluate_pointing(tiny_gapnet(), scenes, layer=TinyGAPNet.LAYER, csv_path=path,
                                 top_k=3, held_out=0.5,
                                 progress=False)

    full = run()
    text = path.read_text()
    lines = text.splitlines(keepends=True)  # a header, then one line per row
    ids = [row["image_id"] for row in csv.DictReader(io.StringIO(text))]
    first_of_last = 1 + ids.index(ids[-1])
    assert len(lines) - first_of_last >= 3  # the last image has several rows
    path.write_text("".join(lines[:first_of_last + 1]))  # only its first row, ending in "\n"
    again = run()
    assert again.resumed == len(scenes) - 1
    for key in ("accuracy", "accuracy_rejection", "accuracy_topk", "trials", "trials_topk",
                "n_images", "n_held_out"):
        assert getattr(again, key) == getattr(full, key), key
    # the redone image ran in a batch of one: its evidence may differ in the last float bits
    assert again.threshold == pytest.approx(full.threshold, rel=1e-5)

    def rows(csv_text: str) -> list[tuple[tuple[str, str], ...]]:
        return sorted(tuple(sorted((k, v) for k, v in r.items() if k != "evidence"))
                      for r in csv.DictReader(io.StringIO(csv_text)))

    assert rows(path.read_text()) == rows(text)


# --------------------------------------------------------------------------- the blur


@pytest.mark.parametrize("kernel_size,sigma", [(11, 5.0), (7, 2.0), (5, 0.8)])
def test_gaussian_blur_is_scipys(kernel_size: int, sigma: float) -> None:
    """gaussian_blur(k, sigma) = gaussian_filter(sigma, mode="nearest" (edge replicated),
    truncate=(k // 2) / sigma (radius k // 2)), per channel."""
    rng = np.random.default_rng(5)
    img = rng.random((3, 23, 31)).astype(np.float32)
    got = gaussian_blur(torch.from_numpy(img), kernel_size=kernel_size, sigma=sigma).numpy()
    want = scipy.ndimage.gaussian_filter(img.astype(np.float64), sigma=(0, sigma, sigma),
                                         mode="nearest", truncate=(kernel_size // 2) / sigma)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_curves_blur_baseline_is_scipys_default_blur() -> None:
    """Insertion starts from, and deletion with baseline="blur" ends at, the image blurred
    with an 11 px, sigma 5 Gaussian (RISE), edges replicated."""
    rng = np.random.default_rng(6)
    img = torch.from_numpy(rng.random((3, 20, 26)).astype(np.float32))
    heat = rng.random((20, 26))
    blurred = scipy.ndimage.gaussian_filter(img.numpy().astype(np.float64), sigma=(0, 5, 5),
                                            mode="nearest", truncate=1.0)
    seen: list[torch.Tensor] = []

    def score(batch: torch.Tensor) -> torch.Tensor:
        seen.extend(batch.clone())
        return batch.mean(dim=(1, 2, 3))

    insertion_curve(score, img, heat, steps=4)
    np.testing.assert_allclose(seen[0].numpy(), blurred, rtol=0, atol=1e-5)
    seen.clear()
    deletion_curve(score, img, heat, steps=4, baseline="blur")
    np.testing.assert_allclose(seen[-1].numpy(), blurred, rtol=0, atol=1e-5)


def test_pointing_trials_every_ground_truth_class_also_outside_the_top_k(
        scenes: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    # top-1 of an untrained net: most ground-truth classes are not its top class, and each is
    # still one trial of the standard game (and the top class one trial of the top-k game)
    from camlens.evaluate.tasks.pointing import held_out_positions

    s = evaluate_pointing(tiny_gapnet(), scenes, layer=TinyGAPNet.LAYER, top_k=1, held_out=0.5,
                          progress=True)
    assert "pointing gradcam" in capsys.readouterr().err  # the progress bar, as asked
    held = held_out_positions(len(scenes), 0.5)
    test = [sc for i, sc in enumerate(scenes) if i not in held]
    assert s.trials == sum(len(set(sc.labels)) for sc in test)
    assert s.trials_topk == len(test) and s.n_images == len(test)
    assert s.n_held_out == len(held) == 3


def test_pointing_takes_the_callers_preprocess_and_separate_held_out_samples(
        scenes: list[Any]) -> None:
    from camlens.evaluate import to_unit_tensor

    seen: list[tuple[int, int]] = []

    def preprocess(img: Image.Image) -> torch.Tensor:
        seen.append(img.size)
        return to_unit_tensor(img)

    import dataclasses

    from camlens.evaluate.synthetic_data import scenes_to_samples

    samples = list(scenes_to_samples(scenes))
    held = [dataclasses.replace(x, image_id=f"held-{i}") for i, x in enumerate(samples[4:])]
    s = evaluate_pointing(tiny_gapnet(), samples[:4], layer=TinyGAPNet.LAYER,
                          preprocess=preprocess, top_k=1,
                          held_out=held, progress=False)
    assert len(seen) == len(scenes)  # every image, test and held-out, went through it
    assert (s.n_images, s.n_held_out) == (4, 2)
    assert s.trials == sum(len(set(sc.labels)) for sc in scenes[:4])
