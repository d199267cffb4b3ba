"""``camlens caption`` end to end on the bundled captioner, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from camlens import output
from camlens.captioning import load_captioner, load_vocabulary
from camlens.captioning.explain import caption_scores
from camlens.cli import main
from camlens.synthetic.v2 import make_scene

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory: Any) -> tuple[Path, Any]:
    scene = make_scene(np.random.default_rng((5, 2)), kind="two")
    path = tmp_path_factory.mktemp("img") / "two.png"
    Image.fromarray(scene.image).save(path)
    return path, scene


def test_caption_generates_and_explains_the_visual_words(scene_png: Any, tmp_path: Path,
                                                         capsys: Any) -> None:
    path, _ = scene_png
    assert main(["caption", str(path), "--out", str(tmp_path)]) == 0
    saved = output.load(tmp_path / "two")
    rec = saved.record
    assert rec["caption_source"] == "beam search, width 3"
    words = rec["words"]
    assert rec["log_probability"] == pytest.approx(sum(w["log_probability"] for w in words),
                                                   abs=1e-4)
    # the JSON's per-word scores are a literal per-step log-softmax of the bundled model
    model, vocab = load_captioner(), load_vocabulary()
    x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(
        2, 0, 1)[None].float() / 255.0
    literal = caption_scores(model, x, rec["token_ids"])
    np.testing.assert_allclose([w["log_probability"] for w in words], literal[1:].numpy(),
                               atol=1e-4)
    assert vocab.decode(rec["token_ids"][1:]) == rec["caption"]
    keys = ["caption"] + [f"{w['position']}-{w['word']}" for w in words if w["visual"]]
    assert sorted(saved.maps) == sorted(f"{m}/{k}" for m in
                                        ("guided-backprop", "gradcam", "guided-gradcam")
                                        for k in keys)
    assert saved.maps["gradcam/caption"].shape == (112, 112)  # the photo's resolution
    assert saved.maps["guided-backprop/caption"].shape == (112, 112, 3)
    assert Image.open(saved.pngs["gradcam/caption"]).size == (112, 112)
    assert saved.summary is not None and Image.open(saved.summary).height >= 224 * len(keys)
    assert rec["caption"] in capsys.readouterr().out


def test_caption_scores_a_given_caption(scene_png: Any, tmp_path: Path) -> None:
    path, scene = scene_png
    truth = scene.graph().caption()
    assert main(["caption", str(path), "--caption", truth, "--method", "gradcam",
                 "--words", "all", "--save", "json,maps", "-q", "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "two" / "explanation.json").read_text())
    assert rec["caption_source"] == "given"
    assert rec["caption"] == truth.lower().rstrip(".")
    n = len(rec["words"])  # every word and <end>
    assert len(rec["explained"]) == 1 + n and rec["words"][-1]["word"] == "<end>"
    assert sorted(rec["files"]) == ["maps.npz"]


@pytest.mark.parametrize("caption, message", [
    ("a red tabbby", r"--caption: the word 'tabbby' is not in the captioner's vocabulary of "
                     r"\d+ words \(nearest: tabby"),
    ("", r"--caption: the caption '' has no words"),
    ("42 !", r"--caption: the caption '42 !' has no words"),
])
def test_bad_captions_exit_2_with_one_line(scene_png: Any, tmp_path: Path, capsys: Any,
                                           caption: str, message: str) -> None:
    path, _ = scene_png
    assert main(["caption", str(path), "--caption", caption, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("camlens: error: ")
    import re
    assert re.search(message, err), err
    assert not (tmp_path / "two").exists()


def test_user_model_needs_a_vocabulary(scene_png: Any, tmp_path: Path, capsys: Any) -> None:
    path, _ = scene_png
    assert main(["caption", str(path), "--model", "camlens.captioning:load_captioner",
                 "--out", str(tmp_path)]) == 2
    assert "needs --vocab FILE" in capsys.readouterr().err


def test_user_model_with_vocabulary(scene_png: Any, tmp_path: Path) -> None:
    from camlens.captioning import WEIGHTS_DIR

    path, _ = scene_png
    assert main(["caption", str(path), "--model", "camlens.captioning:load_captioner",
                 "--vocab", str(WEIGHTS_DIR / "vocab.json"), "--layer", "features.18",
                 "--input-size", "112", "--mean", "0", "0", "0", "--std", "1", "1", "1",
                 "--method", "gradcam", "-q", "--out", str(tmp_path / "u")]) == 0
    assert main(["caption", str(path), "--method", "gradcam", "-q", "--out",
                 str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "u" / "two" / "explanation.json").read_text())
    b = json.loads((tmp_path / "b" / "two" / "explanation.json").read_text())
    assert a["caption"] == b["caption"]  # the same model, loaded as a user's
    assert a["log_probability"] == pytest.approx(b["log_probability"], abs=1e-4)
