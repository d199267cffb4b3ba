"""A short run of the load test (benchmarks/web_load.py): ``camlens serve`` started as a user
starts it (its own process, on a free loopback port), 4 clients for a few seconds mixing page
views and explanations; no error, no 500, no traceback in the server's log, and every map it
returned equal to the library's. The 60 s, 16-client run is in docs/performance.md."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from module_support import load_file  # noqa: E402

pytest.importorskip("fastapi", reason="the web app needs camlens[web]")
pytest.importorskip("httpx", reason="the load test's clients use httpx")
pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "web_load.py"


def load_script() -> ModuleType:
    return load_file(SCRIPT, "web_load")


def test_short_load_run() -> None:
    web_load = load_script()
    report = web_load.run("synthetic:resnet", clients=4, seconds=4.0, workers=2, queue=1,
                          share=0.5)
    assert report["errors"] == 0, report["error_samples"]
    assert set(report["statuses"]) <= {200, 429}
    assert report["explanations_checked"] >= 1
    assert report["maps_checked"] >= 2 * report["explanations_checked"]
    assert report["requests"] == sum(report["statuses"].values())
    assert report["peak_rss_mib"] is None or report["peak_rss_mib"] > 50
