"""camlens.viz: colormaps, overlays, the Figure 1 grid, PNG output."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from camlens import viz
from camlens.explanation import Explanation
from camlens.viz.grid import _font_size

# ---------------------------------------------------------------- colormaps


def test_jet_matches_matplotlib_within_one_level() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    ref = matplotlib.colormaps["jet"](np.linspace(0, 1, 256))[:, :3]
    lut = viz.colormap("jet")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert np.abs(lut / 255.0 - ref).max() <= 1 / 255 + 1e-12


def test_jet_known_entries() -> None:
    lut = viz.colormap("jet")
    assert lut[0].tolist() == [0, 0, 128]  # dark blue (0.5 rounded half up)
    assert lut[30].tolist() == [0, 0, 255]  # x = 0.118: blue plateau, green not yet rising
    assert lut[255].tolist() == [128, 0, 0]  # dark red


def test_gray_and_optional_matplotlib_maps() -> None:
    assert np.array_equal(
        viz.colormap("gray"), np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1)
    )
    matplotlib = pytest.importorskip("matplotlib")
    ref = matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]
    assert np.abs(viz.colormap("viridis") / 255.0 - ref).max() <= 1 / 255 + 1e-12
    assert set(viz.BUILTIN_COLORMAPS) <= set(viz.COLORMAPS)


def test_colormap_returns_a_copy_and_unknown_name_lists_names() -> None:
    lut = viz.colormap("jet")
    lut[:] = 0
    assert viz.colormap("jet")[0, 2] == 128
    with pytest.raises(ValueError, match="jet.*gray"):
        viz.colormap("no-such-map")


def test_apply_colormap_bins_like_matplotlib() -> None:
    h = np.array([[0.0, 30 / 256], [1.0, np.nan]])
    out = viz.apply_colormap(h)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [0, 0, 128]
    assert out[0, 1].tolist() == [0, 0, 255]
    assert out[1, 0].tolist() == [128, 0, 0]
    assert out[1, 1].tolist() == [0, 0, 128]  # NaN -> lowest colour
    matplotlib = pytest.importorskip("matplotlib")
    x = np.random.default_rng(0).random((16, 16))
    ref = matplotlib.colormaps["jet"](x, bytes=True)[..., :3].astype(int)
    assert np.abs(viz.apply_colormap(x).astype(int) - ref).max() <= 1


# ---------------------------------------------------------------- resize and overlay


@pytest.mark.parametrize(
    "src,dst", [((2, 2), (4, 4)), ((7, 5), (13, 22)), ((10, 9), (4, 6)), ((3, 8), (3, 5))]
)
def test_overlay_resizes_like_torch_antialiased_bilinear(
    src: tuple[int, int], dst: tuple[int, int]
) -> None:
    x = torch.rand(src, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = F.interpolate(x[None, None], size=dst, mode="bilinear", align_corners=False,
                        antialias=True)[0, 0]
    out = np.asarray(viz.overlay(np.zeros((*dst, 3), np.uint8), x, alpha=1.0))
    assert np.array_equal(out, viz.apply_colormap(ref.numpy()))


def test_overlay_does_not_alias_a_shrunk_map() -> None:
    # A one-pixel checkerboard shrunk 3x: plain bilinear would pick single pixels (all 0 or 1);
    # averaged over each output pixel's footprint it is grey.
    board = (np.indices((6, 6)).sum(0) % 2).astype(np.float64)
    out = np.asarray(viz.overlay(np.zeros((2, 2, 3), np.uint8), board, 1.0, colormap="gray"))
    assert np.isin(out, (127, 128)).all()  # 0.5 (to rounding) everywhere: gray's middle bins


def test_overlay_blends_a_hand_made_2x2_case() -> None:
    image = np.array([[[0, 0, 0], [255, 255, 255]], [[100, 50, 200], [10, 20, 30]]], np.uint8)
    heat = np.array([[0.0, 1.0], [30 / 256, 0.0]])
    out = np.asarray(viz.overlay(image, heat, alpha=0.5))
    # jet(0) = (0,0,128), jet(1) = (128,0,0), jet(30/256) = (0,0,255); half-up rounding.
    assert out[0, 0].tolist() == [0, 0, 64]
    assert out[0, 1].tolist() == [192, 128, 128]  # (255+128)/2 = 191.5 -> 192, 127.5 -> 128
    assert out[1, 0].tolist() == [50, 25, 228]  # (200+255)/2 = 227.5 -> 228
    assert out[1, 1].tolist() == [5, 10, 79]  # (30+128)/2 = 79
    # alpha = 0 keeps the image, alpha = 1 is the colour alone; PIL input and torch heatmap
    assert np.array_equal(
        np.asarray(viz.overlay(Image.fromarray(image), torch.tensor(heat), alpha=0.0)), image
    )
    assert np.array_equal(np.asarray(viz.overlay(image, heat, alpha=1.0)), viz.apply_colormap(heat))
    with pytest.raises(ValueError):
        viz.overlay(image, heat, alpha=1.5)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.77, 1.0])
def test_overlay_equals_the_float64_blend_and_binning(alpha: float) -> None:
    # The blend is looked up and float32 maps are binned in float32: the bytes must equal
    # the float64 formula, also at the bin edges k/256 and just below them.
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)
    edges = np.arange(257) / 256
    values = np.concatenate([edges, np.nextafter(edges.astype(np.float32), np.float32(0)),
                             rng.random(40 * 64 - 2 * 257)])
    heat64 = values.reshape(40, 64)
    heat32 = heat64.astype(np.float32)
    for heat in (heat32, heat64, torch.from_numpy(heat32)):
        h = np.asarray(heat, dtype=np.float64)
        idx = np.clip(np.floor(np.nan_to_num(h) * 256), 0, 255).astype(int)
        colour = viz.colormap("jet")[idx].astype(np.float64)
        ref = np.floor((1.0 - alpha) * image + alpha * colour + 0.5).clip(0, 255)
        out = np.asarray(viz.overlay(image, heat, alpha=alpha))
        assert np.array_equal(out, ref.astype(np.uint8))
        assert np.array_equal(viz.apply_colormap(heat), viz.colormap("jet")[idx])


def test_overlay_resizes_heatmap_like_torch_interpolate() -> None:
    # 2x2 -> 4x4 with values in quarters: bilinear weights 1/4, 3/4 make every value exact.
    heat = torch.tensor([[0.0, 1.0], [0.5, 0.25]])
    image = np.full((4, 4, 3), 40, np.uint8)
    up = F.interpolate(heat[None, None], size=(4, 4), mode="bilinear", align_corners=False)[0, 0]
    expected = np.floor(0.75 * 40 + 0.25 * viz.apply_colormap(up.numpy()).astype(float) + 0.5)
    out = np.asarray(viz.overlay(image, heat[None], alpha=0.25))  # leading singleton dim dropped
    assert out.shape == (4, 4, 3)
    assert np.array_equal(out, expected.astype(np.uint8))


def test_pixel_space_image_accepts_both_layouts() -> None:
    m = torch.zeros(3, 2, 4)
    m[0, 0, 0], m[1, 1, 3], m[2] = 1.0, 0.5, 2.0  # 2.0 is clipped
    a = np.asarray(viz.pixel_space_image(m, percentile=None))
    b = np.asarray(viz.pixel_space_image(m.permute(1, 2, 0).numpy(), percentile=None))
    assert a.shape == (2, 4, 3) and np.array_equal(a, b)
    assert a[0, 0].tolist() == [255, 0, 255] and a[1, 3].tolist() == [0, 128, 255]


def test_pixel_space_image_stretches_around_grey() -> None:
    # 0.5 is "no contribution"; one outlier must not flatten the rest to grey.
    m = np.full((10, 10, 3), 0.5)
    m[0, 0] = 1.0  # the outlier, deviation 0.5
    m[1:, :] = 0.51  # 90 of 100 pixels deviate by 0.01: that is the 90th percentile
    out = np.asarray(viz.pixel_space_image(m, percentile=90.0)).astype(int)
    assert out[0, 0].tolist() == [255, 255, 255]  # clipped
    assert out[5, 5].tolist() == [255, 255, 255]  # 0.5 + 0.01 * (0.5 / 0.01) = 1.0
    assert out[0, 5].tolist() == [128, 128, 128]  # zero stays grey
    plain = np.asarray(viz.pixel_space_image(m, percentile=None)).astype(int)
    assert plain[5, 5].tolist() == [130, 130, 130]
    with pytest.raises(ValueError):
        viz.pixel_space_image(np.zeros((4, 4)))


# ---------------------------------------------------------------- grids


def test_figure1_size_and_panel_offsets() -> None:
    image = Image.new("RGB", (60, 40), (10, 20, 30))
    red = Image.new("RGB", (60, 40), (255, 0, 0))
    green = Image.new("RGB", (30, 20), (0, 255, 0))  # same aspect, scaled up to fill the cell
    rows = [
        viz.Row("tabby (p=0.71)", {"gradcam": red}),
        viz.Row("boxer (p=0.12)", {"guided_gradcam": green, "counterfactual": red}),
    ]
    fig = viz.figure1(image, rows, panel_height=50, pad=4)
    lay = viz.figure1_layout(image.size, 2, panel_height=50, pad=4)
    pw = round(50 * 60 / 40)
    assert (lay.panel_w, lay.panel_h) == (pw, 50)
    width = 4 + 5 * (pw + 4)
    height = 4 + lay.header_h + 2 * (lay.title_h + 50 + 4)
    assert fig.size == lay.size == (width, height)
    assert lay.header_h > 0 and lay.title_h > 0

    px = fig.load()

    def centre(r: int, c: int) -> tuple[int, int, int]:
        x0, y0, x1, y1 = lay.cell(r, c)
        assert (x1 - x0, y1 - y0) == (pw, 50)
        return px[(x0 + x1) // 2, (y0 + y1) // 2]

    for r in range(2):  # the image column falls back to the original
        assert centre(r, 0) == (10, 20, 30)
    assert centre(0, 2) == (255, 0, 0)
    assert centre(1, 3) == (0, 255, 0) and centre(1, 4) == (255, 0, 0)
    assert centre(0, 1) == (255, 255, 255) and centre(1, 2) == (255, 255, 255)  # missing: blank
    x0, y0, x1, y1 = lay.cell(0, 2)  # the solid panel fills its cell exactly
    assert px[x0, y0] == px[x1 - 1, y1 - 1] == (255, 0, 0)
    assert px[x0 - 1, y0] == px[x1, y0] == (255, 255, 255)
    assert px[x0, y1] == (255, 255, 255)  # below the panel: gap or next title band
    # text was drawn: some dark pixels in the header band and in row 1's title band
    arr = np.asarray(fig)
    assert arr[: lay.cell(0, 0)[1] - lay.title_h].min() < 128
    assert arr[lay.row_top(1) : lay.cell(1, 0)[1]].min() < 128


def test_figure1_custom_columns_and_other_aspect_panel_is_centred() -> None:
    image = Image.new("RGB", (40, 40), (0, 0, 0))
    tall = Image.new("RGB", (10, 40), (0, 0, 255))
    fig = viz.figure1(
        image, [viz.Row("x", {"m": tall})], columns=[("m", "Map")], panel_height=40, pad=2
    )
    lay = viz.figure1_layout(image.size, 1, [("m", "Map")], panel_height=40, pad=2)
    assert fig.size == lay.size == (2 + 42, 2 + lay.header_h + lay.title_h + 42)
    x0, y0, _, _ = lay.cell(0, 0)
    px = fig.load()
    assert px[x0 + 20, y0 + 20] == (0, 0, 255)  # 10 px wide, centred at 15..24
    assert px[x0 + 2, y0 + 20] == (255, 255, 255)


def _fake_explanation(pixel: bool, with_targets: bool = True) -> Explanation:
    g = torch.Generator().manual_seed(0)
    maps = torch.rand((2, 3, 3, 16, 24) if pixel else (2, 3, 16, 24), generator=g)
    return Explanation(
        method="guided_gradcam" if pixel else "gradcam",
        maps=maps,
        raw=torch.rand(2, 3, 4, 6, generator=g),
        scores=torch.rand(2, 3, generator=g),
        targets=torch.tensor([[1, 2, 3], [4, 5, 6]]) if with_targets else None,
    )


@pytest.mark.parametrize("pixel", [False, True])
def test_explanation_png_decodes_with_expected_size(pixel: bool) -> None:
    ex = _fake_explanation(pixel)
    png = viz.explanation_png(ex, sample=1, panel_height=32)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    lay = viz.grid_layout(1, 3, (round(32 * 24 / 16), 32))
    assert img.size == lay.size
    assert ex._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explanation_png_with_image_uses_its_aspect() -> None:
    ex = _fake_explanation(False, with_targets=False)
    image = Image.new("RGB", (50, 25), (0, 0, 0))
    img = Image.open(io.BytesIO(viz.explanation_png(ex, image, panel_height=30)))
    assert img.size == viz.grid_layout(1, 3, (60, 30)).size
    with pytest.raises(IndexError):
        viz.explanation_png(ex, sample=2)


# ---------------------------------------------------------------- saving


def test_save_png_atomic(tmp_path: Path) -> None:
    dest = tmp_path / "out.png"
    assert viz.save_png(Image.new("RGB", (3, 2), (1, 2, 3)), dest) == dest
    with Image.open(dest) as img:
        assert img.size == (3, 2) and img.getpixel((0, 0)) == (1, 2, 3)
    assert sorted(os.listdir(tmp_path)) == ["out.png"]
    before = dest.read_bytes()
    with pytest.raises(OSError):  # PNG cannot hold CMYK: the save raises mid-write
        viz.save_png(Image.new("CMYK", (3, 2)), dest)
    assert sorted(os.listdir(tmp_path)) == ["out.png"]  # no temp left behind
    assert dest.read_bytes() == before  # destination untouched


def test_caption_draws_a_band_and_keeps_the_original() -> None:
    base = Image.new("RGB", (120, 90), (200, 30, 30))
    out = viz.caption(base, "no evidence: the map is zero")
    a = np.asarray(out)
    assert out.size == base.size and np.asarray(base).min() == 30  # the input is untouched
    band = _font_size(90) * 3 // 2 + 6
    assert (a[: 90 - band] == (200, 30, 30)).all()  # above the band: unchanged
    assert (a[-1] == 0).all() and (a[90 - band:] > 200).sum() > 100  # black band, white text


def test_shrink_to_caps_the_longer_side() -> None:
    big = Image.new("RGB", (4000, 3000), (10, 200, 30))
    small = viz.shrink_to(big, 768)
    assert small.size == (768, 576)
    assert small.getpixel((100, 100)) == (10, 200, 30)
    assert viz.shrink_to(small, 768) is small  # already fits: the image itself
    assert viz.shrink_to(Image.new("RGB", (1, 5000)), 768).size == (1, 768)
    with pytest.raises(ValueError, match="max_side"):
        viz.shrink_to(small, 0)
