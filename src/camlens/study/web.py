"""The study pages: participants answer trials, the admin reads the results (FastAPI router).

``make_router(db)`` serves one study database under ``/study`` (the web app mounts it for
``camlens serve --db FILE``):

- ``GET  /study/``: what this server runs (no secrets);
- ``GET  /study/p/{token}``: the participant's next trial, or "done";
- ``POST /study/p/{token}/trials/{trial}``: an answer (form field ``choice``), then a redirect
  to the next trial;
- ``GET  /study/p/{token}/files/{file}.png``: a picture of one of the participant's trials;
- ``GET  /study/api/p/{token}`` and ``POST /study/api/p/{token}/responses``: the same as JSON
  (``{"trial": ID, "choice": VALUE}``);
- ``GET  /study/admin/{token}``: the results page; ``.../results.json``, ``.../responses.csv``.

A participant's pages and JSON carry the trial's public part only (pictures under random ids,
the options in the order shown): never its method, item or answer. Errors are pages (or JSON
``{"detail": ...}``) with a clear one-line message: 404 unknown link, 403 wrong admin token,
409 a trial answered twice (the first answer is kept), 413 a body over 4 KiB, 415 a body of
another type, 422 a malformed body or a choice that is not an option. Tokens travel in URLs,
so every page is sent with ``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from camlens.loading import CliError
from camlens.study.results import csv_text, summarise
from camlens.study.store import (
    BadChoice,
    DuplicateResponse,
    Participant,
    StudyError,
    StudyStore,
    UnknownTrial,
)

__all__ = ["make_router", "MAX_BODY"]

HERE = Path(__file__).resolve().parent
#: The largest request body accepted (an answer is a few dozen bytes).
MAX_BODY = 4096
_TOKEN = re.compile(r"[A-Za-z0-9_-]{8,64}")
_ID = re.compile(r"[0-9a-f]{32}")
_HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff"}


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _templates(extra: Sequence[Path]) -> Jinja2Templates:
    """Templates from ``extra`` first (tests), then the web app's (``base.html``), then ours."""
    dirs = [*extra, HERE.parent / "web" / "templates", HERE / "templates"]
    env = Environment(loader=ChoiceLoader([FileSystemLoader(d) for d in dirs if d.is_dir()]),
                      autoescape=select_autoescape(default=True), trim_blocks=True,
                      lstrip_blocks=True)
    return Jinja2Templates(env=env)


async def _read_body(request: Request) -> bytes:
    """The request body, refusing more than :data:`MAX_BODY` bytes without reading them all."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise _BodyError(413, f"the request body is {length} bytes; at most {MAX_BODY} are "
                              "accepted")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _BodyError(413, f"the request body is over {MAX_BODY} bytes")
    return body


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def make_router(db: str | Path, *, template_dirs: Sequence[Path] = ()) -> APIRouter:
    """The study pages of the database ``db`` under ``/study``.

    Raises :class:`camlens.loading.CliError` (exit code 2 in the CLI) when ``db`` is not a
    study database. ``template_dirs``: folders searched before the package's templates."""
    try:
        store = StudyStore(db)
    except StudyError as exc:
        raise CliError(str(exc)) from None
    templates = _templates(template_dirs)
    router = APIRouter(prefix="/study", tags=["study"])
    study = store.study

    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")) + "/study"

    def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("title", study.title)
        resp = templates.TemplateResponse(request, name, {"study": study,
                                                          "base": base(request), **context},
                                          status_code=status)
        resp.headers.update(_HEADERS)
        return resp

    def message(request: Request, status: int, heading: str, text: str,
                link: tuple[str, str] | None = None) -> Response:
        return page(request, "study_message.html", status, heading=heading, text=text,
                    link=link)

    def not_found(request: Request) -> Response:
        return message(request, 404, "Link not found",
                       "This study link is not valid: check that you opened the whole link "
                       "you were given.")

    def forbidden(request: Request) -> Response:
        return message(request, 403, "Wrong admin token",
                       "This admin link is not valid: use the link printed when the study "
                       "was created.")

    def json_error(status: int, text: str) -> JSONResponse:
        return JSONResponse({"detail": text}, status_code=status, headers=_HEADERS)

    def who(token: str) -> Participant | None:
        return store.participant(token) if _TOKEN.fullmatch(token) else None

    def admin(token: str) -> bool:
        return bool(_TOKEN.fullmatch(token)) and store.is_admin(token)

    @router.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        return message(request, 200, study.title,
                       "This server runs a study. Open the personal link you were given to "
                       "take part; the study's admin reads the results at the admin link "
                       "printed when it was created.")

    @router.get("/p/{token}", name="study_participant")
    def participant_page(request: Request, token: str) -> Response:
        person = who(token)
        if person is None:
            return not_found(request)
        trial = store.next_trial(person)
        if trial is None:
            done, total = store.progress(person)
            return page(request, "study_done.html", done=done, total=total)
        return page(request, "study_trial.html", trial=trial, token=token)

    @router.post("/p/{token}/trials/{trial_id}")
    async def answer_form(request: Request, token: str, trial_id: str) -> Response:
        person = await run_in_threadpool(who, token)
        if person is None or not _ID.fullmatch(trial_id):
            return not_found(request)
        here = f"{base(request)}/p/{token}"
        try:
            if _media_type(request) != "application/x-www-form-urlencoded":
                raise _BodyError(415, "send the answer as a form "
                                      "(application/x-www-form-urlencoded) with a field "
                                      "'choice'")
            body = (await _read_body(request)).decode("utf-8")
            choices = parse_qs(body, keep_blank_values=True, strict_parsing=False).get("choice")
            if not choices or len(choices) != 1:
                raise _BodyError(422, "the form needs exactly one field 'choice': pick one "
                                      "of the options")
            await run_in_threadpool(store.submit, person, trial_id, choices[0])
        except UnicodeDecodeError:
            return message(request, 422, "Answer not understood",
                           "the form is not valid UTF-8", ("Back to the trial", here))
        except _BodyError as exc:
            return message(request, exc.status, "Answer not understood", str(exc),
                           ("Back to the trial", here))
        except UnknownTrial:
            return not_found(request)
        except BadChoice as exc:
            return message(request, 422, "Answer not understood", str(exc),
                           ("Back to the trial", here))
        except DuplicateResponse:
            return message(request, 409, "Already answered",
                           "You already answered this trial; your first answer was kept.",
                           ("Continue with the next trial", here))
        return RedirectResponse(here, status_code=303, headers=_HEADERS)

    @router.get("/p/{token}/files/{name}")
    def participant_file(request: Request, token: str, name: str) -> Response:
        person = who(token)
        file_id = name.removesuffix(".png")
        png = store.file_for(person, file_id) if person and _ID.fullmatch(file_id) else None
        if png is None:
            return not_found(request)
        return Response(png, media_type="image/png", headers=_HEADERS)

    @router.get("/api/p/{token}")
    def participant_json(token: str) -> Response:
        person = who(token)
        if person is None:
            return json_error(404, "unknown participant link")
        trial = store.next_trial(person)
        done, total = store.progress(person)
        return JSONResponse({"answered": done, "total": total,
                             "trial": None if trial is None else trial.as_json()},
                            headers=_HEADERS)

    @router.post("/api/p/{token}/responses", status_code=201)
    async def answer_json(request: Request, token: str) -> Response:
        person = await run_in_threadpool(who, token)
        if person is None:
            return json_error(404, "unknown participant link")
        expected = 'a JSON object {"trial": "<trial id>", "choice": "<option value>"}'
        try:
            if _media_type(request) != "application/json":
                raise _BodyError(415, f"send {expected} as application/json")
            try:
                data = json.loads(await _read_body(request))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise _BodyError(422, f"the body is not JSON ({exc}); send {expected}") from None
            if not isinstance(data, dict) or set(data) != {"trial", "choice"}:
                raise _BodyError(422, f"the body must be {expected}")
            trial, choice = data["trial"], data["choice"]
            if not isinstance(trial, str) or not isinstance(choice, (str, int)) \
                    or isinstance(choice, bool):
                raise _BodyError(422, f"'trial' must be a string and 'choice' a string or an "
                                      f"integer: {expected}")
            if not _ID.fullmatch(trial):
                return json_error(404, "no such trial among this participant's trials")
            done, total = await run_in_threadpool(store.submit, person, trial, str(choice))
        except _BodyError as exc:
            return json_error(exc.status, str(exc))
        except UnknownTrial as exc:
            return json_error(404, str(exc))
        except BadChoice as exc:
            return json_error(422, str(exc))
        except DuplicateResponse as exc:
            return json_error(409, str(exc))
        return JSONResponse({"answered": done, "total": total}, status_code=201,
                            headers=_HEADERS)

    @router.get("/admin/{token}", name="study_admin")
    def admin_page(request: Request, token: str) -> Response:
        if not admin(token):
            return forbidden(request)
        return page(request, "study_results.html", results=summarise(store), token=token)

    @router.get("/admin/{token}/results.json")
    def admin_json(token: str) -> Response:
        if not admin(token):
            return json_error(403, "wrong admin token")
        return JSONResponse(summarise(store).as_json(), headers=_HEADERS)

    @router.get("/admin/{token}/responses.csv")
    def admin_csv(token: str) -> Response:
        if not admin(token):
            return PlainTextResponse("wrong admin token\n", status_code=403, headers=_HEADERS)
        return Response(csv_text(store), media_type="text/csv; charset=utf-8",
                        headers={**_HEADERS, "Content-Disposition":
                                 'attachment; filename="responses.csv"'})

    return router
