"""``camlens explain --layers all-blocks``: one map per residual block, from one forward pass
per batch (counted in the model's forward), each equal to the library's single-layer map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import camlens
from camlens.cli import main
from test_cli_plan import calls, net, photos  # noqa: F401 - fixtures

BLOCK_NET = """
import torch
from torch import nn

import camlens_forward_counter as counter


class BasicBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv(x))


class BlockNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1, stride=2)
        self.layer1 = nn.Sequential(BasicBlock(6), BasicBlock(6))
        self.layer2 = nn.Sequential(BasicBlock(6))
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        counter.calls.append(tuple(x.shape))
        return self.fc(self.layer2(self.layer1(self.stem(x))).mean(dim=(2, 3)))


def build():
    torch.manual_seed(0)
    return BlockNet().eval()
"""

BLOCKS = ["layer1.0", "layer1.1", "layer2.0"]


@pytest.fixture()
def blocknet(tmp_path: Path) -> Path:
    path = tmp_path / "blocknet.py"
    path.write_text(BLOCK_NET)
    return path


def test_all_blocks_one_forward_and_maps_equal_single_layer_calls(
        tmp_path: Path, blocknet: Path, calls: list[tuple[int, ...]],  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    from camlens import io as cio
    from camlens.models import load_model
    from camlens.output import resized

    inputs = photos(tmp_path / "in", [(20, 20)] * 2)  # one batch of 2
    out = tmp_path / "out"
    code = main(["explain", str(inputs), "--model", f"{blocknet}:build", "--layers",
                 "all-blocks", "--input-size", "16", "--target", "1", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    probe = [(1, 3, 16, 16)]  # loading may run one dummy image to count the classes
    assert calls in ([(2, 3, 16, 16)], probe + [(2, 3, 16, 16)])  # one forward, all blocks
    record = json.loads((out / "0" / "explanation.json").read_text())
    assert record["layers"] == BLOCKS
    assert record["methods"] == [f"gradcam@{b}" for b in BLOCKS]
    loaded = load_model(f"{blocknet}:build", input_size=16)
    x = loaded.preprocess(cio.load_image(inputs / "0.png"))[None]
    with np.load(out / "0" / "maps.npz") as npz:
        for b in BLOCKS:
            want = camlens.explain(loaded.model, x, layer=b, target=1).maps[0, 0]
            np.testing.assert_allclose(npz[f"gradcam@{b}/1"].astype(np.float32),
                                       resized(want, (20, 20)), atol=1e-3)
    assert (out / "0" / "gradcam@layer1.1_1.png").is_file()


def test_layers_comma_list(tmp_path: Path, blocknet: Path,
                           calls: list[tuple[int, ...]],  # noqa: F811
                           capsys: pytest.CaptureFixture[str]) -> None:
    inputs = photos(tmp_path / "in", [(20, 20)])
    out = tmp_path / "out"
    code = main(["explain", str(inputs), "--model", f"{blocknet}:build", "--layers",
                 "stem,layer2.0", "--method", "gradcam", "--method", "layercam",
                 "--input-size", "16", "--target", "2", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "0" / "explanation.json").read_text())
    assert sorted(record["maps"]) == sorted(f"{m}@{layer}/2" for m in ("gradcam", "layercam")
                                            for layer in ("stem", "layer2.0"))


@pytest.mark.parametrize("flags,message", [
    (["--layers", "all-blocks", "--layer", "stem"], "not both"),
    (["--layers", "all-blocks", "--method", "gradient"], "work(s) on the input"),
    (["--layers", "stem,layer9"], "no layer named 'layer9'"),
    (["--layers", " , "], "expected all-blocks"),
])
def test_layers_errors_are_one_line_exit_2(flags: list[str], message: str, tmp_path: Path,
                                           blocknet: Path,
                                           calls: list[tuple[int, ...]],  # noqa: F811
                                           capsys: pytest.CaptureFixture[str]) -> None:
    inputs = photos(tmp_path / "in", [(20, 20)])
    code = main(["explain", str(inputs), "--model", f"{blocknet}:build", *flags,
                 "--input-size", "16", "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], lines


def test_all_blocks_on_a_model_without_blocks(tmp_path: Path, net: Path,  # noqa: F811
                                              calls: list[tuple[int, ...]],  # noqa: F811
                                              capsys: pytest.CaptureFixture[str]) -> None:
    inputs = photos(tmp_path / "in", [(20, 20)])
    code = main(["explain", str(inputs), "--model", f"{net}:build", "--layers", "all-blocks",
                 "--input-size", "16", "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and "no residual blocks" in lines[0], lines
    assert [c for c in calls if c[0] != 1] == []  # nothing explained
