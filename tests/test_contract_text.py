"""The model-untouched, no-input-write and thread-safety contracts on the vision-language paths:
(image, tokens) and (image, question) inputs, outputs with ``.logits`` and ``{"logits": ...}``,
caption and answer targets. Parametrised over ``camlens.METHODS``: a method that explains class
indices only must refuse a callable target with a TargetError, and leave everything as it was.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import pytest
import torch

import camlens
from camlens import AnswerTarget, CaptionTarget, ExplainError, TargetError
from test_contract import assert_same, snapshot
from test_no_input_write import assert_untouched
from test_no_input_write import snapshot as input_snapshot
from text_models import DTYPE, LSTMCaptioner, TinyVQA, build

CLASS_ONLY = {"cam", "excitation-backprop", "cmwp"}


pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see conftest.py

TOKENS = torch.tensor([[0, 3, 4, 5, 1], [0, 6, 7, 8, 1], [0, 2, 9, 1, 0]])
QUESTION = torch.tensor([[1, 4, 2, 7], [3, 3, 5, 0], [9, 8, 1, 1]])


def task(kind: str, batch: int, training: bool = False) -> tuple[Any, tuple[torch.Tensor, ...],
                                                                 Any]:
    """(model, caller's inputs, target): the captioner returns an object with .logits and is
    explained on a caption and two words; the VQA net returns a dict and is explained on two
    answers, contrasted."""
    image = torch.rand(batch, 3, 16, 16, dtype=DTYPE,
                       generator=torch.Generator().manual_seed(batch))
    if kind == "caption":
        model = build(LSTMCaptioner, out="object").train(training)
        return model, (image, TOKENS[:batch].clone()), CaptionTarget(TOKENS[:batch],
                                                                     words=[1, 2])
    model = build(TinyVQA, out="dict").train(training)
    return model, (image, QUESTION[:batch].clone()), AnswerTarget([0, 2], versus=[1, 1])


def kwargs(method: str, model: Any) -> dict[str, Any]:
    if method == "occlusion":
        return {"window": 8, "stride": 4, "batch_size": 5}
    return {"layer": model.LAYER} if camlens.METHODS[method].needs_layer else {}


def call(method: str, model: Any, inputs: tuple[torch.Tensor, ...], target: Any,
         **kw: Any) -> camlens.Explanation | None:
    """``explain``; None where the method explains class indices only (checked to refuse)."""
    if method in CLASS_ONLY and callable(target):
        with pytest.raises(TargetError, match="class indices only"):
            camlens.explain(model, inputs, method=method, target=target, **kwargs(method, model),
                            **kw)
        return None
    return camlens.explain(model, inputs, method=method, target=target, **kwargs(method, model),
                           **kw)


@pytest.mark.filterwarnings("ignore:.*training mode")
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("kind", ["caption", "vqa"])
@pytest.mark.parametrize("method", sorted(camlens.METHODS))
def test_model_and_inputs_untouched_on_success(method: str, kind: str, training: bool) -> None:
    model, inputs, target = task(kind, 2, training)
    before, given = snapshot(model), input_snapshot(inputs)
    ex = call(method, model, inputs, target)
    if ex is not None:
        assert ex.scores.shape == (2, 3 if kind == "caption" else 2)
        assert bool(ex.maps.isfinite().all()) and float(ex.maps.max()) <= 1.0
    assert_same(before, snapshot(model))
    assert_untouched(inputs, given)


@pytest.mark.filterwarnings("ignore:.*training mode")
@pytest.mark.parametrize("kind", ["caption", "vqa"])
@pytest.mark.parametrize("method", sorted(camlens.METHODS))
def test_class_indices_through_logits_objects_and_dicts(method: str, kind: str) -> None:
    """Class indices (top-2 next words at the first step would need a callable: the VQA net's
    answers) read ``.logits`` / ``["logits"]``; a method may refuse the model (an
    ExplainError), never leave a trace."""
    model, inputs, _ = task(kind, 2)
    before, given = snapshot(model), input_snapshot(inputs)
    if kind == "caption":  # (B, T, V) scores: class indices make no sense, and say so
        with pytest.raises(TargetError, match="callable"):
            camlens.explain(model, inputs, method=method, top_k=2, **kwargs(method, model))
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # excitation's caveats about negative inputs
                ex = camlens.explain(model, inputs, method=method, top_k=2,
                                     **kwargs(method, model))
            assert ex.targets is not None and ex.targets.shape == (2, 2)
        except ExplainError:
            pass
    assert_same(before, snapshot(model))
    assert_untouched(inputs, given)


@pytest.mark.filterwarnings("ignore:.*training mode")
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("failure", ["forward", "target"])
@pytest.mark.parametrize("method", sorted(camlens.METHODS))
def test_untouched_when_the_call_raises(method: str, failure: str, training: bool) -> None:
    """A token id outside the embedding fails inside the model; a word position with no step
    fails in the target, after the forward pass."""
    model, (image, tokens), _ = task("caption", 2, training)
    if failure == "forward":
        tokens[0, 2] = 99
        target, error = CaptionTarget(tokens), camlens.InputError
    else:
        target, error = CaptionTarget(tokens, words=[0]), TargetError
    before, given = snapshot(model), input_snapshot((image, tokens))
    with pytest.raises(error):
        camlens.explain(model, (image, tokens), method=method, target=target,
                        **kwargs(method, model))
    assert_same(before, snapshot(model))
    assert_untouched((image, tokens), given)


@pytest.mark.parametrize("variant", ["channels-last", "requires-grad"])
@pytest.mark.parametrize("method", sorted(m for m in camlens.METHODS if m not in CLASS_ONLY))
def test_caller_tensors_untouched_in_every_layout(method: str, variant: str) -> None:
    model, (image, tokens), target = task("caption", 3)
    if variant == "channels-last":
        image = image.contiguous(memory_format=torch.channels_last)
    else:
        image.requires_grad_(True)
        image.grad = torch.ones_like(image)
    given = input_snapshot((image, tokens))
    call(method, model, (image, tokens), target,
         channels_last=variant == "channels-last")
    assert_untouched((image, tokens), given)


THREADS, CALLS = 4, 6


def test_threads_share_one_captioner_and_one_vqa_net() -> None:
    """THREADS threads explain two shared models with a mix of methods and targets: every map
    equals the sequential one, the models are left as they were."""
    cap, cap_in, cap_target = task("caption", 2)
    vqa, vqa_in, vqa_target = task("vqa", 2)
    kinds = [(cap, cap_in, cap_target, "gradcam"), (vqa, vqa_in, vqa_target, "guided-gradcam"),
             (cap, cap_in, cap_target, "occlusion"), (vqa, vqa_in, vqa_target, "gradcam"),
             (cap, cap_in, cap_target.at(1), "guided-backprop")]

    def run(t: int, c: int) -> camlens.Explanation:
        model, inputs, target, method = kinds[(t * CALLS + c) % len(kinds)]
        ex = call(method, model, inputs, target)
        assert ex is not None
        return ex

    expected = {(t, c): run(t, c) for t in range(THREADS) for c in range(CALLS)}
    before = (snapshot(cap), snapshot(vqa))
    got: dict[tuple[int, int], camlens.Explanation] = {}
    errors: list[str] = []
    barrier = threading.Barrier(THREADS)

    def worker(t: int) -> None:
        barrier.wait()
        for c in range(CALLS):
            try:
                got[t, c] = run(t, c)
            except Exception as err:  # noqa: BLE001 - collected and reported below
                errors.append(f"thread {t} call {c}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    for key, ref in expected.items():
        torch.testing.assert_close(got[key].raw, ref.raw, rtol=1e-9, atol=1e-12, msg=str(key))
        torch.testing.assert_close(got[key].scores, ref.scores, rtol=0, atol=0)
    assert_same(before[0], snapshot(cap))
    assert_same(before[1], snapshot(vqa))
