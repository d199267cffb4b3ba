"""`camlens explain` writes what `camlens.explain` computes: for every image, method and target,
the maps in maps.npz are explain's maps of the preprocessed photo, bilinearly resized to the
photo; the overlay PNGs are `camlens.viz.overlay` of those maps with --alpha and --colormap.

Only public entry points: `camlens.cli.main`, `camlens.explain`, `camlens.viz`, the files the
command writes. The reference preprocessing is written out here from the documented rule
(shorter side resized to --input-size with PIL's bilinear filter, aspect kept, no crop, then
(pixel / 255 - mean) / std), so a change of the CLI's preprocessing shows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import camlens
import camlens.models
from camlens import METHODS, viz
from camlens.cli import main
from camlens.io import sample_image
from models import TINY_NET_SOURCE
from module_support import load_file  # noqa: E402

MAP_ATOL = 2e-3  # float16 storage of maps.npz rounds by up to 2.4e-4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COUNTERFACTUAL = "counterfactual-gradcam"
ALL_METHODS = sorted(set(METHODS) | {COUNTERFACTUAL})
SIZE = 96  # --input-size

TINY_NET = TINY_NET_SOURCE + """

def build():
    torch.manual_seed(3)
    return TinyNet().eval()
"""


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a loaded machine two OpenMP threads are many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- references


def preprocess(path: Path, size: int = SIZE, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """(1, 3, h, w): the shorter side resized to ``size`` (PIL bilinear), normalised."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    w, h = rgb.size
    scale = size / min(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    if new != (w, h):
        rgb = rgb.resize(new, Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x[None].contiguous()


def expected_map(model: torch.nn.Module, x: torch.Tensor, method: str, cls: int,
                 layer: str | None, photo_hw: tuple[int, int]) -> np.ndarray:
    """explain's map of class ``cls``, bilinearly resized to the photo: (H, W) or (H, W, 3)."""
    base, options = method, {}
    if method == COUNTERFACTUAL:
        base, options = "gradcam", {"counterfactual": True}
    with_layer = METHODS[base].needs_layer
    ex = camlens.explain(model, x, method=base, layer=layer if with_layer else None,
                         target=cls, **options)  # type: ignore[arg-type]
    m = ex.maps[0, 0].float()
    pixel = m.dim() == 3
    m = m if pixel else m[None]
    assert photo_hw[0] >= m.shape[-2] and photo_hw[1] >= m.shape[-1]  # upsampling only
    up = F.interpolate(m[None], size=photo_hw, mode="bilinear", align_corners=False)[0]
    arr = up.clamp(0.0, 1.0).numpy()
    return np.moveaxis(arr, 0, -1) if pixel else arr[0]


def read_maps(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "maps.npz") as npz:
        return {k: npz[k].astype(np.float32) for k in npz.files}


def classes_of(maps: dict[str, np.ndarray], method: str) -> list[int]:
    return sorted(int(k.split("/")[1]) for k in maps if k.split("/")[0] == method)


def photo_hw(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.height, img.width


def assert_png_matches(path: Path, want: Image.Image) -> None:
    """The PNG equals ``want`` up to colour bins that float16 storage of a map may move."""
    with Image.open(path) as img:
        got = np.asarray(img.convert("RGB"), dtype=np.int16)
    ref = np.asarray(want, dtype=np.int16)
    assert got.shape == ref.shape, path.name
    diff = np.abs(got - ref)
    assert diff.mean() < 0.5 and diff.max() <= 8, (path.name, diff.mean(), diff.max())


def run(*argv: Any) -> int:
    return main([str(a) for a in argv])


# --------------------------------------------------------------------------- a model from a file


def load_file_model(path: Path) -> torch.nn.Module:
    return load_file(path, "camlens_behaviour_tinynet").build()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("behaviour")
    (root / "tinynet.py").write_text(TINY_NET)
    rng = np.random.default_rng(11)
    for name in ("a", "b"):  # two photos of one size: one batch
        noise = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        Image.fromarray(noise).save(root / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def tiny(workdir: Path) -> torch.nn.Module:
    return load_file_model(workdir / "tinynet.py")


@pytest.fixture(scope="module")
def every_method(workdir: Path) -> Path:
    """Both photos in one batch, every method (counterfactual Grad-CAM too), top-3 classes."""
    out = workdir / "every"
    argv = ["explain", workdir / "a.png", workdir / "b.png", "--model",
            f"{workdir / 'tinynet.py'}:build", "--layer", "features", "--input-size", SIZE,
            "--top-k", 3, "--batch-size", 2, "--out", out, "--quiet"]
    for m in ALL_METHODS:
        argv += ["--method", m]
    assert run(*argv) == 0
    return out


@pytest.mark.parametrize("stem", ["a", "b"])
def test_every_method_and_target_equals_explain(stem: str, workdir: Path, every_method: Path,
                                                tiny: torch.nn.Module) -> None:
    photo = workdir / f"{stem}.png"
    hw = photo_hw(photo)
    x = preprocess(photo)
    top3 = sorted(tiny(x)[0].topk(3).indices.tolist())
    maps = read_maps(every_method / stem)
    assert {k.split("/")[0] for k in maps} == set(ALL_METHODS)
    for method in ALL_METHODS:
        assert classes_of(maps, method) == top3, method
        for cls in top3:
            want = expected_map(tiny, x, method, cls, "features", hw)
            got = maps[f"{method}/{cls}"]
            assert got.shape == want.shape, (method, cls)
            np.testing.assert_allclose(got, want, rtol=0, atol=MAP_ATOL,
                                       err_msg=f"{stem} {method}/{cls}")


def test_the_batch_and_the_targets_give_different_maps(workdir: Path, every_method: Path
                                                       ) -> None:
    """What makes the test above able to fail: the two photos, the targets and counterfactual
    versus plain Grad-CAM differ, so a CLI mixing them up could not pass it."""
    a, b = read_maps(every_method / "a"), read_maps(every_method / "b")
    shared = [k for k in a if k in b and k.startswith("gradcam/")]
    assert shared and all(np.abs(a[k] - b[k]).max() > 0.1 for k in shared)
    for maps in (a, b):
        for method in ("gradcam", "guided-backprop", "occlusion"):
            c = classes_of(maps, method)
            assert np.abs(maps[f"{method}/{c[0]}"] - maps[f"{method}/{c[1]}"]).max() > 0.1
    plain_vs_counter = [np.abs(a[f"gradcam/{c}"] - a[f"{COUNTERFACTUAL}/{c}"]).max()
                        for c in classes_of(a, "gradcam")]
    assert max(plain_vs_counter) > 0.1


@pytest.mark.parametrize("stem", ["a", "b"])
def test_pngs_are_the_documented_pictures_of_the_maps(stem: str, workdir: Path,
                                                      every_method: Path) -> None:
    """Heatmaps: viz.overlay(photo, map) with the defaults alpha 0.5 and jet; pixel-space maps:
    viz.pixel_space_image(map)."""
    with Image.open(workdir / f"{stem}.png") as img:
        photo = img.convert("RGB")
    for key, m in read_maps(every_method / stem).items():
        if m.max() == m.min():  # a constant map's picture carries a "no evidence" caption
            continue
        want = viz.pixel_space_image(m) if m.ndim == 3 else viz.overlay(photo, m, alpha=0.5,
                                                                        colormap="jet")
        assert_png_matches(every_method / stem / (key.replace("/", "_") + ".png"), want)


def test_explicit_targets_in_their_order(workdir: Path, tiny: torch.nn.Module) -> None:
    out = workdir / "targets"
    assert run("explain", workdir / "a.png", "--model", f"{workdir / 'tinynet.py'}:build",
               "--layer", "features", "--input-size", SIZE, "--target", 3, "--target", 0,
               "--method", "gradcam", "--method", "deconvnet", "--out", out, "--quiet") == 0
    photo = workdir / "a.png"
    x = preprocess(photo)
    maps = read_maps(out / "a")
    assert sorted(maps) == ["deconvnet/0", "deconvnet/3", "gradcam/0", "gradcam/3"]
    for key, got in maps.items():
        method, cls = key.split("/")
        want = expected_map(tiny, x, method, int(cls), "features", photo_hw(photo))
        np.testing.assert_allclose(got, want, rtol=0, atol=MAP_ATOL, err_msg=key)
    assert np.abs(maps["gradcam/0"] - maps["gradcam/3"]).max() > 0.1


def test_mean_and_std_are_used(workdir: Path, tiny: torch.nn.Module) -> None:
    mean, std = (0.1, 0.7, 0.3), (0.5, 0.2, 0.4)
    out = workdir / "norm"
    assert run("explain", workdir / "b.png", "--model", f"{workdir / 'tinynet.py'}:build",
               "--layer", "features", "--input-size", SIZE, "--top-k", 2,
               "--mean", *mean, "--std", *std, "--method", "gradcam",
               "--method", "guided-backprop", "--out", out, "--quiet") == 0
    photo = workdir / "b.png"
    x = preprocess(photo, mean=mean, std=std)
    hw = photo_hw(photo)
    maps = read_maps(out / "b")
    assert classes_of(maps, "gradcam") == sorted(tiny(x)[0].topk(2).indices.tolist())
    differs = []
    for key, got in maps.items():
        method, cls = key.split("/")
        want = expected_map(tiny, x, method, int(cls), "features", hw)
        np.testing.assert_allclose(got, want, rtol=0, atol=MAP_ATOL, err_msg=key)
        imagenet = expected_map(tiny, preprocess(photo), method, int(cls), "features", hw)
        differs.append(np.abs(imagenet - want).max())
    assert max(differs) > 0.1  # the normalisation matters for these maps


def test_alpha_and_colormap_are_used(workdir: Path) -> None:
    out = workdir / "colours"
    assert run("explain", workdir / "a.png", "--model", f"{workdir / 'tinynet.py'}:build",
               "--layer", "features", "--input-size", SIZE, "--top-k", 2,
               "--method", "gradcam", "--method", "occlusion", "--alpha", 0.8,
               "--colormap", "viridis", "--out", out, "--quiet") == 0
    with Image.open(workdir / "a.png") as img:
        photo = img.convert("RGB")
    maps = read_maps(out / "a")
    checked = 0
    for key, m in maps.items():
        if m.max() == m.min():
            continue
        png = out / "a" / (key.replace("/", "_") + ".png")
        assert_png_matches(png, viz.overlay(photo, m, alpha=0.8, colormap="viridis"))
        with Image.open(png) as img:  # and not the defaults
            got = np.asarray(img.convert("RGB"), dtype=np.int16)
        for alpha, cmap in ((0.5, "viridis"), (0.8, "jet")):
            other = np.asarray(viz.overlay(photo, m, alpha=alpha, colormap=cmap), dtype=np.int16)
            assert np.abs(got - other).mean() > 5, (key, alpha, cmap)
        checked += 1
    assert checked >= 3


# --------------------------------------------------------------------------- the bundled model


@pytest.fixture(scope="module")
def bundled() -> camlens.models.ModelRecord:
    return camlens.models.load_model(input_size=SIZE)


def test_bundled_model_default_methods_equal_explain(tmp_path: Path,
                                                     bundled: camlens.models.ModelRecord,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # the CLI reuses this instance (it leaves models untouched) instead of reading the weights
    monkeypatch.setattr(camlens.models, "efficientnet_lite0",
                        lambda pretrained=True: bundled.model)
    assert run("explain", "sample:chelsea", "--input-size", SIZE, "--out", tmp_path,
               "--quiet") == 0
    photo = sample_image("chelsea")
    x = preprocess(photo)
    hw = photo_hw(photo)
    maps = read_maps(tmp_path / "chelsea")
    with torch.no_grad():
        top3 = sorted(bundled.model(x)[0].topk(3).indices.tolist())
    default = ["gradcam", "guided-backprop", "guided-gradcam", COUNTERFACTUAL]
    assert sorted(maps) == sorted(f"{m}/{c}" for m in default for c in top3)
    for key, got in maps.items():
        method, cls = key.split("/")
        want = expected_map(bundled.model, x, method, int(cls), bundled.default_layer, hw)
        np.testing.assert_allclose(got, want, rtol=0, atol=MAP_ATOL, err_msg=key)
