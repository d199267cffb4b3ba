"""The world v2 captioner (camlens.captioning): teacher forcing against step-by-step decoding,
beam search against an exhaustive search, the vocabulary, the quality measures by hand, the
captioning protocols on hand-made maps, and the model-untouched contract."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from camlens.captioning import (
    Captioner,
    UnknownWordError,
    Vocabulary,
    beam_search,
    explain_caption,
    greedy,
    world_vocabulary,
)
from camlens.captioning.explain import caption_scores, world_visual
from camlens.captioning.quality import Phrase, attribute_scores, bleu4, phrases
from camlens.synthetic.v2 import make_scene
from camlens.synthetic.v2.words import tokenize
from test_contract import assert_same, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyDecoder(nn.Module):
    """A step-wise decoder with the Captioner's interface, on any image size: the image's mean
    colour (B, 3) -> the LSTM's first input."""

    def __init__(self, vocab: int, hidden: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.project = nn.Linear(3, hidden)
        self.embed = nn.Embedding(vocab, hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)
        with torch.no_grad():
            self.head.weight.mul_(6.0)  # peaked enough that greedy and the best caption differ

    def begin(self, image: torch.Tensor) -> Any:
        _, state = self.lstm(self.project(image.mean((2, 3)))[:, None])
        return state

    def step(self, token: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        h, state = self.lstm(self.embed(token)[:, None], state)
        return self.head(h[:, 0]).log_softmax(-1), state


def exhaustive(model: TinyDecoder, image: torch.Tensor, vocab: int, max_len: int,
               start: int = 1, end: int = 2, pad: int = 0) -> list[tuple[float, tuple[int, ...]]]:
    """Every caption (words other than pad/start, then <end>; or max_len words without it),
    scored by feeding it token by token; best first."""
    words = [w for w in range(vocab) if w not in (pad, start)]
    out = []
    for n in range(1, max_len + 1):
        for seq in itertools.product(words, repeat=n):
            if end in seq[:-1] or (n < max_len and seq[-1] != end):
                continue
            state, token, total = model.begin(image), torch.tensor([start]), 0.0
            with torch.no_grad():
                for w in seq:
                    logp, state = model.step(token, state)
                    total += float(logp[0, w])
                    token = torch.tensor([w])
            out.append((total, seq))
    return sorted(out, key=lambda t: -t[0])


@pytest.mark.parametrize("seed", range(6))
def test_beam_search_equals_an_exhaustive_search(seed: int) -> None:
    vocab, max_len = 5, 4  # <pad>, <start>, <end> and two words: 3 + 9 + 27 + 81 captions
    model = TinyDecoder(vocab, seed=seed)
    image = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    ranked = exhaustive(model, image, vocab, max_len)
    wide = beam_search(model, image, beam=len(ranked), max_len=max_len)[0]
    assert wide[0].ids == ranked[0][1]
    assert wide[0].score == pytest.approx(ranked[0][0], abs=1e-5)
    exact = {seq: v for v, seq in ranked}
    for d in wide:  # whatever else it returns is scored right
        assert d.score == pytest.approx(exact[d.ids], abs=1e-5)
    narrow = beam_search(model, image, beam=1, max_len=max_len)[0][0]
    g = greedy(model, image, max_len=max_len)[0]
    assert narrow.ids == g.ids and narrow.score == pytest.approx(g.score, abs=1e-5)
    assert g.score <= ranked[0][0] + 1e-5
    assert exact[g.ids] == pytest.approx(g.score, abs=1e-5)


def test_beam_search_beats_greedy_somewhere() -> None:
    """The exhaustive comparison above is not vacuous: on some seed greedy is not the best."""
    worse = 0
    for seed in range(6):
        model = TinyDecoder(5, seed=seed)
        image = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
        g = greedy(model, image, max_len=4)[0]
        b = beam_search(model, image, beam=3, max_len=4)[0][0]
        assert b.score >= g.score - 1e-6
        worse += b.score > g.score + 1e-6
    assert worse >= 1


def test_teacher_forcing_equals_step_by_step_and_a_literal_gather() -> None:
    """The Captioner's forward (teacher forcing) and begin/step read the same caption to the
    same log-probabilities; caption_scores = log_softmax(logits[t-1])[w_t], gathered by hand."""
    torch.manual_seed(0)
    model = Captioner(12, embed=8, hidden=8, dropout=0.0).eval()
    image = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    ids = [1, 5, 7, 3, 9, 2]
    logits = model(image, torch.tensor([ids]))
    by_hand = [0.0] + [float(torch.log_softmax(logits[0, t - 1], -1)[ids[t]])
                       for t in range(1, len(ids))]
    scores = caption_scores(model, image, ids)
    np.testing.assert_allclose(scores.numpy(), by_hand, atol=1e-5)
    state, total = model.begin(image), 0.0
    with torch.no_grad():
        for t in range(1, len(ids)):
            logp, state = model.step(torch.tensor([ids[t - 1]]), state)
            total += float(logp[0, ids[t]])
    assert float(scores.sum()) == pytest.approx(total, abs=1e-4)


def test_vocabulary_round_trip_and_errors(tmp_path: Any) -> None:
    v = world_vocabulary()
    assert v.words[:3] == ["<pad>", "<start>", "<end>"]
    ids = v.encode("A striped red tabby, next to a small blue mug.")
    assert ids[0] == v.start and ids[-1] == v.end
    assert v.decode(ids[1:]) == "a striped red tabby next to a small blue mug"
    for i in range(40):  # every caption of the world encodes
        v.encode(make_scene(np.random.default_rng((7, i)), kind=("two", "multi")[i % 2])
                 .graph().caption())
    with pytest.raises(UnknownWordError, match=r"'tabbby' is not .* \(nearest: tabby"):
        v.encode("a tabbby")
    with pytest.raises(ValueError, match="has no words"):
        v.encode("  123 ")
    v.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json").words == v.words
    (tmp_path / "v.txt").write_text("\n".join(v.words) + "\n")
    assert Vocabulary.load(tmp_path / "v.txt").words == v.words
    with pytest.raises(ValueError, match="starts with"):
        Vocabulary(["a", "b"])


def test_phrases_and_attribute_scores_by_hand() -> None:
    words = tokenize("A small dark green patched poplar next to a large red tiger cat.")
    assert phrases(words) == [Phrase("poplar", "small", "dark green", "patched"),
                              Phrase("tiger cat", "large", "red", "")]
    g = make_scene(np.random.default_rng((3, 1)), kind="two").graph()
    ref = tokenize(g.caption())
    assert attribute_scores([g], [ref]) == {"objects": 2, "recall": 1.0, "size": 1.0,
                                            "colour": 1.0, "texture": 1.0, "exact": 1.0}
    a, b = phrases(ref)
    # the first object's size wrong, the second object not named at all
    wrong = tokenize(f"a {'large' if a.size != 'large' else 'small'} {a.colour} "
                     f"{a.texture} {a.cls}")
    s = attribute_scores([g], [wrong])
    assert (s["recall"], s["size"], s["colour"], s["texture"], s["exact"]) == (
        0.5, 0.0, 1.0, 1.0, 0.0)


def test_bleu4_by_hand() -> None:
    ref = "a b c d e f g h".split()
    assert bleu4([ref], [ref]) == pytest.approx(1.0)
    # one wrong last word: n-gram precisions 7/8, 6/7, 5/6, 4/5, no brevity penalty
    assert bleu4([ref], ["a b c d e f g x".split()]) == pytest.approx(0.5 ** 0.25)
    assert bleu4([ref, ref], [[], []]) == 0.0  # an untrained decoder's empty captions
    with pytest.raises(ValueError, match="at least one"):
        bleu4([], [])  # no scenes of a kind: no BLEU, not a ZeroDivisionError
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        bleu4([ref], [])


def test_explain_caption_leaves_the_model_untouched() -> None:
    torch.manual_seed(0)
    v = world_vocabulary()
    model = Captioner(len(v), embed=8, hidden=8).train()  # training mode, dropout on
    model.head.weight.grad = torch.ones_like(model.head.weight)
    image = torch.rand(1, 3, 112, 112)
    before, pixels = snapshot(model), image.clone()
    res = explain_caption(model, image, v, caption="a red tabby next to a blue mug",
                          methods=["gradcam", "guided-backprop"], layer="features.18")
    assert_same(before, snapshot(model))
    assert torch.equal(image, pixels)
    assert res.explained == (3, 8)  # tabby, mug
    assert res.explanations["gradcam"].maps.shape == (1, 3, 112, 112)
    with pytest.raises(UnknownWordError):
        explain_caption(model, image, v, caption="a red tabbby", layer="features.18")
    assert_same(before, snapshot(model))
    res = explain_caption(model.eval(), image, v, methods=["gradcam"], layer="features.18",
                          beam=2)  # generated; eval mode is the caller's change, kept
    assert res.source == "beam search, width 2" and res.ids[-1] == v.end


def test_world_visual_words() -> None:
    assert world_visual(tokenize("a large red tiger cat on a small blue mug")) == [
        (3, ["tiger cat"]), (4, ["tiger cat"]), (9, ["mug"])]


def test_training_fine_tunes_only_the_last_conv_block(tmp_path: Any) -> None:
    """Two stages on 64 scenes: the frozen stage leaves the CNN as shipped (with
    ``--finetune-epochs 0`` nothing of it is saved); the fine-tune stage moves exactly
    ``features[TOP_BLOCK:]``'s convolutions, which ``load_captioner`` lays over the shipped net.
    pool5 is the block applied to pool4 (what training caches)."""
    from camlens.captioning import load_captioner
    from camlens.captioning.model import TOP_BLOCK, shipped_cnn
    from camlens.captioning.train import main

    cache = tmp_path / "cache.pt"
    common = ["--train", "64", "--val", "2", "--batch", "32", "--beam", "2", "--workers", "1",
              "--cache", str(cache)]
    assert main(["--out", str(tmp_path / "frozen"), "--epochs", "1", "--finetune-epochs", "0",
                 *common]) == 0
    assert main(["--out", str(tmp_path / "tuned"), "--epochs", "1", "--finetune-epochs", "1",
                 *common]) == 0
    shipped = shipped_cnn()
    frozen = torch.load(tmp_path / "frozen" / "captioner.pt", weights_only=True)
    tuned = torch.load(tmp_path / "tuned" / "captioner.pt", weights_only=True)
    assert not any(k.startswith("features.") for k in frozen)
    block = {f"features.{i}.{w}" for i in (13, 15, 17) for w in ("weight", "bias")}
    assert {k for k in tuned if k.startswith("features.")} == block
    model = load_captioner(tmp_path / "tuned")
    for name, value in model.features.state_dict().items():
        moved = (value - shipped[name]).abs().max().item()
        if int(name.split(".")[0]) >= TOP_BLOCK:
            assert moved > 0, name
            torch.testing.assert_close(value, tuned[f"features.{name}"], rtol=0, atol=0)
        else:
            assert moved == 0, name
    assert load_captioner(tmp_path / "frozen").features[13].weight.equal(shipped["13.weight"])
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(model.pool5(x), model.features[TOP_BLOCK:](model.pool4(x)),
                                   rtol=0, atol=0)
