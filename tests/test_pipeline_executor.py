"""The local executor: batching by key and order, per-item failures, bounded queues,
exceptions that stop the run, and no thread left behind or blocked."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from camlens.errors import DataError, ExplainError
from camlens.io import ImageError
from camlens.pipeline import ITEM_FAILURES, Failure, Report, run


class Counter:
    """A progress display that counts."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n


def camlens_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("camlens-") and t.is_alive()]


def finishes(fn: Callable[[], Any], seconds: float = 20.0) -> Any:
    """Run ``fn`` on a thread; fail (instead of hanging the suite) if it does not return."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            box["error"] = err

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the executor hung"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_batches_are_consecutive_runs_and_writes_keep_the_order():
    batches: list[list[int]] = []
    written: list[tuple[int, int]] = []

    def compute(items: list[int], loaded: list[int]) -> list[int]:
        batches.append(list(items))
        return [10 * v for v in loaded]

    bar = Counter()
    report = run(range(11), lambda i: i + 1, compute, lambda i, r: written.append((i, r)),
                 batch_size=4, progress=bar)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert written == [(i, 10 * (i + 1)) for i in range(11)]
    assert isinstance(report, Report) and report.done == 11 and report.failures == ()
    assert bar.n == 11
    assert camlens_threads() == []


def test_items_are_batched_with_their_own_key():
    batches: list[list[int]] = []

    def compute(items: list[int], loaded: list[str]) -> list[str]:
        assert len(set(loaded)) == 1  # one key per batch: they would stack
        batches.append(list(items))
        return loaded

    keys = "ABABBAC"
    report = run(range(7), lambda i: keys[i], compute, key=lambda k: k, batch_size=3)
    # A fills first (0, 2, 5) at item 5; B (1, 3, 4) at item 4; the rest flush in order of
    # their first item
    assert batches == [[1, 3, 4], [0, 2, 5], [6]]
    assert report.done == 7


def test_many_keys_never_hold_more_than_twice_a_batch():
    held: list[int] = []
    loaded_now = [0]
    lock = threading.Lock()

    def load(i: int) -> int:
        with lock:
            loaded_now[0] += 1
        return i

    def compute(items: list[int], loaded: list[int]) -> list[int]:
        with lock:
            held.append(loaded_now[0])
            loaded_now[0] -= len(items)
        return loaded

    run(range(200), load, compute, key=lambda i: i, batch_size=4, prefetch=8)
    # every item has a key of its own: batches of one, computed once 8 wait; at most
    # prefetch (8) more were loaded meanwhile
    assert max(held) <= 2 * 4 + 1 + 8


def test_the_input_is_read_lazily():
    pulled = [0]

    def endless():
        for i in itertools.count():
            pulled[0] += 1
            yield i

    class Enough(Exception):
        pass

    def compute(items: list[int], loaded: list[int]) -> list[int]:
        if items[0] >= 40:
            raise Enough
        return loaded

    with pytest.raises(Enough):
        finishes(lambda: run(endless(), lambda i: i, compute, batch_size=8, prefetch=16))
    assert pulled[0] <= 40 + 8 + 16 + 1  # the failing batch, plus at most a prefetch ahead


def test_a_slow_writer_holds_compute_back():
    release = threading.Event()
    computed = [0]

    def compute(items: list[int], loaded: list[int]) -> list[int]:
        computed[0] += len(items)
        return loaded

    def write(item: int, result: int) -> None:
        assert release.wait(10), "never released"

    def release_later() -> None:
        time.sleep(0.5)
        seen.append(computed[0])
        release.set()

    seen: list[int] = []
    threading.Thread(target=release_later, daemon=True).start()
    report = finishes(lambda: run(range(100), lambda i: i, compute, write, batch_size=2,
                                  write_queue=3))
    # while the writer was stuck on item 0: 3 results queued, one being put, the batch of it
    assert seen[0] <= 1 + 3 + 2 + 2
    assert report.done == 100


def test_item_failures_are_recorded_and_skipped():
    written: list[int] = []
    batches: list[list[int]] = []

    def load(i: int) -> int:
        if i == 3:
            raise ImageError("img3.jpg: the file is corrupt")
        return i

    def compute(items: list[int], loaded: list[int]) -> list[int]:
        batches.append(list(items))
        if 5 in items:
            raise DataError("sample 5 has no pixels")
        return loaded

    def write(item: int, result: int) -> None:
        if item == 7:
            raise ExplainError("cannot save 7")
        written.append(item)

    bar = Counter()
    report = finishes(lambda: run(range(10), load, compute, write, batch_size=4, progress=bar))
    assert [(f.item, f.stage) for f in report.failures] == [(3, "load"), (5, "compute"),
                                                            (7, "write")]
    assert "no pixels" in str(report.failures[1]) and "compute" in str(report.failures[1])
    assert written == [0, 1, 2, 4, 6, 8, 9]
    assert report.done == 7 and bar.n == 10
    # the batch holding 5 was retried one item at a time, so only 5 was lost
    assert batches == [[0, 1, 2, 4], [5, 6, 7, 8], [5], [6], [7], [8], [9]]
    assert set(ITEM_FAILURES) == {ImageError, DataError, ExplainError}


def test_on_failure_hears_each_failure_as_it_happens():
    """Called once per skipped item, in the except block (so a caller can print the
    traceback), from the failing stage's thread; the report holds the same failures."""
    heard: list[tuple[int, str, str, str]] = []
    caller: list[str] = []

    def load(i: int) -> int:
        if i == 1:
            raise ImageError("one")
        return i

    def compute(items: list[int], loaded: list[int]) -> list[int]:
        if 2 in items:
            raise DataError("two")
        return loaded

    def write(item: int, result: int) -> None:
        if item == 3:
            raise ExplainError("three")

    def on_failure(f: Failure[int]) -> None:
        error = sys.exc_info()[1]
        heard.append((f.item, f.stage, str(error), threading.current_thread().name))

    def go() -> Report[int]:
        caller.append(threading.current_thread().name)
        return run(range(5), load, compute, write, batch_size=2, on_failure=on_failure)

    report = finishes(go)
    assert heard == [(1, "load", "one", caller[0]), (2, "compute", "two", caller[0]),
                     (3, "write", "three", "camlens-writer_0")]
    assert [(f.item, f.stage) for f in report.failures] == [(1, "load"), (2, "compute"),
                                                            (3, "write")]


def test_several_writers_overlap_and_each_result_is_written_once():
    lock = threading.Lock()
    running, peak, written = [0], [0], []

    def write(item: int, result: int) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
            written.append(item)

    report = finishes(lambda: run(range(12), lambda i: i, lambda items, xs: xs, write,
                                  batch_size=4, writers=3))
    assert sorted(written) == list(range(12)) and report.done == 12
    assert peak[0] == 3
    assert camlens_threads() == []


def test_a_fatal_error_in_one_of_several_writers_stops_the_run():
    written: list[int] = []

    def write(item: int, result: int) -> None:
        if item == 2:
            raise RuntimeError("disk on fire")
        time.sleep(0.01)
        written.append(item)

    with pytest.raises(RuntimeError, match="disk on fire"):
        finishes(lambda: run(range(100), lambda i: i, lambda items, xs: xs, write,
                             batch_size=2, writers=2))
    assert len(written) < 100 and camlens_threads() == []


def test_failure_kinds_can_be_narrowed():
    def compute(items: list[int], loaded: list[int]) -> list[int]:
        raise ExplainError("unknown layer 'nope'")  # the same for every item: stop

    with pytest.raises(ExplainError, match="nope"):
        run(range(5), lambda i: i, compute, failures=(ImageError, DataError))


@pytest.mark.parametrize("loaders", [0, 2])
def test_an_error_in_compute_stops_the_run_after_writing_what_was_computed(loaders: int):
    written: list[int] = []

    def compute(items: list[int], loaded: list[int]) -> list[int]:
        if items[0] == 6:
            raise RuntimeError("a bug")
        return loaded

    with pytest.raises(RuntimeError, match="a bug"):
        finishes(lambda: run(range(20), lambda i: i, compute, lambda i, r: written.append(i),
                             batch_size=3, loaders=loaders))
    assert written == [0, 1, 2, 3, 4, 5]
    assert camlens_threads() == []


def test_an_error_in_load_or_write_stops_the_run():
    def bad_load(i: int) -> int:
        if i == 4:
            raise KeyError("not an item failure")
        return i

    with pytest.raises(KeyError):
        finishes(lambda: run(range(10), bad_load, lambda items, xs: xs))
    assert camlens_threads() == []

    def bad_write(item: int, result: int) -> None:
        if item == 2:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        finishes(lambda: run(range(500), lambda i: i, lambda items, xs: xs, bad_write,
                             batch_size=1, write_queue=1))
    assert camlens_threads() == []


def test_keyboard_interrupt_propagates_and_joins_the_threads():
    def compute(items: list[int], loaded: list[int]) -> list[int]:
        if items[0] == 4:
            raise KeyboardInterrupt
        return loaded

    with pytest.raises(KeyboardInterrupt):
        run(range(10), lambda i: i, compute, lambda i, r: None, batch_size=2)
    assert camlens_threads() == []


def test_compute_must_return_one_result_per_item():
    with pytest.raises(ValueError, match="2 results for 3 items"):
        run(range(3), lambda i: i, lambda items, xs: xs[:2], batch_size=3)
    with pytest.raises(ValueError, match="batch_size"):
        run(range(3), lambda i: i, lambda items, xs: xs, batch_size=0)


def test_loads_overlap_compute():
    """With two loaders, a 50 ms load and a 50 ms compute per item take about 50 ms an item,
    not 100."""
    def load(i: int) -> int:
        time.sleep(0.05)
        return i

    def compute(items: list[int], loaded: list[int]) -> list[int]:
        time.sleep(0.05 * len(items))
        return loaded

    t0 = time.perf_counter()
    run(range(12), load, compute, batch_size=1, loaders=2)
    assert time.perf_counter() - t0 < 12 * 0.1 * 0.8


def test_loading_on_the_callers_thread_reads_ahead_by_the_documented_window() -> None:
    # loaders=0: load runs inline. The window holds 2 * batch_size = 4 loaded items and is
    # topped up as each is taken: items 0-3, then 4 and 5 as 0 and 1 are taken; 1 fills the
    # first batch.
    events: list[Any] = []

    def load(i: int) -> int:
        events.append(("load", i))
        return 10 * i

    def compute(items: list[int], loaded: list[int]) -> list[int]:
        events.append(("compute", items, loaded))
        return loaded

    report = run(range(9), load, compute, key=lambda x: 0, batch_size=2, loaders=0)
    assert report.done == 9 and not report.failures
    first = next(i for i, e in enumerate(events) if e[0] == "compute")
    assert events[first] == ("compute", [0, 1], [0, 10])  # load got the items themselves
    assert [e for e in events[:first]] == [("load", i) for i in range(6)]


def test_too_many_open_batches_flush_the_oldest_first() -> None:
    # every key distinct, so no batch fills: once more than 2 * batch_size items wait, the
    # batch opened first is computed (then the rest at the end, in order of their first item)
    order: list[list[int]] = []

    def compute(items: list[int], loaded: list[int]) -> list[None]:
        order.append(items)
        return [None] * len(items)

    run(range(7), lambda i: i, compute, key=lambda x: x, batch_size=2, loaders=0)
    assert order == [[0], [1], [2], [3], [4], [5], [6]]
