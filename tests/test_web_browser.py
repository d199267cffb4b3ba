"""The web app in a real browser: Debian's Chromium driven by Playwright (launched from its
system path, nothing downloaded) against the app served by uvicorn on loopback. A photo is
uploaded and its maps appear with the textual explanation (Sec. 7; the test net has a shipped
dissection) equal to the library's; the opacity slider moves the overlay; a bad file shows its
message; nothing on a page is refused (no console errors: a CSP refusal is one); screenshots
at a laptop and a phone width are saved (CAMLENS_SCREENSHOTS=DIR keeps them, else a temporary
folder) and the pages must fit the phone's width."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from camlens import io as cio
from camlens.dissect import explain_text, shipped
from web_support import web_model

pytestmark = pytest.mark.usefixtures("one_thread")

TIMEOUT = 180_000
"""ms for each browser step: generous, for a loaded CI machine"""
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def upload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """chelsea as a JPEG file, as a user's photo would be."""
    path = tmp_path_factory.mktemp("photo") / "cat photo.jpg"
    cio.load_image(cio.sample_image("chelsea")).save(path, quality=90)
    return path


def new_page(browser: Any, **kwargs: Any) -> Any:
    """A page whose console errors are collected in ``page.errors`` (checked by :func:`fits`)."""
    page = browser.new_page(**kwargs)
    page.set_default_timeout(TIMEOUT)
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    return page


def images_loaded(page: Any) -> int:
    """How many <img> are on the page, after checking each one decoded (naturalWidth > 0)."""
    broken = page.evaluate("[...document.images].filter(i => !i.complete || "
                           "i.naturalWidth === 0).map(i => i.src)")
    assert broken == []
    return int(page.evaluate("document.images.length"))


def fits(page: Any, width: int) -> None:
    """No horizontal scrolling: the page is no wider than the window; and nothing refused."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.errors == []


def test_upload_and_see_the_maps(live_server: Callable[..., str], browser: Any, upload: Path,
                                 shots: Path) -> None:
    base = live_server()
    page = new_page(browser, viewport=LAPTOP)
    page.goto(base + "/")
    fits(page, LAPTOP["width"])
    page.screenshot(path=shots / "index-laptop.png", full_page=True)
    page.set_input_files("#file", upload)
    page.click("#explain")
    page.wait_for_url("**/results/*")
    assert page.inner_text("h1") == "cat photo.jpg"
    rows = page.locator(".predictions tbody tr")
    assert rows.count() == 5
    # Figure 1's methods: 2 heatmaps with sliders (Grad-CAM, counterfactual), 2 pixel-space maps
    sliders = page.locator("input[type=range]")
    assert sliders.count() == 2
    assert images_loaded(page) == 1 + 1 + 2 * 2 + 2  # photo, Figure 1, 2 stacks, 2 pixel maps
    heat = page.locator(".stack .heat").first
    assert heat.evaluate("e => getComputedStyle(e).opacity") == "0.5"
    sliders.first.fill("80")
    assert heat.evaluate("e => getComputedStyle(e).opacity") == "0.8"
    assert page.locator(".opacity output").first.inner_text() == "80%"
    # Sec. 7: the sentence of the explained (top-1) class, as camlens.dissect words it
    loaded = web_model()
    want = explain_text(loaded.model, loaded.preprocess(cio.load_image(upload))[None],
                        shipped("resnet"), labels=loaded.labels)[0].sentence
    top = rows.first.locator("td").nth(1).inner_text().rsplit(" (", 1)[0]
    assert want.startswith(f"predicted {top}: evidence for ")
    assert page.locator(".textual .sentence").all_inner_texts() == [want]
    assert page.locator("#text-note").count() == 0
    fits(page, LAPTOP["width"])
    page.screenshot(path=shots / "result-laptop.png", full_page=True)
    # the downloads work from the page
    with page.expect_download() as download:
        page.click("a[download][href$='/maps.npz']")
    assert download.value.suggested_filename == "maps.npz"
    result = page.url
    page.close()

    phone = new_page(browser, viewport=PHONE, is_mobile=True, has_touch=True,
                             device_scale_factor=2)
    phone.goto(result)
    images_loaded(phone)
    fits(phone, PHONE["width"])
    phone.screenshot(path=shots / "result-phone.png", full_page=True)
    phone.goto(base + "/")
    fits(phone, PHONE["width"])
    phone.screenshot(path=shots / "index-phone.png", full_page=True)
    phone.close()


def test_bad_file_shows_its_message(live_server: Callable[..., str], browser: Any,
                                    tmp_path: Path, shots: Path) -> None:
    base = live_server()
    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"this is not a photo")
    page = new_page(browser, viewport=PHONE, is_mobile=True)
    page.goto(base + "/")
    page.set_input_files("#file", bad)
    page.click("#explain")
    page.wait_for_selector("#error")
    assert "holiday.jpg: not an image camlens can read" in page.inner_text("#error")
    assert page.errors == ["Failed to load resource: the server responded with a status of 422 "
                           "(Unprocessable Entity)"]  # the page itself, as it should be
    page.errors.clear()
    fits(page, PHONE["width"])
    page.screenshot(path=shots / "error-phone.png", full_page=True)
    page.close()
