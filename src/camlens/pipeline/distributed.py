"""The Ray executor: the local executor's stages spread over a Ray cluster.

A dataset of items (image paths, evaluation samples) becomes a Ray dataset; ``map_batches``
sends its batches to a fixed pool of actors. Each actor calls ``setup()`` once (it loads the
model) and gets a batch function; a batch function runs :func:`camlens.pipeline.run` (the local
executor: decode on threads, batch by shape, skip failing items) over the rows of its batch and
returns one output row per input row. The driver streams the output rows back
(:func:`stream`), writes what runs write locally (CSV rows, which actors cannot reach on other
machines) and drives the progress bar from them.

Ray retries the batches of an actor that dies (its pool restarts the actor), and a batch's
output rows reach the driver once, when the batch is done; the outputs an actor writes itself
(explanation folders) are written again, whole, by the retry.

>>> connect(None)                                    # RAY_ADDRESS, else a new local cluster
>>> out = map_rows(ray.data.from_items(rows), setup, RayOptions(actors=2), batch_size=8)
>>> for row in stream(out): ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from camlens.errors import ExplainError

__all__ = ["BatchFn", "RayError", "RayOptions", "check_fits", "connect", "default_actors",
           "map_rows", "objects", "require_ray", "session", "stream"]

BatchFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
"""A batch of rows (column -> array of n values) -> n output rows (column -> array)."""

INSTALL = "pip install 'camlens[ray]' (Ray Data: pip install 'ray[data]')"


class RayError(ExplainError):
    """Ray is missing, or its cluster cannot be reached (a usage error: exit code 2)."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run: ``address`` of a running cluster (``None``: the
    ``RAY_ADDRESS`` environment variable, else a new local cluster), ``actors`` in the pool,
    the CPUs and GPUs each actor reserves (fractions allowed), and ``keep``: seconds an
    :class:`~camlens.pipeline.pool.ActorPool`'s actors stay alive once idle, for the next
    pool with the same model and resources to reuse (0: they end with their pool)."""

    address: str | None = None
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    keep: float = 0.0

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise RayError(f"--ray-actors must be >= 1, got {self.actors}")
        if self.cpus_per_actor < 0 or self.gpus_per_actor < 0:
            raise RayError("--ray-cpus-per-actor and --ray-gpus-per-actor must be >= 0, got "
                           f"{self.cpus_per_actor} and {self.gpus_per_actor}")
        if not self.keep >= 0:
            raise RayError(f"--ray-keep must be a number of seconds >= 0, got {self.keep}")


def require_ray(*, data: bool = True) -> ModuleType:
    """The ``ray`` module (with Ray Data unless ``data`` is False: the actor pool of
    :mod:`camlens.pipeline.pool` needs Ray's core only, and the driver saves importing Ray
    Data), or a :class:`RayError` saying how to install it."""
    try:
        import ray

        if data:
            import ray.data  # noqa: F401 - the optional part that `ray` alone lacks
    except ImportError as exc:
        raise RayError(f"the Ray engine needs Ray Data, which is not installed ({exc}); "
                       f"{INSTALL}, or use the local engine") from None
    return ray


def _probe(address: str) -> None:
    """A ``host:port`` address must accept a connection within 5 s (ray.init would retry for
    a minute before failing)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", ray:// (Ray Client): Ray itself reports what is wrong
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise RayError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); give "
                       "the address `ray start --head` printed (host:port), or leave "
                       "--ray-address and RAY_ADDRESS unset to start a local cluster") from None


def connect(address: str | None = None, num_cpus: int | None = None, *,
            quiet: bool = False) -> None:
    """Join the Ray cluster at ``address`` (default ``RAY_ADDRESS``), or start a local one
    (with ``num_cpus`` CPUs, default all) when neither is given; nothing when Ray is already
    initialised in this process. A local cluster's workers import the same camlens as this
    process and run at its priority. ``quiet``: no Ray progress bars or log lines on the
    terminal (camlens's own bar counts the rows; the cluster's logs stay in its log folder)."""
    global _QUIET
    ray = require_ray(data=False)
    _QUIET = _QUIET or quiet
    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": not quiet,
                              "logging_level": "ERROR" if quiet else "INFO"}
    env: dict[str, str] = {}
    if quiet:  # the C++ core's lines (read when ray.init starts it)
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    if target == "local":
        # the workers at this process's priority, as the local engine's threads (Ray
        # lowers theirs by 15 by default, which starves them on a busy machine)
        os.environ.setdefault("RAY_worker_niceness", "0")
        # this camlens on the workers' path through the environment the cluster's processes
        # inherit, not a job runtime_env: the workers the raylet starts with the cluster can
        # then host the actors (a runtime_env would have every actor wait for a new process)
        source = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH"))
                                            if p)
        kwargs.update(num_cpus=num_cpus)
    else:
        _probe(target)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        ray.init(address=target, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises bare Exception on start-up timeouts
        text = " ".join(str(exc).split())[:300]
        raise RayError(f"cannot connect to the Ray cluster at {target}: {text}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def session() -> Iterator[None]:
    """A command's use of Ray: if Ray is initialised inside the block (by :func:`connect`)
    and was not before, ``ray.shutdown()`` at its end (a local cluster it started stops, a
    remote one is left running); Ray initialised before the block is left alone. Ray's exit
    hook would shut down too, but first sleeps 0.5 s for log lines to print, which the CLI's
    quiet connection does not send."""
    before = _initialised()
    try:
        yield
    finally:
        if not before and _initialised():
            sys.modules["ray"].shutdown()


def _initialised() -> bool:
    """Whether Ray is imported and initialised in this process (without importing it)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(getattr(ray, "is_initialized", lambda: False)())


_QUIET = False
"""Whether :func:`connect` was asked for a quiet terminal (Ray Data's bars and lines off)."""


def _quiet_data() -> None:
    """Ray Data's progress bars and log lines off, when :func:`connect` was asked to be
    quiet (here, where Ray Data is first needed, so that a run without it never imports it)."""
    if not _QUIET:
        return
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def default_actors(cpus_per_actor: float, gpus_per_actor: float) -> int:
    """As many actors as the connected cluster holds: its GPUs / ``gpus_per_actor`` when
    actors take GPUs, else its CPUs / ``cpus_per_actor`` (at least one)."""
    ray = require_ray(data=False)
    total = ray.cluster_resources()
    if gpus_per_actor > 0:
        gpus = total.get("GPU", 0.0)
        if gpus < gpus_per_actor:
            raise RayError(f"--ray-gpus-per-actor {gpus_per_actor}: the Ray cluster has "
                           f"{gpus:g} GPU(s)")
        return max(1, int(gpus // gpus_per_actor))
    cpus = total.get("CPU", 1.0)
    return max(1, int(cpus // cpus_per_actor if cpus_per_actor > 0 else cpus))


class _Actor:
    """One actor of the pool: ``setup()`` once (the model is loaded here), then one call per
    batch; every output row also names the node and process that made it."""

    def __init__(self, setup: Callable[[], BatchFn]) -> None:
        import ray

        self.fn = setup()
        self.node = ray.get_runtime_context().get_node_id()
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.fn(batch)
        n = len(next(iter(out.values())))
        return {**out, "node": np.full(n, self.node), "pid": np.full(n, self.pid)}


def check_fits(options: RayOptions) -> None:
    """A :class:`RayError` when the pool needs more CPUs or GPUs than the connected cluster
    has (Ray would wait for them for ever)."""
    total = require_ray(data=False).cluster_resources()
    for kind, each, flag in (("CPU", options.cpus_per_actor, "cpus"),
                             ("GPU", options.gpus_per_actor, "gpus")):
        have = total.get(kind, 0.0)
        if options.actors * each > have + 1e-9:
            raise RayError(f"{options.actors} actor(s) x {each:g} {kind}(s) each (--ray-actors, "
                           f"--ray-{flag}-per-actor) need {options.actors * each:g} {kind}(s); "
                           f"the Ray cluster has {have:g}")


def map_rows(ds: Any, setup: Callable[[], BatchFn], options: RayOptions, *,
             batch_size: int) -> Any:
    """``ds.map_batches`` on a pool of ``options.actors`` actors, each running
    ``setup()``'s batch function on batches of up to ``batch_size`` rows; lazy (a
    ``ray.data.Dataset``). Failed actors are restarted and their batches retried (Ray Data's
    defaults for actor pools). A pool larger than the cluster is refused (it would wait for
    ever)."""
    ray = require_ray()
    check_fits(options)
    _quiet_data()
    return ds.map_batches(_Actor, fn_constructor_args=(setup,), batch_size=batch_size,
                          batch_format="numpy",
                          compute=ray.data.ActorPoolStrategy(size=options.actors),
                          num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor)


def stream(ds: Any) -> Iterator[dict[str, Any]]:
    """The rows of ``ds`` as they are computed (one dict per row)."""
    yield from ds.iter_rows()


def objects(values: list[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (never a 2-D one, whatever they hold)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out
