"""Helpers for the web app's tests: the app served by uvicorn on a free loopback port in a
thread (:func:`serve`), a test model loaded once (:func:`web_model`), and Chromium driven by
Playwright from its system path (:func:`chromium`). The fixtures ``live_server`` and
``browser`` in conftest.py wrap them."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

MODEL = "synthetic:resnet"
"""The web tests' model: shipped with camlens (no download), 112-pixel input, fast on a CPU."""


@cache
def web_model() -> Any:
    """:data:`MODEL`, loaded once (a ModelRecord; camlens explains are safe to share)."""
    from camlens.models import load_model

    return load_model(MODEL)


@contextmanager
def serve(app: Any, timeout: float = 60.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 at a free port, in a thread; yield the base
    URL (``http://127.0.0.1:PORT``) once the server answers; stop it afterwards."""
    import uvicorn

    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def chromium_path() -> str | None:
    """Debian's chromium (``apt-get install chromium``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium from its system path, driven by Playwright (nothing downloaded)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("no chromium on PATH: apt-get install -y chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()
