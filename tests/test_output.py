"""camlens.output: ``load`` reads back what ``save`` wrote, and ``camlens explain --save``
chooses what is written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import camlens
from camlens import output
from camlens.cli import main
from camlens.errors import DataError
from camlens.explanation import Explanation
from models import build, sample  # tests/models.py, the shared toy-model zoo

FLOAT16_ATOL = 2.5e-4  # float16 in [0, 1]: half a unit in the last place at 1.0 is 2.4e-4
PHOTO = (40, 30)  # (width, height): larger than the 16x16 input, so the maps are upsampled


@pytest.fixture(scope="module")
def explained() -> dict[str, Explanation]:
    model = build("gap")
    x = sample(model, batch=2)
    return camlens.explain(model, x, method=["gradcam", "guided-backprop", "guided-gradcam"],
                           layer=model.LAYER, top_k=2)


def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (PHOTO[1], PHOTO[0], 3), dtype=np.uint8))


def upsampled(m: torch.Tensor) -> np.ndarray:
    """The documented rule, written out: bilinear (half-pixel centres) to the photo's size,
    clipped to [0, 1]; channels last for pixel-space maps."""
    x = (m if m.dim() == 3 else m[None])[None].float()
    y = F.interpolate(x, size=(PHOTO[1], PHOTO[0]), mode="bilinear", align_corners=False)
    arr = y[0].clamp(0, 1).numpy()
    return np.moveaxis(arr, 0, -1) if m.dim() == 3 else arr[0]


@pytest.mark.parametrize("sample_index", [0, 1])
def test_load_round_trips_save_to_float16(tmp_path: Path, explained: dict[str, Explanation],
                                          sample_index: int) -> None:
    written = output.save(explained, photo(), tmp_path / "a", sample=sample_index)
    saved = output.load(tmp_path / "a")
    classes = explained["gradcam"].targets[sample_index].tolist()
    keys = {f"{m}/{c}" for m in explained for c in classes}
    assert set(saved.maps) == keys and saved.record["maps"] == sorted(keys)
    for method, e in explained.items():
        for k, c in enumerate(classes):
            got = saved.maps[f"{method}/{c}"]
            want = upsampled(e.maps[sample_index, k].detach())
            assert got.dtype == np.float32
            assert got.shape == ((PHOTO[1], PHOTO[0], 3) if e.maps.dim() == 5
                                 else (PHOTO[1], PHOTO[0]))
            np.testing.assert_allclose(got, want, rtol=0, atol=FLOAT16_ATOL)
            assert np.ptp(want) > 0.1  # a map with something in it, not a constant
    assert saved.pngs == {k: tmp_path / "a" / output.png_name(k) for k in keys}
    assert all(p.is_file() for p in saved.pngs.values())
    assert saved.summary == tmp_path / "a" / "summary.png" and saved.summary.is_file()
    assert sorted(written) == sorted((tmp_path / "a").iterdir())
    assert saved.record["files"] == sorted(p.name for p in written if p.suffix != ".json")


def test_what_chooses_files_and_json_is_always_written(
        tmp_path: Path, explained: dict[str, Explanation]) -> None:
    output.save(explained, photo(), tmp_path / "maps", what=("maps",))
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["explanation.json",
                                                                     "maps.npz"]
    only = output.load(tmp_path / "maps")
    assert len(only.maps) == 6 and only.pngs == {} and only.summary is None

    output.save(explained, photo(), tmp_path / "json", what=("json",))
    assert [p.name for p in (tmp_path / "json").iterdir()] == ["explanation.json"]
    assert output.load(tmp_path / "json").maps == {}


def test_load_reads_only_what_the_last_save_wrote(tmp_path: Path,
                                                  explained: dict[str, Explanation]) -> None:
    """A second save into the same folder without maps: the first save's maps.npz is left on
    disk but is not the folder's content any more."""
    output.save(explained, photo(), tmp_path, what=output.WHAT)
    output.save(explained, photo(), tmp_path, what=("summary",))
    assert (tmp_path / "maps.npz").exists()
    saved = output.load(tmp_path)
    assert saved.maps == {} and saved.pngs == {} and saved.summary is not None


def test_load_refuses_what_save_did_not_write(tmp_path: Path,
                                              explained: dict[str, Explanation]) -> None:
    with pytest.raises(DataError, match="no explanation.json, so this is not a folder"):
        output.load(tmp_path)
    output.save(explained, photo(), tmp_path)
    (tmp_path / "summary.png").unlink()
    with pytest.raises(DataError, match="lists summary.png, which is missing"):
        output.load(tmp_path)
    (tmp_path / "explanation.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot be read as JSON"):
        output.load(tmp_path)
    (tmp_path / "explanation.json").write_text(json.dumps({"maps": []}))
    with pytest.raises(DataError, match='expected the "maps" and "files" lists'):
        output.load(tmp_path)


# --------------------------------------------------------------------------- camlens explain --save

TINY_NET = """
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
"""


def explain(tmp_path: Path, *save: str) -> tuple[int, list[str]]:
    """Run `camlens explain` with --save ``save`` on one photo; (exit code, files written in
    the photo's folder)."""
    tmp_path.mkdir(exist_ok=True)
    net = tmp_path / "net.py"
    net.write_text(TINY_NET)
    photo().save(tmp_path / "p.png")
    out = tmp_path / "out"
    args = ["explain", str(tmp_path / "p.png"), "--model", f"{net}:build", "--layer", "0",
            "--input-size", "16", "--top-k", "2", "--out", str(out), "-q"]
    for s in save:
        args += ["--save", s]
    code = main(args)
    files = sorted(p.name for p in (out / "p").iterdir()) if (out / "p").exists() else []
    return code, files


def test_cli_save_maps_writes_maps_and_json_only(tmp_path: Path) -> None:
    code, files = explain(tmp_path, "maps")
    assert code == 0 and files == ["explanation.json", "maps.npz"]
    assert len(output.load(tmp_path / "out" / "p").maps) == 4 * 2  # Figure 1's 4 x top-2


@pytest.mark.parametrize("save", [("png,summary",), ("png", "summary"), ("PNG, summary",)])
def test_cli_save_pictures_without_maps(tmp_path: Path, save: tuple[str, ...]) -> None:
    code, files = explain(tmp_path, *save)
    assert code == 0 and "maps.npz" not in files
    assert "summary.png" in files and "explanation.json" in files
    assert len([f for f in files if f != "summary.png" and f.endswith(".png")]) == 4 * 2


def test_cli_save_default_and_all_write_everything(tmp_path: Path) -> None:
    code, default = explain(tmp_path / "d")
    code_all, every = explain(tmp_path / "a", "all")
    assert code == code_all == 0 and default == every
    assert {"maps.npz", "summary.png", "explanation.json"} <= set(every) and len(every) == 11


@pytest.mark.parametrize("value", ["pngs", ",", "maps;png", "none"])
def test_cli_save_bad_value_is_one_line_exit_2(tmp_path: Path, value: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, files = explain(tmp_path, value)
    err = capsys.readouterr().err
    assert code == 2 and files == []
    assert err.splitlines() == [
        f"camlens explain: error: argument --save: expected a comma list of maps, png, "
        f"summary, json, all, got {value!r} (see camlens explain --help)"]


def test_empty_maps_are_those_constant_in_float16(tmp_path: Path,
                                                  explained: dict[str, Explanation]) -> None:
    # a map that varies only below float16's resolution is saved constant, so it is listed as
    # empty; one step of float16 more and it is not
    e = explained["gradcam"]
    maps = torch.full_like(e.maps, 0.5)
    maps[0, 0, 0, 0] = 0.5 + 1e-4  # rounds to 0.5 in float16 (its step there is 4.9e-4)
    maps[0, 1, 0, 0] = 0.5 + 5e-4
    flat = dataclasses.replace(e, maps=maps)
    output.save({"gradcam": flat}, photo(), tmp_path / "e", what=("json",))
    record = json.loads((tmp_path / "e" / "explanation.json").read_text())
    classes = e.targets[0].tolist()
    assert record["empty_maps"] == [f"gradcam/{classes[0]}"]


def test_a_failed_save_removes_what_it_wrote_and_the_folder_it_made(tmp_path):
    from camlens.output import all_or_nothing, write_record

    def failing_save(folder):
        with all_or_nothing(folder) as written:
            (folder / "a.png").write_bytes(b"png")
            written.append(folder / "a.png")
            write_record(folder, {"score": float("nan")}, written)  # NaN is refused

    new = tmp_path / "new"
    with pytest.raises(ValueError):
        failing_save(new)
    assert not new.exists()
    old = tmp_path / "old"  # a folder the caller had: kept, with the caller's own files
    old.mkdir()
    (old / "mine.txt").write_text("mine")
    with pytest.raises(ValueError):
        failing_save(old)
    assert sorted(p.name for p in old.iterdir()) == ["mine.txt"]
    with all_or_nothing(tmp_path / "ok") as written:
        write_record(tmp_path / "ok", {"score": 1.0}, written)
    assert written == [tmp_path / "ok" / "explanation.json"]
    assert json.loads(written[0].read_text()) == {"score": 1.0}
