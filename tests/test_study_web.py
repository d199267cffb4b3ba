"""The study pages over HTTP (FastAPI's test client): every route, every bad input, and that a
participant can never read an answer."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi import FastAPI  # noqa: E402
from fastapi.staticfiles import StaticFiles  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from camlens.loading import CliError  # noqa: E402
from camlens.study.store import StudyStore, latin_square_order, new_id  # noqa: E402
from camlens.study.web import MAX_BODY, make_router  # noqa: E402
from camlens.web.templating import STATIC  # noqa: E402
from study_support import class_study, trust_study  # noqa: E402

ID = re.compile(r"[0-9a-f]{32}")


def client(db: Path) -> TestClient:
    """The study routes alone, with the web app's templates and static files (no model)."""
    app = FastAPI()
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(make_router(db))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def study(tmp_path: Path) -> tuple[TestClient, StudyStore, str, list[str]]:
    store, admin = class_study(tmp_path / "s.sqlite", images=3, ratings=1)
    tokens = store.invite(2)
    return client(store.path), store, admin, tokens


def trial_of(page: str) -> tuple[str, list[str]]:
    """The trial id in the form's action and the picture ids on a trial page."""
    tid = re.search(r"/trials/([0-9a-f]{32})", page).group(1)
    return tid, re.findall(r"/files/([0-9a-f]{32})\.png", page)


def form(c: TestClient, token: str, tid: str, body: bytes | str, **kw):
    headers = {"content-type": "application/x-www-form-urlencoded", **kw.pop("headers", {})}
    return c.post(f"/study/p/{token}/trials/{tid}", content=body, headers=headers,
                  follow_redirects=False, **kw)


def test_a_participant_answers_every_trial_and_resumes(study) -> None:
    c, store, _, (token, _) = study
    r = c.get("/study/")
    assert r.status_code == 200 and "personal link" in r.text
    seen = []
    for k in range(3):
        r = c.get(f"/study/p/{token}")
        assert r.status_code == 200 and f"Trial {k + 1} of 3" in r.text
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cache-control"] == "no-store"
        tid, pictures = trial_of(r.text)
        assert len(pictures) == 2 and tid not in seen
        for pic in pictures:
            img = c.get(f"/study/p/{token}/files/{pic}.png")
            assert img.status_code == 200 and img.headers["content-type"] == "image/png"
            assert img.content.startswith(b"\x89PNG")
        assert c.get(f"/study/p/{token}").text == r.text  # a reload shows the same trial
        r = form(c, token, tid, "choice=1")
        assert r.status_code == 303 and r.headers["location"] == f"/study/p/{token}"
        seen.append(tid)
    r = c.get(f"/study/p/{token}")
    assert r.status_code == 200 and "all 3 trials" in r.text
    assert [x.trial.id for x in store.responses()] == seen


def test_bad_links_are_404_and_bad_admin_tokens_403(study) -> None:
    c, store, admin, (token, _) = study
    for bad in ("x" * 22, "short", "a" * 65, "..%2F..%2Fetc", "tok%00en"):
        r = c.get(f"/study/p/{bad}")
        assert r.status_code == 404
        assert c.get(f"/study/api/p/{bad}").status_code == 404
        if "%2F" in bad:  # "../../etc" matches no route: the framework's 404
            continue
        assert "not valid" in r.text
        assert c.get(f"/study/admin/{bad}").status_code == 403
        assert c.get(f"/study/admin/{bad}/results.json").json() == {"detail":
                                                                    "wrong admin token"}
        assert c.get(f"/study/admin/{bad}/responses.csv").status_code == 403
    tid, pictures = trial_of(c.get(f"/study/p/{token}").text)
    assert form(c, "x" * 22, tid, "choice=0").status_code == 404
    assert form(c, token, "not-an-id", "choice=0").status_code == 404
    assert form(c, token, new_id(), "choice=0").status_code == 404
    trials = store.trials()
    mine = set(latin_square_order(store.participant(token).id, trials, store.study.seed))
    foreign = next(t for t in trials if t.id not in mine)
    assert form(c, token, foreign.id, "choice=0").status_code == 404  # not one of theirs
    for name in (f"{foreign.panels[0]}.png", f"{new_id()}.png", "../s.sqlite", "x.png",
                 f"{pictures[0]}.png.bak"):
        assert c.get(f"/study/p/{token}/files/{name}").status_code == 404, name
    assert c.get(f"/study/p/{token}/files/{pictures[0]}.png").status_code == 200
    assert c.get(f"/study/p/x{'y' * 21}/files/{pictures[0]}.png").status_code == 404
    assert c.get(f"/study/admin/{admin}").status_code == 200
    assert c.get(f"/study/admin/{token}").status_code == 403  # a participant is not the admin


def test_bad_answers_get_clear_4xx_never_500(study) -> None:
    c, store, _, (token, _) = study
    tid, _ = trial_of(c.get(f"/study/p/{token}").text)
    cases = [
        ("", 422, "exactly one field"),
        ("answer=1", 422, "exactly one field"),
        ("choice=0&choice=1", 422, "exactly one field"),
        ("choice=7", 422, "choice must be one of 0, 1"),
        ("choice=", 422, "choice must be one of 0, 1"),
        (b"choice=\xff\xfe", 422, "not valid UTF-8"),
        ("choice=0&" + "x" * MAX_BODY, 413, "at most 4096"),
    ]
    for body, status, text in cases:
        r = form(c, token, tid, body)
        assert (r.status_code, text in r.text) == (status, True), (body, r.text[-300:])
    r = c.post(f"/study/p/{token}/trials/{tid}", json={"choice": "0"})
    assert r.status_code == 415 and "application/x-www-form-urlencoded" in r.text
    assert store.responses() == []
    assert form(c, token, tid, "choice=0").status_code == 303
    r = form(c, token, tid, "choice=1")
    assert r.status_code == 409 and "your first answer was kept" in r.text
    assert [x.choice for x in store.responses()] == ["0"]
    assert c.get(f"/study/p/{token}/trials/{tid}").status_code == 405


def test_json_api(study) -> None:
    c, store, _, (token, _) = study
    state = c.get(f"/study/api/p/{token}").json()
    assert (state["answered"], state["total"]) == (0, 3)
    trial = state["trial"]
    assert set(trial) == {"id", "photo", "panels", "caption", "question", "options",
                          "position", "total"}
    url = f"/study/api/p/{token}/responses"
    bad = [
        (b"{bad json", "application/json", 422, "not JSON"),
        (b"[1, 2]", "application/json", 422, "must be a JSON object"),
        (json.dumps({"trial": trial["id"]}), "application/json", 422, "must be a JSON object"),
        (json.dumps({"trial": trial["id"], "choice": "0", "x": 1}), "application/json", 422,
         "must be a JSON object"),
        (json.dumps({"trial": trial["id"], "choice": True}), "application/json", 422,
         "'choice' a string or an integer"),
        (json.dumps({"trial": 5, "choice": "0"}), "application/json", 422, "'trial' must be"),
        (json.dumps({"trial": trial["id"], "choice": "9"}), "application/json", 422,
         "choice must be one of"),
        (json.dumps({"trial": new_id(), "choice": "0"}), "application/json", 404, "no such"),
        (json.dumps({"trial": "../x", "choice": "0"}), "application/json", 404, "no such"),
        ("choice=0", "application/x-www-form-urlencoded", 415, "application/json"),
        (b"\xff\xfe", "application/json", 422, "not JSON"),
        (b" " * (MAX_BODY + 1), "application/json", 413, "bytes"),
    ]
    for body, ctype, status, text in bad:
        r = c.post(url, content=body, headers={"content-type": ctype})
        assert r.status_code == status and text in r.json()["detail"], (body, r.text)
    r = c.post(url, json={"trial": trial["id"], "choice": 1})  # an integer value is fine
    assert r.status_code == 201 and r.json() == {"answered": 1, "total": 3}
    r = c.post(url, json={"trial": trial["id"], "choice": "0"})
    assert r.status_code == 409 and "already answered" in r.json()["detail"]
    assert c.post(f"/study/api/p/{'z' * 22}/responses",
                  json={"trial": trial["id"], "choice": "0"}).status_code == 404
    assert c.get(f"/study/api/p/{token}").json()["trial"]["position"] == 2


def test_admin_results_json_and_csv(study) -> None:
    c, store, admin, (token, _) = study
    for _ in range(3):
        tid, _ = trial_of(c.get(f"/study/p/{token}").text)
        form(c, token, tid, "choice=0")
    page = c.get(f"/study/admin/{admin}")
    assert page.status_code == 200
    for text in ("Results: Test study", "Guided Grad-CAM", "Wilson", "44.44%",
                 "responses.csv", "1 started, 1 finished"):
        assert text in page.text, text
    data = c.get(f"/study/admin/{admin}/results.json").json()
    assert data["responses"] == 3 and len(data["methods"]) == 4
    csv = c.get(f"/study/admin/{admin}/responses.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv.headers["content-disposition"]
    assert len(csv.text.strip().splitlines()) == 4 and csv.text.startswith("participant,")


def test_trust_page_shows_two_models_and_the_scale(tmp_path: Path) -> None:
    store, _ = trust_study(tmp_path / "t.sqlite", images=2)
    [token] = store.invite(1)
    c = client(store.path)
    r = c.get(f"/study/p/{token}")
    assert "Model 1" in r.text and "Model 2" in r.text and "Predicted category" in r.text
    assert len(re.findall(r'name="choice" value="(-?\d)"', r.text)) == 5
    assert "Model 2 is clearly more trustworthy" in r.text


def participant_bodies(c: TestClient, token: str) -> list[bytes]:
    """Every body a participant can fetch, answering option 0 each time (including the
    pictures, the JSON, the error pages of a double answer)."""
    out = []
    while True:
        page = c.get(f"/study/p/{token}")
        state = c.get(f"/study/api/p/{token}")
        out += [page.content, state.content]
        if state.json()["trial"] is None:
            return out
        tid, pictures = trial_of(page.text)
        out += [c.get(f"/study/p/{token}/files/{p}.png").content for p in pictures]
        answer = form(c, token, tid, "choice=0")
        again = form(c, token, tid, "choice=1")
        api_again = c.post(f"/study/api/p/{token}/responses", json={"trial": tid, "choice": "0"})
        out += [answer.content, repr(sorted(answer.headers.items())).encode(), again.content,
                api_again.content]


@pytest.mark.parametrize("kind", ["class-discrimination", "trust"])
def test_a_participant_can_never_read_the_answer(tmp_path: Path, kind: str) -> None:
    """Two copies of one study that differ only in their secrets (the answers, methods, item
    metadata) send the participant byte-identical responses; and no response contains a
    method name or a metadata value."""
    make = class_study if kind == "class-discrimination" else trust_study
    store, _ = make(tmp_path / "a.sqlite", images=4)
    [token] = store.invite(1)
    twin = tmp_path / "b.sqlite"
    shutil.copy(store.path, twin)
    with sqlite3.connect(twin) as conn:
        flip = "'1' WHERE answer = '0'" if kind == "class-discrimination" else \
            "CASE answer WHEN '1' THEN '2' ELSE '1' END"
        conn.execute(f"UPDATE trials SET answer = {flip}")
        conn.execute("UPDATE trials SET method = 'gradcam', meta = '{\"image\": \"secret\"}'")
    a = participant_bodies(client(store.path), token)
    b = participant_bodies(client(twin), token)
    assert a == b
    secrets = {"deconv", "guided", "grad-cam", "gradcam", "backprop", "img-", "model-alpha",
               "model-beta", "secret"}
    for t in store.trials():  # the image ids and model names (the categories are shown)
        secrets |= {str(t.meta[k]).lower() for k in ("image", "model_a", "model_b")
                    if k in t.meta}
    for body in a:
        text = body.decode("latin-1").lower()
        for s in secrets:
            assert s not in text, s


def test_make_router_refuses_a_missing_database(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="no study database"):
        make_router(tmp_path / "nothing.sqlite")
