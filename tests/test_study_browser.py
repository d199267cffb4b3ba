"""A real browser (Playwright driving Debian's chromium, launched from its system path; nothing
is downloaded): a participant completes a study of 10 trials, stopping and resuming half way,
and the admin reads the results. Screenshots at laptop (1366x768) and phone (390x844) width go
to ``$CAMLENS_SCREENSHOTS`` when set (else the test's temporary folder).

The server is the app of ``camlens serve --db`` (the ``live_server`` fixture of conftest.py,
as the web app's browser tests use), in the ``browser`` fixture's chromium; every page is
checked for what its Content-Security-Policy refused (an inline style or script would be)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.usefixtures("one_thread")

LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


def styled(page: Any) -> None:
    """The study's stylesheet applies (an inline one would be refused by the app's CSP): the
    page is at most 60rem wide and its answer buttons have the study's blue border."""
    assert page.locator(".study").evaluate("e => getComputedStyle(e).maxWidth") == "960px"
    button = page.locator("form.choices button").first
    assert button.evaluate("b => getComputedStyle(b).borderTopColor") == "rgb(47, 111, 181)"


def test_participant_completes_a_study_and_the_admin_reads_the_results(
        tmp_path: Path, live_server: Callable[..., str], browser: Any) -> None:
    from camlens import study

    shots = Path(os.environ.get("CAMLENS_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    plan = study.class_discrimination("synthetic:seed=7,n=12,kind=two", "synthetic:vgg",
                                      ["guided-backprop", "guided-gradcam"], pairs=20,
                                      ratings=1, seed=0)
    store, admin = study.create(str(tmp_path / "s.sqlite"), plan)
    first, second = store.invite(2)
    base = live_server(db=store.path)
    errors: list[str] = []  # the console's errors on every page (a CSP refusal is one)

    def context(**kwargs: Any) -> Any:
        ctx = browser.new_context(**kwargs)
        ctx.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        return ctx

    laptop = context(viewport=LAPTOP)
    page = laptop.new_page()
    link = f"{base}/study/p/{first}"
    page.goto(link)
    for k in range(1, 11):
        if k == 6:  # stop half way; the same link in a new browser resumes
            laptop.close()
            laptop = context(viewport=LAPTOP)
            page = laptop.new_page()
            page.goto(link)
        sync_api.expect(page.locator(".progress")).to_contain_text(f"Trial {k} of 10")
        assert page.locator(".progress progress").evaluate("p => [p.value, p.max]") == [k - 1, 10]
        images = page.locator(".pictures img")
        assert images.count() == 2
        for i in range(2):  # the pictures loaded (decoded, with a size)
            assert images.nth(i).evaluate("img => img.complete && img.naturalWidth") >= 224
        if k == 1:
            styled(page)
            page.screenshot(path=str(shots / "study-trial-laptop.png"), full_page=True)
        buttons = page.locator("form.choices button")
        assert buttons.count() == 2
        with page.expect_navigation():
            buttons.nth(k % 2).click()
    sync_api.expect(page.locator("h1")).to_have_text("Thank you!")
    page.screenshot(path=str(shots / "study-done-laptop.png"))

    phone = context(viewport=PHONE, is_mobile=True, has_touch=True)
    mobile = phone.new_page()
    mobile.goto(f"{base}/study/p/{second}")
    sync_api.expect(mobile.locator(".progress")).to_contain_text("Trial 1 of 10")
    styled(mobile)
    # nothing wider than the screen: no sideways scrolling on a phone
    assert mobile.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    mobile.screenshot(path=str(shots / "study-trial-phone.png"), full_page=True)
    with mobile.expect_navigation():
        mobile.locator("form.choices button").first.tap()
    sync_api.expect(mobile.locator(".progress")).to_contain_text("Trial 2 of 10")

    page = context(viewport=LAPTOP).new_page()
    page.goto(f"{base}/study/admin/{admin}")
    sync_api.expect(page.locator("h1")).to_contain_text("Results")
    text = page.locator(".study").inner_text()
    assert "2 participants invited, 2 started, 1 finished; 11 responses" in text
    rows = page.locator("table").first.locator("tbody tr")
    assert rows.count() == 2
    assert re.search(r"Guided Grad-CAM\s+\d+\s+\d+\s+\d+\.\d\d%", rows.nth(1).inner_text())
    page.screenshot(path=str(shots / "study-results-laptop.png"), full_page=True)
    with page.expect_download() as download:
        page.get_by_text("Download responses (CSV)").click()
    assert len(Path(download.value.path()).read_text().splitlines()) == 12
    mobile.goto(f"{base}/study/admin/{admin}")
    assert mobile.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    mobile.screenshot(path=str(shots / "study-results-phone.png"), full_page=True)
    assert errors == []
    assert len(store.responses()) == 11
