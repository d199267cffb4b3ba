"""The Ray engine against the local one: `camlens explain` and `camlens evaluate` (each
protocol), from the CLI and from the library (camlens.ray), on a local Ray cluster of 2 CPUs
with 2 actors: the same maps, CSV rows and summaries; resume; usage errors."""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camlens import output
from camlens.cli import main
from camlens.evaluate import evaluate
from camlens.evaluate.tasks.common import as_samples

ray = pytest.importorskip("ray", reason="the Ray engine needs the ray extra")

import camlens.ray as cr  # noqa: E402 - after the skip
from camlens.pipeline.distributed import RayOptions  # noqa: E402

NET = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, classes=33):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def build():
    torch.manual_seed(0)
    return Tiny().eval()
"""
LAYER = "features.3"
DATA = "synthetic:seed=777,n=8"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """net.py, six photos of two sizes and one file that is not an image."""
    root = tmp_path_factory.mktemp("ray")
    (root / "net.py").write_text(NET)
    photos = root / "in"
    photos.mkdir()
    for i in range(6):
        size = (20, 20) if i < 4 else (24, 16)
        pixels = np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"p{i}.png")
    (photos / "bad.png").write_bytes(b"not a png")
    return root


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local Ray cluster (2 CPUs) for the module."""
    saved = os.environ.pop("RAY_ADDRESS", None)
    cr.connect(num_cpus=2, quiet=True)
    yield
    ray.shutdown()
    if saved is not None:
        os.environ["RAY_ADDRESS"] = saved


def explain(folder: Path, out: str, *extra: str) -> int:
    return main(["explain", str(folder / "in"), "--out", str(folder / out), "--model",
                 f"{folder / 'net.py'}:build", "--layer", LAYER, "--input-size", "16",
                 "--method", "gradcam", "--method", "gradcampp", "--batch-size", "2", *extra])


def same_folders(a: Path, b: Path) -> list[str]:
    """The folders of two runs hold the same maps (to float16 rounding) and records (but for
    timings); returns their names."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        x, y = output.load(a / name), output.load(b / name)
        assert x.maps.keys() == y.maps.keys() and x.maps
        for key in x.maps:
            np.testing.assert_allclose(x.maps[key], y.maps[key], atol=2e-3, err_msg=key)
        assert {k: v for k, v in x.record.items() if k != "timings"} == \
            {k: v for k, v in y.record.items() if k != "timings"}
        assert sorted(p.name for p in (a / name).iterdir()) == \
            sorted(p.name for p in (b / name).iterdir())
    return names


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return sorted(csv.DictReader(fh), key=lambda r: (r["image_id"], json.dumps(r)))


def same_rows(a: Path, b: Path) -> int:
    """Two CSV files hold the same rows (in any order); floats to 1e-5."""
    x, y = csv_rows(a), csv_rows(b)
    assert len(x) == len(y) and x
    for r, s in zip(x, y):
        assert r.keys() == s.keys()
        for k in r:
            if k in ("pred_scores", "rho", "evidence"):
                np.testing.assert_allclose(json.loads(r[k].replace("nan", "NaN")),
                                           json.loads(s[k].replace("nan", "NaN")),
                                           atol=1e-5, err_msg=k)
            else:
                assert r[k] == s[k], (k, r, s)
    return len(x)


def plain(summary: object) -> dict[str, object]:
    d = summary.to_dict()  # type: ignore[attr-defined]
    return {k: v for k, v in d.items() if k not in ("seconds", "csv_path")}


# ------------------------------------------------------------- usage errors (before the cluster)


def test_usage_errors_are_one_line_with_exit_code_2(
        folder: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert not ray.is_initialized()
    assert explain(folder, "x", "--engine", "ray", "--ray-address", "127.0.0.1:1") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("camlens: error: cannot reach a Ray cluster at 127.0.0.1:1 (")
    assert len(err.splitlines()) == 1 and "RAY_ADDRESS" in err
    assert explain(folder, "x", "--ray-actors", "2") == 2
    assert capsys.readouterr().err == ("camlens: error: --ray-actors apply to --engine ray "
                                       "only; add --engine ray\n")
    assert explain(folder, "x", "--ray-keep", "60") == 2
    assert capsys.readouterr().err == ("camlens: error: --ray-keep apply to --engine ray only; "
                                       "add --engine ray\n")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert explain(folder, "x", "--engine", "ray", "--ray-keep", "60") == 2
    err = capsys.readouterr().err
    assert err.startswith("camlens: error: --ray-keep 60: this command would start its own Ray "
                          "cluster") and "--ray-address or RAY_ADDRESS" in err
    assert len(err.splitlines()) == 1 and not ray.is_initialized()  # no cluster started
    assert explain(folder, "x", "--ray-log", str(folder / "x.jsonl")) == 2
    assert capsys.readouterr().err == ("camlens: error: --ray-log applies to --engine ray only; "
                                       "add --engine ray\n")
    assert main(["evaluate", "localization", "--data", DATA, "--ray-gpus-per-actor", "1"]) == 2
    assert "--ray-gpus-per-actor apply to --engine ray only" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    for argv in (["explain", "sample:chelsea", "--out", str(folder / "x"), "--engine", "ray"],
                 ["evaluate", "localization", "--data", DATA, "--engine", "ray"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("camlens: error: the Ray engine needs Ray Data, which is not "
                              "installed") and "pip install 'camlens[ray]'" in err
        assert len(err.splitlines()) == 1
    assert not (folder / "x").exists()


def test_a_command_shuts_down_only_the_ray_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """camlens.pipeline.distributed.session (around every --engine ray command): Ray
    initialised inside the block is shut down at its end, also after an error; Ray that was
    up before, or never, is left alone (a stand-in `ray` module counts the calls)."""
    from types import SimpleNamespace

    from camlens.pipeline.distributed import session

    state = {"up": False, "shutdowns": 0}

    def shutdown() -> None:
        state.update(up=False, shutdowns=state["shutdowns"] + 1)

    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(is_initialized=lambda: state["up"],
                                                           shutdown=shutdown))
    with session():
        state["up"] = True
    assert state == {"up": False, "shutdowns": 1}
    state["up"] = True
    with session():
        pass
    assert state == {"up": True, "shutdowns": 1}
    state["up"] = False
    with pytest.raises(ValueError), session():
        state["up"] = True
        raise ValueError("the command failed")
    assert state == {"up": False, "shutdowns": 2}
    with session():
        pass
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    with session():
        pass
    assert state == {"up": False, "shutdowns": 2}


# ------------------------------------------------------------- explain


@pytest.mark.usefixtures("cluster")
def test_explain_on_ray_writes_what_the_local_engine_writes_and_resumes(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Six photos (two input shapes, batches of 2, two actors) and one unreadable file: the
    same folders, maps, records, printed predictions and error as a local run; --resume
    redoes only the missing folder (and the file that failed)."""
    assert explain(folder, "local") == 1
    local = capsys.readouterr()
    assert explain(folder, "ray", "--engine", "ray", "--ray-actors", "2") == 1
    remote = capsys.readouterr()
    assert same_folders(folder / "local", folder / "ray") == [f"p{i}" for i in range(6)]

    def lines(text: str, out: str) -> list[str]:  # in any order, but the timing line
        text = text.replace(str(folder / out), "OUT")
        return sorted(b for b in text.strip().split("\n") if not b.startswith("explained "))

    assert lines(remote.out, "ray") == lines(local.out, "local")
    assert len(lines(local.out, "local")) == 6 * 4 and "p0.png -> OUT/p0/" in local.out.replace(
        str(folder / "local"), "OUT")
    assert remote.out.strip().splitlines()[-1].startswith("explained 6 image(s) in ")
    assert remote.out.strip().endswith("; 1 failed")
    assert remote.err == local.err and local.err.count("\n") == 1
    assert "bad.png" in local.err

    kept = (folder / "ray" / "p0" / output.JSON).stat().st_mtime_ns
    for f in (folder / "ray" / "p3").iterdir():
        f.unlink()
    (folder / "ray" / "p3").rmdir()
    assert explain(folder, "ray", "--engine", "ray", "--ray-actors", "2", "--resume") == 1
    again = capsys.readouterr().out
    assert again.startswith(f"resuming: 5 image(s) already done in {folder / 'ray'}, 2 left\n")
    assert "p3.png -> " in again and "explained 1 image(s)" in again
    assert (folder / "ray" / "p0" / output.JSON).stat().st_mtime_ns == kept
    same_folders(folder / "local", folder / "ray")


@pytest.mark.usefixtures("cluster")
def test_ray_log_names_the_node_and_process_of_each_image(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--ray-log: one line per image in the order of the images (the unreadable one too),
    naming a node of the cluster and the process that explained its batch (batches of 2:
    pairs share it): this one while the actors start, else an actor."""
    log = folder / "ray.jsonl"
    assert explain(folder, "logged", "--engine", "ray", "--ray-actors", "2", "--ray-log",
                   str(log), "-q") == 1
    capsys.readouterr()
    assert ray.is_initialized()  # the caller's cluster: the command leaves it running
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["folder"], r["done"]) for r in lines] == \
        [("bad", False)] + [(f"p{i}", True) for i in range(6)]
    assert [Path(r["image"]).name for r in lines] == ["bad.png"] + [f"p{i}.png" for i in range(6)]
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    driver = (ray.get_runtime_context().get_node_id(), os.getpid())
    for r in lines:
        assert r["node"] in nodes
        assert r["by"] == ("driver" if (r["node"], r["pid"]) == driver else "actor")
    made = [(r["node"], r["pid"]) for r in lines]
    assert all(made[i] == made[i + 1] for i in range(0, len(made) - 1, 2))
    assert explain(folder, "logged_local", "-q") == 1
    capsys.readouterr()
    assert same_folders(folder / "logged_local", folder / "logged") == [f"p{i}" for i in range(6)]
    bad = folder / "no" / "such" / "folder" / "x.jsonl"
    assert explain(folder, "logged2", "--engine", "ray", "--ray-log", str(bad), "-q") == 2
    err = capsys.readouterr().err
    assert err.startswith("camlens: error: --ray-log ") and "cannot write the file" in err
    assert len(err.splitlines()) == 1 and not (folder / "logged2").exists()


@pytest.mark.usefixtures("cluster")
def test_explain_dataset_from_the_library(folder: Path) -> None:
    """camlens.ray.explain_dataset: a Ray dataset in, one row per image out; the folders are
    the CLI's."""
    paths = sorted((folder / "in").iterdir())
    out = cr.explain_dataset(cr.images_dataset(paths), f"{folder / 'net.py'}:build",
                             out=folder / "lib", methods=["gradcam", "gradcampp"], layer=LAYER,
                             batch_size=2, actors=2)
    assert isinstance(out, ray.data.Dataset)
    rows = sorted(out.take_all(), key=lambda r: r["stem"])
    assert [(r["stem"], bool(r["done"])) for r in rows] == \
        [("bad", False)] + [(f"p{i}", True) for i in range(6)]
    assert [k for r in rows for k, _ in json.loads(r["messages"])] == ["error"]
    top = json.loads(rows[1]["predictions"])
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]
    # explain_dataset keeps the photo's input size (no --input-size): compare with a CLI run
    assert main(["explain", str(folder / "in"), "--out", str(folder / "cli"), "--model",
                 f"{folder / 'net.py'}:build", "--layer", LAYER, "--method", "gradcam",
                 "--method", "gradcampp", "-q"]) == 1
    same_folders(folder / "cli", folder / "lib")


# ------------------------------------------------------------- evaluate


@pytest.mark.usefixtures("cluster")
def test_localization_on_ray_from_the_cli_equals_local_and_resumes(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(csv_name: str, *extra: str) -> str:
        assert main(["evaluate", "localization", "--data", DATA, "--model",
                     f"{folder / 'net.py'}:build", "--layer", LAYER, "--batch-size", "3",
                     "--csv", str(folder / csv_name), "--no-progress", *extra]) == 0
        return capsys.readouterr().out

    local = run("loc_local.csv")
    part = run("loc_ray.csv", "--engine", "ray", "--ray-actors", "2", "--limit", "3")
    assert len(csv_rows(folder / "loc_ray.csv")) == 3 and part != local
    full = run("loc_ray.csv", "--engine", "ray", "--ray-actors", "2")
    assert full == local  # the markdown table of Table 1's layout
    assert same_rows(folder / "loc_local.csv", folder / "loc_ray.csv") == 8


@pytest.mark.usefixtures("cluster")
@pytest.mark.parametrize("task", ["pointing", "faithfulness"])
def test_pointing_and_faithfulness_on_ray_equal_local(folder: Path, task: str) -> None:
    settings = {"model": f"{folder / 'net.py'}:build", "layer": LAYER, "batch_size": 3,
                "progress": False, "window": 8, "stride": 8}
    local = evaluate(task, DATA, csv_path=folder / f"{task}_local.csv", **settings)
    remote = evaluate(task, DATA, csv_path=folder / f"{task}_ray.csv",
                      engine=RayOptions(actors=2), **settings)
    a, b = plain(remote), plain(local)
    assert a.keys() == b.keys()
    for key, value in a.items():  # approx takes flat dicts only (faithfulness: one per method)
        if isinstance(value, (float, dict)):
            assert value == pytest.approx(b[key], nan_ok=True), key
        else:
            assert value == b[key], key
    assert same_rows(folder / f"{task}_local.csv", folder / f"{task}_ray.csv") >= 8


@pytest.mark.usefixtures("cluster")
def test_evaluate_dataset_from_the_library(folder: Path) -> None:
    """camlens.ray.evaluate_dataset on a Ray dataset of samples, then summarize: the local
    engine's rows and summary."""
    model = f"{folder / 'net.py'}:build"
    local = evaluate("localization", DATA, model=model, layer=LAYER, progress=False)
    rows = cr.evaluate_dataset(cr.samples_dataset(as_samples(DATA)), "localization", model,
                               layer=LAYER, batch_size=3, actors=2)
    assert isinstance(rows, ray.data.Dataset)
    summary = cr.summarize(rows, "localization", method=local.method)
    assert plain(summary) == plain(local)
    assert summary.records == local.records


@pytest.mark.usefixtures("cluster")
def test_a_pool_larger_than_the_cluster_is_refused(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain(folder, "big", "--engine", "ray", "--ray-actors", "3", "-q") == 2
    assert capsys.readouterr().err == (
        "camlens: error: 3 actor(s) x 1 CPU(s) each (--ray-actors, --ray-cpus-per-actor) need "
        "3 CPU(s); the Ray cluster has 2\n")
    assert main(["evaluate", "localization", "--data", DATA, "--engine", "ray",
                 "--ray-gpus-per-actor", "1", "--ray-actors", "1"]) == 2
    assert capsys.readouterr().err == (
        "camlens: error: 1 actor(s) x 1 GPU(s) each (--ray-actors, --ray-gpus-per-actor) need "
        "1 GPU(s); the Ray cluster has 0\n")


# ------------------------------------------------------------- the warm actor pool


def _slow_start(gate: str) -> str:
    """An actor's state, made only once ``gate`` exists (as a slow start-up)."""
    import time

    while not Path(gate).exists():
        time.sleep(0.05)
    return "actor"


def _tagged(state: str, batch: int) -> tuple[str, int]:
    return state, batch * 10


def _broken() -> None:
    raise ValueError("no model here")


@pytest.fixture
def by_value() -> Iterator[None]:
    """This module's functions travel to the actors by value (the workers cannot import it)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _cpus_back(total: float = 2.0, seconds: float = 30.0) -> bool:
    """Whether ``total`` of the cluster's CPUs are free again (actors ended), within
    ``seconds``."""
    import time

    for _ in range(int(seconds * 10)):
        if ray.available_resources().get("CPU", 0.0) >= total:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.usefixtures("cluster", "by_value")
def test_the_driver_explains_while_the_actors_start_each_batch_once_in_order(
        tmp_path: Path) -> None:
    """The actors cannot start until the driver has done three batches (a file they wait
    for; then the driver slows down to 1 s a batch, so 40 batches leave the actors up to 37 s
    to start on a loaded machine): the driver did the first three batches (and maybe more
    while an actor was still starting: one can be up a moment before the other, and then
    both take batches), the actors the rest; every batch once, in order."""
    import time

    from camlens.pipeline.pool import ActorPool

    gate = tmp_path / "gate"
    local: list[int] = []

    def here(batch: int) -> tuple[str, int]:
        local.append(batch)
        if len(local) == 3:
            gate.touch()
        elif len(local) > 3:
            time.sleep(1.0)  # the actors are starting now
        return "driver", batch * 10

    with ActorPool(functools.partial(_slow_start, str(gate)), RayOptions(actors=2)) as pool:
        got = list(pool.map(_tagged, list(range(40)), here))
    assert 3 <= len(local) < 40 and local[:3] == [0, 1, 2] and local == sorted(set(local))
    assert [out for out, _, _ in got] == [("driver" if b in local else "actor", b * 10)
                                          for b in range(40)]
    assert {pid for out, _, pid in got if out[0] == "driver"} == {os.getpid()}
    assert os.getpid() not in {pid for out, _, pid in got if out[0] == "actor"}
    assert _cpus_back()


def _ready(state: None) -> str:
    return "up"


def _slowly(state: str, batch: int) -> int:
    import time

    time.sleep(0.3)
    return batch * 10


@pytest.mark.usefixtures("cluster", "by_value")
def test_an_actor_killed_mid_call_is_restarted_and_nothing_is_lost_or_doubled() -> None:
    """SIGKILL to the actor that made the first result: Ray restarts it and retries the
    calls it held; every batch comes back once, in order."""
    import signal

    from camlens.pipeline.pool import ActorPool

    with ActorPool(functools.partial(_ready, None), RayOptions(actors=2)) as pool:
        got = []
        for out, _node, pid in pool.map(_slowly, list(range(10))):
            if not got:
                os.kill(pid, signal.SIGKILL)
                killed = pid
            got.append((out, pid))
    assert [out for out, _ in got] == [b * 10 for b in range(10)]
    assert any(pid != killed for _, pid in got[1:])
    assert _cpus_back()


@pytest.mark.usefixtures("cluster", "by_value")
def test_an_actor_that_cannot_start_is_one_line_and_the_pool_ends() -> None:
    from camlens.pipeline.distributed import RayError
    from camlens.pipeline.pool import ActorPool

    with pytest.raises(RayError, match="a Ray actor could not start: .*no model here"):
        with ActorPool(_broken, RayOptions(actors=1)) as pool:
            list(pool.map(_tagged, [1, 2]))
    assert _cpus_back()
    with pytest.raises(RayError, match="closed"):
        list(pool.map(_tagged, [1]))


@pytest.mark.usefixtures("cluster")
def test_explain_pool_kept_across_two_calls_equals_local_and_ends_its_actors(
        folder: Path) -> None:
    """camlens.ray.ExplainPool: two calls (the first one shared with the driver while the
    actors start; after ``wait()``, the second all on the two actors), the rows in the order
    of the paths, the folders of a local run; after the pool, the cluster's CPUs are free
    again."""
    paths = sorted((folder / "in").iterdir())
    first, second = paths[:4], paths[4:]
    net = f"{folder / 'net.py'}:build"
    with cr.ExplainPool(net, actors=2) as pool:
        a = pool.explain(first, out=folder / "pool1", methods=["gradcam", "gradcampp"],
                         layer=LAYER, batch_size=2)
        actors = set(pool.wait())
        b = pool.explain(second, out=folder / "pool2", methods=["gradcam", "gradcampp"],
                         layer=LAYER, batch_size=2)
    assert [r["stem"] for r in a] == [p.stem for p in first]
    assert [r["stem"] for r in b] == [p.stem for p in second]
    assert [bool(r["done"]) for r in a + b] == [False] + [True] * 6  # bad.png comes first
    assert len(actors) == 2 and {(r["node"], int(r["pid"])) for r in b} <= actors
    assert _cpus_back()
    for out, chosen in (("pool1", first), ("pool2", second)):
        assert main(["explain", *map(str, chosen), "--out", str(folder / f"{out}_cli"),
                     "--model", net, "--layer", LAYER, "--method", "gradcam", "--method",
                     "gradcampp", "-q"]) == (1 if out == "pool1" else 0)
        same_folders(folder / f"{out}_cli", folder / out)


# ------------------------------------------------------------- kept actors


def _named() -> list[str]:
    from camlens.pipeline.pool import NAMESPACE

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == NAMESPACE)


def test_the_key_of_kept_actors_changes_with_what_they_would_hold(tmp_path: Path) -> None:
    """pool_key: the same loader and resources give the same key; another model argument,
    a rewritten weights file (same name), other resources or a changed camlens file each
    give another."""
    import camlens.pipeline.pool as pool_module
    from camlens.models import load_model
    from camlens.pipeline.pool import pool_key

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"1")
    make = functools.partial(load_model, "efficientnet_lite0", weights=str(weights))
    key = pool_key(make, RayOptions(actors=2))
    assert key == pool_key(functools.partial(load_model, "efficientnet_lite0",
                                             weights=str(weights)), RayOptions(actors=1))
    assert len(key) == 16 and int(key, 16) >= 0
    assert pool_key(functools.partial(load_model, "other", weights=str(weights)),
                    RayOptions()) != key
    assert pool_key(make, RayOptions(cpus_per_actor=2)) != key
    assert pool_key(make, RayOptions(gpus_per_actor=0.5)) != key
    weights.write_bytes(b"22")  # the same file name, other weights
    assert pool_key(make, RayOptions()) != key
    key = pool_key(make, RayOptions())
    source = Path(pool_module.__file__)
    stat = source.stat()
    try:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert pool_key(make, RayOptions()) != key  # camlens itself changed
    finally:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert pool_key(make, RayOptions()) == key


@pytest.mark.usefixtures("cluster", "by_value")
def test_kept_actors_serve_the_next_pool_and_end_themselves_when_idle() -> None:
    """RayOptions(keep=...): closing the pool leaves its two actors (named, detached) holding
    the cluster's CPUs; a second pool with the same loader uses the same two processes, with
    no start-up; an actor ending itself while a pool arrives (the closes and starts timed
    around ``keep``) is started again, never an error; idle ``keep`` s, all end and the CPUs
    return; one ended for good during a call is started again and its batches done once. A
    pool with keep=0 names no actors."""
    from camlens.pipeline.pool import ActorPool, end_kept

    assert not _named()
    make = functools.partial(_ready, None)
    try:
        with ActorPool(make, RayOptions(actors=2, keep=30)) as first:
            pids = {pid for _, pid in first.wait().values()}
            assert [out for out, _, _ in first.map(_tagged, [1, 2, 3])] == [("up", 10), ("up", 20),
                                                                       ("up", 30)]
        assert len(_named()) == 2 and not _cpus_back(total=1.0, seconds=1.0)
        with ActorPool(make, RayOptions(actors=2, keep=30)) as second:
            got = list(second.map(_tagged, list(range(8))))
            assert [out for out, _, _ in got] == [("up", b * 10) for b in range(8)]
            assert {pid for _, _, pid in got} <= pids
            assert {pid for _, pid in second.wait().values()} == pids  # the same processes
        assert end_kept() == 2 and _cpus_back() and not _named()
        for delay in (0.8, 0.95, 1.0, 1.05, 1.2):
            with ActorPool(make, RayOptions(actors=2, keep=1.0)) as pool:
                assert [out for out, _, _ in pool.map(_tagged, [4, 5])] == [("up", 40), ("up", 50)]
            time.sleep(delay)
        assert _cpus_back() and not _named()  # idle 1 s: ended themselves
        with ActorPool(functools.partial(_ready, None), RayOptions(actors=2, keep=30)) as pool:
            got = []
            for out, _, _ in pool.map(_slowly, list(range(10))):
                if not got:  # ended for good (as end_kept() from elsewhere would)
                    ray.kill(pool.actors[0], no_restart=True)
                got.append(out)
        assert got == [b * 10 for b in range(10)] and len(_named()) == 2
        assert end_kept() == 2 and _cpus_back()
        with ActorPool(make, RayOptions(actors=2)) as plain:
            plain.wait()
            assert not _named()
    finally:
        end_kept()
    assert _cpus_back()


@pytest.mark.usefixtures("cluster")
def test_explain_with_ray_keep_reuses_the_actors_of_the_previous_command(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two `camlens explain --engine ray --ray-keep 60` commands on a running cluster (here
    the test's, which the commands leave running): the second one's images are made by the
    first one's actor processes (or this process), the folders are a local run's, and the
    actors stay until ended."""
    from camlens.pipeline.pool import NAMESPACE, end_kept

    logs = [folder / "keep1.jsonl", folder / "keep2.jsonl"]
    kept = []
    try:
        for i, log in enumerate(logs):
            assert explain(folder, f"keep{i}", "--engine", "ray", "--ray-actors", "2",
                           "--ray-keep", "60", "--ray-log", str(log), *(["-q"] if i else [])) == 1
            said = capsys.readouterr().out
            assert said.endswith("2 Ray actors kept until idle for 60 s (--ray-keep), for the "
                                 "next command with this model\n") != bool(i)
            assert len(_named()) == 2
            kept.append({ray.get(ray.get_actor(n, namespace=NAMESPACE).where.remote())[1]
                         for n in _named()})
        assert kept[0] == kept[1]  # the same two processes
        made = {r["pid"] for r in map(json.loads, logs[1].read_text().splitlines())
                if r["by"] == "actor"}
        assert made and made <= kept[0]
        assert explain(folder, "keep_local", "-q") == 1
        capsys.readouterr()
        for i in range(2):
            assert same_folders(folder / "keep_local", folder / f"keep{i}") == \
                [f"p{j}" for j in range(6)]
    finally:
        assert end_kept() == 2
    assert _cpus_back() and not _named()
