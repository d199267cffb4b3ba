"""The world v2 VQA net (camlens.vqa): Grad-CAM of an answer against a literal re-computation,
answer-versus-answer maps, the model left untouched, the shipped net's accuracy, the
measurements' summaries by hand, and `camlens vqa` / `camlens evaluate vqa` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import camlens
from camlens import AnswerTarget
from camlens.cli import main
from camlens.evaluate.language import mask_rank_correlation
from camlens.synthetic.v2 import HELDOUT_SEED
from camlens.synthetic.v2.words import named_classes
from camlens.vqa.data import ANSWERS, images, make_scenes, scene_questions
from camlens.vqa.explain import FIG12, explain_answers
from camlens.vqa.measure import VQARow, evaluate_vqa, pick_question, summarize
from camlens.vqa.model import DEFAULT_LAYER, UnknownWordError, Vocabulary, VQANet, load_bundled
from test_contract import assert_same, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = ("<pad>", "what", "colour", "is", "the", "tabby", "how", "many")


def toy(seed: int = 0, dtype: torch.dtype = torch.float64) -> VQANet:
    torch.manual_seed(seed)
    net = VQANet(len(WORDS), 5, embed=4, hidden=3, common=6).to(dtype).eval()
    with torch.no_grad():  # larger weights than the default init, so every answer differs
        for p in net.parameters():
            p.mul_(3.0)
    return net


def test_l2_normalised_features_and_rows_index_images() -> None:
    net = toy(dtype=torch.float32)
    x = torch.rand(2, 3, 112, 112)
    f = net.image_features(x)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(2))
    q = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 3, 0, 0]])
    together = net.answer_scores(f, q[[0, 1, 1]], rows=torch.tensor([0, 1, 0]))
    torch.testing.assert_close(together[:2], net(x, q))
    torch.testing.assert_close(together[2], net(x[:1], q[1:])[0])
    # padding at the end changes nothing: the LSTM reads the question's own words only
    torch.testing.assert_close(net(x[1:], q[1:, :3]), net(x[1:], q[1:]))


def _slow_gradcam(net: VQANet, x: torch.Tensor, q: torch.Tensor, score) -> torch.Tensor:
    """Eq. 1-2 by hand: A = relu5_3 (cnn[:19]), alpha_k = mean_ij dy/dA^k_ij,
    L = ReLU(sum_k alpha_k A^k)."""
    from camlens.synthetic.v2.nets import INPUT_MEAN, INPUT_STD

    with torch.no_grad():
        a = net.cnn[:19]((x - INPUT_MEAN) / INPUT_STD).clone()
    a.requires_grad_(True)
    f = torch.flatten(net.cnn[19](a), 1)
    y = score(net.answer_scores(f / f.norm(dim=1, keepdim=True), q))
    (g,) = torch.autograd.grad(y, a)
    alpha = g.mean((2, 3))
    return torch.relu((alpha[:, :, None, None] * a).sum(1)).detach()


def test_answer_gradcam_and_contrast_equal_a_literal_recomputation() -> None:
    net = toy(1)
    x = torch.rand(1, 3, 112, 112, dtype=torch.float64)
    q = torch.tensor([[1, 2, 3, 4, 5]])
    ex = camlens.explain(net, (x, q), layer=DEFAULT_LAYER, target=torch.tensor([[0, 3]]))
    for k, a in enumerate((0, 3)):
        slow = _slow_gradcam(net, x, q, lambda s, a=a: s[0, a])
        torch.testing.assert_close(ex.raw[0, k], slow[0], rtol=1e-9, atol=1e-12)
    vs = camlens.explain(net, (x, q), layer=DEFAULT_LAYER, target=AnswerTarget([3], versus=[0]))
    slow = _slow_gradcam(net, x, q, lambda s: s[0, 3] - s[0, 0])
    torch.testing.assert_close(vs.raw[0, 0], slow[0], rtol=1e-9, atol=1e-12)
    logits = net(x, q).detach()
    torch.testing.assert_close(vs.scores[0, 0], logits[0, 3] - logits[0, 0])
    assert slow.max() > 0  # the contrast map is not trivially empty


def test_explain_answers_leaves_the_model_untouched_also_when_it_raises() -> None:
    net = toy(2, torch.float32)
    vocab = Vocabulary(WORDS, ("red", "yellow", "two", "yes", "no"))
    net.embed.weight.grad = torch.full_like(net.embed.weight, 0.5)
    net.question_fc.bias.requires_grad_(False)
    x = torch.rand(1, 3, 112, 112)
    for training in (False, True):
        net.train(training)
        before = snapshot(net)
        with torch.no_grad():
            probs = net(x, vocab.encode(["what colour is the tabby"])).softmax(-1)[0]
        with pytest.warns(UserWarning) if training else _nothing():
            r = explain_answers(net, vocab, x, "What colour is the tabby?", top=2,
                                versus=[("red", "yellow")])
        assert_same(before, snapshot(net))
        assert r.answers == tuple(vocab.answers[i] for i in probs.topk(2).indices.tolist())
        assert set(r.maps) == set(FIG12) and r.contrast_maps is not None
        with pytest.raises(camlens.LayerError):
            explain_answers(net, vocab, x, "how many", layer="cnn.nope")
        assert_same(before, snapshot(net))
    assert x.grad is None


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_unknown_words_and_answers_name_the_nearest() -> None:
    vocab = Vocabulary(WORDS, ("red", "yellow", "dark green"))
    with pytest.raises(UnknownWordError, match=r"unknown word 'colur' .*nearest: colour"):
        vocab.encode(["What colur is the tabby?"])
    with pytest.raises(UnknownWordError, match=r"unknown answer 'yelow'.*nearest: yellow"):
        vocab.answer_index("yelow")
    assert vocab.answer_index("Dark Green") == 2
    torch.testing.assert_close(vocab.encode(["how many", "What colour is the tabby?"]),
                               torch.tensor([[6, 7, 0, 0, 0], [1, 2, 3, 4, 5]]))


def test_questions_and_answers_come_from_the_scene_graph() -> None:
    scenes = make_scenes(6, HELDOUT_SEED)
    rng = np.random.default_rng(0)
    for s in scenes:
        qas = scene_questions(s, rng)
        assert all(q.answer in ANSWERS for q in qas)
        kinds = [q.kind for q in qas]
        assert kinds.count("shape") <= 3 and kinds.count("position") <= 4
        q = pick_question(s, np.random.default_rng(1))
        assert q is not None and named_classes(q.question) & {o.name for o in s.objects}


def test_shipped_net_beats_the_majority_answer_on_held_out_scenes() -> None:
    """The shipped accuracy.json is the float16 net's; recomputed here on 40 held-out scenes."""
    from camlens.vqa.model import BUNDLED_DIR
    from camlens.vqa.train import _qas, accuracy

    rec = json.loads((BUNDLED_DIR / "accuracy.json").read_text())
    held = rec["heldout"]
    assert held["overall"] > 0.5
    for k in ("existence", "colour", "position", "count"):  # count: barely (docs/vqa.md)
        margin = 0.02 if k == "count" else 0.1
        assert held["per_kind"][k]["accuracy"] > held["majority_baseline"][k]["accuracy"] + margin
    net, vocab = load_bundled()
    scenes = make_scenes(40, HELDOUT_SEED)
    feats = net.image_features(images(scenes)).detach()
    acc = accuracy(net, feats, vocab, _qas(scenes, 1))
    assert abs(acc["overall"] - held["overall"]) < 0.08


def test_accuracy_table_reads_the_shipped_record() -> None:
    from camlens.vqa.model import BUNDLED_DIR
    from camlens.vqa.report import accuracy_markdown

    rec = json.loads((BUNDLED_DIR / "accuracy.json").read_text())
    text = accuracy_markdown()
    colour = rec["heldout"]["per_kind"]["colour"]
    assert f"| colour | {colour['n']} | {colour['accuracy']:.3f} |" in text
    assert f"| all | {rec['heldout']['n']} | {rec['heldout']['overall']:.3f} |" in text


def test_summary_by_hand() -> None:
    def rows(ans: str, g: float, b: float, h: float) -> list[VQARow]:
        return [VQARow("q", "colour", ans, "red", "gradcam", g, h),
                VQARow("q", "colour", ans, "red", "guided-backprop", b, h / 2),
                VQARow("q", "colour", ans, "red", "occlusion", None, 0.1)]
    s = summarize([rows("red", 0.2, 0.1, 0.4), rows("blue", 0.6, math.nan, 0.0),
                   rows("red", 0.4, 0.5, 0.2)])
    assert s.n == 3 and s.methods == ["gradcam", "guided-backprop", "occlusion"]
    assert s.occlusion["gradcam"].mean == pytest.approx(0.4)
    assert s.occlusion["gradcam"].sem == pytest.approx(0.2 / math.sqrt(3))
    assert (s.occlusion["guided-backprop"].n, s.occlusion["guided-backprop"].skipped) == (2, 1)
    assert s.occlusion["guided-backprop"].mean == pytest.approx(0.3)
    assert s.human["guided-backprop"].mean == pytest.approx(0.1)
    assert s.human["occlusion"].sem == pytest.approx(0.0)
    assert s.accuracy.mean == pytest.approx(2 / 3)
    assert "0.400 +- 0.115" in s.markdown() and "0.60 +- 0.038" in s.markdown()


def test_evaluate_rows_recomputed_and_resumed(tmp_path: Path) -> None:
    csv = tmp_path / "vqa.csv"
    s = evaluate_vqa(2, csv_path=csv, progress=False, stride=16)
    assert s.n == 2 and s.resumed == 0
    again = evaluate_vqa(2, csv_path=csv, progress=False, stride=16)
    assert again.resumed == 2 and again.to_dict()["human"] == s.to_dict()["human"]
    # the occlusion map's correlation with the object masks, recomputed here
    net, vocab = load_bundled()
    scene = make_scenes(1, HELDOUT_SEED)[0]
    qa = pick_question(scene, np.random.default_rng((HELDOUT_SEED, 0)))
    assert qa is not None
    x, q = images([scene]), vocab.encode([qa.question])
    a = int(net(x, q).argmax(1))
    occ = camlens.explain(net, (x, q), method="occlusion", target=torch.tensor([[a]]),
                          window=16, stride=16).raw[0, 0].numpy()
    want = mask_rank_correlation(occ, named_classes(qa.question),
                                 [(o.name, o.mask) for o in scene.objects])
    text = csv.read_text().splitlines()
    occ_row = [r for r in text if r.startswith(f"scene{HELDOUT_SEED}-0,") and ",occlusion," in r]
    assert len(occ_row) == 1 and f"{want:.6f}"[:7] in occ_row[0]


def test_cli_vqa_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = make_scenes(1, HELDOUT_SEED, start=2)[0]
    photo = tmp_path / "scene.png"
    Image.fromarray(scene.image).resize((224, 224)).save(photo)
    name = scene.objects[0].name
    code = main(["vqa", str(photo), "--question", f"What colour is the {name}?",
                 "--answer", "red", "--answer", "Dark Green", "--versus", "red", "blue",
                 "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    saved = camlens.output.load(tmp_path / "out" / "scene")
    rec = saved.record
    assert rec["question"] == f"What colour is the {name}?"
    assert [t["name"] for t in rec["targets"]] == ["red", "dark green"]
    p = [t["probability"] for t in rec["targets"]]
    top = rec["top_answers"]
    assert all(0 <= v <= 1 for v in p) and sum(t["probability"] for t in top) <= 1 + 1e-6
    assert top == sorted(top, key=lambda t: -t["probability"])
    assert sorted(saved.maps) == sorted(f"{m}/{i}" for m in FIG12 for i in
                                        (ANSWERS.index("red"), ANSWERS.index("dark green")))
    assert saved.maps[f"gradcam/{ANSWERS.index('red')}"].shape == (224, 224)
    assert saved.summary is not None and Image.open(saved.summary).width > 600
    versus = camlens.output.load(tmp_path / "out" / "scene" / "versus")
    assert versus.record["contrasts"] == {"0": "red vs blue"}


@pytest.mark.parametrize(("argv", "message"), [
    (["--question", "What colur is the tabby?"], "unknown word 'colur' in the question; "
                                                   "nearest: colour"),
    (["--question", "What colour is the tabby?", "--answer", "purpel"],
     "unknown answer 'purpel'; nearest: purple"),
    (["--question", "How many?", "--model", "/nonexistent"], "--model /nonexistent: cannot"),
])
def test_cli_vqa_bad_input_exits_2(argv: list[str], message: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["vqa", "synthetic:seed=20251,n=1", *argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_cli_evaluate_vqa_bad_data_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "vqa", "--data", "coco:x"]) == 2
    assert ("unknown data spec 'coco:x'; synthetic data is written synthetic:seed=S,n=N"
            in capsys.readouterr().err)
