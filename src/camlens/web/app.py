"""The ASGI app behind ``camlens serve``: :func:`create_app`.

Routes (every page server-rendered with Jinja2, every asset shipped in the package):

* ``GET /``: the explain page (upload a photo or pick a bundled sample, classes, methods);
* ``POST /explain``: the page's form; 303 to the result page, or the page again with the error;
* ``GET /results/{id}``: top-5 predictions, Figure 1, each map over the photo with an opacity
  slider, the textual explanation (Sec. 7) of each class explained with Grad-CAM when the
  model's units have names (else a line that says why not), the downloads;
* ``GET /results/{id}/files/{name}``: maps.npz, explanation.json, the PNGs;
* ``POST /api/explain``: the same form, answered with explanation.json's content (OpenAPI at
  ``/api/openapi.json``);
* ``GET /api/health``: the work queue's state;
* ``/static/...``: the CSS and script; ``/study/...`` when a study database is given.

Errors: a bad request is a 4xx with a one-line message (a page for pages, ``{"detail": ...}``
for ``/api``); an unexpected error is logged with its traceback and answered with a generic
500 that shows no detail.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from camlens import io as cio
from camlens.dissect import TextPlan, text_plan
from camlens.errors import ExplainError, LayerError
from camlens.loading import CliError
from camlens.methods import FIGURE1, METHODS
from camlens.models import ModelRecord, load_model
from camlens.targets import class_index
from camlens.web.engine import (
    HEAT_PREFIX,
    PHOTO,
    Busy,
    Engine,
    Job,
    Result,
    TooLarge,
    Unusable,
    remove_upload,
    save_upload,
)
from camlens.web.templating import STATIC, templates

__all__ = ["ExplanationRecord", "create_app", "WEB_METHODS"]

log = logging.getLogger("camlens.web")

SLOW_METHODS = frozenset({"scorecam", "ablationcam", "occlusion"})
"""Methods that need one forward pass per channel or window: minutes per photo on a CPU, too
slow for a shared server (``camlens explain`` runs them)."""

WEB_METHODS = tuple(m for m in FIGURE1) + tuple(
    sorted(m for m in METHODS if m not in FIGURE1 and m not in SLOW_METHODS))
"""The methods the web app offers: Figure 1's first, then the others but the slow ones."""

MAX_TARGETS = 3
MAX_TOP_K = 3
PREDICTIONS = 5
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
FORM_OVERHEAD = 64 * 1024
"""Bytes a request may have beyond the upload: the form's other fields and boundaries."""
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


# the form of POST /explain and POST /api/explain (module level: FastAPI reads the
# annotations)
FORM_LIMITS: Any = {"max_files": 1, "max_fields": 20, "max_part_size": 16 * 1024}
"""FastAPI's form_limits (a TypedDict it keeps private): one file, a few short fields."""
File_ = Annotated[UploadFile | None, File(description="the photo (JPEG, PNG, GIF, BMP, "
                                                      "TIFF or WebP)")]
Sample = Annotated[str | None, Form(description="a bundled sample instead of a file: "
                                                + ", ".join(cio.SAMPLE_IMAGES))]
Methods = Annotated[list[str] | None, Form(description="repeatable; default Figure 1's: "
                                                       + ", ".join(FIGURE1))]
Targets = Annotated[list[str] | None, Form(description=f"repeatable, at most {MAX_TARGETS}:"
                                                       " a class index or name; default "
                                                       "the top_k predicted classes")]
TopK = Annotated[int, Form(description="classes explained when no target is given")]


class Target(BaseModel):
    index: int
    name: str
    probability: float | None = None


class Prediction(BaseModel):
    rank: int
    index: int
    name: str
    probability: float


class Size(BaseModel):
    height: int
    width: int


class Unit(BaseModel):
    """One unit of a textual explanation: its neuron importance alpha_k^c (Eq. 1) and its name
    from the dissection (null: unnamed, or no dissection)."""

    unit: int
    alpha: float
    concept: str | None
    category: str | None
    iou: float | None


class TextRecord(BaseModel):
    """Sec. 7's sentence for one class (:meth:`camlens.dissect.TextualExplanation.to_dict`);
    ``names_missing`` says why the units have no names (no dissection of this model)."""

    index: int
    name: str
    predicted: bool
    sentence: str
    evidence_for: list[Unit]
    evidence_against: list[Unit]
    names_missing: str | None = None


class DissectionInfo(BaseModel):
    """The dissection that named the units."""

    model: str
    layer: str
    data: str
    min_iou: float
    quantile: float


class ExplanationRecord(BaseModel):
    """explanation.json as ``camlens explain`` writes it (:func:`camlens.output.save` with the
    pipeline's record), plus ``result_id``: the files are at
    ``/results/{result_id}/files/{name}`` for each name in ``files`` (maps.npz: "<method>/<class>"
    -> float16 maps in [0, 1] at ``output_size``). With gradcam among the methods it has
    ``textual_explanations`` as ``camlens explain --text`` writes them, and ``dissection``
    when the units have names."""

    model_config = ConfigDict(extra="allow")

    camlens_version: str
    methods: list[str]
    options: dict[str, dict[str, Any]]
    layers: list[str]
    targets: list[Target]
    output_size: Size
    maps_dtype: str
    maps: list[str]
    empty_maps: list[str]
    image: str
    model: str
    layer: str | None
    model_input_size: Size
    original_size: Size
    predictions: list[Prediction]
    files: list[str]
    result_id: str
    textual_explanations: list[TextRecord] | None = None
    dissection: DissectionInfo | None = None


class Detail(BaseModel):
    """An error: one line that says what was wrong and what would be right."""

    detail: str


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class _Guard:
    """Around every request: a request body over ``limit`` bytes is refused with 413 (from its
    Content-Length before anything is read, else counted as it arrives), and every response
    gets :data:`SECURITY_HEADERS` (no inline script or style, no framing, no MIME sniffing)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        declared = int(length) if length.isdigit() else None
        received = 0

        def too_large(size: int) -> HTTPException:
            return HTTPException(413, f"the request has {'at least ' * (declared is None)}"
                                      f"{size} bytes, over the limit of {self.limit}: send an "
                                      f"image of at most {self.limit // 2**20 or 1} MB")

        async def limited() -> Message:
            nonlocal received
            if declared is not None and declared > self.limit:
                raise too_large(declared)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise too_large(received)
            return message

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, limited, with_headers)


def _resolve_model(model: str | ModelRecord | None) -> ModelRecord:
    return model if isinstance(model, ModelRecord) else load_model(model)


def _text_plan(loaded: ModelRecord, dissection: str | Path | None) -> TextPlan | None:
    """:func:`camlens.dissect.text_plan` for the model's Grad-CAM layer (None: it has none); a
    given file must name as many units as the layer has channels (one explanation of a black
    image counts them)."""
    layer = loaded.default_layer
    if layer is None:
        if dissection is not None:
            raise LayerError(f"--dissection {dissection}: {loaded.name} has no default layer, "
                             "so Grad-CAM and its textual explanation cannot run")
        return None
    plan = text_plan(loaded.name, layer, dissection)
    if dissection is not None:
        import camlens

        side = loaded.side()
        x = loaded.preprocess(Image.new("RGB", (side, side)))[None]
        weights = camlens.explain(loaded.model, x, method="gradcam", layer=layer,
                                  top_k=1).weights
        assert weights is not None
        plan.explain(weights[0, 0], 0, "probe")  # LayerError when the unit counts differ
    return plan


def create_app(model: str | ModelRecord | None = None, *, db: Path | None = None,
               dissection: str | Path | None = None, workers: int = 2, queue: int = 8,
               max_upload: int = DEFAULT_MAX_UPLOAD, max_pixels: int = 40_000_000,
               keep: int = 64) -> FastAPI:
    """The web app explaining photos with ``model`` (a :func:`camlens.models.load_model` spec
    or record; default the bundled EfficientNet-Lite0). ``db``: a study database, whose pages
    (:mod:`camlens.study.web`) are mounted under ``/study``. ``dissection``: the
    dissection.json naming the units of the model's Grad-CAM layer (default: the shipped one
    of a world v2 net; :func:`camlens.dissect.text_plan`), for Sec. 7's textual explanation.
    ``workers`` threads explain, at most ``queue`` requests wait (more get 429), uploads over
    ``max_upload`` bytes get 413, images over ``max_pixels`` pixels 422; the newest ``keep``
    results are kept. A bad ``dissection`` raises :class:`~camlens.errors.DataError` or
    :class:`~camlens.errors.LayerError`."""
    loaded = _resolve_model(model)
    if max_upload < 1:
        raise ValueError(f"max_upload must be >= 1 byte, got {max_upload}")
    text = _text_plan(loaded, dissection)
    engine = Engine(loaded, workers=workers, queue=queue, max_pixels=max_pixels, keep=keep,
                    text=text)
    study_router = _study_router(db) if db is not None else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            engine.close()

    app = FastAPI(title="camlens", version=_version(), lifespan=lifespan,
                  description="Grad-CAM and its family: explain a photo's prediction.",
                  docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.engine = engine
    app.state.study_enabled = study_router is not None
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(_Guard, limit=max_upload + FORM_OVERHEAD)
    samples = _available_samples()
    labels = loaded.labels
    no_layer = loaded.default_layer is None
    offered = [m for m in WEB_METHODS if not (no_layer and METHODS[m].needs_layer)]

    def page(request: Request, name: str, status: int = 200,
             headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
        return templates().TemplateResponse(request, name, context, status_code=status,
                                            headers=headers)

    def index_page(request: Request, status: int = 200, error: str | None = None,
                   headers: dict[str, str] | None = None,
                   chosen: Sequence[str] = FIGURE1) -> HTMLResponse:
        return page(request, "index.html", status, headers, error=error, samples=samples,
                    labels=labels, methods=[(m, METHODS[m].summary) for m in offered],
                    chosen=set(chosen), figure1=FIGURE1, model=loaded.name, max_targets=MAX_TARGETS,
                    max_top_k=MAX_TOP_K, max_upload_mb=f"{max_upload / 2**20:.3g}")

    def job_of(methods: list[str] | None, targets: list[str] | None, top_k: int) -> Job:
        chosen = list(dict.fromkeys(methods or FIGURE1))
        unknown = [m for m in chosen if m not in METHODS]
        if unknown:
            raise _BadRequest(400, f"unknown method(s) {', '.join(unknown)}; choose from "
                                   f"{', '.join(offered)}")
        slow = [m for m in chosen if m in SLOW_METHODS]
        if slow:
            raise _BadRequest(400, f"{', '.join(slow)} need(s) one forward pass per channel or "
                                   "window, too slow for this shared server; run `camlens "
                                   f"explain --method {slow[0]}` instead, or choose from "
                                   f"{', '.join(offered)}")
        if no_layer and any(METHODS[m].needs_layer for m in chosen):
            raise _BadRequest(400, f"{loaded.name} has no default layer, so only "
                                   f"{', '.join(offered)} can be drawn")
        texts = [t.strip() for t in targets or [] if t.strip()]
        if len(texts) > MAX_TARGETS:
            raise _BadRequest(400, f"{len(texts)} classes asked for; at most {MAX_TARGETS}")
        try:
            classes = list(dict.fromkeys(class_index(t, labels) for t in texts)) or None
        except ExplainError as exc:
            raise _BadRequest(400, f"class {exc}") from None
        if not 1 <= top_k <= MAX_TOP_K:
            raise _BadRequest(400, f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
        return Job(tuple(chosen), classes, min(top_k, len(labels)),
                   min(PREDICTIONS, len(labels)))

    async def explain(file: UploadFile | None, sample: str | None, methods: list[str] | None,
                      targets: list[str] | None, top_k: int) -> Result:
        """Check the request, take a place in the queue, store the upload, explain."""
        given = file is not None and bool(file.filename or file.size)
        name = (sample or "").strip()
        if given == bool(name):
            listing = ", ".join(samples) or "none installed"
            raise _BadRequest(400, (
                f"give a photo (file) or a bundled sample (sample: {listing}), not both"
                if given else "no photo: upload an image file (file) or pick a bundled "
                              f"sample (sample: {listing})"))
        job = job_of(methods, targets, top_k)
        photo: Path
        if not given:
            try:
                photo = cio.sample_image(name)
            except cio.ImageError as exc:
                raise _BadRequest(400, str(exc)) from None
            shown = f"sample:{name.lower().removeprefix('sample:')}"
        try:
            engine.reserve()
        except Busy as exc:
            raise _BadRequest(429, str(exc), {"Retry-After": str(exc.retry_after)}) from None
        if given:
            assert file is not None
            shown = cio.display_path(file.filename or "upload")
            photo = engine.upload_path(shown)
            try:
                save_upload(file.file, photo, max_upload)
            except TooLarge as exc:
                engine.release()
                remove_upload(photo)
                raise _BadRequest(413, f"{shown}: {exc}; send a smaller image") from None
            except BaseException:
                engine.release()
                remove_upload(photo)
                raise
        try:
            return await engine.run(photo, shown, job, uploaded=given)
        except Unusable as exc:
            raise _BadRequest(422, str(exc)) from None
        except ExplainError as exc:
            raise _BadRequest(400, str(exc)) from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request) -> HTMLResponse:
        return index_page(request)

    @app.post("/explain", include_in_schema=False, form_limits=FORM_LIMITS)
    async def explain_form(request: Request, file: File_ = None, sample: Sample = None,
                           method: Methods = None, target: Targets = None,
                           top_k: TopK = 1) -> Response:
        try:
            result = await explain(file, sample, method, target, top_k)
        except _BadRequest as exc:
            return index_page(request, exc.status, str(exc), exc.headers,
                              chosen=[m for m in method or FIGURE1 if m in METHODS])
        return RedirectResponse(f"/results/{result.id}", status_code=303)

    @app.post("/api/explain", response_model=None, form_limits=FORM_LIMITS,
              summary="Explain a photo",
              responses={200: {"model": ExplanationRecord},
                         **{s: {"model": Detail} for s in (400, 404, 413, 422, 429)}})
    async def api_explain(file: File_ = None, sample: Sample = None,
                          method: Methods = None, target: Targets = None,
                          top_k: TopK = 1) -> JSONResponse:
        """Explain an uploaded photo (``file``) or a bundled ``sample`` with the chosen methods
        and classes; the body is the result's explanation.json (``camlens explain``'s schema,
        plus ``result_id``). 400: a bad parameter; 413: too large; 422: not a usable image;
        429: busy (see Retry-After)."""
        try:
            result = await explain(file, sample, method, target, top_k)
        except _BadRequest as exc:
            return JSONResponse({"detail": str(exc)}, exc.status, headers=exc.headers)
        return JSONResponse(result.record, headers={"Location": f"/results/{result.id}"})

    @app.get("/api/health", summary="The work queue's state")
    async def health() -> dict[str, Any]:
        """Jobs running or waiting, worker threads, queue places, mean seconds per job."""
        return {"status": "ok", "model": loaded.name, **engine.load()}

    @app.get("/results/{rid}", response_class=HTMLResponse, include_in_schema=False)
    async def result_page(request: Request, rid: str) -> HTMLResponse:
        result = _result(engine, rid)
        return page(request, "result.html", **_result_context(result, text))

    @app.get("/results/{rid}/files/{name}", include_in_schema=False)
    async def result_file(rid: str, name: str) -> FileResponse:
        path = engine.file(rid, name)
        if path is None:
            raise HTTPException(404, f"no file {name!r} in result {rid}; the result page "
                                     "lists its files")
        return FileResponse(path, filename=name, content_disposition_type=(
            "inline" if name.endswith(".png") else "attachment"))

    if study_router is not None:
        app.include_router(study_router)
    _error_handlers(app)
    return app


def _result(engine: Engine, rid: str) -> Result:
    result = engine.result(rid)
    if result is None:
        raise HTTPException(404, f"no result {rid!r}: results are kept for the newest "
                                 f"{engine.keep} explanations only; explain the photo again")
    return result


def _text_note(record: dict[str, Any], text: TextPlan | None) -> str | None:
    """Why the result page shows no textual explanation (None: it shows one per class)."""
    if text is None:
        return (f"none: it reads Grad-CAM's neuron importances, and {record['model']} has no "
                "default Grad-CAM layer")
    if text.missing is not None:  # the JSON's names_missing says more
        return (f"not available: no dissection names the units of {record['model']}'s layer "
                f"{record['layer']} (camlens ships them for the world v2 nets only; `camlens "
                "serve --dissection FILE` adds one)")
    if "textual_explanations" not in record:
        return "tick Grad-CAM to see it: it reads Grad-CAM's neuron importances (Eq. 1)"
    return None


def _result_context(result: Result, text: TextPlan | None) -> dict[str, Any]:
    """The result page's data: predictions, and per target one card per method and its
    textual explanation (or why there is none)."""
    record = result.record
    note = _text_note(record, text)
    sentences = {} if note else {t["index"]: t for t in record["textual_explanations"]}
    files = set(result.files())
    base = f"/results/{result.id}/files/"
    rows = []
    for target in record["targets"]:
        cards = []
        for m in record["methods"]:
            png = f"{m}_{target['index']}.png"
            heat = HEAT_PREFIX + png
            cards.append({"method": m, "title": METHODS[m].summary.split(":")[0] if m in METHODS
                          else m, "summary": METHODS[m].summary if m in METHODS else "",
                          "png": base + png if png in files else None,
                          "heat": base + heat if heat in files else None,
                          "empty": f"{m}/{target['index']}" in record["empty_maps"],
                          "counterfactual": m.startswith("counterfactual")})
        rows.append({"target": target, "cards": cards,
                     "text": sentences.get(target["index"])})
    downloads = [(n, base + n) for n in sorted(files - {PHOTO}) if not n.startswith(HEAT_PREFIX)]
    return {"record": record, "rows": rows, "photo": base + PHOTO, "rid": result.id,
            "text_note": note, "dissection": record.get("dissection"),
            "summary": base + "summary.png" if "summary.png" in files else None,
            "downloads": downloads}


def _error_handlers(app: FastAPI) -> None:
    def answer(request: Request, status: int, message: str,
               headers: Mapping[str, str] | None = None) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": message}, status, headers=headers)
        return templates().TemplateResponse(request, "error.html",
                                            {"status": status, "message": message},
                                            status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"no page {request.url.path}; the explain page is at /"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return answer(request, exc.status_code, message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        return answer(request, 422, "; ".join(problems))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return answer(request, 500, "internal error: the server could not answer this "
                                    "request; it is logged on the server")


def _study_router(db: Path) -> Any:
    """``camlens.study.web.make_router(db)``: the human-study pages, under /study."""
    try:
        from camlens.study.web import make_router
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("camlens.study"):
            raise CliError(f"--db {cio.display_path(db)}: this camlens has no human studies "
                           "(camlens.study is missing); serve without --db") from None
        raise
    return make_router(db)


def _available_samples() -> list[str]:
    out = []
    for name in sorted(cio.SAMPLE_IMAGES):
        try:
            cio.sample_image(name)
        except cio.ImageError:
            continue
        out.append(name)
    return out


def _version() -> str:
    import camlens

    return camlens.__version__
