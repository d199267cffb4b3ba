"""The camlens command line, run in-process through ``camlens.cli.main``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import camlens.models
from camlens import METHODS
from camlens.cli import main
from camlens.cli import methods as cli_methods
from camlens.methods import FIGURE1
from camlens.pipeline.images import unique_stems
from models import TINY_NET_SOURCE

CHELSEA_HW = (300, 451)  # skimage's chelsea.png is 451 x 300 (width x height)
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat

TINY_NET = TINY_NET_SOURCE + """

def build():
    torch.manual_seed(0)
    return TinyNet().eval()


net = build()
"""


@pytest.fixture(scope="module")
def shared_model() -> torch.nn.Module:
    return camlens.models.efficientnet_lite0(pretrained=True)


@pytest.fixture(autouse=True)
def _reuse_bundled_model(shared_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """Build the bundled model once for this file: the CLI leaves it untouched (camlens
    guarantees that), and reading the weights in every test would double the file's run time."""
    monkeypatch.setattr(camlens.models, "efficientnet_lite0", lambda pretrained=True: shared_model)


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, shared_model: torch.nn.Module
             ) -> tuple[int, Path, str]:
    """One run with every default method and the top-3 classes, at a small input size."""
    out = tmp_path_factory.mktemp("full")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(camlens.models, "efficientnet_lite0", lambda pretrained=True: shared_model)
        code = main(["explain", "sample:chelsea", "--input-size", "96", "--out", str(out)])
    return code, out / "chelsea", ""


@pytest.fixture()
def tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "tinynet.py"
    path.write_text(TINY_NET)
    return path


def _noise(path: Path, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- the full run


def test_full_run_writes_every_promised_file(full_run: tuple[int, Path, str]) -> None:
    code, folder, _ = full_run
    assert code == 0
    record = json.loads((folder / "explanation.json").read_text())
    classes = [t["index"] for t in record["targets"]]
    assert len(classes) == 3
    methods = list(FIGURE1)  # the paper's Figure 1 set, in its column order
    assert record["methods"] == methods
    expected = {f"{m}_{c}.png" for m in methods for c in classes}
    expected |= {"summary.png", "maps.npz", "explanation.json"}
    assert {p.name for p in folder.iterdir()} == expected  # and no temp files left behind
    for name in expected - {"summary.png", "maps.npz", "explanation.json"}:
        with Image.open(folder / name) as img:
            assert img.size == (CHELSEA_HW[1], CHELSEA_HW[0]) and img.mode == "RGB"
    with Image.open(folder / "summary.png") as img:
        assert img.width > 4 * img.height / 3  # five columns, three rows


def test_full_run_maps_at_original_resolution(full_run: tuple[int, Path, str]) -> None:
    _, folder, _ = full_run
    record = json.loads((folder / "explanation.json").read_text())
    classes = [t["index"] for t in record["targets"]]
    with np.load(folder / "maps.npz") as npz:
        keys = set(npz.files)
        assert keys == {f"{m}/{c}" for m in record["methods"] for c in classes}
        assert sorted(keys) == record["maps"]
        for key in keys:
            a = npz[key]
            pixel = key.split("/")[0] in ("guided-backprop", "guided-gradcam")
            assert a.shape == (CHELSEA_HW + (3,) if pixel else CHELSEA_HW), key
            assert a.dtype == np.float16  # compact: [0, 1] to 3 significant digits
            assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0
        assert npz[f"gradcam/{classes[0]}"].max() > 0.9  # a real map, not a blank one
        empty = {key for key in keys if npz[key].max() == npz[key].min()}
    assert record["empty_maps"] == sorted(empty)
    for key in keys:  # an empty map's picture says so in a black band at the bottom
        with Image.open(folder / (key.replace("/", "_") + ".png")) as img:
            bottom = np.asarray(img.convert("RGB"))[-1:]
        assert (bottom.max() == 0) == (key in empty), key


def test_full_run_explanation_json(full_run: tuple[int, Path, str]) -> None:
    _, folder, _ = full_run
    record = json.loads((folder / "explanation.json").read_text())
    assert record["model"] == "efficientnet_lite0"
    assert record["layer"] == "_relu_head"
    assert record["input_size"] == 96
    assert record["model_input_size"] == {"height": 96, "width": 144}
    assert record["original_size"] == {"height": 300, "width": 451}
    assert record["camlens_version"] == "0.1.0"
    preds = record["predictions"]
    assert [p["rank"] for p in preds] == [1, 2, 3]
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert all(isinstance(p["name"], str) and p["name"] for p in preds)
    assert [t["index"] for t in record["targets"]] == [p["index"] for p in preds]
    assert set(record["timings"]) == {"explain"}  # one call for every method
    assert record["timings"]["explain"] > 0


def test_top1_is_a_cat_at_224(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", "sample:chelsea", "--method", "gradcam",
                       "--top-k", "1", "--out", tmp_path)
    assert code == 0
    record = json.loads((tmp_path / "chelsea" / "explanation.json").read_text())
    assert record["predictions"][0]["index"] in CAT_CLASSES
    assert record["model_input_size"] == {"height": 224, "width": 337}
    assert record["predictions"][0]["name"] in out  # the top-k is printed


# --------------------------------------------------------------------------- targets and layers


def test_target_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "explain", "sample:chelsea", "--target", "TABBY", "--target", "281",
                     "--method", "gradcam", "--input-size", "64", "--out", tmp_path, "--quiet")
    assert code == 0
    folder = tmp_path / "chelsea"
    record = json.loads((folder / "explanation.json").read_text())
    assert [t["index"] for t in record["targets"]] == [281]  # name and index: one target
    assert (folder / "gradcam_281.png").is_file()
    with np.load(folder / "maps.npz") as npz:
        assert npz.files == ["gradcam/281"]


def test_target_typo_suggests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "explain", "sample:chelsea", "--target", "tabbby",
                         "--input-size", "64", "--out", tmp_path)
    assert code == 2
    assert len(error_lines(err)) == 1 and "'tabby'" in err and "Traceback" not in err
    assert not (tmp_path / "chelsea").exists()


def test_target_out_of_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "explain", "sample:chelsea", "--target", "1000",
                       "--input-size", "64", "--out", tmp_path)
    assert code == 2
    assert "out of range" in err and "999" in err and len(error_lines(err)) == 1


def test_unknown_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "explain", "sample:chelsea", "--layer", "_relu_haed",
                       "--input-size", "64", "--out", tmp_path)
    assert code == 2
    assert "_relu_head" in err and len(error_lines(err)) == 1


def test_debug_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "explain", "sample:chelsea", "--target", "tabbby", "--debug",
                       "--input-size", "64", "--out", tmp_path)
    assert code == 2
    assert "Traceback (most recent call last)" in err and "tabby" in err


def test_internal_error_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    def boom(args: object) -> int:
        raise RuntimeError("kaput")

    monkeypatch.setattr(cli_methods, "run", boom)
    code, _, err = run(capsys, "methods")
    assert code == 3
    assert error_lines(err) == ["camlens: error: internal error: RuntimeError: kaput "
                                "(rerun with --debug)"]
    code, _, err = run(capsys, "methods", "--debug")
    assert code == 3 and "Traceback" in err and "kaput" in err


# --------------------------------------------------------------------------- bad inputs


def test_folder_with_bad_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    _noise(photos / "good.png")
    (photos / "garbage.png").write_bytes(b"this is not a png at all" * 10)
    (photos / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "explain", photos, "--method", "gradcam", "--top-k", "2",
                            "--input-size", "64", "--out", out)
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 2, err
    assert any("garbage.png" in ln for ln in lines) and any("empty.jpg" in ln for ln in lines)
    assert "empty" in err and "Traceback" not in err
    assert (out / "good" / "explanation.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["good"]
    assert "good.png" in stdout and "2 failed" in stdout


def test_only_bad_input_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    code, _, err = run(capsys, "explain", bad, "--method", "gradcam", "--out", tmp_path / "o")
    assert code == 2 and "not an image" in err and len(error_lines(err)) == 1


def test_decompression_bomb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = _noise(tmp_path / "big.png", size=(100, 100))
    code, _, err = run(capsys, "explain", big, "--max-pixels", "1000", "--method", "gradcam",
                       "--out", tmp_path / "o")
    assert code == 2
    assert "1000" in err and "--max-pixels" in err and len(error_lines(err)) == 1
    assert not (tmp_path / "o" / "big").exists()


def test_missing_input_is_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "explain", tmp_path / "nope.jpg", "--out", tmp_path / "o")
    assert code == 2 and "no such file" in err


@pytest.mark.parametrize("argv", [[], ["explain"], ["explain", "x.png", "--alpha", "2"],
                                  ["explain", "x.png", "--method", "nope"], ["frobnicate"]])
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "layers", "--model", "efficientnet_lite")
    assert code == 2 and "efficientnet_lite0" in err and "torchvision:NAME" in err


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None,
                    reason="torchvision is installed")
def test_torchvision_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "explain", "sample:chelsea", "--model", "torchvision:resnet18",
                       "--weights", tmp_path / "w.pt", "--out", tmp_path)
    assert code == 2 and "pip install torchvision" in err and len(error_lines(err)) == 1


def _fake_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for torchvision (CI cannot install it): ``models.list_models`` and
    ``models.get_model(name, weights=None)`` with one VGG-like net of 1000 classes."""

    def vgg_tiny() -> torch.nn.Module:
        torch.manual_seed(0)
        net = torch.nn.Module()
        net.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(inplace=True),
            torch.nn.MaxPool2d(2))
        net.classifier = torch.nn.Linear(4, 1000)
        net.forward = lambda x: net.classifier(net.features(x).mean(dim=(2, 3)))
        return net

    def get_model(name: str, weights: object = None) -> torch.nn.Module:
        assert weights is None  # camlens never asks torchvision for (downloaded) weights
        return vgg_tiny()

    tv = type(sys)("torchvision")
    tv.models = type(sys)("torchvision.models")  # type: ignore[attr-defined]
    tv.models.list_models = lambda: ["vgg_tiny", "resnet18"]  # type: ignore[attr-defined]
    tv.models.get_model = get_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", tv.models)  # type: ignore[attr-defined]


def test_torchvision_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    _fake_torchvision(monkeypatch)
    weights = tmp_path / "vgg_tiny.pt"
    torch.save(sys.modules["torchvision"].models.get_model("vgg_tiny").state_dict(), weights)

    code, _, err = run(capsys, "layers", "--model", "torchvision:vgg_tiny")
    assert code == 2 and "never downloads" in err and "--weights" in err
    code, _, err = run(capsys, "layers", "--model", "torchvision:vgg_tiyn", "--weights", weights)
    assert code == 2 and "nearest names: vgg_tiny" in err and len(error_lines(err)) == 1

    image = _noise(tmp_path / "photo.png", size=(40, 30))
    code, _, err = run(capsys, "explain", image, "--model", "torchvision:vgg_tiny", "--weights",
                       weights, "--method", "gradcam", "--input-size", "16",
                       "--out", tmp_path / "o", "--quiet")
    assert code == 0, err
    record = json.loads((tmp_path / "o" / "photo" / "explanation.json").read_text())
    # the last non-pooling layer of `features` (VGG-16: features.29, the paper's conv5_3), not the
    # max-pool that ends it; 1000 classes get ImageNet's names
    assert record["layer"] == "features.3"
    assert record["predictions"][0]["name"] == camlens.models.imagenet_labels()[
        record["predictions"][0]["index"]]


# --------------------------------------------------------------------------- custom models


def test_file_factory_with_weights_labels_and_layer(
    tiny_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("tinynet_for_weights", tiny_file)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    weights = tmp_path / "tiny.pt"
    torch.save(mod.TinyNet().state_dict(), weights)
    labels = tmp_path / "labels.txt"
    labels.write_text("ant\nbee\ncat\ndog\n")
    image = _noise(tmp_path / "photo.png", size=(40, 30))
    out = tmp_path / "out"
    common = ["explain", image, "--model", f"{tiny_file}:build", "--weights", weights,
              "--labels", labels, "--input-size", "32", "--out", out]

    code, _, err = run(capsys, *common)  # no default layer for a custom model
    assert code == 2 and "--layer" in err and "features" in err and len(error_lines(err)) == 1

    code, stdout, err = run(capsys, *common, "--layer", "features.3", "--target", "Bee",
                            "--method", "gradcam", "--method", "guided-backprop")
    assert code == 0, err
    record = json.loads((out / "photo" / "explanation.json").read_text())
    assert record["model"] == f"{tiny_file}:build" and record["layer"] == "features.3"
    assert record["targets"][0] == {"index": 1, "name": "bee",
                                    "probability": record["targets"][0]["probability"]}
    with np.load(out / "photo" / "maps.npz") as npz:
        assert npz["gradcam/1"].shape == (30, 40)
        assert npz["guided-backprop/1"].shape == (30, 40, 3)


def test_vision_transformer_with_reshape_tokens(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    vit = tmp_path / "vit.py"  # tests/models.py is importable while the tests run
    vit.write_text("import torch\nfrom models import make_vit\n\n\n"
                   "def build():\n    return make_vit(dtype=torch.float32)\n")
    image = _noise(tmp_path / "square.png", size=(20, 20))
    common = ["explain", image, "--model", f"{vit}:build", "--layer", "blocks.1.norm1",
              "--input-size", "16", "--method", "gradcam", "--method", "guided-gradcam",
              "--out", tmp_path / "o", "--quiet"]
    code, _, err = run(capsys, *common)
    assert code != 0 and "(1, 17, 8)" in err and "--reshape tokens" in err
    code, _, err = run(capsys, *common, "--reshape", "tokens")
    assert code == 0, err
    record = json.loads((tmp_path / "o" / "square" / "explanation.json").read_text())
    assert record["reshape"] == "tokens" and record["layer"] == "blocks.1.norm1"
    with np.load(tmp_path / "o" / "square" / "maps.npz") as npz:
        cls = record["targets"][0]["index"]
        assert npz[f"gradcam/{cls}"].shape == (20, 20) and npz[f"gradcam/{cls}"].max() > 0.9


def test_warnings_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    smooth = tmp_path / "smooth.py"  # no rectifier: Guided Backprop is the plain gradient
    smooth.write_text(TINY_NET.replace("nn.ReLU()", "nn.SiLU()"))
    image = _noise(tmp_path / "x.png", size=(20, 20))
    code, _, err = run(capsys, "explain", image, "--model", f"{smooth}:build", "--layer",
                       "features.3", "--method", "guided-backprop", "--input-size", "16",
                       "--out", tmp_path / "o", "--quiet")
    assert code == 0, err
    assert error_lines(err) == ["camlens: warning: guided-backprop: no rectifier (ReLU, ReLU6) "
                                "ran in the model's forward pass, so its rule changes nothing "
                                "and the map is built from the plain input gradient; SiLU, GELU "
                                "and other smooth activations are not rectifiers"]


def test_weights_that_do_not_fit(tiny_file: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "other.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 4)).state_dict(), weights)
    code, _, err = run(capsys, "layers", "--model", f"{tiny_file}:build", "--weights", weights)
    assert code == 2 and len(error_lines(err)) == 1
    assert "6 missing key(s): features.0.weight" in err
    assert "2 unexpected key(s): 0.weight, 0.bias" in err

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "layers", "--model", f"{tiny_file}:build", "--weights", garbage)
    assert code == 2 and "state dict" in err and len(error_lines(err)) == 1


def test_module_attr_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    pkg = tmp_path / "camlens_cli_test_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(TINY_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    for attr in ("net", "build", "TinyNet"):  # an instance, a factory, a class
        code, out, err = run(capsys, "layers", "--model", f"camlens_cli_test_pkg.nets:{attr}",
                             "--input-size", "16")
        assert code == 0, err
        assert "features.3" in out and "(1, 8, 8, 8)" in out and "no default layer" in out
    image = _noise(tmp_path / "x.png", size=(20, 20))
    code, _, err = run(capsys, "explain", image, "--model", "camlens_cli_test_pkg.nets:net",
                       "--layer", "features.3", "--method", "gradcam", "--input-size", "16",
                       "--out", tmp_path / "o", "--quiet")
    assert code == 0, err
    record = json.loads((tmp_path / "o" / "x" / "explanation.json").read_text())
    assert [p["name"] for p in record["predictions"]] == [str(p["index"])
                                                          for p in record["predictions"]]
    code, _, err = run(capsys, "layers", "--model", "camlens_cli_test_pkg.nets:nett")
    assert code == 2 and "did you mean net" in err
    code, _, err = run(capsys, "layers", "--model", "camlens_cli_test_pkg_missing.nets:net")
    assert code == 2 and "no module named" in err


# --------------------------------------------------------------------------- layers, methods


def test_layers_lists_shapes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "layers", "--input-size", "64")
    assert code == 0
    head = [line for line in out.splitlines() if "_relu_head" in line]
    assert len(head) == 1
    assert head[0].startswith("*") and "ReLU6" in head[0] and "(1, 1280, 2, 2)" in head[0]
    assert "_fc " in out and "(1, 1000)" in out


def test_layers_hooks_removed() -> None:
    from camlens.layers import layer_table
    from camlens.models import load_model

    loaded = load_model(None, input_size=32)
    layer_table(loaded.model, torch.zeros(1, 3, 32, 32))
    assert all(not m._forward_hooks for m in loaded.model.modules())


def test_methods_lists_registry(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "methods")
    assert code == 0
    for name, method in METHODS.items():
        assert name in out and method.summary in out
        for option in method.options:
            assert option in out
    assert "counterfactual-gradcam" in out


def test_unique_stems() -> None:
    paths = [Path("a/cat.png"), Path("b/cat.jpg"), Path("c/CAT.png"), Path("d/cat-2.png")]
    assert unique_stems(paths) == ["cat", "cat-2", "CAT-3", "cat-2-2"]


def test_python_dash_m(capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "camlens", "methods"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "gradcam" in proc.stdout


# --------------------------------------------------------------------------- evaluate


def test_evaluate_localization_table_csv_and_resume(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    csv_file = tmp_path / "loc.csv"
    args = ("evaluate", "localization", "--data", "synthetic:seed=20251,n=6", "--model",
            "synthetic:vgg_gap", "--csv", csv_file, "--no-progress")
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert (
        "| Method | Top-1 loc error | Top-5 loc error | Top-1 cls error | Top-5 cls error |" in out
    )
    rows = csv_file.read_text().splitlines()
    assert len(rows) == 1 + 6  # header + one row per image
    code, again, _ = run(capsys, *args)  # resumed: nothing recomputed, same table
    assert code == 0 and again == out
    assert csv_file.read_text().splitlines() == rows


def test_evaluate_threshold_relative_to_the_range(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    csv_file = tmp_path / "loc.csv"
    args = ("evaluate", "localization", "--data", "synthetic:seed=20251,n=3", "--model",
            "synthetic:vgg_gap", "--option", "relu=false", "--csv", csv_file, "--no-progress")
    code, _, err = run(capsys, *args, "--relative-to", "range")
    assert code == 0, err
    recorded = json.loads(csv_file.with_name("loc.csv.config.json").read_text())  # the config
    assert recorded["config"]["relative_to"] == "range"
    code, _, err = run(capsys, *args)  # the same CSV under the paper's convention: refused
    assert code == 2 and "resume=False" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,message", [
    (("--data", "kitti:/x", "--model", "synthetic:vgg_gap"), "unknown dataset spec 'kitti:/x'"),
    (("--data", "synthetic:seed=1,n=2", "--model", "synthetic:nope"),
     "unknown synthetic net 'nope'; choose from synthetic:vgg, synthetic:vgg_gap, "
     "synthetic:alexnet, synthetic:resnet"),
    (("--data", "synthetic:seed=1,n=2,kind=crowd", "--model", "synthetic:vgg"),
     "kind must be one of single, multi, two, pair, mixed, got 'crowd'"),
])
def test_evaluate_bad_input_is_one_line_exit_2(argv: tuple[str, ...], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "evaluate", "localization", *argv, "--no-progress")
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- world v2 from the CLI


def test_explain_a_world_v2_scene_with_a_shipped_net(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`camlens explain --model synthetic:vgg` on a saved v2 scene: its 112x112 input (no
    resizing), the net's softmax probabilities and the library's Grad-CAM maps at the 14x14
    layer."""
    from camlens.synthetic import CLASSES, load_pretrained, make_dataset

    scene = make_dataset(1, seed=20251)[0]
    Image.fromarray(scene.image).save(tmp_path / "scene.png")
    code, _, err = run(capsys, "explain", tmp_path / "scene.png", "--model", "synthetic:vgg",
                       "--method", "gradcam", "--top-k", "2", "--out", tmp_path / "out",
                       "--save", "maps")
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "scene" / "explanation.json").read_text())
    x = torch.from_numpy(scene.image).permute(2, 0, 1).float().div(255)[None]
    model = load_pretrained("vgg")
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
    top = probs.topk(2)
    assert record["layers"] == ["features.18"]
    assert [t["index"] for t in record["targets"]] == top.indices.tolist()
    assert [t["name"] for t in record["targets"]] == [CLASSES[i] for i in top.indices.tolist()]
    assert [t["probability"] for t in record["targets"]] == pytest.approx(top.values.tolist(),
                                                                          abs=1e-5)
    ref = camlens.explain(model, x, method="gradcam", layer="features.18", target=top.indices[None])
    assert ref.raw.shape[-2:] == (14, 14)
    maps = np.load(tmp_path / "out" / "scene" / "maps.npz")
    for k, c in enumerate(top.indices.tolist()):
        got = maps[f"gradcam/{c}"].astype(np.float32)
        assert got.shape == (112, 112)
        np.testing.assert_allclose(got, ref.maps[0, k].numpy(), atol=2e-3)


@pytest.mark.parametrize("task,data,model,method", [
    ("localization", "synthetic:seed=20251,n=5", "synthetic:vgg_gap", "cam"),
    ("pointing", "synthetic:seed=20252,n=6,kind=multi", "synthetic:resnet", "cmwp"),
    ("faithfulness", "synthetic:seed=20252,n=2,kind=two", "synthetic:alexnet", "guided-gradcam"),
])
def test_evaluate_world_v2_from_the_cli_equals_the_library(
        task: str, data: str, model: str, method: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    from camlens.evaluate import evaluate, load_dataset

    extra = ["--window", "28", "--stride", "28"] if task == "faithfulness" else []
    code, out, err = run(capsys, "evaluate", task, "--data", data, "--model", model, "--method",
                         method, "--no-progress", *extra)
    assert code == 0, err
    kw = {"window": 28, "stride": 28} if task == "faithfulness" else {}
    summary = evaluate(task, data, model=model, method=method, progress=False, **kw)
    assert out.strip() == summary.markdown().strip()
    samples = load_dataset(data)
    if task == "pointing":  # kind=multi: 2-4 objects of distinct classes
        assert all(len(s.labels) == len(s.objects) >= 2 for s in samples)
    if task == "faithfulness":
        assert all(len(s.objects) == 2 for s in samples)
