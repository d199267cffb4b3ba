#!/usr/bin/env python3
"""The Ray engine on this machine: its overhead against the local engine, how a two-node cluster
shares the work, and what a killed worker costs.

- ``throughput``: ``camlens explain --method gradcam --top-k 1 --save maps`` (the bundled
  EfficientNet-Lite0) over the same photos (``benchmarks/folder.py``'s, 256 by default), with
  ``--engine local`` and with ``--engine ray`` (a local cluster of ``--cpus`` CPUs, one actor
  per CPU), each run in its own process, interleaved (local, ray, local, ray, ...) so that
  both see the same load; per round the ratio ray/local of images per second. Two clocks: the
  run's own ("explained N image(s) in T s": from the first image to the last, actor start-up
  included for Ray) and the whole command's (Python, model and cluster start-up included).
- ``spread``: a two-node cluster on this machine (``ray start --head --num-cpus 1`` and
  ``ray start --address ... --num-cpus 1``), two actors, ``camlens.ray.explain_dataset``: the
  images each node explained.
- ``fault``: on the same cluster, one actor process is killed (SIGKILL) once the first rows
  are back; Ray restarts it and retries its batches. Counted: rows back, distinct images,
  images back twice, folders written, folders that read back (``camlens.output.load``).

``ray stop`` ends the two-node cluster at the end (also after an error).

    nice -n 10 python benchmarks/ray_engine.py --photos 256 --rounds 3
    python benchmarks/ray_engine.py --jobs spread,fault --photos 64
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
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


def throughput(src: Path, n: int, rounds: int, cpus: int, work: Path) -> dict[str, Any]:
    ray_args = ["--engine", "ray", "--ray-actors", str(cpus), "--ray-cpus-per-actor", "1"]
    runs: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
    ratios, ratios_wall = [], []
    for r in range(rounds):
        for name, extra in (("local", []), ("ray", ray_args)):
            out = work / f"{name}{r}"
            runs[name].append(run_seconds(src, out, extra))
            made = sum(1 for _ in out.iterdir())
            assert made == n, f"{name}: {made} folders for {n} photos"
            print(f"round {r + 1} {name}: run {runs[name][-1][0]:.1f} s, command "
                  f"{runs[name][-1][1]:.1f} s, load {os.getloadavg()[0]:.1f}", flush=True)
        ratios.append(runs["local"][-1][0] / runs["ray"][-1][0])
        ratios_wall.append(runs["local"][-1][1] / runs["ray"][-1][1])
    return {
        "photos": n, "rounds": rounds, "actors": cpus,
        "local_run_s": [round(a, 2) for a, _ in runs["local"]],
        "ray_run_s": [round(a, 2) for a, _ in runs["ray"]],
        "local_command_s": [round(b, 2) for _, b in runs["local"]],
        "ray_command_s": [round(b, 2) for _, b in runs["ray"]],
        "local_images_per_s": round(n / statistics.median(a for a, _ in runs["local"]), 2),
        "ray_images_per_s": round(n / statistics.median(a for a, _ in runs["ray"]), 2),
        "ratio_run_paired_median": round(statistics.median(ratios), 3),
        "ratio_command_paired_median": round(statistics.median(ratios_wall), 3),
        "ratios_run": [round(x, 3) for x in ratios],
    }


def ray_cli(*args: str) -> None:
    subprocess.run(["ray", *args], env=env(), check=True, capture_output=True, text=True)


def two_nodes(src: Path, n: int, work: Path, jobs: list[str]) -> dict[str, Any]:
    """Start the two-node cluster, run ``spread`` and/or ``fault`` on it, ``ray stop``."""
    results: dict[str, Any] = {}
    try:
        ray_cli("start", "--head", "--num-cpus", "1", "--port", str(PORT),
                "--include-dashboard=false", "--disable-usage-stats")
        ray_cli("start", "--address", f"127.0.0.1:{PORT}", "--num-cpus", "1",
                "--disable-usage-stats")
        import ray

        import camlens.ray as cr

        cr.connect(f"127.0.0.1:{PORT}")
        nodes = [nd["NodeID"] for nd in ray.nodes() if nd["Alive"]]
        results["nodes"] = len(nodes)
        paths = sorted(src.iterdir())[:n]  # --cluster-photos of them
        if "spread" in jobs:
            results["spread"] = spread(cr, paths, work / "spread")
        if "fault" in jobs:
            results["fault"] = fault(cr, paths, work / "fault")
        ray.shutdown()
    finally:
        subprocess.run(["ray", "stop"], env=env(), capture_output=True)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2, help="actors of the throughput run")
    parser.add_argument("--cluster-photos", type=int, default=64,
                        help="photos of the spread and fault runs")
    parser.add_argument("--jobs", default="throughput,spread,fault")
    parser.add_argument("--out", default=None, help="JSON results here")
    args = parser.parse_args()
    jobs = args.jobs.split(",")
    results: dict[str, Any] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "photos"
        photos(src, args.photos)
        if "throughput" in jobs:
            results["throughput"] = throughput(src, args.photos, args.rounds, args.cpus, work)
            print(json.dumps(results), flush=True)
        if {"spread", "fault"} & set(jobs):
            os.environ.update(env())
            results.update(two_nodes(src, args.cluster_photos, work, jobs))
    results["load_after"] = os.getloadavg()
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
