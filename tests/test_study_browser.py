"""A real browser (Playwright driving Debian's chromium, launched from its system path; nothing
is downloaded): a participant completes a study of 10 trials, stopping and resuming half way,
and the admin reads the results. Screenshots at laptop (1366x768) and phone (390x844) width go
to ``$CAMLENS_SCREENSHOTS`` when set (else the test's temporary folder).

The server is uvicorn in a thread on a free loopback port (``study_support.live_server``) with
the study router on a bare FastAPI app, until the web app's own fixture lands."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
CHROMIUM = shutil.which("chromium")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                 "(apt-get install -y chromium)"),
              pytest.mark.usefixtures("one_thread")]

LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


def test_participant_completes_a_study_and_the_admin_reads_the_results(
        tmp_path: Path) -> None:
    from fastapi import FastAPI

    from camlens import study
    from camlens.study.web import make_router
    from study_support import TEMPLATES, live_server

    shots = Path(os.environ.get("CAMLENS_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    plan = study.class_discrimination("synthetic:seed=7,n=12,kind=two", "synthetic:vgg",
                                      ["guided-backprop", "guided-gradcam"], pairs=20,
                                      ratings=1, seed=0)
    store, admin = study.create(str(tmp_path / "s.sqlite"), plan)
    first, second = store.invite(2)
    app = FastAPI()
    app.include_router(make_router(store.path, template_dirs=[TEMPLATES]))
    with live_server(app) as base, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            laptop = browser.new_context(viewport=LAPTOP)
            page = laptop.new_page()
            link = f"{base}/study/p/{first}"
            page.goto(link)
            for k in range(1, 11):
                if k == 6:  # stop half way; the same link in a new browser resumes
                    laptop.close()
                    laptop = browser.new_context(viewport=LAPTOP)
                    page = laptop.new_page()
                    page.goto(link)
                sync_api.expect(page.locator(".progress")).to_contain_text(f"Trial {k} of 10")
                images = page.locator(".pictures img")
                assert images.count() == 2
                for i in range(2):  # the pictures loaded (decoded, with a size)
                    assert images.nth(i).evaluate("img => img.complete && img.naturalWidth") \
                        >= 224
                if k == 1:
                    page.screenshot(path=str(shots / "study-trial-laptop.png"), full_page=True)
                buttons = page.locator("form.choices button")
                assert buttons.count() == 2
                with page.expect_navigation():
                    buttons.nth(k % 2).click()
            sync_api.expect(page.locator("h1")).to_have_text("Thank you!")
            page.screenshot(path=str(shots / "study-done-laptop.png"))

            phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
            mobile = phone.new_page()
            mobile.goto(f"{base}/study/p/{second}")
            sync_api.expect(mobile.locator(".progress")).to_contain_text("Trial 1 of 10")
            # nothing wider than the screen: no sideways scrolling on a phone
            assert mobile.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            mobile.screenshot(path=str(shots / "study-trial-phone.png"), full_page=True)
            with mobile.expect_navigation():
                mobile.locator("form.choices button").first.tap()
            sync_api.expect(mobile.locator(".progress")).to_contain_text("Trial 2 of 10")

            page = browser.new_context(viewport=LAPTOP).new_page()
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
            mobile.screenshot(path=str(shots / "study-results-phone.png"), full_page=True)
        finally:
            browser.close()
    assert len(store.responses()) == 11
