"""The web app's work: one bounded queue of explanations shared by every request, and the
results it keeps (on disk, in a temporary folder, the newest ``keep`` of them).

An explanation is CPU-heavy (one forward and a few backward passes per photo), so a fixed
number of worker threads run them; at most ``queue`` more wait. A request that finds every
place taken gets :class:`Busy` (HTTP 429 with Retry-After) at once, so the backlog, and the
memory it holds, stays bounded: a waiting request holds only its uploaded file, on disk; a
running one at most one decoded photo (``max_pixels``) and the model's input (capped like the
CLI's). Each explanation is :func:`camlens.pipeline.images.explain_one`: the same decoding,
bounded model input, explanation and folder (:mod:`camlens.output`) as ``camlens explain``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from camlens import io as cio
from camlens import output, viz
from camlens.cli.options import MIN_MAX_OUTPUT_SIDE
from camlens.models import ModelRecord
from camlens.pipeline.decoding import Decoders
from camlens.pipeline.images import Item, Plan, Skipped, Source, explain_one

if TYPE_CHECKING:  # pragma: no cover
    from camlens.dissect import TextPlan

__all__ = ["Busy", "Engine", "Job", "Result", "TooLarge", "Unusable", "remove_upload",
           "save_upload"]

PHOTO = "photo.png"
"""The photo at the output size, re-encoded (the upload itself is never served)."""

HEAT_PREFIX = "heat_"
"""heat_<method>_<class>.png: a heatmap in its colormap alone, laid over photo.png in the page
with an opacity slider (CSS opacity a gives (1 - a) photo + a colour: viz.overlay's blend)."""

_RESULT_ID = re.compile(r"^[A-Za-z0-9_-]{16}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,200}$")
_COPY_CHUNK = 1 << 20


class Busy(Exception):
    """Every worker is busy and the queue is full: try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy (every worker and queue place is taken); try "
                         f"again in {retry_after} s")
        self.retry_after = retry_after


class TooLarge(Exception):
    """An upload over the size limit."""


class Unusable(Exception):
    """The photo cannot be explained (not an image, truncated, too many pixels, refused by the
    model, non-finite scores); the message says why, naming the photo as the user did."""


@dataclass(frozen=True)
class Job:
    """What to explain in one photo."""

    methods: tuple[str, ...]
    targets: list[int] | None
    """class indices; None: the top ``top_k`` classes"""
    top_k: int = 1
    predictions: int = 5
    """top predictions listed"""


@dataclass(frozen=True)
class Result:
    """One explained photo: its id, folder and explanation.json."""

    id: str
    folder: Path
    record: dict[str, Any]

    def files(self) -> list[str]:
        """The names that may be downloaded: what :func:`camlens.output.save` wrote, the
        re-encoded photo and the heatmaps alone."""
        return sorted(set(self.record["files"]) | {output.JSON, PHOTO}
                      | {p.name for p in self.folder.glob(f"{HEAT_PREFIX}*.png")})


class Engine:
    """The worker threads, their bounded queue and the kept results (see the module
    docstring). :meth:`start` and :meth:`close` bracket its life (the app's lifespan).
    ``text``: Sec. 7's textual explanation for each class of a job with gradcam among its
    methods (as ``camlens explain --text``)."""

    def __init__(self, loaded: ModelRecord, *, workers: int = 2, queue: int = 8,
                 max_pixels: int = 40_000_000, keep: int = 64,
                 max_output_side: int | None = None, text: TextPlan | None = None) -> None:
        if workers < 1 or queue < 0 or keep < 1 or max_pixels < 1:
            raise ValueError(f"workers and keep must be >= 1, queue >= 0, max_pixels >= 1; "
                             f"got {workers}, {keep}, {queue}, {max_pixels}")
        self.loaded = loaded
        self.workers = workers
        self.queue = queue
        self.keep = keep
        self.text = text
        self.max_output_side = max_output_side or max(MIN_MAX_OUTPUT_SIDE,
                                                      2 * loaded.side())
        self.decoders = Decoders(max_pixels)
        self._slots = threading.BoundedSemaphore(workers + queue)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._results: OrderedDict[str, Result] = OrderedDict()
        self._pending = 0
        self._seconds = 2.0  # running mean of a job's time, for Retry-After
        self._root: Path | None = None

    # -- life --------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the temporary folder and the worker threads; route decoder warnings."""
        self._root = Path(tempfile.mkdtemp(prefix="camlens-web-"))
        (self._root / "uploads").mkdir()
        (self._root / "results").mkdir()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="camlens-web")
        self.decoders.__enter__()

    def close(self) -> None:
        """Finish the running jobs, then remove the temporary folder and every result."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self.decoders.__exit__(None, None, None)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        with self._lock:
            self._results.clear()

    @property
    def root(self) -> Path:
        if self._root is None:
            raise RuntimeError("the engine is not started (Engine.start, the app's lifespan)")
        return self._root

    # -- the queue ---------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """Jobs running or waiting, places, and the mean seconds per job."""
        with self._lock:
            return {"pending": self._pending, "workers": self.workers,
                    "queue": self.queue, "seconds_per_job": round(self._seconds, 3)}

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the mean job time times the jobs per worker
        ahead, at least 1."""
        with self._lock:
            return max(1, math.ceil(self._seconds * max(1, self._pending) / self.workers))

    def reserve(self) -> None:
        """Take a place in the queue or raise :class:`Busy`; :meth:`run` gives it back."""
        if not self._slots.acquire(blocking=False):
            raise Busy(self.retry_after())
        with self._lock:
            self._pending += 1

    def release(self) -> None:
        """Give back a place taken by :meth:`reserve` without running a job."""
        with self._lock:
            self._pending -= 1
        self._slots.release()

    def upload_path(self, name: str) -> Path:
        """A fresh path for an uploaded file, in a folder of its own under the temporary
        folder (named by ``name``'s safe stem, so messages name the photo as the user did)."""
        folder = Path(tempfile.mkdtemp(dir=self.root / "uploads"))
        return folder / (cio.safe_stem(name) or "upload")

    async def run(self, photo: Path, shown: str, job: Job, *, uploaded: bool) -> Result:
        """Explain ``photo`` (named ``shown`` to the user) on a worker thread, holding the place
        taken by :meth:`reserve`; an uploaded photo is deleted afterwards."""
        if self._pool is None:
            self.release()
            raise RuntimeError("the engine is not started (Engine.start, the app's lifespan)")
        try:
            future = self._pool.submit(self._explain, photo, shown, job)
        except BaseException:
            self.release()
            if uploaded:
                remove_upload(photo)
            raise

        def done(_: object) -> None:
            if uploaded:
                remove_upload(photo)
            self.release()

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    # -- one job, on a worker thread ---------------------------------------------------------

    def _explain(self, photo: Path, shown: str, job: Job) -> Result:
        start = time.perf_counter()
        rid = secrets.token_urlsafe(12)
        plan = Plan(self.loaded, job.methods, self.loaded.default_layer, None, job.targets,
                    job.top_k, self.root / "results", self.max_output_side,
                    predictions=job.predictions,
                    text=self.text if "gradcam" in job.methods else None)
        folder = plan.out / rid
        try:
            item, _ = explain_one(Source(photo, rid), plan, self.decoders, _Quiet())
            record = self._finish(folder, item, shown, rid)
        except Skipped as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise Unusable(str(exc).replace(cio.display_path(photo), shown)) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        result = Result(rid, folder, record)
        with self._lock:
            self._results[rid] = result
            old = [self._results.popitem(last=False)[1]
                   for _ in range(len(self._results) - self.keep)]
            self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - start)
        for gone in old:
            shutil.rmtree(gone.folder, ignore_errors=True)
        return result

    def _finish(self, folder: Path, item: Item, shown: str, rid: str) -> dict[str, Any]:
        """The web's files beside the CLI's: photo.png, one heat_*.png per heatmap; and the
        photo's name as the user gave it in explanation.json."""
        saved = output.load(folder)
        _write_png(folder / PHOTO, np.asarray(item.image))
        for key, m in saved.maps.items():
            if m.ndim == 2:
                heat = viz.apply_colormap(m)
                _write_png(folder / (HEAT_PREFIX + output.png_name(key)), heat)
        record = dict(saved.record)
        record["image"] = shown
        record["result_id"] = rid
        text = json.dumps(record, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        cio.atomic_write_bytes(folder / output.JSON, text.encode("utf-8"))
        return record

    # -- results -----------------------------------------------------------------------------

    def result(self, rid: str) -> Result | None:
        """The kept result ``rid``; None when unknown or dropped (only the newest ``keep``
        are kept)."""
        if not _RESULT_ID.match(rid):
            return None
        with self._lock:
            return self._results.get(rid)

    def file(self, rid: str, name: str) -> Path | None:
        """The path of file ``name`` of result ``rid`` (one of :meth:`Result.files`); None
        when there is no such file."""
        result = self.result(rid)
        if result is None or not _FILE_NAME.match(name) or name not in result.files():
            return None
        path = result.folder / name
        return path if path.is_file() and cio.is_inside(path, result.folder) else None


def save_upload(source: BinaryIO, path: Path, limit: int) -> int:
    """Copy an uploaded file to ``path`` (a fresh file, never followed through a link), at most
    ``limit`` bytes; returns the size. More raises :class:`TooLarge`."""
    size = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with open(os.open(path, flags, 0o600), "wb") as fh:
        while chunk := source.read(_COPY_CHUNK):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the file is larger than the limit of {limit} bytes")
            fh.write(chunk)
    return size


def remove_upload(path: Path) -> None:
    """Delete an uploaded file and its folder."""
    shutil.rmtree(path.parent, ignore_errors=True)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    cio.atomic_write_bytes(path, cio.png_bytes(rgb))


class _Quiet:
    """The pipeline's reporter: the web app reports through the result instead."""

    def failed(self, message: str) -> None:
        """Failures come back as :class:`Skipped`."""

    def warn(self, message: str) -> None:
        """Decoder notes are not shown."""

    def explained(self, item: Source, folder: Path,
                  predictions: list[tuple[int, float]]) -> None:
        """The result carries the predictions."""

