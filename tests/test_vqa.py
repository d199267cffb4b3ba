"""VQA targets (Sec. 8.2, Fig. 12): a chosen answer's score, answer-versus-answer contrasts and
counterfactual maps, by hand on a fixed-weight net and by identities on a tiny LSTM VQA net."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import camlens
from camlens import AnswerTarget, TargetError
from text_models import DTYPE, TinyVQA, build

ANSWERS = ["red", "yellow", "yellow and red", "blue", "two", "yes"]


pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see conftest.py


class GatedAnswers(nn.Module):
    """y^a = sum_c GAP(A)_c g_c W[a, c] with g = question @ G: dy^a/dA^c_ij = g_c W[a, c] / Z
    at every one of the Z positions, so alpha^a_c (Eq. 1, their mean) = g_c W[a, c] / Z."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = nn.Linear(5, 4, bias=False)
        self.answer = nn.Linear(4, 6, bias=False)

    def forward(self, image: torch.Tensor, question: torch.Tensor) -> dict[str, torch.Tensor]:
        a = self.conv(image)
        return {"logits": self.answer(a.mean((2, 3)) * self.gate(question))}


def test_answer_weights_by_hand_with_versus_and_counterfactual() -> None:
    model = build(GatedAnswers)
    image = torch.rand(1, 3, 6, 6, dtype=DTYPE)
    question = torch.rand(1, 5, dtype=DTYPE)
    g = model.gate(question).detach()[0]
    w = model.answer.weight.detach()
    target = AnswerTarget.named(["red", "yellow", "RED"], ANSWERS)
    ex = camlens.explain(model, (image, question), layer="conv", target=target)
    torch.testing.assert_close(ex.weights[0], g * w[[0, 1, 0]] / 36, rtol=1e-10, atol=0)
    vs = camlens.explain(model, (image, question), layer="conv",
                         target=AnswerTarget([0, 2], versus=[1, 1]))
    torch.testing.assert_close(vs.weights[0], g * (w[[0, 2]] - w[[1, 1]]) / 36, rtol=1e-10,
                               atol=1e-14)
    logits = model(image, question)["logits"].detach()
    torch.testing.assert_close(vs.scores[0], logits[0, [0, 2]] - logits[0, 1])
    cf = camlens.explain(model, (image, question), layer="conv", target=AnswerTarget([0]),
                         counterfactual=True)
    torch.testing.assert_close(cf.weights[0], -g * w[[0]] / 36, rtol=1e-10, atol=0)


@pytest.mark.parametrize("out", ["tensor", "object", "dict"])
def test_fig12_three_answers_in_one_call(out: str) -> None:
    """"red", "yellow", "yellow and red": one call equals three calls and the class-index form;
    the contrast of two answers is the difference of their Grad-CAM weights (Eq. 1 is linear)."""
    model = build(TinyVQA, out=out)
    image = torch.rand(2, 3, 16, 16, dtype=DTYPE)
    question = torch.tensor([[1, 4, 2, 7], [3, 3, 5, 0]])
    three = AnswerTarget.named(["red", "yellow", "yellow and red"], ANSWERS)
    together = camlens.explain(model, (image, question), layer=model.LAYER, target=three)
    by_index = camlens.explain(model, (image, question), layer=model.LAYER,
                              target=torch.tensor([[0, 1, 2]]))
    torch.testing.assert_close(together.raw, by_index.raw, rtol=1e-12, atol=0)
    torch.testing.assert_close(together.scores, by_index.scores, rtol=0, atol=0)
    for j in range(3):
        alone = camlens.explain(model, (image, question), layer=model.LAYER,
                                target=AnswerTarget(j))
        torch.testing.assert_close(together.raw[:, j:j + 1], alone.raw, rtol=1e-9, atol=1e-12)
    vs = camlens.explain(model, (image, question), layer=model.LAYER,
                         target=AnswerTarget([0, 2], versus=[1, 0]))
    torch.testing.assert_close(vs.weights, together.weights[:, [0, 2]]
                               - together.weights[:, [1, 0]], rtol=1e-9, atol=1e-12)
    lp = AnswerTarget([0, 2], score="logprob")(model(image, question))
    logits = by_index.output
    torch.testing.assert_close(lp.detach(), logits.log_softmax(1)[:, [0, 2]])


def test_per_sample_answers_and_occlusion() -> None:
    model = build(TinyVQA)
    image = torch.rand(2, 3, 16, 16, dtype=DTYPE)
    question = torch.tensor([[1, 4, 2, 7], [3, 3, 5, 0]])
    target = AnswerTarget(torch.tensor([[0, 5], [2, 4]]))
    both = camlens.explain(model, (image, question), method="occlusion", target=target,
                           window=8, stride=4)
    for s in range(2):
        one = camlens.explain(model, (image[s:s + 1], question[s:s + 1]), method="occlusion",
                              target=target.answers[s].tolist(), window=8, stride=4)
        torch.testing.assert_close(both.raw[s:s + 1], one.raw, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make,match", [
    (lambda: AnswerTarget.named(["yelow"], ANSWERS), "nearest names: 'yellow'"),
    (lambda: AnswerTarget([0, 1], versus=[2]), "one answer per explained answer"),
    (lambda: AnswerTarget(1.0), "answer indices"),
    (lambda: AnswerTarget([]), "K ints"),
    (lambda: AnswerTarget(0, score="prob"), "score"),
])
def test_errors_at_construction(make: Any, match: str) -> None:
    with pytest.raises(TargetError, match=match):
        make()


@pytest.mark.parametrize("target,logits,match", [
    (AnswerTarget(9), torch.zeros(1, 6), "answer index 9 is out of range"),
    (AnswerTarget(1), torch.zeros(1, 2, 6), r"\(batch, answers\)"),
    (AnswerTarget(torch.tensor([[0], [1], [2]])), torch.zeros(2, 6), "3 rows of answers"),
])
def test_errors_at_call_time(target: AnswerTarget, logits: torch.Tensor, match: str) -> None:
    with pytest.raises(TargetError, match=match):
        target(logits)


def test_the_target_keeps_its_own_copy_of_the_answers() -> None:
    answers, versus = torch.tensor([0, 2]), torch.tensor([1, 1])
    target = AnswerTarget(answers, versus=versus)
    scores = torch.arange(12.0).reshape(2, 6)
    before = target(scores).clone()
    answers[0], versus[1] = 5, 4  # the caller reuses its buffers
    torch.testing.assert_close(target(scores), before)
    torch.testing.assert_close(before, torch.tensor([[-1.0, 1.0], [-1.0, 1.0]]))
