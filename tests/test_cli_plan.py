"""What ``camlens explain`` costs: every method of a batch from one camlens.explain call, so the
paper's Figure 1 set costs one forward pass per batch; asking for a layer costs none."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import camlens
from camlens.cli import main
from camlens.methods import FIGURE1, METHODS

COUNTED_NET = """
import torch
from torch import nn

import camlens_forward_counter as counter


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
        )
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        counter.calls.append(tuple(x.shape))  # counted in forward itself, not by a hook
        return self.head(self.features(x).mean(dim=(2, 3)))


def build():
    torch.manual_seed(0)
    return TinyNet().eval()
"""


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    counter = types.ModuleType("camlens_forward_counter")
    counter.calls = []  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "camlens_forward_counter", counter)
    return counter.calls  # type: ignore[attr-defined]


@pytest.fixture()
def net(tmp_path: Path) -> Path:
    path = tmp_path / "counted.py"
    path.write_text(COUNTED_NET)
    return path


def photos(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_figure1_costs_one_forward_per_batch(tmp_path: Path, net: Path,
                                             calls: list[tuple[int, ...]],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # 3 square photos (one batch of 3) and 2 wide ones (one batch of 2): two batches
    inputs = photos(tmp_path / "in", [(20, 20)] * 3 + [(40, 20)] * 2)
    out = tmp_path / "out"
    code = main(["explain", str(inputs), "--model", f"{net}:build", "--layer", "features.3",
                 "--input-size", "16", "--top-k", "2", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    probe = [(1, 3, 16, 16)]  # loading may run one dummy image to count the classes
    explain_calls = [c for c in calls if c[0] != 1]
    assert calls in (explain_calls, probe + explain_calls)
    assert sorted(explain_calls) == [(2, 3, 16, 32), (3, 3, 16, 16)]
    record = json.loads((out / "0" / "explanation.json").read_text())
    assert record["methods"] == list(FIGURE1)
    with np.load(out / "0" / "maps.npz") as npz:
        assert len(npz.files) == len(FIGURE1) * 2


def test_missing_layer_runs_nothing(tmp_path: Path, net: Path, calls: list[tuple[int, ...]],
                                    capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The --layer hint is read from the module tree: no explanation runs to produce it."""
    explained: list[object] = []
    monkeypatch.setattr(camlens, "explain", lambda *a, **k: explained.append(a))
    inputs = photos(tmp_path / "in", [(20, 20)])
    code = main(["explain", str(inputs), "--model", f"{net}:build", "--input-size", "16",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and explained == [] and calls in ([], [(1, 3, 16, 16)])
    assert err.splitlines() == [
        f"camlens: error: --layer is required for {net}:build (it has no default layer) with "
        f"{', '.join(m for m in FIGURE1 if METHODS[m].needs_layer)}: "
        "the usual choice is the last convolutional block, e.g. "
        f"'features', 'features.2'; `camlens layers --model {net}:build` lists them"
    ]


# --------------------------------------------------------------------------- --option


def test_options_reach_the_methods(tmp_path: Path, net: Path, calls: list[tuple[int, ...]],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """--option pooling=gmp --option relu=false: the saved maps are the library's maps with
    those options (to float16 precision), for gradcam and guided-gradcam alike."""
    from camlens import io as cio
    from camlens.models import load_model
    from camlens.output import resized

    inputs = photos(tmp_path / "in", [(20, 20)])
    out = tmp_path / "out"
    code = main(["explain", str(inputs), "--model", f"{net}:build", "--layer", "features.3",
                 "--input-size", "16", "--target", "2", "--method", "gradcam", "--method",
                 "guided-gradcam", "--option", "pooling=gmp", "--option", "relu=false",
                 "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "0" / "explanation.json").read_text())
    assert record["options"]["gradcam"]["pooling"] == "gmp"
    assert record["options"]["guided-gradcam"]["relu"] is False

    loaded = load_model(f"{net}:build", input_size=16)
    x = loaded.preprocess(cio.load_image(inputs / "0.png"))[None]
    with np.load(out / "0" / "maps.npz") as npz:
        for method in ("gradcam", "guided-gradcam"):
            want = camlens.explain(loaded.model, x, method=method, layer="features.3", target=2,
                                   pooling="gmp", relu=False).maps[0, 0]
            default = camlens.explain(loaded.model, x, method=method, layer="features.3",
                                      target=2).maps[0, 0]
            got = npz[f"{method}/2"].astype(np.float32)
            np.testing.assert_allclose(got, resized(want, (20, 20)), atol=1e-3)
            assert np.abs(got - resized(default, (20, 20))).max() > 0.02  # the options matter


@pytest.mark.parametrize("option,message", [
    ("windw=8", "--option windw: gradcam take(s) no option 'windw'; the options are: "
                "backward (normal | guided | deconv), counterfactual (true/false), "
                "pooling (gap | gmp), relu (true/false) (`camlens methods` describes them)"),
    ("relu=maybe", "--option relu=maybe: option relu='maybe': expected true/false"),
    ("pooling=max", "--option pooling=max: option pooling='max': choose one of ['gap', 'gmp']"),
    ("relu", "--option 'relu': expected KEY=VALUE; the options of gradcam are: "),
])
def test_bad_option_is_one_line_exit_2(option: str, message: str, tmp_path: Path, net: Path,
                                       calls: list[tuple[int, ...]],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    inputs = photos(tmp_path / "in", [(20, 20)])
    code = main(["explain", str(inputs), "--model", f"{net}:build", "--layer", "features.3",
                 "--input-size", "16", "--method", "gradcam", "--option", option,
                 "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"camlens: error: {message}")
    assert not (tmp_path / "out" / "0").exists()


def test_occlusion_option_checked_before_any_image(tmp_path: Path, net: Path,
                                                   calls: list[tuple[int, ...]],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A window larger than the image is the user's mistake: one line, exit 2, not one
    failure per image."""
    inputs = photos(tmp_path / "in", [(20, 20), (21, 20)])
    code = main(["explain", str(inputs), "--model", f"{net}:build", "--input-size", "16",
                 "--method", "occlusion", "--option", "window=64", "--out", str(tmp_path / "o")])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and "window" in lines[0]


def test_methods_lists_options_with_types_and_defaults(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "--option window: an integer or H,W (default 16)" in out
    assert "--option pooling: gap | gmp (default gap)" in out
    assert "--option relu: true/false (default true)" in out
    for name, method in METHODS.items():
        block = out.split(f"\n{name} ", 1)[-1] if not out.startswith(name) else out
        block = block.split("\n\n")[0]
        for key in method.free_options:
            assert f"--option {key}: " in block, (name, key)
