"""The local executor: read/decode -> batch by key -> compute -> write, overlapped.

>>> report = run(paths, load=read_image, compute=explain_batch, write=save,
...              key=lambda x: tuple(x.shape), batch_size=16)

- ``load(item)`` runs in a small thread pool, at most ``prefetch`` items ahead of compute;
- ``compute(items, loaded)`` runs on the caller's thread over batches of up to ``batch_size``
  items whose loaded values have equal ``key(loaded)`` (e.g. the image shape, so they stack);
  it returns one result per item;
- ``write(item, result)`` runs on ``writers`` threads (default one), fed by a queue of at
  most ``write_queue`` results in the order compute produced them; with one writer the writes
  keep that order, with more they overlap (for writes that may finish out of order, such as
  files of their own, whose encoding releases the GIL).

Batches: an item joins the open batch of its key; a batch is computed when it is full, when
more than ``2 * batch_size`` loaded items wait in open batches (the oldest batch goes first),
or at the end (in order of their first item). Items of one key therefore keep their order,
and a run of equal keys is cut into consecutive batches exactly as a plain loop would.

Failures: an exception of one of the ``failures`` kinds (by default camlens's
:class:`~camlens.io.ImageError`, :class:`~camlens.errors.DataError` and
:class:`~camlens.errors.ExplainError`) is recorded for its item in the :class:`Report` and the
item is skipped; when a batch's compute raises one, each item of the batch is computed alone so
only the culprits are skipped. Any other exception (a bug, ``KeyboardInterrupt``) stops the
run: no new item is loaded, results already computed are still written, the threads are
joined, and the exception propagates.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from camlens.errors import DataError, ExplainError
from camlens.io import ImageError

T = TypeVar("T")  # an item, as the caller names it (a path, an index)
L = TypeVar("L")  # what load makes of it (a decoded image)
R = TypeVar("R")  # what compute makes of it (an explanation, rows)

Stage = Literal["load", "compute", "write"]

ITEM_FAILURES: tuple[type[BaseException], ...] = (ImageError, DataError, ExplainError)
"""The exceptions that skip one item instead of stopping the run."""


class Progress(Protocol):
    """What :func:`run` needs of a progress display (a tqdm bar has it)."""

    def update(self, n: int = 1) -> Any: ...


@dataclass(frozen=True)
class Failure(Generic[T]):
    """An item that was skipped: where it failed and why."""

    item: T
    stage: Stage
    error: BaseException

    def __str__(self) -> str:
        return f"{self.item} ({self.stage}): {self.error}"


@dataclass(frozen=True)
class Report(Generic[T]):
    """What a run did: ``done`` items went all the way through; ``failures`` were skipped."""

    done: int
    failures: tuple[Failure[T], ...]
    seconds: float


_STOP = object()


class _Writers:
    """``n`` threads calling ``write`` on each queued (item, result) until _STOP. After a fatal
    error in any of them they keep taking (and dropping) items, so a producer never blocks on a
    full queue."""

    def __init__(self, n: int, write: Callable[[Any, Any], None], size: int,
                 failures: tuple[type[BaseException], ...],
                 skip: Callable[[Any, Stage, BaseException], None],
                 tick: Callable[[], None]) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=size)
        self.write, self.failures, self.skip, self.tick = write, failures, skip, tick
        self.done = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, name=f"camlens-writer_{i}",
                                          daemon=True) for i in range(n)]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while True:
            job = self.queue.get()
            if job is _STOP:
                return
            if self.error is not None:
                continue
            item, result = job
            try:
                try:
                    self.write(item, result)
                except self.failures as err:
                    self.skip(item, "write", err)
                    continue
                with self._lock:
                    self.done += 1
                self.tick()
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                with self._lock:
                    self.error = self.error or err

    def close(self) -> None:
        """Let the queued writes finish, then end the threads."""
        for _ in self._threads:
            self.queue.put(_STOP)
        for thread in self._threads:
            thread.join()


def run(
    items: Iterable[T],
    load: Callable[[T], L],
    compute: Callable[[list[T], list[L]], Sequence[R]],
    write: Callable[[T, R], None] | None = None,
    *,
    key: Callable[[L], Hashable] | None = None,
    batch_size: int = 16,
    loaders: int = 2,
    prefetch: int | None = None,
    write_queue: int | None = None,
    writers: int = 1,
    failures: tuple[type[BaseException], ...] = ITEM_FAILURES,
    progress: Progress | None = None,
    on_failure: Callable[[Failure[T]], None] | None = None,
) -> Report[T]:
    """Run every item through ``load``, batched ``compute`` and ``write`` (see the module
    docstring). ``loaders=0`` loads on the caller's thread; ``prefetch`` (default
    ``2 * batch_size``) bounds the loaded items waiting for compute, ``write_queue`` (default
    ``2 * batch_size``) the results waiting for the writers. ``progress.update(1)`` is called
    once per item, done or failed. ``on_failure(failure)`` is called as each item is skipped,
    from the thread where it failed (the caller's, or a writer's for a write), inside the
    ``except`` block that caught the error, one call at a time. Without ``write`` the results
    are dropped after compute (``compute`` has done the work)."""
    if batch_size < 1 or loaders < 0 or writers < 1:
        raise ValueError("batch_size and writers must be >= 1 and loaders >= 0, got "
                         f"{batch_size}, {writers}, {loaders}")
    ahead = max(1, prefetch if prefetch is not None else 2 * batch_size)
    t0 = time.perf_counter()
    lock = threading.Lock()  # the writer threads report too
    failed: list[Failure[T]] = []

    def tick() -> None:
        if progress is not None:
            with lock:
                progress.update(1)

    def skip(item: T, stage: Stage, err: BaseException) -> None:
        failure = Failure(item, stage, err)
        with lock:
            failed.append(failure)
            if on_failure is not None:
                on_failure(failure)
        tick()

    pool = ThreadPoolExecutor(loaders, thread_name_prefix="camlens-load") if loaders else None
    writer = None
    if write is not None:
        writer = _Writers(writers, write, max(1, write_queue or 2 * batch_size), failures, skip,
                          tick)
    computed = 0
    window: deque[tuple[T, Future[L]]] = deque()
    source = iter(items)
    try:
        def fill() -> None:
            while len(window) < ahead:
                try:
                    item = next(source)
                except StopIteration:
                    return
                window.append((item, _submit(pool, load, item)))

        def emit(group: list[tuple[T, L]]) -> None:
            nonlocal computed
            for item, result in _compute(group, compute, failures, skip):
                computed += 1
                if writer is None:
                    tick()
                    continue
                writer.queue.put((item, result))
                if writer.error is not None:
                    raise writer.error

        groups: OrderedDict[Hashable, list[tuple[T, L]]] = OrderedDict()
        waiting = 0
        fill()
        while window:
            item, future = window.popleft()
            try:
                loaded = future.result()
            except failures as err:
                skip(item, "load", err)
                fill()
                continue
            fill()
            k = key(loaded) if key is not None else None
            groups.setdefault(k, []).append((item, loaded))
            waiting += 1
            if len(groups[k]) >= batch_size:
                waiting -= len(groups[k])
                emit(groups.pop(k))
            while waiting > 2 * batch_size:
                _, oldest = groups.popitem(last=False)
                waiting -= len(oldest)
                emit(oldest)
        while groups:
            emit(groups.popitem(last=False)[1])
    finally:
        for _, future in window:
            future.cancel()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if writer is not None:
            writer.close()
    if writer is not None and writer.error is not None:
        raise writer.error
    done = writer.done if writer is not None else computed
    return Report(done, tuple(failed), time.perf_counter() - t0)


def _submit(pool: ThreadPoolExecutor | None, load: Callable[[T], L], item: T) -> Future[L]:
    if pool is not None:
        return pool.submit(load, item)
    future: Future[L] = Future()  # load now, on this thread; its exception waits in the future
    try:
        future.set_result(load(item))
    except BaseException as err:  # noqa: BLE001 - re-raised by future.result()
        future.set_exception(err)
    return future


def _compute(group: list[tuple[T, L]], compute: Callable[[list[T], list[L]], Sequence[R]],
             failures: tuple[type[BaseException], ...],
             skip: Callable[[T, Stage, BaseException], None]) -> list[tuple[T, R]]:
    """(item, result) pairs of one batch; on an item failure, each item is retried alone."""
    items = [item for item, _ in group]
    try:
        results = compute(items, [loaded for _, loaded in group])
    except failures as err:
        if len(group) == 1:
            skip(items[0], "compute", err)
            return []
        out: list[tuple[T, R]] = []
        for one in group:
            out += _compute([one], compute, failures, skip)
        return out
    if len(results) != len(items):
        raise ValueError(f"compute returned {len(results)} results for {len(items)} items")
    return list(zip(items, results))
