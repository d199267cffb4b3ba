"""The Grad-CAM family and perturbation methods from the CLI: listed by ``camlens methods`` and
run by ``camlens explain --method ... --option KEY=VALUE``, saving the library's maps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import camlens
from camlens.cli import main
from test_cli_plan import calls, net, photos  # noqa: F401 - fixtures

CASES: list[tuple[str, dict[str, Any]]] = [
    ("gradcampp", {}),
    ("xgradcam", {}),
    ("hirescam", {"relu": False}),
    ("layercam", {}),
    ("eigencam", {"center": True}),
    ("eigengradcam", {"center": False}),
    ("scorecam", {"batch_size": 3, "baseline": "none", "channel_softmax": True}),
    ("ablationcam", {"batch_size": 2, "relative": False}),
]


def _spelled(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_methods_lists_the_new_methods(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, _ in CASES:
        assert f"\n{name} " in "\n" + out
    assert "--option baseline: zeros | none (default zeros)" in out
    assert "--option batch_size: an integer (default 64)" in out  # ablationcam's


@pytest.mark.parametrize("method,options", CASES, ids=[m for m, _ in CASES])
def test_explain_runs_the_method_with_its_options(method: str, options: dict[str, Any],
                                                  tmp_path: Path, net: Path,  # noqa: F811
                                                  calls: list[tuple[int, ...]],  # noqa: F811
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from camlens import io as cio
    from camlens.models import load_model
    from camlens.output import resized

    inputs = photos(tmp_path / "in", [(20, 20)])
    out = tmp_path / "out"
    flags = [a for k, v in options.items() for a in ("--option", f"{k}={_spelled(v)}")]
    code = main(["explain", str(inputs), "--model", f"{net}:build", "--layer", "features.3",
                 "--input-size", "16", "--target", "2", "--method", method, *flags,
                 "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "0" / "explanation.json").read_text())
    assert record["methods"] == [method]
    for key, value in options.items():
        assert record["options"][method][key] == value
    loaded = load_model(f"{net}:build", input_size=16)
    x = loaded.preprocess(cio.load_image(inputs / "0.png"))[None]
    want = camlens.explain(loaded.model, x, method=method, layer="features.3", target=2,
                           **options).maps[0, 0]
    with np.load(out / "0" / "maps.npz") as npz:
        got = npz[f"{method}/2"].astype(np.float32)
    assert float(np.abs(resized(want, (20, 20))).max()) > 0.5
    np.testing.assert_allclose(got, resized(want, (20, 20)), atol=1e-3)


@pytest.mark.parametrize("option,message", [
    ("baseline=blur", "--option baseline=blur: option baseline='blur': choose one of "
                      "['zeros', 'none']"),
    ("batch_size=0", "scorecam batch_size (copies per forward pass) must be a positive int, "
                     "got 0"),
    ("softmax=often", "--option softmax=often: option softmax='often': expected true/false"),
])
def test_bad_option_is_one_line_exit_2(option: str, message: str, tmp_path: Path,
                                       net: Path,  # noqa: F811
                                       calls: list[tuple[int, ...]],  # noqa: F811
                                       capsys: pytest.CaptureFixture[str]) -> None:
    inputs = photos(tmp_path / "in", [(20, 20)])
    code = main(["explain", str(inputs), "--model", f"{net}:build", "--layer", "features.3",
                 "--input-size", "16", "--method", "scorecam", "--option", option,
                 "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
