"""The web app (camlens serve) at the HTTP level, with FastAPI's test client: every route, every
bad input (a 4xx with a one-line message, never a 500 or a traceback), the maps of the API
against the library's (numbers), the bounded queue (429 + Retry-After), the kept results."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import replace
from html import unescape as html_unescape
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from markupsafe import escape
from PIL import Image

pytest.importorskip("fastapi", reason="the web app needs camlens[web]")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

import camlens  # noqa: E402
from camlens import io as cio  # noqa: E402
from camlens import output, viz  # noqa: E402
from camlens.dissect import Dissection, explain_text, shipped, shipped_path  # noqa: E402
from camlens.errors import DataError, LayerError  # noqa: E402
from camlens.loading import CliError  # noqa: E402
from camlens.methods import FIGURE1  # noqa: E402
from camlens.web import create_app  # noqa: E402
from camlens.web.app import ExplanationRecord  # noqa: E402
from camlens.web.engine import HEAT_PREFIX, PHOTO  # noqa: E402
from test_contract import assert_same, snapshot  # noqa: E402
from web_support import web_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_UPLOAD = 300_000
MAX_PIXELS = 1_000_000


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """chelsea shrunk to 180 x 120 (the upload)."""
    return cio.load_image(cio.sample_image("chelsea")).resize((180, 120))


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(web_model(), workers=2, queue=2, max_upload=MAX_UPLOAD,
                     max_pixels=MAX_PIXELS, keep=16)
    with TestClient(app) as c:
        yield c


def explain(client: TestClient, photo: Image.Image, name: str = "cat.png",
            **data: Any) -> Any:
    return client.post("/api/explain", files={"file": (name, png(photo), "image/png")},
                       data=data)


def reference(img: Image.Image, methods: tuple[str, ...], targets: list[int] | None,
              top_k: int = 1) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """The library's maps for ``img`` at its size ("<method>/<class>" -> float32) and the
    model's probabilities: camlens.explain on the model's preprocessed input."""
    loaded = web_model()
    x = loaded.preprocess(img)[None]
    target = None if targets is None else torch.tensor([targets])
    ex = camlens.explain(loaded.model, x, method=list(methods), layer=loaded.default_layer,
                         target=target, top_k=None if targets is not None else top_k)
    maps = {}
    for m in methods:
        classes = ex[m].targets[0].tolist()
        for k, c in enumerate(classes):
            maps[f"{m}/{c}"] = output.resized(ex[m].maps[0, k], (img.height, img.width))
    with torch.no_grad():
        probs = torch.softmax(loaded.model(x).float(), dim=1)[0]
    return maps, probs


def npz(client: TestClient, rid: str) -> dict[str, np.ndarray]:
    r = client.get(f"/results/{rid}/files/maps.npz")
    assert r.status_code == 200
    with np.load(io.BytesIO(r.content), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# -- the explain API against the library ---------------------------------------------------


def test_api_maps_equal_the_library(client: TestClient, photo: Image.Image) -> None:
    before = snapshot(web_model().model)
    r = explain(client, photo)
    assert r.status_code == 200, r.text
    record = r.json()
    ExplanationRecord.model_validate(record)
    assert record["image"] == "cat.png"
    assert record["methods"] == list(FIGURE1)
    assert record["output_size"] == {"height": 120, "width": 180}
    want, probs = reference(photo, FIGURE1, None)
    got = npz(client, record["result_id"])
    assert sorted(got) == sorted(want) == record["maps"]
    for key, m in want.items():
        assert got[key].dtype == np.float16
        # float16 keeps 3 digits: at most 2.4e-4 from the float32 map in [0, 1]
        np.testing.assert_allclose(got[key].astype(np.float32), m, atol=5e-4, err_msg=key)
    top = torch.topk(probs, 5)
    assert [p["index"] for p in record["predictions"]] == top.indices.tolist()
    np.testing.assert_allclose([p["probability"] for p in record["predictions"]],
                               top.values.numpy(), rtol=1e-5)
    assert [t["index"] for t in record["targets"]] == [top.indices[0].item()]
    assert_same(before, snapshot(web_model().model))


def test_api_targets_by_name_and_index(client: TestClient, photo: Image.Image) -> None:
    labels = web_model().labels
    r = explain(client, photo, method=["gradcam", "counterfactual-gradcam"],
                target=[labels[5].upper(), "3", ""])
    assert r.status_code == 200, r.text
    record = r.json()
    assert [t["index"] for t in record["targets"]] == [5, 3]
    want, _ = reference(photo, ("gradcam", "counterfactual-gradcam"), [5, 3])
    got = npz(client, record["result_id"])
    assert sorted(got) == sorted(want)
    for key, m in want.items():
        np.testing.assert_allclose(got[key].astype(np.float32), m, atol=5e-4, err_msg=key)


def test_api_top_k(client: TestClient, photo: Image.Image) -> None:
    r = explain(client, photo, method="gradcam", top_k="3")
    assert r.status_code == 200, r.text
    record = r.json()
    _, probs = reference(photo, ("gradcam",), None)
    assert [t["index"] for t in record["targets"]] == torch.topk(probs, 3).indices.tolist()
    assert len(record["predictions"]) == 5


def test_sample(client: TestClient) -> None:
    r = client.post("/api/explain", data={"sample": "Chelsea", "method": "gradcam"})
    assert r.status_code == 200, r.text
    record = r.json()
    assert record["image"] == "sample:chelsea"
    img = cio.load_image(cio.sample_image("chelsea"))
    assert record["original_size"] == {"height": img.height, "width": img.width}
    want, _ = reference(img, ("gradcam",), None)
    got = npz(client, record["result_id"])
    for key, m in want.items():
        np.testing.assert_allclose(got[key].astype(np.float32), m, atol=5e-4)


def test_downloads(client: TestClient, photo: Image.Image) -> None:
    record = explain(client, photo).json()
    rid = record["result_id"]
    base = f"/results/{rid}/files/"
    assert json.loads(client.get(base + "explanation.json").content) == record
    got = npz(client, rid)
    shown = Image.open(io.BytesIO(client.get(base + PHOTO).content))
    assert shown.size == (180, 120)
    np.testing.assert_array_equal(np.asarray(shown), np.asarray(photo))  # re-encoded, same pixels
    for key, m in got.items():
        name = output.png_name(key)
        r = client.get(base + name)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        if m.ndim == 2:  # the heatmap alone, laid over the photo in the page
            heat = np.asarray(Image.open(io.BytesIO(client.get(base + HEAT_PREFIX + name)
                                                    .content)))
            np.testing.assert_array_equal(heat, viz.apply_colormap(m.astype(np.float32)))
        else:
            assert client.get(base + HEAT_PREFIX + name).status_code == 404
    summary = client.get(base + "summary.png")
    assert summary.status_code == 200
    r = client.get(base + "maps.npz")
    assert "attachment" in r.headers["content-disposition"]


# -- the textual explanation (Sec. 7) -------------------------------------------------------


def library_texts(img: Image.Image, classes: list[int]) -> list[dict[str, Any]]:
    """camlens.dissect.explain_text's sentences for ``img`` and each class, with the shipped
    dissection of the web tests' net (synthetic:resnet)."""
    loaded = web_model()
    x = loaded.preprocess(img)[None]
    return [explain_text(loaded.model, x, shipped("resnet"), target=torch.tensor([c]),
                         labels=loaded.labels)[0].to_dict() for c in classes]


def test_api_textual_explanation_equals_the_library(client: TestClient,
                                                    photo: Image.Image) -> None:
    labels = web_model().labels
    r = explain(client, photo, method=["gradcam", "guided-backprop"], top_k="2",
                target=[labels[7], "2"])
    assert r.status_code == 200, r.text
    record = r.json()
    ExplanationRecord.model_validate(record)
    texts = record["textual_explanations"]
    assert [t["index"] for t in texts] == [7, 2]
    want = library_texts(photo, [7, 2])
    assert [t["sentence"] for t in texts] == [w["sentence"] for w in want]
    assert texts == want  # the units, alphas, names and IoUs too
    assert texts[0]["sentence"].startswith(("predicted ", "class "))
    assert all(u["concept"] for t in texts for u in t["evidence_for"] + t["evidence_against"]
               if u["iou"] is not None)
    d = shipped("resnet")
    assert record["dissection"] == {"model": d.model, "layer": d.layer, "data": d.data,
                                    "min_iou": d.min_iou, "quantile": d.quantile}
    # the same as `camlens explain --text` writes: one code path (the pipeline's record)
    saved = json.loads(client.get(f"/results/{record['result_id']}/files/explanation.json")
                       .content)
    assert saved["textual_explanations"] == texts
    html = client.get(f"/results/{record['result_id']}").text
    for t in texts:
        assert str(escape(t["sentence"])) in html
    assert 'id="text-note"' not in html


def test_textual_explanation_of_the_top_class_on_the_page(client: TestClient) -> None:
    r = client.post("/explain", data={"sample": "coffee"}, follow_redirects=False)
    assert r.status_code == 303
    html = client.get(r.headers["location"]).text
    record = json.loads(client.get(r.headers["location"] + "/files/explanation.json").content)
    top = record["predictions"][0]["index"]
    want = library_texts(cio.load_image(cio.sample_image("coffee")), [top])[0]
    assert record["textual_explanations"] == [want]
    assert want["sentence"].startswith(f"predicted {record['predictions'][0]['name']}: ")
    assert html.count('class="sentence"') == 1 and str(escape(want["sentence"])) in html
    assert "named by network dissection on world v2" in html


def test_no_gradcam_no_textual_explanation(client: TestClient, photo: Image.Image) -> None:
    r = explain(client, photo, method="guided-backprop")
    assert r.status_code == 200, r.text
    record = r.json()
    assert "textual_explanations" not in record and "dissection" not in record
    html = client.get(f"/results/{record['result_id']}").text
    assert "tick Grad-CAM to see it" in html and 'class="sentence"' not in html


def test_bundled_model_has_no_dissection() -> None:
    """EfficientNet-Lite0 (ImageNet) has no unit names: the API says why in each class's
    ``names_missing`` (as `camlens explain --text` does), the page in one line."""
    from camlens.models import load_model

    app = create_app(load_model("efficientnet_lite0"), workers=1, queue=1)
    with TestClient(app) as c:
        r = c.post("/api/explain", data={"sample": "chelsea", "method": "gradcam"})
        assert r.status_code == 200, r.text
        record = r.json()
        ExplanationRecord.model_validate(record)
        assert "dissection" not in record
        (text,) = record["textual_explanations"]
        why = text["names_missing"]
        assert why.startswith("no dissection of efficientnet_lite0 layer ")
        assert "no concept-annotated dataset for ImageNet models" in why
        assert all(u["concept"] is None for u in text["evidence_for"])
        html = c.get(f"/results/{record['result_id']}").text
        note = re.search(r'<p class="note" id="text-note">(.*?)</p>', html, re.S)
        assert note is not None and html_unescape(note.group(1)).endswith(
            ": not available: no dissection names the units of efficientnet_lite0's layer "
            f"{record['layer']} (camlens ships them for the world v2 nets only; `camlens serve "
            "--dissection FILE` adds one)")
        assert 'class="sentence"' not in html and "error" not in note.group(1)


def test_a_given_dissection(tmp_path: Path, photo: Image.Image) -> None:
    """``dissection=`` (``camlens serve --dissection F``): a file of the right layer names the
    units; another layer's, a bad file or one with too few units are refused at start."""

    d = shipped("resnet")
    renamed = Dissection("mine", d.layer, "hand", d.quantile, d.min_iou, 1,
                         tuple(replace(u, concept=f"c{u.unit}", category="hand")
                               if u.concept else u for u in d.units))
    renamed.save(tmp_path / "mine.json")
    before = snapshot(web_model().model)
    app = create_app(web_model(), dissection=tmp_path / "mine.json", workers=1, queue=1)
    assert_same(before, snapshot(web_model().model))  # counting the units left it as it was
    with TestClient(app) as c:
        record = explain(c, photo, method="gradcam").json()
    (text,) = record["textual_explanations"]
    assert record["dissection"]["model"] == "mine"
    (want,) = library_texts(photo, [text["index"]])
    assert [u["unit"] for u in text["evidence_for"]] == [u["unit"] for u in want["evidence_for"]]
    assert all(u["concept"] in (None, f"c{u['unit']}") for u in text["evidence_for"])
    with pytest.raises(LayerError, match="names the units of layer 'features.18'"):
        create_app(web_model(), dissection=shipped_path("vgg"))
    with pytest.raises(DataError, match="cannot read"):
        create_app(web_model(), dissection=tmp_path / "none.json")
    short = Dissection("mine", d.layer, "hand", d.quantile, d.min_iou, 1, d.units[:5])
    short.save(tmp_path / "short.json")
    with pytest.raises(LayerError, match="names 5 units .* 128 channels"):
        create_app(web_model(), dissection=tmp_path / "short.json")


# -- pages -----------------------------------------------------------------------------------


def test_index_page(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    html = r.text
    for name in FIGURE1:
        assert f'value="{name}" checked' in html
    assert 'value="scorecam"' not in html  # too slow for a shared server
    assert html.count('<option value="') >= len(web_model().labels)
    for sample in ("chelsea", "coffee"):
        assert f'<option value="{sample}">' in html
    assert "https://" not in html and "http://" not in html  # offline: no CDN, no fonts
    for asset in re.findall(r'(?:href|src)="([^"]+)"', html):
        assert asset.startswith("/"), asset
        assert client.get(asset).status_code == 200, asset
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


def test_form_to_result_page(client: TestClient, photo: Image.Image) -> None:
    r = client.post("/explain", files={"file": ("my cat.png", png(photo), "image/png")},
                    data={"method": ["gradcam", "guided-backprop"], "target": ""},
                    follow_redirects=False)
    assert r.status_code == 303
    page = client.get(r.headers["location"])
    assert page.status_code == 200
    html = page.text
    assert "my cat.png" in html
    record = json.loads(client.get(r.headers["location"] + "/files/explanation.json").content)
    for p in record["predictions"]:
        assert p["name"] in html
    assert html.count('type="range"') == 1  # one heatmap (Grad-CAM); Guided Backprop is a PNG
    for url in set(re.findall(r'(?:href|src)="(/results/[^"]+)"', html)):
        assert client.get(url).status_code == 200, url


def test_form_error_shows_the_page_again(client: TestClient) -> None:
    r = client.post("/explain", files={"file": ("notes.png", b"hello", "image/png")},
                    data={"method": "gradcam"})
    assert r.status_code == 422
    assert "notes.png: not an image camlens can read" in r.text
    assert '<form class="card explain-form"' in r.text
    assert 'value="gradcam" checked' in r.text and 'value="gradcam-pp" checked' not in r.text


def test_health_and_openapi(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["workers"] == 2 and health["queue"] == 2
    spec = client.get("/api/openapi.json").json()
    post = spec["paths"]["/api/explain"]["post"]
    body = post["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    fields = spec["components"]["schemas"][body.rsplit("/", 1)[1]]["properties"]
    assert {"file", "sample", "method", "target", "top_k"} <= set(fields)
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/ExplanationRecord")
    assert {"400", "413", "422", "429"} <= set(post["responses"])
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


# -- bad input -------------------------------------------------------------------------------


def _truncated(photo: Image.Image) -> bytes:
    data = png(photo)
    return data[: len(data) // 2]


def _bomb() -> bytes:
    """A 2-colour 4000 x 4000 PNG: 16 Mpixels in a few kB (the limit here is 1 Mpixel)."""
    return png(Image.new("1", (4000, 4000)))


BAD_UPLOADS = {
    "text": (b"just some text", 422, "not an image camlens can read"),
    "empty": (b"", 422, "the file is empty (0 bytes)"),
    "truncated": (None, 422, "truncated"),
    "bomb": (None, 422, "pixels"),
}


@pytest.mark.parametrize("kind", sorted(BAD_UPLOADS))
def test_bad_uploads(client: TestClient, photo: Image.Image, kind: str) -> None:
    data, status, words = BAD_UPLOADS[kind]
    if kind == "truncated":
        data = _truncated(photo)
    elif kind == "bomb":
        data = _bomb()
    r = client.post("/api/explain", files={"file": ("x.png", data, "image/png")})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert words in detail and "\n" not in detail and "/tmp" not in detail, detail


def test_too_large(client: TestClient) -> None:
    # just over the limit: the copy of the upload stops at the limit
    big = b"\x89PNG" + bytes(MAX_UPLOAD + 1000)
    r = client.post("/api/explain", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413
    assert r.json()["detail"] == ("big.png: the file is larger than the limit of "
                                  f"{MAX_UPLOAD} bytes; send a smaller image")
    # far over it: refused from the request's Content-Length, before the body is read
    big = bytes(MAX_UPLOAD + 100_000)
    r = client.post("/api/explain", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413
    assert "over the limit of" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield bytes(10_000)

    r = client.post("/api/explain", content=chunks(),
                    headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413
    page = client.post("/explain", files={"file": ("big.png", big, "image/png")})
    assert page.status_code == 413 and "over the limit of" in page.text


@pytest.mark.parametrize(("data", "status", "words"), [
    ({}, 400, "no photo"),
    ({"sample": "nope"}, 400, "unknown sample 'nope'"),
    ({"sample": "chelsea", "method": "nope"}, 400, "unknown method(s) nope"),
    ({"sample": "chelsea", "method": "scorecam"}, 400, "too slow"),
    ({"sample": "chelsea", "target": "no such class"}, 400, "class"),
    ({"sample": "chelsea", "target": "1000"}, 400, "class"),
    ({"sample": "chelsea", "target": ["1", "2", "3", "4"]}, 400, "at most 3"),
    ({"sample": "chelsea", "top_k": "0"}, 400, "top_k must be between 1 and 3"),
    ({"sample": "chelsea", "top_k": "9"}, 400, "top_k must be between 1 and 3"),
    ({"sample": "chelsea", "top_k": "x"}, 422, "top_k"),
])
def test_bad_parameters(client: TestClient, data: dict[str, Any], status: int,
                        words: str) -> None:
    r = client.post("/api/explain", data=data)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_file_and_sample(client: TestClient, photo: Image.Image) -> None:
    r = client.post("/api/explain", files={"file": ("a.png", png(photo), "image/png")},
                    data={"sample": "chelsea"})
    assert r.status_code == 400 and "not both" in r.json()["detail"]


def test_two_files(client: TestClient, photo: Image.Image) -> None:
    r = client.post("/api/explain", files=[("file", ("a.png", png(photo), "image/png")),
                                           ("file", ("b.png", png(photo), "image/png"))])
    assert r.status_code in (400, 413, 422) and r.json()["detail"]


def test_not_multipart(client: TestClient) -> None:
    r = client.post("/api/explain", json={"sample": "chelsea"})
    assert r.status_code == 400 and "no photo" in r.json()["detail"]


def test_wrong_method_and_unknown_pages(client: TestClient) -> None:
    r = client.get("/api/explain")
    assert r.status_code == 405 and r.json()["detail"] == "GET is not allowed on /api/explain"
    r = client.get("/no/such/page")
    assert r.status_code == 404 and "no page /no/such/page" in r.text
    assert "<h1>404" in r.text


@pytest.mark.parametrize("name", ["../explanation.json", "..%2Fexplanation.json",
                                  "upload", "cat", "maps.npz.tmp", ".", "x" * 300])
def test_files_outside_the_listing(client: TestClient, photo: Image.Image, name: str) -> None:
    rid = explain(client, photo, method="gradcam").json()["result_id"]
    r = client.get(f"/results/{rid}/files/{name}")
    assert r.status_code == 404


@pytest.mark.parametrize("rid", ["nope", "A" * 16, "../../etc"])
def test_unknown_results(client: TestClient, rid: str) -> None:
    assert client.get(f"/results/{rid}").status_code == 404
    assert client.get(f"/results/{rid}/files/maps.npz").status_code == 404


def test_uploads_leave_nothing_behind(client: TestClient, photo: Image.Image) -> None:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    explain(client, photo)
    explain(client, photo, name="x.png", method="nope")
    client.post("/api/explain", files={"file": ("t.png", b"text", "image/png")})
    assert list((engine.root / "uploads").iterdir()) == []
    assert engine.root.is_relative_to(Path(__import__("tempfile").gettempdir()))


# -- the queue, the results, unexpected errors -----------------------------------------------


def test_busy_gives_429_with_retry_after(photo: Image.Image) -> None:
    app = create_app(web_model(), workers=1, queue=0)
    with TestClient(app) as c:
        engine = app.state.engine
        engine.reserve()  # the only place is taken
        try:
            r = explain(c, photo)
            assert r.status_code == 429
            assert int(r.headers["retry-after"]) >= 1
            assert "busy" in r.json()["detail"]
            page = c.post("/explain", data={"sample": "chelsea"})
            assert page.status_code == 429 and "busy" in page.text
            assert int(page.headers["retry-after"]) >= 1
        finally:
            engine.release()
        assert explain(c, photo).status_code == 200
        assert engine.load()["pending"] == 0


def test_only_the_newest_results_are_kept(photo: Image.Image) -> None:
    app = create_app(web_model(), workers=1, queue=1, keep=2)
    with TestClient(app) as c:
        ids = [explain(c, photo, method="gradcam").json()["result_id"] for _ in range(3)]
        assert c.get(f"/results/{ids[0]}").status_code == 404
        assert "newest 2" in c.get(f"/results/{ids[0]}").text
        assert all(c.get(f"/results/{i}").status_code == 200 for i in ids[1:])
        root = app.state.engine.root
        assert sorted(p.name for p in (root / "results").iterdir()) == sorted(ids[1:])
    assert not root.exists()  # the temporary folder goes with the app


def test_unexpected_error_is_a_plain_500(photo: Image.Image, caplog: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(web_model(), workers=1, queue=1)

    def broken(*_: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.state.engine, "_explain", broken)
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.ERROR):
        for url in ("/api/explain", "/explain"):
            r = c.post(url, data={"sample": "chelsea"})
            assert r.status_code == 500
            assert "secret" not in r.text and "Traceback" not in r.text
            assert "internal error" in r.text
        assert app.state.engine.load()["pending"] == 0
    assert "secret internal detail" in caplog.text


def test_db_without_the_study_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "camlens.study.web", None)
    with pytest.raises(CliError, match="camlens.study is missing"):
        create_app(web_model(), db=tmp_path / "study.sqlite")


# -- the command line ------------------------------------------------------------------------


def test_serve_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from camlens.cli import main

    assert main(["serve", "--port", "70000"]) == 2
    assert "expected a port number 0-65535" in capsys.readouterr().err
    assert main(["serve", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "no such file" in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--model", "synthetic:resnet", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1
    for dissection, message in [(tmp_path / "none.json", "cannot read"),
                                (str(shipped_path("vgg")), "names the units of layer")]:
        assert main(["serve", "--model", "synthetic:resnet", "--dissection", str(dissection),
                     "--port", "0"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
