"""World v2's nets: shapes, Grad-CAM layer sizes, CAM heads, weight budget; the training
entry point (a few steps) and its record."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import camlens
from camlens.synthetic.v2 import CONV_LAYERS, DEFAULT_LAYERS, HELDOUT_SEED, NETS, NUM_CLASSES
from camlens.synthetic.v2.nets import FOLDED, fold_batchnorm
from camlens.synthetic.v2.train import TRAIN_SEED_BASE, batch, main

#: spatial size of the default (Grad-CAM) layer at 112x112: VGG-16's conv5_3 is 14x14 at 224
GRADCAM_SIZE = {"vgg": 14, "vgg_gap": 14, "alexnet": 14, "resnet": 7}


def _sizes(model: nn.Module, names, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    mods = dict(model.named_modules())
    out: dict[str, tuple[int, ...]] = {}
    hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, tuple(o.shape)))
             for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return out


@pytest.mark.parametrize("name", list(NETS))
def test_output_and_gradcam_layer_sizes(name):
    torch.manual_seed(0)
    model = NETS[name]().eval()
    x = torch.rand(2, 3, 112, 112)
    assert model(x).shape == (2, NUM_CLASSES)
    sizes = _sizes(model, CONV_LAYERS[name] + (DEFAULT_LAYERS[name],), x)
    k = GRADCAM_SIZE[name]
    assert sizes[DEFAULT_LAYERS[name]][2:] == (k, k)
    spatial = [sizes[n][2] for n in CONV_LAYERS[name]]
    assert spatial == sorted(spatial, reverse=True) and spatial[-1] == k
    layer = dict(model.named_modules())[DEFAULT_LAYERS[name]]
    assert isinstance(layer, (nn.ReLU, nn.Sequential))  # rectified maps (ResNet: a stage)


@pytest.mark.parametrize("name", list(NETS))
def test_gradcam_runs_at_the_default_layer(name):
    torch.manual_seed(1)
    model = NETS[name]().eval()
    x = torch.rand(1, 3, 112, 112)
    e = camlens.explain(model, x, method="gradcam", layer=DEFAULT_LAYERS[name])
    k = GRADCAM_SIZE[name]
    assert e.raw.shape == (1, 1, k, k) and e.maps.shape == (1, 1, 112, 112)


@pytest.mark.parametrize("name", ["vgg_gap", "resnet"])
def test_gap_nets_are_cam_nets(name):
    """y = fc(GAP(A)) at the default layer, so CAM applies and equals Z x Grad-CAM."""
    torch.manual_seed(2)
    model = NETS[name]().eval()
    x = torch.rand(2, 3, 112, 112)
    acts: dict[str, torch.Tensor] = {}
    layer = dict(model.named_modules())[DEFAULT_LAYERS[name]]
    h = layer.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o.detach().clone()))
    with torch.no_grad():
        y = model(x)
    h.remove()
    assert torch.allclose(model.fc(acts["a"].mean(dim=(2, 3))), y, atol=1e-5)
    cam = camlens.explain(model, x[:1], method="cam", layer=DEFAULT_LAYERS[name])
    grad = camlens.explain(model, x[:1], method="gradcam", layer=DEFAULT_LAYERS[name])
    z = acts["a"].shape[2] * acts["a"].shape[3]
    assert torch.allclose(cam.raw, z * grad.raw, rtol=1e-4, atol=1e-5 * float(cam.raw.abs().max()))


@pytest.mark.parametrize("name", FOLDED)
def test_folding_batchnorm_keeps_the_eval_function(name):
    torch.manual_seed(3)
    trained = NETS[name](batch_norm=True)
    with torch.no_grad():  # non-trivial statistics and affine parameters
        trained.train()
        trained(torch.rand(8, 3, 112, 112))
        for m in trained.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    trained.eval()
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    plain = fold_batchnorm(trained)
    assert type(plain) is NETS[name] and not plain.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    x = torch.rand(3, 3, 112, 112)
    with torch.no_grad():
        ref, out = trained(x), plain(x)
    assert torch.allclose(out, ref, atol=1e-5 * float(ref.abs().max()))
    # the batch norms matter: dropping them instead of folding changes the outputs
    unfolded = NETS[name]().eval()
    convs = [m for m in trained.features if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for dst, src in zip([m for m in unfolded.features if isinstance(m, nn.Conv2d)], convs):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        rest = {k: v for k, v in trained.state_dict().items() if not k.startswith("features.")}
        unfolded.load_state_dict(rest, strict=False)
        assert not torch.allclose(unfolded(x), ref, atol=0.1 * float(ref.abs().max()))
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())


def test_fc_nets_are_not_cam_nets():
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in NETS["vgg"]().modules())
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in NETS["alexnet"]().modules())


def test_weights_fit_the_budget():
    total = sum(p.numel() for cls in NETS.values() for p in cls().parameters()) * 4
    assert total < 30e6  # bytes as float32 state dicts, all four nets


def test_batch_is_the_seeded_stream():
    from camlens.synthetic.v2 import make_dataset, to_tensors

    x0, y0 = to_tensors(make_dataset(3, seed=5, start=10))
    x, y = batch(5, 10, 3)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    x2, y2 = batch(5, 11, 2)
    assert x.shape == (3, 3, 112, 112) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x[1:], x2) and torch.equal(y[1:], y2)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_training_entry_point_records_the_run(tmp_path):
    rec = main(["--out", str(tmp_path), "--steps", "2", "--nets", "alexnet", "--batch", "4",
                "--eval-n", "12", "--threads", "1"])
    saved = json.loads((tmp_path / "accuracy.json").read_text())
    assert saved == json.loads(json.dumps(rec))
    assert saved["steps"] == 2 and saved["heldout"]["seed"] == HELDOUT_SEED
    assert saved["train_seed"] == TRAIN_SEED_BASE != HELDOUT_SEED
    load = saved["load_average"]  # the machine's load during the run (shared machines)
    assert 0.0 <= load["min"] <= load["mean"] <= load["max"] and saved["cpus"] >= 1
    assert saved["command"].startswith("python -m camlens.synthetic.v2.train --out ")
    net = saved["nets"]["alexnet"]
    conf = torch.tensor(net["confusion_matrix"])
    assert conf.shape == (NUM_CLASSES, NUM_CLASSES) and int(conf.sum()) == 12
    assert net["top1_error"] == pytest.approx(1 - float(conf.trace()) / 12, abs=1e-4)
    assert 0.0 <= net["top5_error"] <= net["top1_error"]
    state = torch.load(tmp_path / "alexnet.pt", weights_only=True)
    again = tmp_path / "again"
    main(["--out", str(again), "--steps", "2", "--nets", "alexnet", "--batch", "4",
          "--eval-n", "12", "--threads", "1"])
    state2 = torch.load(again / "alexnet.pt", weights_only=True)
    assert all(torch.equal(state[k], state2[k]) for k in state)  # deterministic


def test_training_can_start_from_trained_nets(tmp_path):
    args = ["--steps", "2", "--nets", "alexnet", "--batch", "4", "--eval-n", "12",
            "--threads", "1"]
    main(["--out", str(tmp_path / "a")] + args)
    first = torch.load(tmp_path / "a" / "alexnet.pt", weights_only=True)
    rec = main(["--out", str(tmp_path / "b"), "--init", str(tmp_path / "a"), "--lr", "1e-4"]
               + args)
    assert rec["init"]["steps"] == 2 and rec["init"]["folder"] == str(tmp_path / "a")
    then = torch.load(tmp_path / "b" / "alexnet.pt", weights_only=True)
    assert set(then) == set(first)  # saved as shipped: folded, no batch norm
    moved = [float((then[k] - first[k]).abs().max()) for k in first]
    assert 0.0 < max(moved) < 0.01  # two small steps from the first run's weights


def test_training_refuses_the_heldout_stream(tmp_path):
    with pytest.raises(ValueError, match="held-out"):
        main(["--out", str(tmp_path), "--steps", "1",
              "--seed", str(HELDOUT_SEED - TRAIN_SEED_BASE)])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path)])  # neither --steps nor --minutes
