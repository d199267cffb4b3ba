"""The shipped world v2 nets: they load as shipped and their recorded held-out errors hold."""

from __future__ import annotations

import pytest
import torch

from camlens.synthetic.v2 import HELDOUT_SEED, NETS, load_pretrained, recorded_accuracy
from camlens.synthetic.v2.train import batch, evaluate

N = 300  # the first held-out scenes: the recorded error on 2000 must hold within noise


@pytest.fixture(scope="module")
def heldout() -> tuple[torch.Tensor, torch.Tensor]:
    return batch(HELDOUT_SEED, 0, N)


@pytest.mark.parametrize("name", sorted(NETS))
def test_shipped_net_reproduces_its_recorded_error(
        name: str, heldout: tuple[torch.Tensor, torch.Tensor]) -> None:
    record = recorded_accuracy()
    assert record["heldout"]["seed"] == HELDOUT_SEED
    recorded = record["nets"][name]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = evaluate(load_pretrained(name), *heldout)
    finally:
        torch.set_num_threads(before)
    # 4 binomial standard deviations of an error rate measured on N scenes
    for key in ("top1_error", "top5_error"):
        p = recorded[key]
        tol = 4 * (max(p * (1 - p), 0.01) / N) ** 0.5
        assert abs(got[key] - p) <= tol, (name, key, got[key], p)


def test_shipped_vgg_is_imperfect_as_imagenet_nets_are():
    # issue 10's band for the VGG-like net (VGG-16 on ILSVRC: 30.38% / 10.89%), measured on all
    # 2000 held-out scenes; and no net is perfect on any group: errors come from the world
    record = recorded_accuracy()
    vgg = record["nets"]["vgg"]
    assert 0.15 <= vgg["top1_error"] <= 0.40 and 0.03 <= vgg["top5_error"] <= 0.15
    for name, net in record["nets"].items():
        assert net["top5_error"] < net["top1_error"], name
        worst = min(net["per_class_accuracy"].values())
        assert worst < 0.9, name
        assert 0.3 <= net["errors_within_group"] <= 0.9, name
