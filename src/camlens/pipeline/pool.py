"""A warm pool of Ray actors: each actor builds its state once (loads the model) when the pool
starts, and the pool keeps the actors between calls until it is closed.

Why: an actor's start-up (a new Python process importing torch and camlens, then loading the
model; seconds) is a fixed cost of every Ray run. A pool started before the driver does its own
start-up work (checking the model, listing the images) overlaps the two, and a pool kept
between calls pays it once. While the actors start, the driver can explain batches itself
(``local``): the same batch function on the driver's copy of the model, so a short run does not
wait idle for the actors.

One call (:meth:`ActorPool.map`) hands the batches out from one queue, in order: each ready
actor has up to ``in_flight`` batches queued (so it never waits for the driver between two),
but only one once no more batches are left than actors (so that at the end no actor holds two
while another has none); the driver takes the next batch itself only while some actor is still
starting. Every batch is computed once (an index is taken from the queue
once) and the results come back in the order of the batches. Ray restarts an actor whose
process dies and retries the calls it held (``max_restarts=-1``, ``max_task_retries=-1``, as
Ray Data's actor pools do); an actor whose constructor raised ends the call with a
:class:`~camlens.pipeline.distributed.RayError` naming the cause.

>>> make = functools.partial(load_model, "efficientnet_lite0")
>>> with ActorPool(make, RayOptions(actors=2)) as pool:      # the actors start here
...     for out, node, pid in pool.map(fn, batches): ...   # fn(model, batch) runs in an actor
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

from camlens.pipeline.distributed import RayError, RayOptions, check_fits, require_ray

__all__ = ["ActorPool", "Member"]

S = TypeVar("S")
B = TypeVar("B")
R = TypeVar("R")


class Member:
    """One actor of the pool: ``make()`` once, then ``run(fn, batch)`` = ``fn(state, batch)``
    for each batch it is given; torch in the actor uses ``threads`` threads."""

    def __init__(self, make: Callable[[], Any], threads: int) -> None:
        import ray
        import torch

        torch.set_num_threads(threads)
        self.state = make()
        self.node = ray.get_runtime_context().get_node_id()
        self.pid = os.getpid()

    def where(self) -> tuple[str, int]:
        """(node id, process id): answered once the constructor is done."""
        return self.node, self.pid

    def run(self, fn: Callable[[Any, Any], Any], batch: Any) -> tuple[Any, str, int]:
        return fn(self.state, batch), self.node, self.pid


class ActorPool(Generic[S]):
    """``options.actors`` actors, each holding ``make()`` (built once, in the actor), started
    at once; :meth:`map` runs calls on them, :meth:`close` (or leaving the ``with`` block) ends
    them. A pool larger than the cluster is refused (it would wait for ever)."""

    def __init__(self, make: Callable[[], S], options: RayOptions, *,
                 in_flight: int = 2) -> None:
        ray = require_ray(data=False)
        check_fits(options)
        remote = ray.remote(num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor,
                            max_restarts=-1, max_task_retries=-1)(Member)
        threads = max(1, int(options.cpus_per_actor))
        self.actors: list[Any] = [remote.remote(make, threads) for _ in range(options.actors)]
        self._starting: dict[Any, int] = {a.where.remote(): i for i, a in enumerate(self.actors)}
        self.ready: dict[int, tuple[str, int]] = {}
        """actor index -> (node id, pid) of each actor whose constructor is done"""
        self.in_flight = in_flight
        self.closed = False

    def __enter__(self) -> ActorPool[S]:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """End the actors (their CPUs and GPUs return to the cluster); idempotent."""
        if self.closed:
            return
        self.closed = True
        ray = require_ray(data=False)
        for actor in self.actors:
            ray.kill(actor, no_restart=True)

    def wait(self) -> dict[int, tuple[str, int]]:
        """Block until every actor has started (its model loaded); returns :attr:`ready`. An
        actor that could not start raises :class:`~camlens.pipeline.distributed.RayError`."""
        for ref in list(self._starting):
            self._started(ref)
        return dict(self.ready)

    def _started(self, ref: Any) -> None:
        ray = require_ray(data=False)
        i = self._starting.pop(ref)
        try:
            self.ready[i] = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            raise RayError(f"a Ray actor could not start: {_cause(exc)}") from None

    def map(self, fn: Callable[[S, B], R], batches: Sequence[B],
            local: Callable[[B], R] | None = None) -> Iterator[tuple[R, str, int]]:
        """``(fn(state, batch), node id, pid)`` for each of ``batches``, in their order, each
        computed once by one actor; ``local(batch)``, when given, computes batches on the
        driver while some actor is still starting (node and pid: the driver's)."""
        if self.closed:
            raise RayError("the actor pool is closed")
        ray = require_ray(data=False)
        todo = deque(range(len(batches)))
        results: dict[int, tuple[R, str, int]] = {}
        running: dict[Any, tuple[int, int]] = {}  # call -> (actor, batch)
        load = [0] * len(self.actors)
        here = (ray.get_runtime_context().get_node_id(), os.getpid())
        nxt = 0
        while nxt < len(batches):
            if self._starting:  # which actors are up by now (without waiting)
                up, _ = ray.wait(list(self._starting), num_returns=len(self._starting),
                                 timeout=0)
                for ref in up:
                    self._started(ref)
            for i in self.ready:  # a second batch queued only while all have one to come
                while todo and (load[i] == 0 or (load[i] < self.in_flight
                                                 and len(todo) > len(self.ready))):
                    b = todo.popleft()
                    running[self.actors[i].run.remote(fn, batches[b])] = (i, b)
                    load[i] += 1
            share = local is not None and bool(todo) and len(self.ready) < len(self.actors)
            if share:
                assert local is not None
                b = todo.popleft()
                results[b] = (local(batches[b]), *here)
            waiting = [*running, *self._starting]
            if waiting:
                done, _ = ray.wait(waiting, num_returns=1, timeout=0 if share else None)
                for ref in done:
                    if ref in self._starting:
                        self._started(ref)
                        continue
                    i, b = running.pop(ref)
                    load[i] -= 1
                    try:
                        results[b] = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:  # killed for good: not retried
                        raise RayError(f"a Ray actor died: {_cause(exc)}") from None
            while nxt in results:
                yield results.pop(nxt)
                nxt += 1


def _cause(exc: BaseException) -> str:
    """The first line that says why, of a Ray error's long text."""
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    for line in reversed(lines):
        if "Error" in line and not line.startswith(("File ", "Traceback")):
            return line[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]
