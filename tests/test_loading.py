"""camlens.loading: the model input's size cap and one clean line for a refused pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from camlens.loading import CliError, load_state_dict_file
from camlens.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    model_input_size,
    preprocess_capped,
    preprocess_image,
)


class Custom:
    """A class a state-dict file must not need."""


@pytest.mark.parametrize("size,expected", [
    ((451, 300), (337, 224)),     # an ordinary photo: the shorter side at 224, cap not reached
    ((100, 1), (896, 9)),         # a 1 x 100 strip: the longer side capped at 4 x 224
    ((1, 100_000), (1, 896)),     # at least one pixel each way
    ((1000, 1000), (224, 224)),
])
def test_model_input_size(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert model_input_size(size, 224, 4 * 224) == expected


def test_preprocess_capped_is_preprocess_image_below_the_cap() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 451, 3), dtype=np.uint8))
    want = preprocess_image(img, 224, IMAGENET_MEAN, IMAGENET_STD)
    got = preprocess_capped(img, 224, 896, IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    strip = Image.fromarray(rng.integers(0, 256, (1, 100, 3), dtype=np.uint8))
    assert preprocess_capped(strip, 224, 896, IMAGENET_MEAN, IMAGENET_STD).shape == (3, 9, 896)


@pytest.mark.parametrize("what", ["whole module", "custom class"])
def test_refused_pickle_is_one_clean_line(tmp_path: Path, what: str) -> None:
    weights = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(2, 3) if what == "whole module" else {"a": Custom()}, weights)
    with pytest.raises(CliError) as info:
        load_state_dict_file(weights)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message  # torch's text has ANSI bold codes
    assert "arbitrary code" in message and "state dict" in message
    needed = "torch.nn.modules.linear.Linear" if what == "whole module" else "Custom"
    assert "it is a pickle that needs " in message and needed in message


def test_unreadable_weights_keep_the_gist(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CliError, match="cannot read it as a state dict") as info:
        load_state_dict_file(garbage)
    assert "\n" not in str(info.value)
