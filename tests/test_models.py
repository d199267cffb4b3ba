"""The bundled EfficientNet-Lite0: weights, TF-same padding, real predictions, labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from camlens.models import (
    BUNDLED,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelRecord,
    efficientnet_lite0,
    efficientnet_lite0_weights_path,
    imagenet_labels,
    load_model,
    preprocess_image,
)
from camlens.models.efficientnet_lite import Conv2dSame, EfficientNetLite0, tf_same_padding

skimage_data = pytest.importorskip("skimage.data")

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def bundle() -> ModelRecord:
    return load_model()


def _top(bundle: ModelRecord, img: Image.Image) -> tuple[int, float]:
    x = bundle.preprocess(img).unsqueeze(0)
    with torch.no_grad():
        probs = bundle.model(x).softmax(dim=1)[0]
    p, idx = probs.max(dim=0)
    return int(idx), float(p)


def test_weights_load_strictly_and_completely() -> None:
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys == []
    assert set(model.state_dict()) == set(state)
    for key, value in model.state_dict().items():
        assert value.shape == state[key].shape, key


def test_pretrained_model_is_in_eval_mode_with_tf_batchnorm_eps() -> None:
    model = efficientnet_lite0(pretrained=True)
    assert not model.training
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 2 + 16 * 3 - 1  # stem, head, 3 per block but block 0 has no expansion
    assert all(m.eps == 1e-3 for m in bns)
    untrained = efficientnet_lite0(pretrained=False)
    assert not torch.equal(untrained._fc.weight, model._fc.weight)


def test_chelsea_is_a_cat(bundle: ModelRecord) -> None:
    idx, p = _top(bundle, Image.fromarray(skimage_data.chelsea()))
    print(f"chelsea: top-1 {idx} {bundle.labels[idx]!r} p={p:.3f}")
    assert idx in CAT_CLASSES
    assert p > 0.3


def test_coffee_is_espresso(bundle: ModelRecord) -> None:
    idx, p = _top(bundle, Image.fromarray(skimage_data.coffee()))
    print(f"coffee: top-1 {idx} {bundle.labels[idx]!r} p={p:.3f}")
    assert idx == ESPRESSO
    assert p > 0.3


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (224, 3, 2, (0, 1)),  # out 112: needs 1 extra pixel, TF puts it after
        (225, 3, 2, (1, 1)),
        (7, 5, 2, (2, 2)),
        (8, 5, 2, (1, 2)),
        (112, 5, 1, (2, 2)),
        (9, 1, 1, (0, 0)),
        (1, 3, 2, (1, 1)),
    ],
)
def test_tf_same_padding_amounts(
    size: int, kernel: int, stride: int, expected: tuple[int, int]
) -> None:
    assert tf_same_padding(size, kernel, stride) == expected


@pytest.mark.parametrize(("height", "width"), [(15, 15), (16, 16), (15, 22), (1, 2), (33, 8)])
@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (5, 2), (3, 1), (5, 1)])
def test_conv2d_same_matches_explicit_pad(
    height: int, width: int, kernel: int, stride: int
) -> None:
    torch.manual_seed(0)
    conv = Conv2dSame(4, 6, kernel, stride=stride)
    x = torch.randn(2, 4, height, width)
    top, bottom = tf_same_padding(height, kernel, stride)
    left, right = tf_same_padding(width, kernel, stride)
    expected = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, stride=stride)
    out = conv(x)
    assert out.shape[-2:] == (-(-height // stride), -(-width // stride))  # ceil, as in TF "same"
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_conv2d_same_depthwise_stride2_differs_from_symmetric_padding() -> None:
    # An even input with stride 2 is padded (0, 1) by TF, not (1, 1) as PyTorch's padding=1 does.
    torch.manual_seed(0)
    conv = Conv2dSame(3, 3, 3, stride=2, groups=3)
    x = torch.randn(1, 3, 8, 8)
    symmetric = F.conv2d(x, conv.weight, stride=2, padding=1, groups=3)
    tf_same = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2, groups=3)
    torch.testing.assert_close(conv(x), tf_same, rtol=0, atol=0)
    assert not torch.allclose(conv(x), symmetric)


@pytest.mark.parametrize(("height", "width"), [(224, 300), (225, 301), (97, 64)])
def test_non_square_and_odd_inputs(bundle: ModelRecord, height: int, width: int) -> None:
    x = torch.randn(1, 3, height, width)
    layer = bundle.model.get_submodule(bundle.default_layer)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            logits = bundle.model(x)
    finally:
        handle.remove()
    assert logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()
    assert seen[0].shape == (1, 1280, -(-height // 32), -(-width // 32))


def test_default_layer_is_the_rectified_map_that_is_pooled(bundle: ModelRecord) -> None:
    model = bundle.model
    layer = model.get_submodule(bundle.default_layer)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    x = bundle.preprocess(Image.fromarray(skimage_data.chelsea()).resize((224, 224))).unsqueeze(0)
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    fmap = seen[0]
    assert bundle.default_layer == "_relu_head"
    assert fmap.shape == (1, 1280, 7, 7)
    assert float(fmap.min()) >= 0.0 and float(fmap.max()) <= 6.0
    # global average pooling of this map followed by the classifier gives the logits
    torch.testing.assert_close(model._fc(fmap.mean(dim=(2, 3))), logits, rtol=1e-5, atol=1e-5)


def test_preprocess_image_resizes_shorter_side_and_normalises() -> None:
    white = Image.new("RGB", (300, 150), (255, 255, 255))
    x = preprocess_image(white, 224, IMAGENET_MEAN, IMAGENET_STD)
    assert x.dtype == torch.float32
    assert x.shape == (3, 224, 448)
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(x.amax(dim=(1, 2)), torch.tensor(expected), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.amin(dim=(1, 2)), torch.tensor(expected), rtol=1e-6, atol=1e-6)

    gray = Image.fromarray(np.full((50, 80), 128, dtype=np.uint8), mode="L")
    y = preprocess_image(gray, 100)
    assert y.shape == (3, 100, 160)
    torch.testing.assert_close(
        y[:, 0, 0], torch.tensor([(128 / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    )


def test_bundle_preprocess_uses_input_size() -> None:
    bundle = load_model("efficientnet_lite0", input_size=160)
    x = bundle.preprocess(Image.new("RGB", (200, 400)))
    assert x.shape == (3, 320, 160)
    assert bundle.mean == IMAGENET_MEAN and bundle.std == IMAGENET_STD
    assert bundle.name == "efficientnet_lite0"


def test_labels() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert len(set(labels)) == 1000
    assert labels[0] == "tench"
    assert labels[281] == "tabby"
    assert labels[285] == "Egyptian cat"
    assert labels[967] == "espresso"
    assert labels[999] == "toilet tissue"
    labels.append("mutating the copy must not matter")
    assert len(imagenet_labels()) == 1000


def test_the_bundled_model_is_the_default() -> None:
    assert next(iter(BUNDLED)) == "efficientnet_lite0"
