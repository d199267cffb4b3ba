"""The CLI against hostile inputs: odd files and names, models that refuse an input or return
NaN, huge photos, its own outputs. One bad image is one line and the run goes on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import camlens
from camlens.cli import main
from camlens.errors import ExplainError, TargetError
from models import TINY_NET_SOURCE

README = Path(__file__).resolve().parents[1] / "README.md"

NETS = TINY_NET_SOURCE + """

class FixedHead(TinyNet):
    '''Takes 16 x 16 inputs only: its head reads the flattened 8 x 8 feature map.'''

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class NaNWhenWide(TinyNet):
    def forward(self, x):
        out = super().forward(x)
        return out * float("nan") if x.shape[-1] > x.shape[-2] else out


def build():
    torch.manual_seed(0)
    return TinyNet().eval()


def fixed():
    torch.manual_seed(0)
    return FixedHead().eval()


def nan_when_wide():
    torch.manual_seed(0)
    return NaNWhenWide().eval()


def nan_weights():
    net = build()
    with torch.no_grad():
        net.head.weight.fill_(float("nan"))
    return net
"""


@pytest.fixture()
def nets(tmp_path: Path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


def explain(capsys: pytest.CaptureFixture[str], nets: Path, *args: str | Path,
            factory: str = "build") -> tuple[int, str, list[str]]:
    argv = ["explain", *map(str, args), "--model", f"{nets}:{factory}", "--layer",
            "features.3", "--input-size", "16"]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def photo(path: Path, size: tuple[int, int] = (20, 20), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        path, format="PNG")
    return path


def strict_json(path: Path) -> dict:
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds {token}, which is not JSON")

    return json.loads(path.read_bytes().decode("utf-8"), parse_constant=refuse)


# --------------------------------------------------------------------------- odd files


def test_loop_and_fifo_in_a_folder_are_skipped_one_line_each(
    tmp_path: Path, nets: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    photo(folder / "good.png")
    (folder / "loop.png").symlink_to("loop.png")
    os.mkfifo(folder / "pipe.png")
    out = tmp_path / "out"
    code, stdout, err = explain(capsys, nets, folder, "--out", out, "--method", "gradcam")
    assert code == 1
    assert len(err) == 2, err
    assert any("loop.png: is a symbolic link loop" in line for line in err)
    assert any("pipe.png: is a FIFO (named pipe)" in line for line in err)
    assert sorted(p.name for p in out.iterdir()) == ["good"]
    assert "2 failed" in stdout


@pytest.mark.skipif(not Path("/dev/urandom").exists(), reason="no /dev/urandom")
def test_device_given_by_name_says_what_it_is(tmp_path: Path, nets: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    good = photo(tmp_path / "good.png")
    code, _, err = explain(capsys, nets, "/dev/urandom", good, "--out", tmp_path / "out",
                           "--method", "gradcam", "-q")
    assert code == 1
    assert err == [("camlens: error: /dev/urandom: is a character device, not a regular file; "
                    "expected a JPEG, PNG, BMP, GIF, TIFF or WebP file")]


def test_non_utf8_file_name(tmp_path: Path, nets: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    odd = photo(folder / os.fsdecode(b"caf\xe9.png"))  # Latin-1 bytes, not UTF-8
    photo(folder / "z.png", seed=1)
    out = tmp_path / "out"
    code, stdout, err = explain(capsys, nets, folder, "--out", out, "--method", "gradcam")
    assert code == 0, err
    names = sorted(os.listdir(os.fsencode(out)))
    assert names == [b"caf_", b"z"]  # valid UTF-8 folder names
    for root, _, files in os.walk(os.fsencode(out)):
        for name in files:
            (root + b"/" + name).decode("utf-8")  # every path written is valid UTF-8
    record = strict_json(out / "caf_" / "explanation.json")
    assert record["image"].endswith("caf\\xe9.png")
    assert bytes.fromhex(record["image_bytes_hex"]) == os.fsencode(odd)
    assert "image_bytes_hex" not in strict_json(out / "z" / "explanation.json")
    assert "caf\\xe9.png -> " in stdout


def test_output_paths_stay_inside_out(tmp_path: Path, nets: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    src = work / "in"
    src.mkdir(parents=True)
    names = ["...png", "..png", ".png", ".hidden.png", "a" * 240 + ".png", "Cat.png", "cat.png",
             "chat_\u00e9t\u00e9.png", "chat_e\u0301te\u0301.png", "x:y*z.png"]
    inputs = [photo(src / n, seed=i) for i, n in enumerate(names)]
    out = work / "out"
    code, _, err = explain(capsys, nets, *inputs, "--out", out, "--method", "gradcam", "-q")
    assert code == 0, err
    assert sorted(p.name for p in work.iterdir()) == ["in", "out"]  # nothing beside --out
    folders = sorted(p.name for p in out.iterdir())
    assert len(folders) == len(names)  # one folder each, none shared, none loose files
    assert all(p.is_dir() for p in out.iterdir())
    assert not any(f in (".", "..") or f.startswith(".") for f in folders)
    assert {"image", "image-2", "png", "hidden", "Cat", "cat-2", "x_y_z"} <= set(folders)
    assert "chat_\u00e9t\u00e9" in folders and "chat_\u00e9t\u00e9-2" in folders  # NFC twins
    for folder in out.iterdir():
        assert len(folder.name.encode()) <= 120
        assert {p.name for p in folder.iterdir()} == {"gradcam_" + c + ".png" for c in
                                                      _classes(folder)} | {
            "summary.png", "maps.npz", "explanation.json"}


def _classes(folder: Path) -> list[str]:
    return [str(t["index"]) for t in strict_json(folder / "explanation.json")["targets"]]


# --------------------------------------------------------------------------- the model


def test_model_rejecting_one_shape_fails_that_image_only(
    tmp_path: Path, nets: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = photo(tmp_path / "a_wide.png", size=(40, 30))  # sorts first
    square = photo(tmp_path / "b_square.png")
    out = tmp_path / "out"
    code, _, err = explain(capsys, nets, wide, square, "--out", out, "--method", "gradcam",
                           "-q", factory="fixed")
    assert code == 1
    assert len(err) == 1 and "a_wide.png: the model failed on its 16x21 input" in err[0]
    assert "RuntimeError" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["b_square"]


def test_non_finite_scores_fail_that_image_and_json_stays_strict(
    tmp_path: Path, nets: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = photo(tmp_path / "a_wide.png", size=(40, 30))
    square = photo(tmp_path / "b_square.png")
    out = tmp_path / "out"
    code, _, err = explain(capsys, nets, wide, square, "--out", out, "-q",
                           factory="nan_when_wide")
    assert code == 1
    assert len(err) == 1 and "a_wide.png: the model's scores for" in err[0]
    assert "NaN or Inf" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["b_square"]
    record = strict_json(out / "b_square" / "explanation.json")
    assert all(np.isfinite(p["probability"]) for p in record["predictions"])


def test_nan_weights_explain_nothing(tmp_path: Path, nets: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, _, err = explain(capsys, nets, photo(tmp_path / "x.png"), "--out", out, "-q",
                           factory="nan_weights")
    assert code == 2
    assert len(err) == 1 and "NaN or Inf" in err[0]
    assert list(out.iterdir()) == []


def test_camlens_error_on_one_image_is_per_image(
    tmp_path: Path, nets: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    real = camlens.explain

    def picky(model: torch.nn.Module, x: torch.Tensor, **kwargs: object) -> object:
        if x.shape[-1] != x.shape[-2]:
            raise ExplainError("the scores of this input are not finite (test)")
        return real(model, x, **kwargs)

    monkeypatch.setattr(camlens, "explain", picky)
    square = photo(tmp_path / "a_square.png")
    wide = photo(tmp_path / "b_wide.png", size=(40, 30))
    out = tmp_path / "out"
    code, _, err = explain(capsys, nets, square, wide, "--out", out, "--method", "gradcam", "-q")
    assert code == 1
    assert err == [f"camlens: error: {wide}: the scores of this input are not finite (test)"]
    assert sorted(p.name for p in out.iterdir()) == ["a_square"]


def test_argument_error_before_any_image_stops_the_run(
    tmp_path: Path, nets: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def refuse(model: torch.nn.Module, x: torch.Tensor, **kwargs: object) -> object:
        calls.append(1)
        raise TargetError("class 9 is out of range (test)")

    monkeypatch.setattr(camlens, "explain", refuse)
    images = [photo(tmp_path / f"{i}.png", size=(20 + i, 20)) for i in range(3)]
    code, _, err = explain(capsys, nets, *images, "--out", tmp_path / "out", "--method",
                           "gradcam", "-q")
    assert code == 2 and err == ["camlens: error: class 9 is out of range (test)"]
    assert calls == [1]


# --------------------------------------------------------------------------- sizes


def test_extreme_aspect_ratio_is_capped(tmp_path: Path, nets: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    strip = photo(tmp_path / "strip.png", size=(100, 1))
    out = tmp_path / "out"
    code, _, err = explain(capsys, nets, strip, "--out", out, "--method", "gradcam", "-q")
    assert code == 0, err
    record = strict_json(out / "strip" / "explanation.json")
    assert record["model_input_size"] == {"height": 1, "width": 64}  # not 16 x 1600
    code, _, err = explain(capsys, nets, strip, "--out", out, "--method", "gradcam", "-q",
                           "--max-input-side", "40")
    assert code == 0, err
    assert strict_json(out / "strip" / "explanation.json")["model_input_size"] == {
        "height": 1, "width": 40}


def test_outputs_of_a_large_photo_are_bounded(tmp_path: Path, nets: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    y, x = np.mgrid[0:1500, 0:2000]
    big = tmp_path / "big.png"
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(big)
    out = tmp_path / "out"
    code, _, err = explain(capsys, nets, big, "--out", out, "-q")
    assert code == 0, err
    folder = out / "big"
    record = strict_json(folder / "explanation.json")
    assert record["original_size"] == {"height": 1500, "width": 2000}
    assert record["output_size"] == {"height": 576, "width": 768}
    assert record["maps_dtype"] == "float16"
    for png in folder.glob("*_*.png"):
        with Image.open(png) as img:
            assert img.size == (768, 576)
    with zipfile.ZipFile(folder / "maps.npz") as archive:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in archive.infolist())
    with np.load(folder / "maps.npz") as npz:
        assert len(npz.files) == 4 * 3
        for key in npz.files:
            assert npz[key].dtype == np.float16 and npz[key].shape[:2] == (576, 768)
    written = sum(p.stat().st_size for p in folder.iterdir())
    assert written < 20_000_000  # at full size, float32: the 12 maps alone are 216 MB

    code, _, err = explain(capsys, nets, big, "--out", out, "-q", "--max-output-side", "100",
                           "--method", "gradcam")
    assert code == 0, err
    assert strict_json(folder / "explanation.json")["output_size"] == {"height": 75,
                                                                       "width": 100}


# --------------------------------------------------------------------------- its own outputs


def test_explain_dot_twice_never_reads_its_outputs(
    tmp_path: Path, nets: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    photo(work / "photo.png")
    monkeypatch.chdir(work)
    for _ in range(2):
        code, stdout, err = explain(capsys, nets, ".", "--method", "gradcam")
        assert code == 0, err
        assert "explained 1 image(s)" in stdout
    assert [p.name for p in (work / "explanations").iterdir()] == ["photo"]

    inside = work / "explanations" / "photo" / "summary.png"
    code, _, err = explain(capsys, nets, inside, "--method", "gradcam")
    assert code == 2
    assert err[0] == (f"camlens: warning: {inside}: skipped: it is inside the output folder "
                      "--out explanations, and camlens never reads its own outputs")
    assert err[1] == ("camlens: error: every input is inside the output folder --out "
                      "explanations; give inputs outside it, or another --out") and len(err) == 2


# --------------------------------------------------------------------------- what stderr gets


def _decoder_writes_to_stderr(path: Path) -> bool:
    probe = ("import sys\nfrom PIL import Image\ntry:\n    Image.open(sys.argv[1]).load()\n"
             "except Exception:\n    pass\n")
    proc = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    return bool(proc.stderr.strip())


def test_decoder_chatter_becomes_one_line_per_image(tmp_path: Path, nets: Path) -> None:
    rng = np.random.default_rng(0)
    clean = tmp_path / "clean.tif"
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(
        clean, compression="tiff_lzw")
    data = bytearray(clean.read_bytes())
    for i in range(300, 900, 7):  # damage the LZW strip: libtiff complains on fd 2, from C
        data[i] ^= 0x5A
    tiff = tmp_path / "noisy.tif"
    tiff.write_bytes(bytes(data))
    exif = b"II*\x00\x08\x00\x00\x00\x05\x00\x0f\x01\x02\x00\xff\x00\x00\x00\x90\x00\x00\x00"
    odd = tmp_path / "odd_exif.png"
    Image.new("RGB", (12, 10)).save(odd, exif=exif)  # Pillow warns about the EXIF data
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(camlens.__file__).parents[1]),
                                                        str(nets.parent)])}
    proc = subprocess.run(
        [sys.executable, "-m", "camlens", "explain", str(tiff), str(odd), "--model",
         f"{nets}:build", "--layer", "features.3", "--input-size", "16", "--method",
         "gradcam", "--out", str(tmp_path / "out"), "-q"],
        capture_output=True, text=True, timeout=300, check=False, env=env)
    lines = proc.stderr.splitlines()
    assert all(line.startswith("camlens: ") for line in lines), proc.stderr
    assert any(line.startswith(f"camlens: warning: {odd}: ") and "Skipping tag 271" in line
               for line in lines), proc.stderr
    assert any(line.startswith(f"camlens: error: {tiff}: the image data is truncated or "
                               "corrupt") for line in lines), proc.stderr
    if _decoder_writes_to_stderr(tiff):  # libtiff's own words, inside camlens's line
        assert any("the decoder printed: " in line for line in lines), proc.stderr


# --------------------------------------------------------------------------- models from files


def test_help_and_readme_say_a_model_file_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "path/to/file.py:FACTORY" in text and "so its code runs" in text
    readme = " ".join(README.read_text().split())
    assert "--model path/to/file.py:FACTORY" in readme and "its code runs" in readme


def test_out_may_be_several_folders_deep(tmp_path: Path, nets: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "not" / "yet" / "there"
    code, stdout, err = explain(capsys, nets, photo(tmp_path / "p.png"), "--out", out,
                                "--method", "gradcam", "--save", "json")
    assert code == 0, err
    assert sorted(p.name for p in (out / "p").iterdir()) == ["explanation.json"]


def test_the_progress_bar_is_erased_at_the_end(tmp_path: Path, nets: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import camlens.cli.explain as cli_explain

    monkeypatch.setattr(cli_explain, "is_terminal", lambda stream: True)  # stderr "is" one
    for i in range(2):
        photo(tmp_path / f"p{i}.png", seed=i)
    code = main(["explain", str(tmp_path / "p0.png"), str(tmp_path / "p1.png"), "--out",
                 str(tmp_path / "out"), "--model", f"{nets}:build", "--layer", "features.3",
                 "--input-size", "16", "--method", "gradcam", "--save", "json"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "image/s" in err or "s/image" in err, err  # the bar was drawn
    last = err.rsplit("\r", 1)[-1] if "\r" in err else err
    assert "2/2" not in last and err.endswith("\r"), repr(err[-200:])  # then erased


def test_help_lists_explain_with_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+explain\s+explain photos: heatmaps, pixel-space maps, Figure 1, "
                     r"maps\.npz$", out, re.MULTILINE), out


def test_summary_line_gives_the_mean_explain_time_per_image(
        tmp_path: Path, nets: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import camlens.pipeline.images as images

    ticks = iter(range(1000))  # each reading of the batch clock: one second later
    monkeypatch.setattr(images, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    a = photo(tmp_path / "a.png", (20, 20))
    b = photo(tmp_path / "b.png", (30, 20))  # another shape: a batch of its own
    code, stdout, err = explain(capsys, nets, a, b, "--out", tmp_path / "out", "--method",
                                "gradcam", "--save", "json")
    assert code == 0, err
    assert "explained 2 image(s) in " in stdout
    assert "(1.00s per image in camlens.explain)" in stdout, stdout


def test_default_output_side_is_twice_the_input_size_when_that_is_larger(
        tmp_path: Path, nets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # --input-size 400: maps from a 400-pixel input are written at up to 800 pixels (> 768)
    big = photo(tmp_path / "big.png", (1000, 400))
    code = main(["explain", str(big), "--out", str(tmp_path / "out"), "--model",
                 f"{nets}:build", "--layer", "features.3", "--input-size", "400",
                 "--method", "gradcam", "--save", "json"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "out" / "big" / "explanation.json").read_text())
    assert record["output_size"] == {"height": 320, "width": 800}


def test_explain_help_describes_the_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert ("Explain the model's decisions on images. For each image writes OUT/<stem>/: "
            "<method>_<class>.png, summary.png (Figure 1), maps.npz (compressed; "
            "<method>/<class> -> float16 maps in [0, 1] at the photo's resolution, up to "
            "--max-output-side) and explanation.json; --save chooses among them "
            "(camlens.output.load reads a folder back). Folders are searched recursively, "
            "skipping hidden ones and OUT.") in text
    assert "IMAGE_OR_FOLDER [IMAGE_OR_FOLDER ...]" in text
    assert ("--layer NAME dotted layer name for Grad-CAM (default: the model's default layer; "
            "`camlens layers` lists them) ") in text
