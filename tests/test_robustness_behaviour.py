"""What a failure leaves behind, and inputs that are not the first argument:

- no hooks after an explanation that raises with ``rectifiers="modules"`` (the hook-based
  rectifier rules), nor after a `camlens layers` whose forward pass raises;
- a crash while `camlens explain` writes maps.npz or explanation.json leaves the previous file
  as it was (and no temporary file);
- ``image_index`` other than 0: pixel-space methods explain the image, not the first input.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.nn.modules import module as module_globals

import camlens
from camlens import METHODS, TargetError
from camlens.cli import main


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a loaded machine two OpenMP threads are many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def hooks(model: nn.Module) -> dict[str, Any]:
    """Every hook registered on the model's modules, and the global module hooks."""
    return {
        "modules": {n: [len(getattr(m, d, {})) for d in HOOK_DICTS]
                    for n, m in model.named_modules()},
        "global": (len(module_globals._global_forward_hooks),
                   len(module_globals._global_forward_pre_hooks),
                   len(module_globals._global_backward_hooks),
                   len(getattr(module_globals, "_global_backward_pre_hooks", {}))),
    }


# --------------------------------------------------------------------------- rectifiers="modules"


class Boom(nn.Module):
    """Identity that raises while ``armed``."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            raise RuntimeError("injected failure")
        return x


class ReluNet(nn.Module):
    """Rectifier modules (nn.ReLU, in place, and nn.ReLU6) that rectifiers="modules" hooks."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU6())
        self.boom = Boom()
        self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.boom(self.features(x)).mean(dim=(2, 3)))


RULE_METHODS = [("guided-backprop", {}), ("deconvnet", {}), ("guided-gradcam", {}),
                ("deconv-gradcam", {}), ("gradcam", {"backward": "guided"}),
                ("gradcam", {"backward": "deconv"})]


def _layer(method: str) -> dict[str, Any]:
    return {"layer": "features"} if METHODS[method].needs_layer else {}


def _bad_target(output: torch.Tensor) -> torch.Tensor:
    raise KeyError("no such answer")


@pytest.mark.parametrize("method,options", RULE_METHODS)
@pytest.mark.parametrize("failure", ["forward", "callable target", "class out of range"])
def test_no_hooks_left_when_a_modules_rectifier_call_raises(method: str,
                                                            options: dict[str, Any],
                                                            failure: str) -> None:
    model = ReluNet().eval()
    x = torch.randn(2, 3, 8, 8)
    before = hooks(model)
    kw: dict[str, Any] = {}
    expected: tuple[type[BaseException], str]
    if failure == "forward":
        model.boom.armed = True
        expected = (Exception, "injected failure")
    elif failure == "callable target":
        kw["target"], expected = _bad_target, (KeyError, "no such answer")
    else:
        kw["target"], expected = 7, (TargetError, "out of range")
    with pytest.raises(expected[0], match=expected[1]):
        camlens.explain(model, x, method=method, rectifiers="modules", **_layer(method),
                        **options, **kw)
    assert hooks(model) == before
    model.boom.armed = False
    ex = camlens.explain(model, x, method=method, rectifiers="modules", **_layer(method),
                         **options)  # and the model still explains as before
    ref = camlens.explain(model, x, method=method, **_layer(method), **options)
    torch.testing.assert_close(ex.maps, ref.maps)
    assert hooks(model) == before


# --------------------------------------------------------------------------- camlens layers

REFUSING_NET = """
import torch
from torch import nn
from torch.nn.modules import module as module_globals


class Observed(nn.Module):
    '''Raises when anything watches the model's layers with hooks, as `camlens layers` does.'''

    def __init__(self, root):
        super().__init__()
        self.root = [root]

    def forward(self, x):
        watched = any(m._forward_hooks or m._forward_pre_hooks for m in self.root[0].modules())
        if watched or module_globals._global_forward_hooks:
            raise RuntimeError("this layer refuses to be observed")
        return x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.observed = Observed(self)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.observed(torch.relu(self.conv(x))).mean(dim=(2, 3)))


net = Net().eval()
"""


def test_no_hooks_left_after_a_failing_camlens_layers(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    package = tmp_path / "camlens_refusing_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(REFUSING_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    nets = importlib.import_module("camlens_refusing_pkg.nets")
    monkeypatch.setitem(sys.modules, "camlens_refusing_pkg.nets", nets)
    before = hooks(nets.net)
    code = main(["layers", "--model", "camlens_refusing_pkg.nets:net", "--input-size", "16"])
    _, err = capsys.readouterr()
    assert code != 0 and "refuses to be observed" in err, (
        "the model fails only while hooks watch it; if `camlens layers` no longer uses hooks, "
        "give this test another way to fail half-way")
    assert hooks(nets.net) == before
    assert nets.net(torch.zeros(1, 3, 16, 16)).shape == (1, 3)  # usable again


# --------------------------------------------------------------------------- crash mid-write

TINY_NET = """
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()
"""


@pytest.fixture()
def first_run(tmp_path: Path) -> tuple[list[str], Path, dict[str, bytes]]:
    """One finished `camlens explain` (target 0); returns the argv for a run with target 1,
    the output folder and the first run's files."""
    (tmp_path / "tiny.py").write_text(TINY_NET)
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    argv = ["explain", str(tmp_path / "p.png"), "--model", f"{tmp_path / 'tiny.py'}:build",
            "--layer", "0", "--input-size", "32", "--method", "gradcam", "--out",
            str(tmp_path / "out"), "--quiet"]
    assert main(argv + ["--target", "0"]) == 0
    folder = tmp_path / "out" / "p"
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {"maps.npz", "explanation.json"} <= set(files)
    return argv + ["--target", "1"], folder, files


def no_temporary_files(folder: Path) -> None:
    names = [p.name for p in folder.iterdir()]
    assert all(not n.startswith(".") and ".tmp" not in n for n in names), names


def test_crash_half_way_through_maps_npz_keeps_the_previous_one(
        first_run: tuple[list[str], Path, dict[str, bytes]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    argv, folder, before = first_run
    calls = []

    real = np.lib.format.write_array

    def half_then_crash(fp: Any, array: Any, *args: Any, **kwargs: Any) -> None:
        """Write the array's first half into the open .npz member, then fail (disk full)."""
        import io

        buffer = io.BytesIO()
        real(buffer, array, *args, **kwargs)
        data = buffer.getvalue()
        calls.append(len(data))
        fp.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    # maps.npz is written member by member (numpy's own .npy writer into a zip member)
    monkeypatch.setattr(np.lib.format, "write_array", half_then_crash)
    assert main(argv) != 0
    assert calls, "maps.npz is no longer written with numpy's .npy writer: simulate the crash anew"
    assert (folder / "maps.npz").read_bytes() == before["maps.npz"]
    json.loads((folder / "explanation.json").read_text())  # whole: the old one or a new one
    no_temporary_files(folder)


@pytest.mark.parametrize("name", ["maps.npz", "explanation.json"])
def test_crash_before_a_file_is_in_place_keeps_the_previous_one(
        name: str, first_run: tuple[list[str], Path, dict[str, bytes]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The last step of an atomic write (the rename onto ``name``) fails: the command fails
    and ``name`` is the previous run's file, byte for byte. A writer that writes ``name`` in
    place (where a crash leaves half a file) never gets here and the command succeeds."""
    argv, folder, before = first_run
    real = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(dst).name == name:
            raise OSError(errno.EIO, "input/output error (simulated)")
        real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    assert main(argv) != 0
    assert (folder / name).read_bytes() == before[name]
    no_temporary_files(folder)


# --------------------------------------------------------------------------- image_index


class QuestionFirst(nn.Module):
    """forward(question, image): the image is the second input; ``features`` halves its
    resolution, so layer maps must be upsampled to the image's."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(6, 6, 3, padding=1, stride=2), nn.ReLU())
        self.q = nn.Linear(5, 6)
        self.answer = nn.Linear(6, 4)

    def forward(self, question: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        a = self.features(image).mean(dim=(2, 3))
        return self.answer(F.relu(a * torch.tanh(self.q(question)) + a))


class ImageOnly(nn.Module):
    """The same model with the question fixed: forward(image)."""

    def __init__(self, net: nn.Module, question: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.question = question

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self.question, image)


@pytest.mark.parametrize("method", ["guided-backprop", "deconvnet", "guided-gradcam",
                                    "deconv-gradcam", "gradcam"])
def test_image_index_picks_the_image(method: str) -> None:
    model = QuestionFirst().eval()
    question, image = torch.randn(2, 5), torch.randn(2, 3, 10, 12)
    layer: dict[str, Any] = {"layer": "features"} if METHODS[method].needs_layer else {}
    ex = camlens.explain(model, (question, image), image_index=1, method=method, top_k=2,
                         **layer)
    ref_layer: dict[str, Any] = {"layer": "net.features"} if layer else {}
    ref = camlens.explain(ImageOnly(model, question).eval(), image, method=method, top_k=2,
                          **ref_layer)
    assert ex.maps.shape == ref.maps.shape == ((2, 2, 3, 10, 12) if METHODS[method].pixel_space
                                               else (2, 2, 10, 12))
    torch.testing.assert_close(ex.targets, ref.targets)
    torch.testing.assert_close(ex.raw, ref.raw, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ex.maps, ref.maps, rtol=1e-4, atol=1e-5)
    assert float(ex.maps.max() - ex.maps.min()) > 0.1
