"""camlens.io: every image mode to 8-bit RGB, clear errors, samples, inputs, atomic writes."""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import camlens.io as cio
from camlens.io import (
    SAMPLE_IMAGES,
    ImageError,
    atomic_path,
    atomic_write_bytes,
    load_image,
    resolve_inputs,
    sample_image,
)


def _pixels(img: Image.Image) -> list[tuple[int, int, int]]:
    assert img.mode == "RGB"
    return [tuple(int(v) for v in px) for px in np.asarray(img).reshape(-1, 3)]


def _save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    img.save(path, **kwargs)
    return path


def _noise(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# --------------------------------------------------------------------------- modes


def test_rgb_png_round_trips_exactly(tmp_path: Path) -> None:
    src = _noise()
    img = load_image(_save(src, tmp_path / "a.png"))
    assert img.size == (64, 48)
    np.testing.assert_array_equal(np.asarray(img), np.asarray(src))
    assert getattr(img, "fp", None) is None  # fully decoded, detached from the file


def test_grayscale_l(tmp_path: Path) -> None:
    src = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), mode="L")
    got = _pixels(load_image(_save(src, tmp_path / "g.png")))
    assert got == [(0, 0, 0), (77, 77, 77), (255,) * 3]


def test_one_bit(tmp_path: Path) -> None:
    src = Image.new("1", (2, 1))
    src.putpixel((1, 0), 1)
    assert _pixels(load_image(_save(src, tmp_path / "b.png"))) == [(0, 0, 0), (255, 255, 255)]


def test_rgba_transparent_pixels_become_white(tmp_path: Path) -> None:
    arr = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    img = load_image(_save(Image.fromarray(arr, mode="RGBA"), tmp_path / "t.png"))
    got = _pixels(img)
    assert got[0] == (255, 255, 255)
    assert got[1] == (10, 20, 30)
    assert all(abs(v - 127) <= 1 for v in got[2])  # half-transparent black on white


def test_la_transparent_pixels_become_white(tmp_path: Path) -> None:
    arr = np.array([[[40, 0], [40, 255]]], dtype=np.uint8)
    img = load_image(_save(Image.fromarray(arr, mode="LA"), tmp_path / "la.png"))
    assert _pixels(img) == [(255, 255, 255), (40, 40, 40)]


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([200, 0, 0, 0, 0, 200] + [0] * (256 * 3 - 6))
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    assert _pixels(load_image(_save(pal, tmp_path / "p.gif"))) == [(200, 0, 0), (0, 0, 200)]
    assert _pixels(load_image(_save(pal, tmp_path / "pt.png", transparency=0))) == [
        (255, 255, 255),
        (0, 0, 200),
    ]


def test_rgb_with_transparent_colour_key(tmp_path: Path) -> None:
    arr = np.array([[[1, 2, 3], [9, 9, 9]]], dtype=np.uint8)
    path = _save(Image.fromarray(arr), tmp_path / "key.png", transparency=(1, 2, 3))
    assert _pixels(load_image(path)) == [(255, 255, 255), (9, 9, 9)]


def test_cmyk(tmp_path: Path) -> None:
    src = Image.new("CMYK", (3, 1))
    src.putpixel((0, 0), (0, 0, 0, 0))
    src.putpixel((1, 0), (0, 0, 0, 255))
    src.putpixel((2, 0), (255, 0, 0, 0))
    img = load_image(_save(src, tmp_path / "c.tif"))
    assert _pixels(img) == [(255, 255, 255), (0, 0, 0), (0, 255, 255)]


def test_sixteen_bit_scales_full_range(tmp_path: Path) -> None:
    arr = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    src = Image.fromarray(arr)
    assert src.mode.startswith("I;16")
    img = load_image(_save(src, tmp_path / "s16.png"))
    assert _pixels(img) == [(0, 0, 0), (1, 1, 1), (128, 128, 128), (255, 255, 255)]


def test_sixteen_bit_small_values_are_not_stretched(tmp_path: Path) -> None:
    # 0..1000 in a 16-bit file is dark: scaled by 65535, not by the data maximum
    src = Image.fromarray(np.array([[0, 1000]], dtype=np.uint16))
    img = load_image(_save(src, tmp_path / "dark.png"))
    assert _pixels(img) == [(0, 0, 0), (4, 4, 4)]


def test_int32_mode_i(tmp_path: Path) -> None:
    src = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32), mode="I")
    assert _pixels(load_image(_save(src, tmp_path / "i.tif"))) == [(0,) * 3, (128,) * 3, (255,) * 3]
    wide = Image.fromarray(np.array([[-100, 0, 100_000]], dtype=np.int32), mode="I")
    got = _pixels(load_image(_save(wide, tmp_path / "iw.tif")))
    assert got[0] == (0, 0, 0) and got[2] == (255, 255, 255)


def test_float_mode_f(tmp_path: Path) -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    got = _pixels(load_image(_save(unit, tmp_path / "f.tif")))
    assert got == [(0,) * 3, (128,) * 3, (255,) * 3]
    wide = Image.fromarray(np.array([[-2.0, 0.0, 2.0, np.nan]], dtype=np.float32), mode="F")
    got = _pixels(load_image(_save(wide, tmp_path / "fw.tif")))
    assert got[:3] == [(0,) * 3, (128,) * 3, (255,) * 3]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    src = Image.new("RGB", (40, 20), (255, 0, 0))
    src.paste((0, 0, 255), (0, 0, 10, 20))  # blue band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(src, tmp_path / "rot.jpg", exif=exif, quality=95)
    img = load_image(path)
    assert img.size == (20, 40)
    top_left = np.asarray(img)[2, 10]
    assert top_left[2] > 200 and top_left[0] < 60  # the left band is now on top


def test_first_frame_of_animated_gif(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert _pixels(load_image(path))[0] == (255, 0, 0)


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty \(0 bytes\)"):
        load_image(path)


def test_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "garbage.png"
    path.write_bytes(b"this is not an image at all" * 20)
    with pytest.raises(ImageError, match="not an image") as info:
        load_image(path)
    assert "\n" not in str(info.value)
    assert "PNG" in str(info.value)  # says what would be right


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files(tmp_path: Path, suffix: str) -> None:
    full = _save(_noise(128, 96), tmp_path / f"full{suffix}")
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt") as info:
        load_image(cut)
    assert str(cut) in str(info.value)


def test_decompression_bomb_limit(tmp_path: Path) -> None:
    path = _save(Image.new("L", (2000, 2000)), tmp_path / "big.png")
    with pytest.raises(ImageError) as info:
        load_image(path, max_pixels=1_000_000)
    message = str(info.value)
    assert "4000000 pixels" in message
    assert "1000000" in message
    assert "max_pixels" in message and "--max-pixels" in message
    assert load_image(path, max_pixels=4_000_000).size == (2000, 2000)
    assert load_image(path, max_pixels=None).size == (2000, 2000)


def test_limit_does_not_depend_on_pil_global(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _save(Image.new("L", (300, 200)), tmp_path / "mid.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would refuse this file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path).size == (300, 200)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored
    with pytest.raises(ImageError, match="limit of 50000 pixels"):
        load_image(path, max_pixels=50_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # nor would a disabled global loosen ours
    with pytest.raises(ImageError, match="limit of 50000 pixels"):
        load_image(path, max_pixels=50_000)


def test_bad_max_pixels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(tmp_path / "x.png", max_pixels=0)


# --------------------------------------------------------------------------- samples


@pytest.mark.parametrize("name", sorted(SAMPLE_IMAGES))
def test_samples_resolve_offline(name: str) -> None:
    package = SAMPLE_IMAGES[name][0]
    pytest.importorskip(package)
    path = sample_image(name)
    assert path.is_file()
    assert sample_image(f"sample:{name}") == path
    img = load_image(path)
    assert img.mode == "RGB" and min(img.size) >= 256


def test_unknown_sample_lists_names() -> None:
    with pytest.raises(ImageError) as info:
        sample_image("dog")
    for name in SAMPLE_IMAGES:
        assert name in str(info.value)


def test_sample_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImageError, match=r"pip install \"camlens\[samples\]\""):
        sample_image("chelsea")
    with pytest.raises(ImageError, match=r"camlens\[viz\]"):
        sample_image("grace_hopper")


# --------------------------------------------------------------------------- inputs


def test_resolve_inputs_expands_folders(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    names = ["b.png", "A.JPG", "sub/c.Tiff", "sub/deeper/d.webp", "notes.txt", ".e.png"]
    for rel in [*names, ".hidden/f.png"]:
        (root / rel).write_bytes(b"x")
    single = tmp_path / "single.bin"
    single.write_bytes(b"x")
    got = resolve_inputs([str(root), str(single), str(root / "b.png")])
    rel = [p.relative_to(tmp_path).as_posix() for p in got]
    assert rel == [
        "photos/A.JPG",
        "photos/b.png",
        "photos/sub/c.Tiff",
        "photos/sub/deeper/d.webp",
        "single.bin",  # named explicitly: kept whatever its extension
    ]
    only_png = resolve_inputs([str(root)], extensions=["PNG"])
    assert [p.name for p in only_png] == ["b.png"]


def test_resolve_inputs_samples() -> None:
    pytest.importorskip("skimage")
    assert resolve_inputs(["sample:coffee"]) == [sample_image("coffee")]


def test_resolve_inputs_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file or folder"):
        resolve_inputs([str(tmp_path / "missing.jpg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no images"):
        resolve_inputs([str(tmp_path / "empty")])
    with pytest.raises(ImageError, match="unknown sample"):
        resolve_inputs(["sample:nothing"])


# --------------------------------------------------------------------------- writing


def test_atomic_write_bytes(tmp_path: Path) -> None:
    target = tmp_path / "out" / "result.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.bin"]


def test_atomic_path_keeps_suffix_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "img.png"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and not tmp.exists()
        Image.new("RGB", (3, 2)).save(tmp)
    assert Image.open(target).size == (3, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["img.png"]


def test_atomic_path_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_bytes(b"original")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert target.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]

    fresh = tmp_path / "new.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(fresh):
            raise RuntimeError("before writing anything")
    assert not fresh.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


# --------------------------------------------------------------------------- process-wide state


def test_loading_leaves_pillow_limit_and_warning_filters_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread must see Pillow's guard and the warning filters unchanged while a large
    image (above Pillow's limit, within camlens's) is decoded."""
    path = _save(_noise(1200, 900), tmp_path / "large.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # Pillow alone: error above 200k
    seen_limits: set[object] = set()
    seen_filters: set[tuple[int, int]] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen_limits.add(Image.MAX_IMAGE_PIXELS)
            seen_filters.add((id(warnings.filters), len(warnings.filters)))

    decoding_limits: list[object] = []
    real_prepare = ImageFile.ImageFile.load_prepare

    def spy(self: ImageFile.ImageFile) -> None:  # what a thread would see mid-decode
        decoding_limits.append(Image.MAX_IMAGE_PIXELS)
        real_prepare(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load_prepare", spy)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(10):
            assert load_image(path).size == (1200, 900)
    finally:
        stop.set()
        watcher.join()
    assert seen_limits == {100_000}
    assert len(seen_filters) == 1
    assert decoding_limits and set(decoding_limits) == {100_000}


# --------------------------------------------------------------------------- what a file is


def test_fifo_is_refused_by_what_it_is_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match=r"pipe\.png: is a FIFO \(named pipe\), not a regular"):
        load_image(fifo)  # nobody writes to it: a blocking open would hang here


@pytest.mark.skipif(not Path("/dev/urandom").exists(), reason="no /dev/urandom")
def test_device_is_refused_by_what_it_is() -> None:
    for dev in ("/dev/urandom", "/dev/null"):
        with pytest.raises(ImageError, match=f"{dev}: is a character device, not a regular"):
            load_image(dev)


def test_symlink_loop_and_broken_link(tmp_path: Path) -> None:
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop.name)
    with pytest.raises(ImageError, match=r"loop\.png: is a symbolic link loop"):
        load_image(loop)
    broken = tmp_path / "broken.png"
    broken.symlink_to("gone.png")
    with pytest.raises(ImageError, match=r"broken\.png: is a symbolic link to gone\.png, which"):
        load_image(broken)


def test_resolve_inputs_keeps_odd_files_for_load_image_to_report(tmp_path: Path) -> None:
    """A link loop or FIFO in a folder must not end the expansion (it raised RuntimeError)."""
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").symlink_to("b.png")
    os.mkfifo(tmp_path / "c.png")
    assert [p.name for p in resolve_inputs([str(tmp_path)])] == ["a.png", "b.png", "c.png"]
    assert resolve_inputs([str(tmp_path / "b.png")]) == [tmp_path / "b.png"]


def test_postscript_named_jpg_never_reaches_the_eps_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import EpsImagePlugin

    calls: list[str] = []

    def spy(self: object) -> None:
        calls.append("eps")
        raise SyntaxError("spy")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", spy)
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="not an image camlens can read"):
        load_image(fake)
    assert calls == []
    assert cio.RASTER_FORMATS == ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("GIF", ".gif"),
                                        ("BMP", ".bmp"), ("TIFF", ".tif"), ("WEBP", ".webp")])
def test_every_raster_format_still_reads_whatever_its_name(tmp_path: Path, fmt: str,
                                                           suffix: str) -> None:
    src = Image.new("RGB", (6, 4), (200, 30, 10))
    path = tmp_path / f"picture{suffix}.data"
    src.save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    got = np.asarray(load_image(path)).astype(int)
    assert got.shape == (4, 6, 3)
    assert np.abs(got - np.array([200, 30, 10])).max() <= (8 if fmt == "JPEG" else 0)


def test_decoders_name_pillow_warnings(tmp_path: Path) -> None:
    from camlens.pipeline.decoding import Decoders

    exif = b"II*\x00\x08\x00\x00\x00\x05\x00\x0f\x01\x02\x00\xff\x00\x00\x00\x90\x00\x00\x00"
    path = _save(_noise(12, 10), tmp_path / "odd_exif.png", exif=exif)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing escapes as a warning
        with Decoders() as decoders:
            img, notes = decoders.load(path)
    assert img.size in ((12, 10), (10, 12))
    assert notes and all("\n" not in n for n in notes)
    assert any("Skipping tag 271" in n for n in notes)


# --------------------------------------------------------------------------- names


SURROGATE_NAME = os.fsdecode(b"caf\xe9.png")


def test_display_path_is_valid_utf8() -> None:
    assert cio.display_path(SURROGATE_NAME) == "caf\\xe9.png"
    assert cio.display_path(SURROGATE_NAME).encode("utf-8")
    assert cio.display_path("chat_été.png") == "chat_été.png"


@pytest.mark.parametrize("name,stem", [
    ("...png", "image"), ("..png", "image"), (".png", "png"), ("a.b.png", "a.b"),
    (SURROGATE_NAME, "caf_"), ("e\u0301t\u00e9.jpg", "\u00e9t\u00e9"), ("x\ty:z*?.png", "x_y_z__"),
    (" .. .png", "image"), ("photo.", "photo"),
])
def test_safe_stem(name: str, stem: str) -> None:
    assert cio.safe_stem(name) == stem


def test_safe_stem_is_short_and_whole_characters() -> None:
    stem = cio.safe_stem("é" * 200 + ".png")
    assert len(stem.encode("utf-8")) <= 120 and stem == "é" * 60


def test_is_inside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    assert cio.is_inside(out, out) and cio.is_inside(out / "a" / "x.png", out)
    assert not cio.is_inside(tmp_path / "outside.png", out)
    assert not cio.is_inside(tmp_path / "out2" / "x.png", out)  # a prefix is not a parent
    (tmp_path / "link").symlink_to(out)
    assert cio.is_inside(tmp_path / "link" / "a", out)


def test_resolve_inputs_skips_the_excluded_folder(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "explanations" / "a").mkdir(parents=True)
    (tmp_path / "explanations" / "a" / "summary.png").write_bytes(b"x")
    got = resolve_inputs([str(tmp_path)], exclude=tmp_path / "explanations")
    assert got == [tmp_path / "a.png"]
    assert len(resolve_inputs([str(tmp_path)])) == 2


def test_npz_writer_round_trip_compressed(tmp_path: Path) -> None:
    target = tmp_path / "maps.npz"
    smooth = np.linspace(0, 1, 200 * 300, dtype=np.float16).reshape(200, 300)
    with cio.npz_writer(target) as add:
        add("gradcam/3", smooth)
        add("guided-backprop/3", np.full((4, 5, 3), 0.5, np.float16))
    with np.load(target) as npz:
        assert npz.files == ["gradcam/3", "guided-backprop/3"]
        np.testing.assert_array_equal(npz["gradcam/3"], smooth)
        assert npz["guided-backprop/3"].dtype == np.float16
    assert target.stat().st_size < smooth.nbytes / 2  # deflated
    assert [p.name for p in tmp_path.iterdir()] == ["maps.npz"]
    with pytest.raises(RuntimeError), cio.npz_writer(tmp_path / "half.npz") as add:
        add("a", smooth)
        raise RuntimeError("writer crashed")
    assert [p.name for p in tmp_path.iterdir()] == ["maps.npz"]


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (37, 61), (480, 640)])
def test_png_bytes_decode_to_the_same_pixels(tmp_path: Path, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgb[: shape[0] // 2] = rgb[: shape[0] // 2].cumsum(axis=1, dtype=np.uint8)  # smooth + wrap
    path = tmp_path / "a.png"
    path.write_bytes(cio.png_bytes(rgb))
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG" and img.mode == "RGB" and img.size == shape[::-1]
        assert np.array_equal(np.asarray(img), rgb)
    for bad in (rgb.astype(np.float32), rgb[..., :2], np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
            cio.png_bytes(bad)
