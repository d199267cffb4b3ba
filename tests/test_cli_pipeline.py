"""`camlens explain` on the shared executor: images decode on loader threads, batches are
explained on the caller's thread, outputs are written on the writer thread; one image that
fails inside a batch costs only that image; what a decoder says stays with its image."""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import camlens
from camlens import output
from camlens.cli import main
from camlens.pipeline import decoding
from camlens.pipeline.decoding import Decoders

NETS = """
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


class NoWhite(TinyNet):
    '''Refuses a batch holding a white image (normalised mean above 2).'''

    def forward(self, x):
        if (x.mean(dim=(1, 2, 3)) > 2).any():
            raise ValueError("a white image")
        return super().forward(x)


def build():
    torch.manual_seed(0)
    return TinyNet().eval()


def no_white():
    torch.manual_seed(0)
    return NoWhite().eval()
"""


@pytest.fixture()
def nets(tmp_path: Path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


def photo(path: Path, seed: int = 0, white: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    pixels = (np.full((20, 20, 3), 255, np.uint8) if white
              else rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def explain(nets: Path, factory: str, *args: str | Path) -> int:
    return main(["explain", *map(str, args), "--model", f"{nets}:{factory}", "--layer",
                 "features.3", "--input-size", "16", "--method", "gradcam", "-q"])


def test_one_image_failing_in_a_batch_costs_that_image_only(
        tmp_path: Path, nets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three same-size photos make one batch; the model refuses the batch because of the white
    one. The batch is tried again image by image: only the white one fails."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo(inputs / "a.png", 1)
    photo(inputs / "b.png", white=True)
    photo(inputs / "c.png", 2)
    code = explain(nets, "no_white", inputs, "--out", tmp_path / "out")
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert err == [f"camlens: error: {inputs / 'b.png'}: the model failed on its 16x16 input "
                   "(ValueError: a white image); a model that takes one input size only needs "
                   "images of that shape (e.g. square ones)"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "c"]


def test_decode_explain_write_run_on_their_threads(
        tmp_path: Path, nets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding on the loader threads, camlens.explain on the caller's thread (one call per
    batch of same-shape images), output.save on the writer threads."""
    threads: dict[str, set[str]] = {"load": set(), "explain": set(), "save": set()}
    calls: list[int] = []

    def spy(stage: str, fn):  # type: ignore[no-untyped-def]
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            threads[stage].add(threading.current_thread().name.rsplit("_", 1)[0])
            if stage == "explain":
                calls.append(len(args[1]))
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(Decoders, "load", spy("load", Decoders.load))
    monkeypatch.setattr(camlens, "explain", spy("explain", camlens.explain))
    monkeypatch.setattr(output, "save", spy("save", output.save))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(5):
        photo(inputs / f"{i}.png", i)
    assert explain(nets, "build", inputs, "--out", tmp_path / "out", "--batch-size", "2") == 0
    assert threads == {"load": {"camlens-load"}, "explain": {"MainThread"},
                       "save": {"camlens-writer"}}  # camlens-writer_0, _1...
    assert calls == [2, 2, 1]
    assert len(list((tmp_path / "out").iterdir())) == 5


def test_each_image_with_the_same_decoder_warning_gets_its_note(
        tmp_path: Path, nets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Pillow says the same words for two files: both get their warning line (a warning is
    otherwise shown once per place in the code)."""
    exif = b"II*\x00\x08\x00\x00\x00\x05\x00\x0f\x01\x02\x00\xff\x00\x00\x00\x90\x00\x00\x00"
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (12, 10)).save(inputs / name, exif=exif)
    assert explain(nets, "build", inputs, "--out", tmp_path / "out") == 0
    err = capsys.readouterr().err.splitlines()
    for name in ("a.png", "b.png"):
        assert [line for line in err if line.startswith(f"camlens: warning: {inputs / name}: ")
                and "Skipping tag 271" in line], err


def test_a_warning_from_another_thread_is_not_a_decoder_note(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one thread decodes, a warning raised on another thread goes to the warning
    display, after the decode (descriptor 2 is not redirected then), not into the image's
    notes."""
    shown: list[tuple[str, float]] = []
    decoded_at: list[float] = []
    workers: list[threading.Thread] = []

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        shown.append((str(message), time.monotonic()))

    def other_thread() -> None:
        warnings.warn("from the compute thread", UserWarning, stacklevel=1)

    def slow_load(path: Path, max_pixels: int | None = None) -> Image.Image:
        warnings.warn("from the decoder", UserWarning, stacklevel=1)
        workers.append(threading.Thread(target=other_thread))
        workers[0].start()
        time.sleep(0.3)  # the other thread warns now, while this one decodes
        decoded_at.append(time.monotonic())
        return Image.new("RGB", (4, 4))

    monkeypatch.setattr(decoding.cio, "load_image", slow_load)
    with warnings.catch_warnings():
        warnings.showwarning = show
        with Decoders() as decoders:
            _, notes = decoders.load(tmp_path / "x.png")
            workers[0].join(5)
    assert notes == ["from the decoder"]
    assert [m for m, _ in shown] == ["from the compute thread"]
    assert shown[0][1] >= decoded_at[0]
