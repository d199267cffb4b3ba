"""The benchmark's verdict lines (benchmarks/run.py): each bar is printed only for what was
measured, and its PASS/MISS follows the ratios."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parents[1] / "benchmarks"


def _run_module() -> ModuleType:
    sys.path.insert(0, str(HERE))  # run.py imports its sibling peers.py
    try:
        spec = importlib.util.spec_from_file_location("camlens_bench_run", HERE / "run.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(HERE))


def _result(batch: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"timing": [{"model": "resnet50", "configs": [{"batch": batch, "rows": rows}]}]}


def test_issue3_bar_only_when_one_of_its_rows_was_measured() -> None:
    run = _run_module()
    score = _result(16, [
        {"job": "camlens:scorecam", "ratio": 1948.7, "paired_ratio": 1755.2,
         "median_ms": 2_010_150.0},
        {"job": "torchcam:scorecam", "ratio": 1992.6, "paired_ratio": 2239.45,
         "median_ms": 2_055_497.0}])
    assert run.verdicts(score) == ""
    assert run.speedups(score).splitlines()[-1] == (
        "- resnet50, batch 16, scorecam: torchcam 2239.45x forward / camlens 1755.20x = 1.28x "
        "(medians: 2055497 ms / 2010150 ms = 1.02x) -> MISS")

    grad = _result(16, [{"job": "camlens:gradcam", "ratio": 1.04, "paired_ratio": 1.01,
                         "median_ms": 1000.0},
                        {"job": "camlens:guided", "ratio": 2.2, "paired_ratio": 2.3,
                         "median_ms": 2200.0}])
    lines = run.verdicts(grad).splitlines()
    assert lines[1] == "Bar (issue 3), ResNet-50, CPU:"
    assert lines[3:] == ["- one Grad-CAM map <= 1.05x forward: 1.04x (paired 1.01x) -> PASS",
                         "- Guided Grad-CAM <= 2.0x forward: 2.20x (paired 2.30x) -> MISS "
                         "(by 10.0%)"]
