"""Caption targets (Sec. 8.1): hand-derived values on a fixed-weight captioner, a literal
re-implementation (per-step log-softmax gathered by hand), K words of one call equal to K
separate calls for every method that takes a callable target, and the errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import camlens
from camlens import CaptionTarget, TargetError, word_positions
from text_models import DTYPE, LSTMCaptioner, TableCaptioner, build

LN2, LN3 = math.log(2), math.log(3)
# row r: the logits after token r; softmax rows: [1/6, 1/3, 1/2], [1/2, 1/6, 1/3], [1/3, 1/2, 1/6]
TABLE = torch.tensor([[0, LN2, LN3], [LN3, 0, LN2], [LN2, LN3, 0]], dtype=DTYPE)
PROBS = torch.tensor([[1 / 6, 1 / 3, 1 / 2], [1 / 2, 1 / 6, 1 / 3], [1 / 3, 1 / 2, 1 / 6]],
                     dtype=DTYPE)
TOKENS = torch.tensor([0, 2, 1, 2])  # positions 1..3 scored by steps 0..2 (shift 1)


pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see conftest.py


def table_model(out: str = "tensor") -> TableCaptioner:
    model = build(TableCaptioner, table=TABLE, out=out)
    with torch.no_grad():
        model.conv.bias.zero_()  # a zero image gives A = 0: the logits are the table's rows
    return model


def test_caption_and_word_log_probabilities_by_hand() -> None:
    logits = TABLE[TOKENS][None]  # what the model returns on a zero image
    # position 1: token 2 after token 0 -> 1/2; 2: token 1 after 2 -> 1/2; 3: token 2 after 1 -> 1/3
    got = CaptionTarget(TOKENS, words=[1, 3])(logits)
    want = torch.tensor([[-math.log(12), math.log(1 / 2), math.log(1 / 3)]], dtype=DTYPE)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    logit = CaptionTarget(TOKENS, words=[1, 2, 3], whole=False, score="logit")(logits)
    torch.testing.assert_close(logit, torch.tensor([[LN3, LN3, LN2]], dtype=DTYPE))
    aligned = CaptionTarget(TOKENS[1:], words=[0], shift=0)(logits[:, :3])  # labels given apart
    torch.testing.assert_close(aligned, want[:, :2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("out", ["tensor", "object", "dict"])
def test_gradcam_weights_of_words_by_hand(out: str) -> None:
    """logits_t = table[tok_t] + GAP(A) U, so d log p_t(w) / dA^c_ij = (U[c, w] - sum_v p_v
    U[c, v]) / Z and alpha_c (Eq. 1, the mean of that over the Z positions) is the same value;
    the whole caption's alpha is the sum over its steps."""
    model = table_model(out)
    image = torch.zeros(1, 3, 5, 5, dtype=DTYPE)
    ex = camlens.explain(model, (image, TOKENS[None]), layer="conv",
                         target=CaptionTarget(TOKENS, words=[1, 2, 3]))
    u = model.u.detach()
    z = 25
    steps = [(0, 2), (2, 1), (1, 2)]  # (previous token = table row, word) at positions 1, 2, 3
    words = torch.stack([(u[:, w] - u @ PROBS[r]) / z for r, w in steps])  # (3, C)
    want = torch.cat([words.sum(0, keepdim=True), words])[None]
    torch.testing.assert_close(ex.weights, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ex.scores, torch.tensor(
        [[-math.log(12), math.log(1 / 2), math.log(1 / 2), math.log(1 / 3)]], dtype=DTYPE))


def slow_caption_scores(logits: torch.Tensor, tokens: torch.Tensor, words: list[list[int]],
                        ignore: int | None) -> torch.Tensor:
    """Literal: for each sample, sum over positions t >= 1 of log_softmax(logits[b, t-1])[w_t]
    (skipping ``ignore``), then each word's own term."""
    rows = []
    for b in range(tokens.shape[0]):
        terms = {}
        for t in range(1, tokens.shape[1]):
            w = int(tokens[b, t])
            if w == ignore:
                continue
            step = logits[b, t - 1]
            terms[t] = step[w] - torch.log(torch.exp(step).sum())
        row = [sum(terms.values())] + [terms[p] if p >= 0 else torch.zeros((), dtype=DTYPE)
                                       for p in words[b]]
        rows.append(torch.stack(row))
    return torch.stack(rows)


def test_scores_equal_a_literal_per_step_log_softmax() -> None:
    model = build(LSTMCaptioner)
    image = torch.rand(2, 3, 16, 16, dtype=DTYPE)
    tokens = torch.tensor([[0, 3, 4, 5, 1], [0, 6, 7, 1, 2]])  # 2 pads the second caption
    words = [[1, 3], [2, -1]]
    with torch.no_grad():
        logits = model(image, tokens)
        got = CaptionTarget(tokens, words=torch.tensor(words), ignore=2)(logits)
    torch.testing.assert_close(got, slow_caption_scores(logits, tokens, words, ignore=2),
                               rtol=1e-12, atol=1e-12)
    ex = camlens.explain(model, (image, tokens), layer=model.LAYER,
                         target=CaptionTarget(tokens, words=torch.tensor(words), ignore=2))
    torch.testing.assert_close(ex.scores, got, rtol=1e-12, atol=1e-12)
    assert float(ex.raw[1, 2].abs().max()) == 0.0  # the empty slot: score 0, map zero


CALLABLE_METHODS = sorted(n for n in camlens.METHODS
                          if n not in ("cam", "excitation-backprop", "cmwp"))


def _kw(method: str, layer: str) -> dict[str, Any]:
    if method == "occlusion":
        return {"window": 8, "stride": 4}
    return {"layer": layer} if camlens.METHODS[method].needs_layer else {}


@pytest.mark.parametrize("method", CALLABLE_METHODS)
def test_k_words_in_one_call_equal_k_separate_calls(method: str) -> None:
    model = build(LSTMCaptioner, out="object")
    image = torch.rand(2, 3, 16, 16, dtype=DTYPE)
    tokens = torch.tensor([[0, 3, 4, 5, 1], [0, 6, 7, 8, 1]])
    words = torch.tensor([[1, 3], [2, 1]])
    kw = _kw(method, model.LAYER)
    together = camlens.explain(model, (image, tokens), method=method,
                               target=CaptionTarget(tokens, words=words), **kw)
    alone = [camlens.explain(model, (image, tokens), method=method,
                             target=CaptionTarget(tokens), **kw)]
    alone += [camlens.explain(model, (image, tokens), method=method,
                              target=CaptionTarget(tokens, words=words[:, j:j + 1], whole=False),
                              **kw) for j in range(2)]
    for j, ex in enumerate(alone):
        torch.testing.assert_close(together.scores[:, j:j + 1], ex.scores, rtol=1e-12, atol=0)
        torch.testing.assert_close(together.raw[:, j:j + 1], ex.raw, rtol=1e-9, atol=1e-12)
        if ex.weights is not None:
            torch.testing.assert_close(together.weights[:, j:j + 1], ex.weights, rtol=1e-9,
                                       atol=1e-12)


def test_k_words_take_one_forward_pass() -> None:
    model = build(LSTMCaptioner)
    calls = []
    model.lstm.register_forward_hook(lambda *_: calls.append(1))
    tokens = torch.tensor([[0, 3, 4, 5, 6, 1]])
    camlens.explain(model, (torch.rand(1, 3, 16, 16, dtype=DTYPE), tokens), layer=model.LAYER,
                    target=CaptionTarget(tokens, words=[1, 2, 3, 4]))
    assert len(calls) == 1


def test_occlusion_scores_each_sample_with_its_own_caption() -> None:
    """Occlusion runs copies of one sample: the target must score them with that sample's
    caption. Equal to occluding each sample alone."""
    model = build(LSTMCaptioner)
    image = torch.rand(2, 3, 16, 16, dtype=DTYPE)
    tokens = torch.tensor([[0, 3, 4, 5, 1], [0, 6, 7, 8, 1]])
    target = CaptionTarget(tokens, words=[[1, 3], [2, 1]])
    both = camlens.explain(model, (image, tokens), method="occlusion", target=target,
                           window=8, stride=4)
    for s in range(2):
        one = camlens.explain(model, (image[s:s + 1], tokens[s:s + 1]), method="occlusion",
                              target=target.at(s), window=8, stride=4)
        torch.testing.assert_close(both.raw[s:s + 1], one.raw, rtol=1e-10, atol=1e-12)


def test_occlusion_refuses_a_callable_target_bound_to_the_batch() -> None:
    model = build(LSTMCaptioner)
    tokens = torch.tensor([[0, 3, 4, 1], [0, 5, 6, 1]])

    def first_step(output: torch.Tensor) -> torch.Tensor:  # (2,) whatever the batch: wrong
        return output[:2, 0, 3]

    with pytest.raises(TargetError, match=r"at\(sample\)"):
        camlens.explain(model, (torch.rand(2, 3, 16, 16, dtype=DTYPE), tokens),
                        method="occlusion", target=first_step, window=8, stride=8)

    def gathered(output: torch.Tensor) -> torch.Tensor:  # the caller's (2, T) tokens: fails
        onehot = torch.nn.functional.one_hot(tokens[:, 1:], output.shape[-1])
        return (output.log_softmax(-1)[:, :-1] * onehot).sum(-1)  # (9, ..) * (2, ..)

    with pytest.raises(TargetError, match=r"failed on them .*at\(sample\)"):
        camlens.explain(model, (torch.rand(2, 3, 16, 16, dtype=DTYPE), tokens),
                        method="occlusion", target=gathered, window=8, stride=4)


def test_word_positions_pad_with_minus_one() -> None:
    tokens = torch.tensor([[0, 3, 9, 4, 1], [0, 9, 9, 1, 2]])
    got = word_positions(tokens, [3, 4, 9], start=1)
    assert got.tolist() == [[1, 2, 3], [1, 2, -1]]
    assert word_positions([0, 3, 1], [7]).shape == (1, 0)


@pytest.mark.parametrize("make,logits,match", [
    (lambda: CaptionTarget([0, 1, 2]), torch.zeros(1, 5), "per-step scores"),
    (lambda: CaptionTarget([0, 1, 7]), torch.zeros(1, 3, 5), "outside the model's vocabulary"),
    (lambda: CaptionTarget([0, 1, 2], words=[0]), torch.zeros(1, 3, 5), "position 0 is not"),
    (lambda: CaptionTarget([[0, 1], [0, 2], [0, 3]]), torch.zeros(2, 2, 5), "3 captions for a"),
])
def test_errors_at_call_time(make: Any, logits: torch.Tensor, match: str) -> None:
    with pytest.raises(TargetError, match=match):
        make()(logits)


@pytest.mark.parametrize("kw,match", [
    ({"tokens": [0.5, 1.0]}, "integer ids"),
    ({"tokens": [0, 1], "words": [2]}, "outside the caption of 2 tokens"),
    ({"tokens": [0, 1], "words": [-2]}, "outside the caption"),
    ({"tokens": [0, 1, 2], "words": [1.5]}, "integers"),
    ({"tokens": [0, 1], "whole": False}, "nothing to explain"),
    ({"tokens": [0, 1], "shift": -1}, "shift"),
    ({"tokens": [0, 1], "score": "prob"}, "score"),
    ({"tokens": [0, 1, 9], "words": [2], "ignore": 9}, "padding id 9"),
    ({"tokens": [[0, 1]], "words": [[1], [1], [1]]}, r"\(1, K\)"),
])
def test_errors_at_construction(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(TargetError, match=match):
        CaptionTarget(**kw)


def test_the_target_keeps_its_own_copy_of_the_caption() -> None:
    tokens = TOKENS.clone()
    target = CaptionTarget(tokens, words=[1])
    tokens[1] = 0  # the caller reuses its buffer
    got = target(TABLE[TOKENS][None])
    torch.testing.assert_close(got[0, 1], torch.tensor(math.log(1 / 2), dtype=DTYPE))


def test_the_target_keeps_its_own_copy_of_the_word_positions() -> None:
    words = torch.tensor([1, 2])
    target = CaptionTarget(TOKENS, words=words)
    before = target(TABLE[TOKENS][None]).clone()
    words[0] = 3  # the caller reuses its buffer
    torch.testing.assert_close(target(TABLE[TOKENS][None]), before)
