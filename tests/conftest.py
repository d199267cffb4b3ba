"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread for a module of toy-model tests, restored after it: on a
    busy 2-core machine the thread hand-offs make tiny convolutions up to ~100x slower. Modules
    opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def live_server() -> Iterator[Callable[..., str]]:
    """A factory ``live_server(db: Path | None = None, **create_app_kwargs) -> base_url``: the
    web app (camlens.web.create_app, the test model tests/web_support.MODEL unless ``model=``
    is given) served by uvicorn on a free loopback port in a thread, stopped after the test.
    Skips when the web extra is not installed."""
    pytest.importorskip("fastapi", reason="the web app needs camlens[web]")
    pytest.importorskip("uvicorn", reason="the web app needs camlens[web]")
    from camlens.web import create_app
    from web_support import serve, web_model

    with ExitStack() as stack:
        def start(db: Path | None = None, **kwargs: Any) -> str:
            kwargs.setdefault("model", web_model())
            return stack.enter_context(serve(create_app(db=db, **kwargs)))

        yield start


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from its system path (Debian's ``chromium``; ``.ci/run`` installs
    it), driven by Playwright; skips when either is missing."""
    pytest.importorskip("playwright", reason="browser tests need playwright (camlens[browser])")
    from web_support import chromium, chromium_path

    if chromium_path() is None:
        pytest.skip("browser tests need chromium on PATH (apt-get install -y chromium)")
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where browser tests save their screenshots: $CAMLENS_SCREENSHOTS, else a temp folder."""
    folder = os.environ.get("CAMLENS_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
