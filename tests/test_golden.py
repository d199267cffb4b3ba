"""Golden outputs: `camlens explain sample:chelsea sample:coffee --top-k 1` reproduces the maps
and the Figure 1 summary stored in tests/golden/ (see tests/golden/make_golden.py for what is
stored and when to regenerate it)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from camlens.cli import main
from module_support import load_file  # noqa: E402

HERE = Path(__file__).parent
MAP_ATOL = 2e-3  # float16 storage (here and, perhaps, in maps.npz) rounds by up to 2.4e-4
SUMMARY_MEAN_ABS = 1.0  # on 0..255


def _golden_module() -> ModuleType:
    return load_file(HERE / "golden" / "make_golden.py", "camlens_golden")


golden = _golden_module()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a loaded machine two OpenMP threads are many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def stored() -> dict[str, np.ndarray]:
    with np.load(golden.GOLDEN) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("golden")
    assert main(golden.COMMAND + ["--out", str(out), "--quiet"]) == 0
    return golden.reduce_outputs(out)


def test_golden_file_is_small() -> None:
    assert golden.GOLDEN.stat().st_size < 1_000_000


@pytest.mark.parametrize("stem", golden.STEMS)
def test_maps_reproduce_the_golden_ones(stem: str, stored: dict[str, np.ndarray],
                                        fresh: dict[str, np.ndarray]) -> None:
    prefix = f"{stem}/"
    keys = {k for k in stored if k.startswith(prefix) and "/summary/" not in k}
    # same methods and the same top-1 class
    assert {k for k in fresh if k.startswith(prefix) and "/summary/" not in k} == keys
    assert len(keys) == 2 * 4  # four default methods, sampled and block means
    for key in sorted(keys):
        want = stored[key].astype(np.float32)
        got = fresh[key].astype(np.float32)
        assert got.shape == want.shape, key
        np.testing.assert_allclose(got, want, rtol=0, atol=MAP_ATOL, err_msg=key)


@pytest.mark.parametrize("stem", golden.STEMS)
def test_summary_reproduces_the_golden_one(stem: str, stored: dict[str, np.ndarray],
                                           fresh: dict[str, np.ndarray]) -> None:
    assert fresh[f"{stem}/summary/size"].tolist() == stored[f"{stem}/summary/size"].tolist()
    got = fresh[f"{stem}/summary/mean4"].astype(np.float64)
    want = stored[f"{stem}/summary/mean4"].astype(np.float64)
    assert got.shape == want.shape
    assert float(np.abs(got - want).mean()) < SUMMARY_MEAN_ABS
