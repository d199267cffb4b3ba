"""A Hugging Face captioner (VisionEncoderDecoderModel: ViT encoder + GPT-2 decoder, random
weights from configs, no download): output objects with ``.logits``, (image, tokens) inputs,
Grad-CAM on a ViT layer through the explicit ``reshape="tokens"``, checked against a literal
computation with plain autograd."""

from __future__ import annotations

import pytest
import torch

import camlens
from camlens import CaptionTarget, LayerError
from test_caption import slow_caption_scores
from test_contract import assert_same, snapshot
from text_models import DTYPE, HF_LAYER, hf_captioner

pytest.importorskip("transformers")

TOKENS = torch.tensor([[0, 5, 6, 7, 1], [0, 3, 9, 4, 1]])
WORDS = torch.tensor([[1, 3], [2, 3]])


pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see conftest.py


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return hf_captioner()


def image() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, dtype=DTYPE, generator=torch.Generator().manual_seed(3))


def test_scores_equal_a_literal_per_step_log_softmax(model: torch.nn.Module) -> None:
    x = image()
    with torch.no_grad():
        out = model(x, TOKENS)
    assert out.logits.shape == (2, 5, 20)
    ex = camlens.explain(model, (x, TOKENS), layer=HF_LAYER, reshape="tokens",
                         target=CaptionTarget(TOKENS, words=WORDS))
    want = slow_caption_scores(out.logits, TOKENS, WORDS.tolist(), ignore=None)
    torch.testing.assert_close(ex.scores, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ex.output, out.logits)


def test_gradcam_on_vit_tokens_equals_a_literal_computation(model: torch.nn.Module) -> None:
    """alpha_c = mean over the 4 x 4 patch tokens (the class token dropped) of d score / d
    token_c; map = ReLU(sum_c alpha_c A_c) on the patch grid."""
    x = image()
    target = CaptionTarget(TOKENS, words=WORDS)
    ex = camlens.explain(model, (x, TOKENS), layer=HF_LAYER, reshape="tokens", target=target)
    acts: list[torch.Tensor] = []
    layer = dict(model.named_modules())[HF_LAYER]
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        scores = target(model(x, TOKENS))
    finally:
        handle.remove()
    tokens = acts[0]  # (2, 17, 16): class token + 16 patches
    for k in range(3):
        (grad,) = torch.autograd.grad(scores[:, k].sum(), tokens, retain_graph=True)
        alpha = grad[:, 1:].mean(1)  # (2, C)
        grid = tokens[:, 1:].detach().reshape(2, 4, 4, 16)
        cam = torch.relu((grid * alpha[:, None, None, :]).sum(-1))
        torch.testing.assert_close(ex.weights[:, k], alpha, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(ex.raw[:, k], cam, rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore:guided-gradcam. no rectifier")  # GELU only: plain gradient
def test_words_in_one_call_equal_separate_calls(model: torch.nn.Module) -> None:
    x = image()
    kw = {"layer": HF_LAYER, "reshape": "tokens"}
    together = camlens.explain(model, (x, TOKENS), target=CaptionTarget(TOKENS, words=WORDS),
                               method=["gradcam", "guided-gradcam"], **kw)
    for j in range(2):
        alone = camlens.explain(model, (x, TOKENS), method=["gradcam", "guided-gradcam"],
                                target=CaptionTarget(TOKENS, words=WORDS[:, j:j + 1],
                                                     whole=False), **kw)
        for name, ex in alone.items():
            torch.testing.assert_close(together[name].raw[:, 1 + j:2 + j], ex.raw, rtol=1e-9,
                                       atol=1e-12)


def test_vit_tokens_without_reshape_say_how(model: torch.nn.Module) -> None:
    with pytest.raises(LayerError, match="reshape='tokens'"):
        camlens.explain(model, (image(), TOKENS), layer=HF_LAYER, target=CaptionTarget(TOKENS))


def test_model_and_inputs_untouched(model: torch.nn.Module) -> None:
    x, tokens = image(), TOKENS.clone()
    before, xb, tb = snapshot(model), x.clone(), tokens.clone()
    versions = (x._version, tokens._version)
    for method in ("gradcam", "gradient", "occlusion"):
        kw = ({"window": 8, "stride": 8} if method == "occlusion" else
              {"layer": HF_LAYER, "reshape": "tokens"} if method == "gradcam" else {})
        camlens.explain(model, (x, tokens), method=method,
                        target=CaptionTarget(tokens, words=[1, 2]), **kw)
    assert_same(before, snapshot(model))
    assert torch.equal(x, xb) and torch.equal(tokens, tb)
    assert (x._version, tokens._version) == versions
