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

Kept actors (``RayOptions.keep`` > 0 seconds, on a cluster that outlives the command): the
actors are named after what they hold (:func:`pool_key`: ``make``, the files it names, the
resources, this camlens's source) and detached, so they outlive the pool; the next pool with
the same key, in this process or another one, finds them already started. An actor idle for
``keep`` seconds ends itself (it checks in its own call queue, so a call that came first runs
first); a pool that finds one ending, before or during a call, starts it again and hands
its batches out again.

>>> make = functools.partial(load_model, "efficientnet_lite0")
>>> with ActorPool(make, RayOptions(actors=2)) as pool:      # the actors start here
...     for out, node, pid in pool.map(fn, batches): ...   # fn(model, batch) runs in an actor
>>> ActorPool(make, RayOptions(actors=2, keep=600))   # the next command's pool reuses them
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

from camlens.pipeline.distributed import RayError, RayOptions, check_fits, require_ray

__all__ = ["NAMESPACE", "ActorPool", "Member", "end_kept", "pool_key"]

NAMESPACE = "camlens"
"""The Ray namespace of kept actors (named ``camlens-pool-<key>-<i>``)."""

S = TypeVar("S")
B = TypeVar("B")
R = TypeVar("R")


class Member:
    """One actor of the pool: ``make()`` once, then ``run(fn, batch)`` = ``fn(state, batch)``
    for each batch it is given; torch in the actor uses ``threads`` threads. With ``keep`` >
    0 it ends itself once no call came for ``keep`` seconds."""

    def __init__(self, make: Callable[[], Any], threads: int, keep: float = 0.0) -> None:
        import ray
        import torch

        torch.set_num_threads(threads)
        self.state = make()
        self.node = ray.get_runtime_context().get_node_id()
        self.pid = os.getpid()
        self.keep = keep
        self.last = time.monotonic()
        if keep > 0:
            me = ray.get_runtime_context().current_actor
            threading.Thread(target=self._watch, args=(me,), daemon=True).start()

    def _watch(self, me: Any) -> None:
        """Ask the actor's own queue to end it once idle for ``keep`` s (calls queued before
        the request run first, and make it idle no longer)."""
        import ray

        while True:
            time.sleep(max(0.05, self.last + self.keep - time.monotonic()))
            if time.monotonic() - self.last >= self.keep:
                ray.get(me.end_if_idle.remote())

    def end_if_idle(self) -> bool:
        """End this actor for good if no call came for ``keep`` seconds (``ray.kill``
        without restart: ``exit_actor`` would count as a failure to restart from, with
        ``max_restarts=-1``); else False."""
        if time.monotonic() - self.last < self.keep:
            return False
        import ray

        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
        return True

    def where(self) -> tuple[str, int]:
        """(node id, process id): answered once the constructor is done."""
        self.last = time.monotonic()
        return self.node, self.pid

    def run(self, fn: Callable[[Any, Any], Any], batch: Any) -> tuple[Any, str, int]:
        try:
            return fn(self.state, batch), self.node, self.pid
        finally:
            self.last = time.monotonic()


def pool_key(make: Callable[[], Any], options: RayOptions) -> str:
    """What kept actors hold, as 16 hex digits: ``make`` (pickled), the size and time of
    each existing file its arguments name (a model file, weights), the resources of an actor,
    and the size and time of each file of this camlens (an actor runs the code it started
    with)."""
    import functools

    import ray.cloudpickle

    parts: list[Any] = [ray.cloudpickle.dumps(make), options.cpus_per_actor,
                        options.gpus_per_actor]
    args = [*make.args, *make.keywords.values()] if isinstance(make, functools.partial) else []
    for arg in args:
        if isinstance(arg, (str, os.PathLike)):
            path = os.fspath(arg).rpartition(":")[0] or os.fspath(arg)  # file.py:FACTORY
            for name in sorted({os.fspath(arg), path}):  # one order in every process
                if os.path.isfile(name):
                    st = os.stat(name)
                    parts.append((os.path.abspath(name), st.st_size, st.st_mtime_ns))
    source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for folder, _, files in sorted(os.walk(source)):
        for name in sorted(f for f in files if f.endswith(".py")):
            st = os.stat(os.path.join(folder, name))
            parts.append((folder, name, st.st_size, st.st_mtime_ns))
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def end_kept() -> int:
    """End every kept camlens actor of the connected cluster (their CPUs and GPUs return to
    it at once, not after their idle time); returns how many."""
    ray = require_ray(data=False)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == NAMESPACE and a["name"].startswith("camlens-pool-")]
    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:  # it ended meanwhile
            pass
    return len(names)


class ActorPool(Generic[S]):
    """``options.actors`` actors, each holding ``make()`` (built once, in the actor), started
    at once; :meth:`map` runs calls on them, :meth:`close` (or leaving the ``with`` block) ends
    them. A pool larger than the cluster is refused (it would wait for ever)."""

    def __init__(self, make: Callable[[], S], options: RayOptions, *,
                 in_flight: int = 2) -> None:
        ray = require_ray(data=False)
        check_fits(options)
        self._remote = ray.remote(num_cpus=options.cpus_per_actor,
                                  num_gpus=options.gpus_per_actor, max_restarts=-1,
                                  max_task_retries=-1)(Member)
        self._args = (make, max(1, int(options.cpus_per_actor)), options.keep)
        self.keep = options.keep
        self._names = ([f"camlens-pool-{pool_key(make, options)}-{i}"
                        for i in range(options.actors)] if self.keep > 0 else [])
        self._again: set[int] = set()  # kept actors started again once (found ending)
        self.actors: list[Any] = [self._start(i) for i in range(options.actors)]
        self._starting: dict[Any, int] = {a.where.remote(): i for i, a in enumerate(self.actors)}
        self.ready: dict[int, tuple[str, int]] = {}
        """actor index -> (node id, pid) of each actor whose constructor is done"""
        self.in_flight = in_flight
        self.closed = False

    def _start(self, i: int) -> Any:
        """Actor ``i``: a new one, or with ``keep`` the kept one of its name (started if
        there is none)."""
        if not self._names:
            return self._remote.remote(*self._args)
        return self._remote.options(name=self._names[i], namespace=NAMESPACE,
                                    lifetime="detached", get_if_exists=True).remote(*self._args)

    def __enter__(self) -> ActorPool[S]:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """End the actors (their CPUs and GPUs return to the cluster), or with ``keep`` leave
        them for the next pool (each ends itself after ``keep`` idle seconds); idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.keep > 0:
            return
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
            if self._names and i not in self._again:
                # a kept actor that ended itself (idle) just before this pool's first call
                # (or one that cannot start: it fails again, and that is the error)
                self._again.add(i)
                self.actors[i] = self._restart(i)
                self._starting[self.actors[i].where.remote()] = i
                return
            raise RayError(f"a Ray actor could not start: {_cause(exc)}") from None

    def _restart(self, i: int) -> Any:
        """Kept actor ``i`` again, once the name of the one that ended is free (within
        10 s)."""
        ray = require_ray(data=False)
        for _ in range(100):
            try:
                ray.get_actor(self._names[i], namespace=NAMESPACE)
            except ValueError:
                break
            time.sleep(0.1)
        return self._start(i)

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
        running: dict[Any, tuple[int, int, Any]] = {}  # call -> (actor index, batch, actor)
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
                    running[self.actors[i].run.remote(fn, batches[b])] = (i, b, self.actors[i])
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
                    i, b, actor = running.pop(ref)
                    load[i] -= 1
                    try:
                        results[b] = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:  # ended for good: no retry
                        if not self._names:
                            raise RayError(f"a Ray actor died: {_cause(exc)}") from None
                        todo.appendleft(b)  # a kept actor ended (idle, or end_kept): again
                        if self.actors[i] is actor:
                            self.ready.pop(i, None)
                            self.actors[i] = self._restart(i)
                            self._starting[self.actors[i].where.remote()] = i
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
