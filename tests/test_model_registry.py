"""The one model registry: every spec form gives one ModelRecord, new prefixes plug in."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

import camlens
from camlens.loading import CliError
from camlens.models import FACTORIES, ModelRecord, ModelSource, load_model, register_model

TINY = """
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))
"""


@pytest.mark.parametrize("name,layer,side", [("vgg", "features.18", 14),
                                             ("vgg_gap", "features.20", 14),
                                             ("alexnet", "features.11", 14),
                                             ("resnet", "layer4", 7)])
def test_synthetic_models_load_with_their_layer_labels_and_unit_range_input(
        name: str, layer: str, side: int) -> None:
    rec = load_model(f"synthetic:{name}")
    assert isinstance(rec, ModelRecord) and rec.name == f"synthetic:{name}"
    from camlens.synthetic import CLASSES, load_pretrained

    assert rec.default_layer == layer
    assert rec.labels == list(CLASSES) and len(CLASSES) == 33 and rec.labels_source == "bundled"
    assert rec.input_size == 112 and rec.task == "classification"
    img = Image.new("RGB", (112, 112), (255, 0, 51))
    x = rec.preprocess(img)
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))  # pixel / 255, as trained
    ref = load_pretrained(name)
    with torch.no_grad():
        torch.testing.assert_close(rec.model(x[None]), ref(x[None]))
    ex = camlens.explain(rec.model, x[None], layer=rec.default_layer)
    assert ex.raw.shape == (1, 1, side, side) and ex.maps.shape == (1, 1, 112, 112)


def test_unknown_synthetic_net_lists_the_shipped_ones() -> None:
    # world v1's nets are gone
    with pytest.raises(CliError, match="synthetic:vgg, synthetic:vgg_gap, synthetic:alexnet, "
                                       "synthetic:resnet"):
        load_model("synthetic:gapnet")


def test_file_specs_go_through_the_same_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    rec = load_model(f"{path}:build", input_size=16)
    assert rec.num_classes == 3 and rec.labels == ["0", "1", "2"]
    assert rec.labels_source == "indices" and rec.default_layer is None
    assert rec.preprocess(Image.new("RGB", (32, 16))).shape == (3, 16, 32)


def test_weights_override_and_torchvision_style_sources_need_weights(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    made = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    saved = tmp_path / "w.pt"
    torch.save(made.state_dict(), saved)

    def factory(name: str) -> ModelSource:
        torch.manual_seed(2)
        return ModelSource(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)),
                           labels=["no", "yes"], needs_weights=name == "strict")

    register_model("toy", factory)
    try:
        with pytest.raises(CliError, match="needs --weights FILE"):
            load_model("toy:strict", input_size=4)
        rec = load_model("toy:strict", weights=saved, input_size=4)
        torch.testing.assert_close(rec.model[1].weight, made[1].weight)
        assert rec.labels == ["no", "yes"] and rec.labels_source == "imagenet"
        loose = load_model("toy:loose", input_size=4)
        assert loose.labels_source == "bundled" and loose.num_classes == 2
    finally:
        FACTORIES.pop("toy")


def test_a_prefix_must_be_a_plain_name() -> None:
    with pytest.raises(ValueError, match="plain name"):
        register_model("a:b", lambda name: ModelSource(nn.Identity()))


def test_unknown_spec_names_the_forms() -> None:
    with pytest.raises(CliError, match=r"did you mean efficientnet_lite0\?.*synthetic:NAME"):
        load_model("efficientnet_lite")


def test_evaluation_runs_the_registrys_record_for_every_model_form() -> None:
    import camlens.evaluate as ev
    from camlens.evaluate import resolve_model, to_unit_tensor
    from camlens.synthetic import CLASSES, DEFAULT_LAYERS, NETS

    assert not hasattr(ev, "ResolvedModel")  # one record, the registry's
    img = Image.new("RGB", (80, 50), (255, 0, 51))
    spec = resolve_model("synthetic:vgg_gap")
    assert isinstance(spec, ModelRecord) and spec.name == "synthetic:vgg_gap"
    assert spec.preprocess is to_unit_tensor and spec.input_size is None  # pixels as they are
    assert tuple(spec.preprocess(img).shape) == (3, 50, 80)
    assert spec.labels == list(CLASSES) and spec.default_layer == DEFAULT_LAYERS["vgg_gap"]
    assert resolve_model(spec) is spec
    assert resolve_model(spec, default_layer="x").default_layer == "x"
    own = resolve_model(spec, preprocess=lambda im: torch.zeros(3, 2, 2))
    assert (own.input_size, own.mean, own.std) == (None, None, None) and own.labels == spec.labels

    net = NETS["vgg_gap"]().train()
    bare = resolve_model(net)
    assert isinstance(bare, ModelRecord) and bare.model is net and net.training
    assert bare.default_layer == DEFAULT_LAYERS["vgg_gap"] and bare.name == type(net).__name__
    assert bare.labels == [] and bare.labels_source == "none" and bare.num_classes is None
    assert bare.mean == (0.0, 0.0, 0.0) and bare.std == (1.0, 1.0, 1.0)
    assert torch.equal(bare.preprocess(img), to_unit_tensor(img))
    with pytest.raises(CliError, match="number of classes"):
        bare.classes()
    with pytest.raises(CliError, match="input size"):
        bare.side()

    class Bundle:
        model = nn.Linear(2, 2)
        labels = ("no", "yes")
        name = "mine"

    duck = resolve_model(Bundle())
    assert duck.labels == ["no", "yes"] and duck.num_classes == 2 and duck.name == "mine"
    assert duck.preprocess is to_unit_tensor and duck.default_layer is None
    with pytest.raises(TypeError, match="spec string"):
        resolve_model(3)
