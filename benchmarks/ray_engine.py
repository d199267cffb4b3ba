#!/usr/bin/env python3
"""The Ray engine on this machine: its overhead against the local engine, how a two-node cluster
shares the work, and what a killed worker costs.

- ``throughput``: ``camlens explain --method gradcam --top-k 1 --save maps`` (the bundled
  EfficientNet-Lite0) over the same photos (``benchmarks/folder.py``'s, 256 by default), with
  ``--engine local`` and with ``--engine ray`` (a new local cluster of ``--cpus`` CPUs, one
  actor per CPU), each run in its own process, interleaved (local, ray, local, ray, ...) so
  that both see the same load; per round the ratio ray/local of images per second. The
  headline clock is the command's: the wall time a user waits, from starting the process to
  its exit (Python, imports, cluster start-up, actors, the run, shutdown). The run's own clock
  ("explained N image(s) in T s": from the first image to the last) is kept beside it; with
  the actor pool started before it (since issue 15's follow-up) it no longer includes the
  actors' start-up, so only the command clock compares the engines fairly. The first round's
  outputs are compared: every folder of the Ray run holds the local run's maps (to float16
  rounding) and record (but for timings).
- ``cluster``: ``throughput`` with ``--ray-address`` of a cluster that is already running
  (started once by a child process before the rounds, as ``ray start --head`` would leave
  one): each command still starts its own actors, but not the cluster.
- ``kept``: ``cluster`` with ``--ray-keep 120`` and one round more: the first Ray command
  starts the actors and leaves them; each later one finds them started, holding the model
  (``ratio_command_after_first_median``: the rounds after the first).
- ``startup``: where a Ray run's fixed cost goes, in one process as the CLI does it: import,
  ``ray.init`` (a new local cluster), the pool's actors ready (each: a process, torch, the
  model), the rows, which process made them (the driver shares batches while actors start),
  closing the pool, ``ray.shutdown``.
- ``warm``: :class:`camlens.ray.ExplainPool` in one process: two calls on the same photos (to
  two folders) against the local engine in the same process, model loaded: the first call
  pays the actors' start-up, the second finds them warm.
- ``spread``: a two-node cluster on this machine (``ray start --head --num-cpus 1`` and
  ``ray start --address ... --num-cpus 1``), two actors, ``camlens.ray.explain_dataset``: the
  images each node explained.
- ``fault``: on the same cluster, one actor process is killed (SIGKILL) once the first rows
  are back; Ray restarts it and retries its batches. Counted: rows back, distinct images,
  images back twice, folders written, folders that read back (``camlens.output.load``).

- ``pool_spread``: on the same cluster, ``camlens explain --engine ray --ray-address ...
  --ray-actors 2 --ray-log LOG`` (the CLI's warm actor pool, not Ray Data) on
  ``--pool-photos`` photos: the images each node's actor explained, and the driver (which
  explains while the actors start), from LOG; every folder compared with a local run's.
- ``pool_fault``: the same command; the process of the actor that sent back the first
  actor-made row is SIGKILLed (it holds more batches); Ray restarts it and retries them.
  Counted: LOG's lines, distinct images, images twice, folders, folders equal to the local
  run's, files byte-identical, rows per process.
- ``cpu``: CPU seconds (user + system, from /proc) of every process of the same command as
  ``throughput`` on each engine: local, Ray with a new local cluster, Ray on a running cluster
  (its processes counted during the command); by part: the command (driver), the actors,
  GCS server and raylet, Ray's Python daemons, other Ray workers (idle, or still
  starting an actor: a short run can end before its actors are up). CPU seconds depend far less
  on the machine's load than wall time does.

The two-node cluster runs on its own ports and temp folder; at the end (also after an error)
its processes, found by that folder, are ended (no bare ``ray stop``, which would end every Ray
on the machine).

    python benchmarks/ray_engine.py --jobs throughput,cluster,kept,warm,cpu --photos 256 --rounds 3
    python benchmarks/ray_engine.py --jobs spread,fault,pool_spread,pool_fault --photos 256
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))  # this checkout's camlens here too
CLI = ["--method", "gradcam", "--top-k", "1", "--save", "maps"]
PORT = 6391


def env() -> dict[str, str]:
    """This checkout's camlens for every process (the driver, Ray's workers)."""
    out = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    out.pop("RAY_ADDRESS", None)
    out["RAY_worker_niceness"] = "0"  # Ray's workers at this script's priority (default: +15)
    return out


def photos(folder: Path, n: int) -> list[Path]:
    sys.path.insert(0, str(HERE))
    from folder import make_photos  # the folder benchmark's photos

    return make_photos(folder, n)


def same_record(x: Any, y: Any) -> bool:
    """Two records alike: the same keys, texts and integers, floats to 1e-5 (torch's sums
    differ in the last bits between 1 thread, an actor's, and 2, the local engine's)."""
    import math

    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(same_record(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(same_record(a, b) for a, b in zip(x, y))
    if isinstance(x, float) or isinstance(y, float):
        return math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6)
    return bool(x == y)


def same_outputs(a: Path, b: Path) -> int:
    """Every folder of ``a`` and ``b`` holds the same maps (to float16 rounding) and record
    (but for timings; floats to 1e-5); returns how many folders were compared."""
    import numpy as np

    from camlens import output

    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()), "different folders"
    for name in names:
        x, y = output.load(a / name), output.load(b / name)
        assert x.maps.keys() == y.maps.keys() and x.maps, name
        for key in x.maps:
            assert np.allclose(x.maps[key], y.maps[key], atol=2e-3), (name, key)
        assert same_record({k: v for k, v in x.record.items() if k != "timings"},
                           {k: v for k, v in y.record.items() if k != "timings"}), name
    return len(names)


def run_seconds(src: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """(the run's own seconds, the command's seconds): the run's from its timing line."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "camlens", "explain", str(src), "--out",
                           str(out), *CLI, *extra], env=env(), capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"camlens explain {' '.join(extra)} failed: {done.stderr[-2000:]}")
    found = re.search(r"explained (\d+) image\(s\) in ([\d.]+)s", done.stdout)
    if found is None:
        raise SystemExit(f"no timing line in: {done.stdout[-500:]}")
    return float(found.group(2)), wall


OWNER = """import sys, time, ray
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, logging_level="ERROR")
print(ray.get_runtime_context().gcs_address, flush=True)
time.sleep(3600)
"""


@contextlib.contextmanager
def running_cluster(cpus: int) -> Iterator[str]:
    """A local cluster of ``cpus`` CPUs owned by a child process (as ``ray start --head`` would
    leave one running, without ``ray stop``, which would end every Ray process on the
    machine); yields its address; the child's exit ends it."""
    saved = os.environ.get("RAY_AUTH_MODE")
    # Ray 2.60: with a token in ~/.ray/auth_token, a second driver needs token mode on both
    os.environ["RAY_AUTH_MODE"] = "token"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(cpus)], env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert owner.stdout is not None
        address = owner.stdout.readline().strip()
        if not address:
            raise SystemExit("the cluster's owner process did not start a cluster")
        yield address
    finally:
        owner.terminate()  # Ray's SIGTERM handler exits, and ray.shutdown ends the cluster
        owner.wait(timeout=120)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def throughput(src: Path, n: int, rounds: int, cpus: int, work: Path,
               address: str | None = None, keep: float = 0.0) -> dict[str, Any]:
    ray_args = ["--engine", "ray", "--ray-actors", str(cpus), "--ray-cpus-per-actor", "1"]
    if address is not None:  # a cluster that is already running: its start-up not counted
        ray_args += ["--ray-address", address]
    if keep:  # the actors outlive each command: the first starts them, the next reuse them
        ray_args += ["--ray-keep", f"{keep:g}"]
    runs: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
    ratios, ratios_wall = [], []
    compared = 0
    loads = []
    for r in range(rounds):
        for name, extra in (("local", []), ("ray", ray_args)):
            out = work / f"{name}{r}"
            runs[name].append(run_seconds(src, out, extra))
            made = sum(1 for _ in out.iterdir())
            assert made == n, f"{name}: {made} folders for {n} photos"
            loads.append(round(os.getloadavg()[0], 2))
            print(f"round {r + 1} {name}: run {runs[name][-1][0]:.1f} s, command "
                  f"{runs[name][-1][1]:.1f} s, load {loads[-1]:.1f}", flush=True)
        ratios.append(runs["local"][-1][0] / runs["ray"][-1][0])
        ratios_wall.append(runs["local"][-1][1] / runs["ray"][-1][1])
        if r == 0:  # outside the clocks
            compared = same_outputs(work / "local0", work / "ray0")
        for name in ("local", "ray"):
            shutil.rmtree(work / f"{name}{r}")
    return {
        "photos": n, "rounds": rounds, "actors": cpus, "outputs_compared_equal": compared,
        "load_1min_after_each_run": loads,
        "local_run_s": [round(a, 2) for a, _ in runs["local"]],
        "ray_run_s": [round(a, 2) for a, _ in runs["ray"]],
        "local_command_s": [round(b, 2) for _, b in runs["local"]],
        "ray_command_s": [round(b, 2) for _, b in runs["ray"]],
        "local_images_per_s": round(n / statistics.median(a for a, _ in runs["local"]), 2),
        "ray_images_per_s": round(n / statistics.median(a for a, _ in runs["ray"]), 2),
        "local_command_images_per_s": round(n / statistics.median(b for _, b in runs["local"]),
                                            2),
        "ray_command_images_per_s": round(n / statistics.median(b for _, b in runs["ray"]), 2),
        "ratio_command_paired_median": round(statistics.median(ratios_wall), 3),
        "ratios_command": [round(x, 3) for x in ratios_wall],
        "ratio_run_paired_median": round(statistics.median(ratios), 3),
        "ratios_run": [round(x, 3) for x in ratios],
        **({"ray_keep_s": keep,
            "ratio_command_after_first_median": round(statistics.median(ratios_wall[1:]), 3)}
           if keep and rounds > 1 else {}),
    }


TICK = os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[int, float, str]]:
    """Every process: pid -> (parent pid, its CPU seconds so far, its command line)."""
    return {int(d): got for d in os.listdir("/proc") if d.isdigit()
            and (got := one(int(d))) is not None}


def one(pid: int) -> tuple[int, float, str] | None:
    """(parent pid, CPU seconds, command line) of one process; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return None
    f = stat[stat.rfind(")") + 2:].split()
    return int(f[1]), (int(f[11]) + int(f[12])) / TICK, cmd


def tree(table: dict[int, tuple[int, float, str]], root: int) -> set[int]:
    """``root``'s descendants in ``table`` (not ``root``)."""
    kids: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        kids.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(kids.get(pid, []))
    return found


def kind(cmd: str) -> str:
    """The part a process plays in a Ray run, from its command line."""
    if cmd.startswith("ray::Member"):
        return "actors"
    if "gcs_server" in cmd or "/raylet" in cmd:
        return "GCS server, raylet"
    if cmd.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent")) or "ray/dashboard" in cmd \
            or "ray/autoscaler" in cmd or "log_monitor" in cmd:
        return "Ray's Python daemons"
    if cmd.startswith("ray::") or "default_worker.py" in cmd:
        return "Ray workers: idle, or still starting an actor"
    return "other"


def cpu_seconds(argv: list[str], cluster: bool) -> dict[str, Any]:
    """Run ``argv`` and count the CPU seconds (user + system, all threads) of each process it
    starts, and with ``cluster`` of the running cluster's processes (this script's other
    children) during it: read from /proc every 50 ms (a process that ends loses at most its
    last 50 ms; new processes are looked for every 0.5 s). This process is made a child
    subreaper, so that a new cluster's processes, ending after the command, stay below it to
    be read and reaped."""
    import ctypes

    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    me = os.getpid()
    first = processes()
    running = tree(first, me)
    base = {p: first[p][1] for p in running}
    seen: dict[int, tuple[float, str]] = {}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)

    mine: set[int] = set()

    def look(full: bool = True) -> set[int]:
        """Read the processes counted (``full``: find them all first, from every process's
        parent; else only those found before, which is cheap)."""
        nonlocal mine
        if full:
            table = processes()
            mine = tree(table, me) - (set() if cluster else running)
        else:
            table = {p: got for p in mine if (got := one(p)) is not None}
        for pid in mine & table.keys():
            seen[pid] = (table[pid][1], table[pid][2] or seen.get(pid, (0.0, ""))[1])
        return mine - running

    polls = 0
    while proc.poll() is None:
        look(full=polls % 10 == 0)  # every 0.5 s a full scan (3-5 ms), else 50 ms reads
        polls += 1
        time.sleep(0.05)
    wall = time.perf_counter() - start
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} ... failed: {err[-2000:]}")
    for _ in range(100):  # a new cluster's processes end after the command: read, reap
        left = look() - {proc.pid}
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        if not left:
            break
        time.sleep(0.1)
    by: dict[str, float] = {}
    each: list[tuple[float, str]] = []
    for pid, (used, cmd) in seen.items():
        used -= base.get(pid, 0.0)
        part = "command (driver)" if pid == proc.pid else kind(cmd)
        by[part] = by.get(part, 0.0) + used
        if used >= 0.1:
            each.append((round(used, 2), f"{part}: {cmd[:60]}"))
    return {"wall_s": round(wall, 2), "cpu_s": round(sum(by.values()), 2),
            "cpu_s_by_part": {k: round(v, 2) for k, v in sorted(by.items())},
            "processes": sorted(each, reverse=True)[:12],
            "load_1min_after": round(os.getloadavg()[0], 2)}


def cpu(src: Path, n: int, rounds: int, cpus: int, work: Path) -> dict[str, Any]:
    """CPU seconds per process of the same ``camlens explain`` run on each engine: local,
    Ray with a new local cluster, Ray on a running cluster (started before, not counted but
    for what its processes do during the command)."""
    ray_args = ["--engine", "ray", "--ray-actors", str(cpus), "--ray-cpus-per-actor", "1"]
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray_new_cluster": [],
                                             "ray_running_cluster": []}
    with running_cluster(cpus) as address:
        for r in range(rounds):
            for name, extra in (("local", []), ("ray_new_cluster", ray_args),
                                ("ray_running_cluster", [*ray_args, "--ray-address", address])):
                out = work / f"cpu_{name}{r}"
                got = cpu_seconds([sys.executable, "-m", "camlens", "explain", str(src),
                                   "--out", str(out), *CLI, *extra],
                                  cluster=name == "ray_running_cluster")
                assert sum(1 for _ in out.iterdir()) == n, name
                shutil.rmtree(out)
                runs[name].append(got)
                print(f"round {r + 1} {name}: {got['cpu_s']} CPU s, {got['wall_s']} s, "
                      f"load {got['load_1min_after']}", flush=True)
    local = statistics.median(g["cpu_s"] for g in runs["local"])
    return {"photos": n, "rounds": rounds, "actors": cpus, "runs": runs,
            "cpu_s_median": {k: statistics.median(g["cpu_s"] for g in v)
                             for k, v in runs.items()},
            "wall_s_median": {k: statistics.median(g["wall_s"] for g in v)
                              for k, v in runs.items()},
            "cpu_ratio_local_over": {k: round(local / statistics.median(
                g["cpu_s"] for g in v), 3) for k, v in runs.items()}}


def _child(job: str, src: Path, n: int, cpus: int, work: Path) -> dict[str, Any]:
    """Run ``--child-JOB`` of this script in a fresh process; its last stdout line (JSON)."""
    done = subprocess.run([sys.executable, str(HERE / "ray_engine.py"), f"--child-{job}",
                           str(src), str(work / job), str(n), str(cpus)], env=env(),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{job} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def startup(src: Path, n: int, cpus: int, work: Path) -> dict[str, Any]:
    """A Ray explain as the CLI runs it, in a child process, with a clock at each step."""
    return _child("startup", src, n, cpus, work)


def child_startup(src: Path, out: Path, n: int, cpus: int) -> None:
    """The ``startup`` job's child: camlens explain --engine ray's steps, timed."""
    t0 = time.perf_counter()
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks[name] = round(time.perf_counter() - t0, 2)

    import functools

    from camlens.models import load_model
    from camlens.pipeline.distributed import RayOptions, connect
    from camlens.pipeline.explain_distributed import ExplainSetup, explain_on_pool
    from camlens.pipeline.images import Plan, sources_of
    from camlens.pipeline.pool import ActorPool

    mark("imported camlens")
    import ray

    connect(num_cpus=cpus, quiet=True)
    mark("ray.init (a new local cluster)")
    model = functools.partial(load_model, "efficientnet_lite0")
    pool: ActorPool[Any] = ActorPool(model, RayOptions(None, cpus, 1.0, 0.0))
    mark("pool requested")
    loaded = model()
    mark("driver's model loaded")
    plan = Plan(loaded, ("gradcam",), loaded.default_layer, None, None, 1, out, 768,
                what=("maps",))
    setup = ExplainSetup.of(plan, model, 8)
    sources = sources_of(sorted(src.iterdir())[:n])
    by: dict[str, int] = {}
    ready_at: dict[int, float] = {}
    first = True
    for row in explain_on_pool(pool, sources, setup, loaded):
        if first:
            mark("first row")
            first = False
        who = "driver" if int(row["pid"]) == os.getpid() else f"actor {int(row['pid'])}"
        by[who] = by.get(who, 0) + 1
        for i in pool.ready:
            ready_at.setdefault(i, round(time.perf_counter() - t0, 2))
    mark(f"last row ({len(sources)} images)")
    pool.close()
    mark("pool closed")
    ray.shutdown()
    mark("ray.shutdown")
    print(json.dumps({"photos": n, "actors": cpus, "marks": marks, "rows_by": by,
                      "actor_ready_seen_at": sorted(ready_at.values())}))


def warm(src: Path, n: int, cpus: int, work: Path) -> dict[str, Any]:
    """``ExplainPool``: two calls against the local engine, all in a child process."""
    return _child("warm", src, n, cpus, work)


def child_warm(src: Path, out: Path, n: int, cpus: int) -> None:
    """The ``warm`` job's child: local run, ExplainPool's first and second call, local again;
    outputs compared."""
    import camlens.ray as cr
    from camlens.models import load_model
    from camlens.pipeline.distributed import connect
    from camlens.pipeline.images import Plan, Tally, run_sources, sources_of

    class Quiet:
        def failed(self, message: str) -> None:
            raise SystemExit(message)

        def warn(self, message: str) -> None:
            pass

        def explained(self, *args: Any) -> None:
            pass

    paths = sorted(src.iterdir())[:n]
    loaded = load_model("efficientnet_lite0")
    seconds: dict[str, float] = {}

    def local(name: str) -> None:
        plan = Plan(loaded, ("gradcam",), loaded.default_layer, None, None, 1, out / name, 768,
                    what=("maps",))
        start = time.perf_counter()
        tally: Tally = run_sources(sources_of(paths), plan, Quiet(), batch_size=8)
        assert tally.done == n
        seconds[name] = round(time.perf_counter() - start, 2)

    local("local1")
    connect(num_cpus=cpus, quiet=True)
    start = time.perf_counter()
    with cr.ExplainPool("efficientnet_lite0", actors=cpus) as pool:
        seconds["pool_start"] = round(time.perf_counter() - start, 2)
        for name in ("pool1", "pool2"):
            t = time.perf_counter()
            rows = pool.explain(paths, out=out / name, methods=["gradcam"], top_k=1,
                                what=("maps",), batch_size=8)
            seconds[name] = round(time.perf_counter() - t, 2)
            assert all(r["done"] for r in rows) and len(rows) == n
            seconds[f"{name}_rows_by_driver"] = sum(int(r["pid"]) == os.getpid()
                                                    for r in rows)
    seconds["pool_with_block"] = round(time.perf_counter() - start, 2)
    local("local2")
    equal = same_outputs(out / "local1", out / "pool1") + same_outputs(out / "local1",
                                                                       out / "pool2")
    local_s = (seconds["local1"] + seconds["local2"]) / 2
    print(json.dumps({"photos": n, "actors": cpus, "seconds": seconds,
                      "outputs_compared_equal": equal,
                      "ratio_first_call": round(local_s / seconds["pool1"], 3),
                      "ratio_second_call": round(local_s / seconds["pool2"], 3)}))


def ray_cli(*args: str) -> None:
    done = subprocess.run(["ray", *args], env=env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ray {' '.join(args)} failed: {done.stderr[-2000:]}")


def node_ports(i: int) -> list[str]:
    """Fixed ports of node ``i`` (0: the head) in a range of its own, so that the two nodes
    and other Ray users of this machine (whose ports Ray picks at random) do not collide."""
    base = PORT + 10 + 10 * i
    return ["--node-manager-port", str(base), "--object-manager-port", str(base + 1),
            "--dashboard-agent-listen-port", str(base + 2),
            "--dashboard-agent-grpc-port", str(base + 3),
            "--runtime-env-agent-port", str(base + 4), "--metrics-export-port", str(base + 5),
            "--min-worker-port", str(21000 + 100 * i), "--max-worker-port",
            str(21099 + 100 * i)]


def own_processes(temp: Path) -> list[int]:
    """The processes of the Ray nodes whose temp folder is ``temp`` (their command lines name
    it; the workers' name their session folder inside it)."""
    mine = []
    key = str(temp).encode()
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                if key in Path(f"/proc/{d}/cmdline").read_bytes():
                    mine.append(int(d))
            except OSError:
                pass
    return mine


def stop_nodes(temp: Path) -> int:
    """End this benchmark's nodes only (not a bare ``ray stop``, which ends every Ray on
    the machine): SIGTERM to their processes, SIGKILL to those left after 10 s."""
    found = own_processes(temp)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in own_processes(temp):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        for _ in range(100):
            if not own_processes(temp):
                return len(found)
            time.sleep(0.1)
    return len(found)


def two_nodes(src: Path, n: int, pool_n: int, work: Path, jobs: list[str]) -> dict[str, Any]:
    """Start the two-node cluster, run ``spread``/``fault`` (Ray Data) and
    ``pool_spread``/``pool_fault`` (the CLI's actor pool) on it, then end its nodes."""
    results: dict[str, Any] = {}
    temp = Path(tempfile.mkdtemp(prefix="r2n", dir="/tmp"))  # short: socket paths
    os.environ["RAY_AUTH_MODE"] = "token"  # Ray 2.60 with ~/.ray/auth_token: every process
    address = f"127.0.0.1:{PORT}"
    try:
        ray_cli("start", "--head", "--num-cpus", "1", "--port", str(PORT),
                "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(temp),
                *node_ports(0))
        ray_cli("start", "--address", address, "--num-cpus", "1", "--disable-usage-stats",
                "--temp-dir", str(temp), *node_ports(1))
        paths = sorted(src.iterdir())[:n]  # --cluster-photos of them, for Ray Data's jobs
        if {"spread", "fault"} & set(jobs):
            import ray

            import camlens.ray as cr

            cr.connect(address)
            results["nodes"] = len([nd for nd in ray.nodes() if nd["Alive"]])
            if "spread" in jobs:
                results["spread"] = spread(cr, paths, work / "spread")
            if "fault" in jobs:
                results["fault"] = fault(cr, paths, work / "fault")
            ray.shutdown()
        if {"pool_spread", "pool_fault"} & set(jobs):
            paths = sorted(src.iterdir())[:pool_n]  # --pool-photos of them
            local = work / "pool_local"
            run_cli(paths, local, [])
            if "pool_spread" in jobs:
                results["pool_spread"] = pool_job(paths, work, address, local, kill=False)
            if "pool_fault" in jobs:
                results["pool_fault"] = pool_job(paths, work, address, local, kill=True)
    finally:
        results["own_ray_processes_ended"] = stop_nodes(temp)
        shutil.rmtree(temp, ignore_errors=True)
    return results


def spread(cr: Any, paths: list[Path], out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    rows = cr.explain_dataset(cr.images_dataset(paths), out=out, methods=["gradcam"], top_k=1,
                              what=("maps",), batch_size=8, actors=2).take_all()
    per_node: dict[str, int] = {}
    for row in rows:
        per_node[row["node"][:8]] = per_node.get(row["node"][:8], 0) + bool(row["done"])
    return {"images": len(paths), "rows": len(rows), "per_node": per_node,
            "seconds": round(time.perf_counter() - start, 1)}


def fault(cr: Any, paths: list[Path], out: Path) -> dict[str, Any]:
    from camlens import output

    ds = cr.explain_dataset(cr.images_dataset(paths), out=out, methods=["gradcam"], top_k=1,
                            what=("maps",), batch_size=4, actors=2)
    rows: list[dict[str, Any]] = []
    killed: list[int] = []
    start = time.perf_counter()
    for row in ds.iter_rows():
        rows.append(row)
        if not killed:
            victim = int(row["pid"])  # an actor of this cluster, alive and busy
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            print(f"killed actor process {victim} after the first row", flush=True)
    keys = [bytes(r["path"]) for r in rows]
    folders = [p for p in out.iterdir() if p.is_dir()]
    readable = 0
    for p in folders:
        try:
            output.load(p)
            readable += 1
        except Exception:  # noqa: BLE001 - counted
            pass
    return {"images": len(paths), "rows": len(rows), "distinct": len(set(keys)),
            "twice": len(keys) - len(set(keys)), "done": sum(bool(r["done"]) for r in rows),
            "folders": len(folders), "folders_read_back": readable, "killed_pid": killed,
            "pids": sorted({int(r["pid"]) for r in rows}),
            "rows_after_kill_by_new_pids": sum(1 for r in rows[1:]
                                               if int(r["pid"]) not in killed),
            "seconds": round(time.perf_counter() - start, 1)}


POOL = ["--batch-size", "4", "-q"]


def run_cli(paths: list[Path], out: Path, extra: list[str]) -> subprocess.Popen[str]:
    """``camlens explain PATHS --out OUT`` (the benchmark's settings, batches of 4) started
    in its own process; waited for here unless ``extra`` runs it on Ray."""
    proc = subprocess.Popen([sys.executable, "-m", "camlens", "explain", *map(str, paths),
                             "--out", str(out), *CLI, *POOL, *extra], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not extra:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"camlens explain (local) failed: {err[-2000:]}")
    return proc


def log_lines(log: Path) -> list[dict[str, Any]]:
    """The finished lines of a ``--ray-log`` file so far."""
    if not log.exists():
        return []
    text = log.read_text()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]


def pool_job(paths: list[Path], work: Path, address: str, local: Path,
             kill: bool) -> dict[str, Any]:
    """``camlens explain --engine ray --ray-address ADDRESS --ray-actors 2 --ray-log LOG``
    on the two-node cluster: the images per node (from LOG); with ``kill``, the process of the
    actor that sent back the first actor-made row is SIGKILLed then (it holds more batches).
    Counted: LOG's lines, distinct images, images twice, folders, folders that equal the local
    engine's (maps to float16 rounding, records but for timings), files byte-identical."""
    name = "pool_fault" if kill else "pool_spread"
    out, log = work / name, work / f"{name}.jsonl"
    start = time.perf_counter()
    proc = run_cli(paths, out, ["--engine", "ray", "--ray-address", address, "--ray-actors",
                                "2", "--ray-log", str(log)])
    killed: list[int] = []
    before = 0  # rows back when the actor was killed
    while kill and not killed and proc.poll() is None:
        seen = log_lines(log)
        actors = [r for r in seen if r["by"] == "actor"]
        if actors:
            victim = int(actors[0]["pid"])
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            before = len(seen)
            print(f"{name}: killed actor process {victim} after {before} rows", flush=True)
        time.sleep(0.02)
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name}: camlens explain --engine ray failed: {err[-2000:]}")
    rows = log_lines(log)
    images = [r["image"] for r in rows]
    per_node: dict[str, int] = {}
    for r in rows:
        who = "driver" if r["by"] == "driver" else r["node"][:8]
        per_node[who] = per_node.get(who, 0) + 1
    identical = {"maps.npz": 0, "explanation.json but timings": 0}
    for folder in local.iterdir():
        there = out / folder.name
        identical["maps.npz"] += (folder / "maps.npz").read_bytes() == \
            (there / "maps.npz").read_bytes()
        a, b = (json.loads((f / "explanation.json").read_text()) for f in (folder, there))
        identical["explanation.json but timings"] += a.pop("timings") is not None and a == \
            {k: v for k, v in b.items() if k != "timings"}
    return {"images": len(paths), "log_lines": len(rows), "distinct": len(set(images)),
            "twice": len(images) - len(set(images)), "done": sum(r["done"] for r in rows),
            "by_node": per_node, "actor_pids": sorted({r["pid"] for r in rows
                                                       if r["by"] == "actor"}),
            "folders": len(list(out.iterdir())),
            "folders_equal_local": same_outputs(local, out), "byte_identical": identical,
            "killed_pid": killed, "rows_before_kill": before if killed else None,
            "rows_before_kill_by_killed": sum(int(r["pid"]) in killed for r in rows[:before]),
            "rows_by_pid": {str(p): sum(int(r["pid"]) == p for r in rows)
                            for p in sorted({int(r["pid"]) for r in rows})},
            "stderr": err.strip()[-300:], "seconds": round(seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2, help="actors of the throughput run")
    parser.add_argument("--cluster-photos", type=int, default=64,
                        help="photos of the spread and fault runs")
    parser.add_argument("--pool-photos", type=int, default=256,
                        help="photos of the pool_spread and pool_fault runs (at most --photos)")
    parser.add_argument("--jobs", default="throughput,cluster,kept,startup,warm,cpu,spread,fault,"
                                          "pool_spread,pool_fault")
    parser.add_argument("--out", default=None, help="JSON results here")
    parser.add_argument("--child-startup", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--child-warm", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `finally` ends the owned cluster
    for child, fn in ((args.child_startup, child_startup), (args.child_warm, child_warm)):
        if child:
            fn(Path(child[0]), Path(child[1]), int(child[2]), int(child[3]))
            return 0
    jobs = args.jobs.split(",")
    results: dict[str, Any] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "photos"
        photos(src, args.photos)
        if "throughput" in jobs:
            results["throughput"] = throughput(src, args.photos, args.rounds, args.cpus, work)
            print(json.dumps(results), flush=True)
        if "cpu" in jobs:
            results["cpu"] = cpu(src, args.photos, args.rounds, args.cpus, work)
            print(json.dumps({"cpu": results["cpu"]["cpu_s_median"]}), flush=True)
        if "cluster" in jobs:
            with running_cluster(args.cpus) as address:
                results["cluster"] = throughput(src, args.photos, args.rounds, args.cpus, work,
                                                address)
            print(json.dumps({"cluster": results["cluster"]}), flush=True)
        if "kept" in jobs:
            with running_cluster(args.cpus) as address:
                results["kept"] = throughput(src, args.photos, args.rounds + 1, args.cpus, work,
                                             address, keep=120)
            print(json.dumps({"kept": results["kept"]}), flush=True)
        for name, job in (("startup", startup), ("warm", warm)):
            if name in jobs:
                results[name] = job(src, args.photos, args.cpus, work)
                results[f"load_after_{name}"] = os.getloadavg()
                print(json.dumps({name: results[name]}), flush=True)
        if {"spread", "fault", "pool_spread", "pool_fault"} & set(jobs):
            os.environ.update(env())
            results.update(two_nodes(src, args.cluster_photos, args.pool_photos, work, jobs))
    results["load_after"] = os.getloadavg()
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
