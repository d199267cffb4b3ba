"""The four HTML reports of issue 12 read in a real browser (Debian's Chromium driven by
Playwright, as tests/test_web_browser.py does): ``camlens diagnose failures|adversarial|bias``
(report.html) and ``camlens dissect`` (index.html), each built by the CLI at the tiny sizes of
tests/test_diagnose.py and tests/test_dissect.py and opened from a file:// URL. As a reader
would: nothing refused (no console errors, no failed requests), every picture decoded, the title
and the run's key numbers from its JSON in the text, tables with their rows, and at a phone's
width the page itself never scrolls sideways (wide tables scroll inside their own box).
Screenshots at a laptop and a phone width go to CAMLENS_SCREENSHOTS=DIR, else a temporary
folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from camlens.cli import main as cli
from camlens.plural import counted
from test_web_browser import PHONE, images_loaded, new_page

pytestmark = pytest.mark.usefixtures("one_thread")

LAPTOP = {"width": 1280, "height": 800}


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four reports, by the CLI at the sizes of the tests that check their numbers."""
    root = tmp_path_factory.mktemp("reports")
    regions = root / "regions.json"
    regions.write_text(json.dumps({"*": {"bottom": [0, 101, 111, 111]}}))
    for argv in (
        ["diagnose", "failures", "--data", "synthetic:seed=3,n=12", "--model", "synthetic:vgg",
         "--out", str(root / "failures"), "--examples", "1", "--pairs", "1"],
        ["diagnose", "adversarial", "--data", "synthetic:seed=3,n=1", "--out",
         str(root / "adversarial"), "--steps", "16", "--examples", "1"],
        ["diagnose", "bias", "--data", "synthetic:seed=3,n=4,cue_rate=1", "--out",
         str(root / "bias"), "--regions", str(regions), "--cue", "bottom", "--examples", "1"],
        ["dissect", "--model", "synthetic:alexnet", "--data", "synthetic:seed=20252,n=4",
         "--batch-size", "4", "--out", str(root / "dissect")],
    ):
        assert cli(argv) == 0, argv
    return root


def expected(name: str, root: Path) -> tuple[Path, str, list[str], int]:
    """(page, its title, texts the page must show, rows its first table must have)."""
    if name == "dissect":
        d = json.loads((root / "dissect" / "dissection.json").read_text())
        return (root / "dissect" / "index.html",
                f"Network dissection: {d['model']} {d['layer']}",
                [f"{d['named_units']} of {counted(d['units_total'], 'unit')} named",
                 counted(d["images"], "image") + ".",
                 *(f"{u['unit']}\t{u['concept']} ({u['category']})" for u in d["units"]
                   if u["concept"])],
                d["units_total"])
    doc = json.loads((root / name / f"{name}.json").read_text())
    s = doc["summary"]
    if name == "failures":
        texts = [f"{counted(s['images'], 'image')}; "
                 f"{counted(s['top1_failures'], 'top-1 failure')} (",
                 f"and {counted(s['top5_failures'], 'top-5 failure')} (",
                 pct(s["predicted_peak_resembling"]) + " of failures",
                 *(f"{p['true']}\t{p['predicted']}\t{p['count']}" for p in s["pairs"]),
                 f"the predicted class\t{s['predicted_peak']['class c']}",
                 *(f"{k}\t{v}" for k, v in s["predicted_peak"].items() if k != "class c")]
        return (root / name / "report.html", f"Failure modes of {s['model']}", texts,
                len(list(s["predicted_peak"])))
    if name == "adversarial":
        r = s["successful"]
        assert s["success_rate"] == 1.0  # 13 steps reach p(target) > 0.9999 on this image
        texts = [f"success on {pct(s['success_rate'])} of {counted(s['images'], 'image')}.",
                 f"at most {counted(s['attack']['max_steps'], 'step')},",
                 f"mean p(true class)\t{r['p_true_before_mean']:.3f}\t",
                 f"box IoU (true class)\t{r['iou_before']:.3f}\t{r['iou_after']:.3f}",
                 f"{pct(r['target_mass_on_objects'])} of its mass on objects"]
        return (root / name / "report.html", f"Adversarial noise and Grad-CAM: {s['model']}",
                texts, 3)
    texts = [f"{counted(s['images'], 'image')}, top-1 accuracy {pct(s['accuracy'])}",
             *(f"{r['region']}\t{r['images']}\t{r['share']:.3f}" for r in s["ranking"]
               if r["share"] >= 1e-3)]
    return (root / name / "report.html", f"Where {s['model']} looks: evidence by region", texts,
            len(s["ranking"]))


@pytest.mark.parametrize("name", ["failures", "adversarial", "bias", "dissect"])
def test_report_reads_well_in_a_browser(name: str, reports: Path, browser: Any,
                                        shots: Path) -> None:
    page_path, title, texts, rows = expected(name, reports)
    for size, label in ((LAPTOP, "laptop"), (PHONE, "phone")):
        page = new_page(browser, viewport=size)
        failed: list[str] = []
        page.on("requestfailed", lambda r, failed=failed: failed.append(r.url))
        try:
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            assert page.title() == title
            body = page.evaluate("document.body.innerText")
            missing = [t for t in texts if t not in body]
            assert missing == [], f"{name}: not in the page: {missing}"
            assert images_loaded(page) >= 1
            first = page.evaluate("document.querySelector('table').rows.length")
            assert first == rows + 1  # the header row and one row per entry
            page.screenshot(path=str(shots / f"{name}-{label}.png"), full_page=True)
            # the page never scrolls sideways; a wide table scrolls inside its own box
            assert page.evaluate("document.scrollingElement.scrollWidth") <= size["width"] + 1
            boxed = page.evaluate("""[...document.querySelectorAll('table')].every(t =>
                t.getBoundingClientRect().right <= window.innerWidth + 1 ||
                getComputedStyle(t.parentElement).overflowX === 'auto')""")
            assert boxed, f"{name}: a table runs off the {label} screen outside a scroll box"
            if name == "dissect" and label == "phone":  # meant to scroll sideways, in its box
                assert page.evaluate("""(() => { const b = document.querySelector('table')
                    .parentElement; return getComputedStyle(b).overflowX === 'auto' &&
                    b.scrollWidth > b.clientWidth; })()""")
            if name != "dissect":
                panel_titles_are_legible(page, size["width"])
            assert page.errors == [] and failed == []
        finally:
            page.close()


def panel_titles_are_legible(page: Any, width: int) -> None:
    """Each example's panels are titled in text of at least 13 px, under a picture at least
    100 px wide, inside the screen, within its own panel's width, no two titles overlapping."""
    boxes = page.evaluate("""[...document.querySelectorAll('.panels > figure')].map(f => {
        const c = f.querySelector('figcaption'), r = c.getBoundingClientRect();
        return {text: c.innerText, size: parseFloat(getComputedStyle(c).fontSize),
                fits: c.scrollWidth <= c.clientWidth + 1, picture: f.querySelector('img')
                .getBoundingClientRect().width, left: r.left, right: r.right, top: r.top,
                bottom: r.bottom}; })""")
    assert len(boxes) >= 2 and all(b["text"] for b in boxes)
    assert all(b["size"] >= 13 and b["fits"] and b["picture"] >= 100 for b in boxes), boxes
    assert all(0 <= b["left"] and b["right"] <= width + 1 for b in boxes), boxes
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            apart = (a["right"] <= b["left"] or b["right"] <= a["left"]
                     or a["bottom"] <= b["top"] or b["bottom"] <= a["top"])
            assert apart, (a, b)
