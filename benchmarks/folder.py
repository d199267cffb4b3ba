#!/usr/bin/env python3
"""Explaining a folder: `camlens explain` against a process that only decodes and predicts.

A folder of photos of mixed sizes (made here from scikit-image's sample photos: deterministic
crops, resized to 8 sizes, JPEG quality 90) and the bundled model (EfficientNet-Lite0,
``camlens.models.load_model()``), top-1. Jobs, each a whole run over the folder in this
process:

- ``forward``: the yardstick: load the model, then decode each photo, preprocess it as the
  CLI does (``record.preprocess``), and run the forward passes (``torch.inference_mode``) in
  the CLI's batches (same-shape groups of ``--batch-size``, cut by the same executor,
  ``camlens.pipeline.run`` with ``loaders=0``: one thread, nothing overlapped);
- ``forward-threads``: the same with the CLI's two loader threads (what overlap alone buys);
- ``forward-cl``: ``forward`` with the batch in channels-last layout, as ``camlens.explain``
  hands it to the model with ``channels_last=True`` (a second yardstick: a cheaper forward
  pass for this model; the CLI keeps the default layout);
- ``maps``: ``camlens explain --method gradcam --top-k 1 --save maps``;
- ``png``: ``camlens explain --method gradcam --top-k 1`` (all outputs: maps, PNGs, summary);
- ``overlays``: the same with ``--save png`` (the overlay PNGs and explanation.json only);
- ``figure1``: ``camlens explain --top-k 1`` (the four default methods, all outputs).

Timing (shared/BENCHMARKING.md): one process, ``torch.set_num_threads(2)``, the jobs
interleaved with ``forward`` (forward, A, forward, B, ...; the order of A, B... rotates each
round) after one warm-up round on 16 photos; medians over rounds, and each job's ratio to the
median ``forward`` ("x forward") and the median of its ratios to the ``forward`` run just
before it ("paired"). The process runs with ``GLIBC_TUNABLES`` (glibc keeps freed memory, as
the ``camlens`` command itself arranges) and ``OMP_WAIT_POLICY=PASSIVE``; the script re-runs
itself with both set. Peak memory: each job once in its own process with glibc's default
allocator, as the peak RSS (``VmHWM``; ``ru_maxrss`` would carry the parent's peak over
``exec`` on Linux) and its increase over the RSS before the job (the ``camlens`` command
applies its own allocator setting, :mod:`camlens.allocator`, as it does for users). Only the
standard library's clocks (``time.perf_counter``) and ``resource`` are used.

    python benchmarks/folder.py                      # 256 photos, 5 rounds, all jobs
    python benchmarks/folder.py --photos 64 --rounds 3 --jobs maps,png
    python benchmarks/folder.py --profile maps       # cProfile of one job, its threads too
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
           "hubble_deep_field", "cat", "retina")
SIZES = ((451, 300), (300, 451), (400, 400), (640, 480), (480, 640), (800, 600), (512, 384),
         (500, 500))
"""(width, height): with --input-size 224 the model sees 5 input shapes"""
CLI_JOBS: dict[str, list[str]] = {
    "maps": ["--method", "gradcam", "--top-k", "1", "--save", "maps"],
    "png": ["--method", "gradcam", "--top-k", "1"],
    "overlays": ["--method", "gradcam", "--top-k", "1", "--save", "png"],
    "figure1": ["--top-k", "1"],
}
JOBS = ("forward", "forward-threads", "forward-cl", *CLI_JOBS)
BARS = {"maps": 1.3, "png": 2.0}


def make_photos(folder: Path, n: int) -> list[Path]:
    """``n`` photos: photo i is a random crop (seeded by i) of sample photo i mod 8 with the
    aspect of size (i // 8) mod 8, resized to that size (bilinear), saved as JPEG."""
    import numpy as np
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
               for name in SOURCES]
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        src = sources[i % len(sources)]
        w, h = SIZES[(i // len(sources)) % len(SIZES)]
        scale = min(src.width / w, src.height / h) * rng.uniform(0.6, 1.0)
        cw, ch = round(w * scale), round(h * scale)
        x0 = int(rng.integers(0, src.width - cw + 1))
        y0 = int(rng.integers(0, src.height - ch + 1))
        photo = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BILINEAR)
        path = folder / f"photo_{i:03d}.jpg"
        photo.save(path, quality=90)
        paths.append(path)
    return paths


def forward_job(paths: list[Path], batch_size: int, loaders: int,
                channels_last: bool = False) -> None:
    """Load the model, decode + preprocess every photo, forward passes in the CLI's batches."""
    import torch

    from camlens import io as cio
    from camlens.models import load_model
    from camlens.pipeline import run

    record = load_model()

    def load(path: Path) -> torch.Tensor:
        return record.preprocess(cio.load_image(path))

    def compute(items: list[Path], xs: list[torch.Tensor]) -> list[None]:
        x = torch.stack(xs)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            record.model(x)
        return [None] * len(items)

    report = run(paths, load, compute, key=lambda x: tuple(x.shape), batch_size=batch_size,
                 loaders=loaders)
    assert report.done == len(paths) and not report.failures, report


def cli_job(folder: Path, out: Path, args: list[str], batch_size: int) -> None:
    from camlens.cli import main

    if out.exists():
        shutil.rmtree(out)
    code = main(["explain", str(folder), "--out", str(out), "--batch-size", str(batch_size),
                 "-q", *args])
    assert code == 0, f"camlens explain exited with {code}"


def job(name: str, folder: Path, paths: list[Path], out: Path,
        batch_size: int) -> Callable[[], None]:
    if name == "forward":
        return lambda: forward_job(paths, batch_size, loaders=0)
    if name == "forward-threads":
        return lambda: forward_job(paths, batch_size, loaders=2)
    if name == "forward-cl":
        return lambda: forward_job(paths, batch_size, loaders=0, channels_last=True)
    return lambda: cli_job(folder, out / name, CLI_JOBS[name], batch_size)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- timing


def time_jobs(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    folder = work / "photos"
    paths = make_photos(folder, args.photos)
    warm = work / "warm"
    shutil.copytree(folder, warm, ignore=lambda d, names: sorted(names)[16:])
    warm_paths = sorted(warm.iterdir())
    others = [j for j in args.jobs if j != "forward"]
    for name in ["forward", *others]:  # warm-up: imports, first allocations, the model file
        job(name, warm, warm_paths, work / "out-warm", args.batch_size)()
    times: dict[str, list[float]] = {name: [] for name in ["forward", *others]}
    cpu: dict[str, list[float]] = {name: [] for name in ["forward", *others]}
    paired: dict[str, list[float]] = {name: [] for name in others}

    def timed(name: str) -> float:
        run = job(name, folder, paths, work / "out", args.batch_size)
        c0, t0 = _cpu_seconds(), time.perf_counter()
        run()
        took = time.perf_counter() - t0
        times[name].append(took)
        cpu[name].append(_cpu_seconds() - c0)
        return took

    for r in range(args.rounds):
        order = others[r % len(others):] + others[:r % len(others)] if others else []
        for name in order or [None]:
            base = timed("forward")
            if name is None:
                continue
            took = timed(name)
            paired[name].append(took / base)
            print(f"round {r + 1}: forward {base:.2f} s, {name} {took:.2f} s "
                  f"({took / base:.2f}x; CPU {cpu[name][-1]:.1f} s)", file=sys.stderr,
                  flush=True)
    sizes = {name: folder_bytes(work / "out" / name) for name in others if name in CLI_JOBS}
    return {"times": times, "cpu": cpu, "paired": paired, "output_bytes": sizes,
            "photo_bytes": folder_bytes(folder)}


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- memory


def child(args: argparse.Namespace) -> None:
    """One job, once, in this fresh process: print its peak memory as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    folder = Path(args.child_folder)
    paths = sorted(folder.iterdir())
    run = job(args.child, folder, paths, Path(args.child_out), args.batch_size)
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    print(json.dumps({"before_kib": before, "peak_kib": peak, "seconds": seconds}))


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory(args: argparse.Namespace, work: Path) -> dict[str, dict[str, float]]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out: dict[str, dict[str, float]] = {}
    for name in args.jobs:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", name, "--child-folder", str(work / "photos"),
             "--child-out", str(work / "out-mem"), "--batch-size", str(args.batch_size),
             "--threads", str(args.threads)],
            capture_output=True, text=True, env=env, check=True)
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"memory {name}: {out[name]}", file=sys.stderr, flush=True)
    return out


# --------------------------------------------------------------------------- report


def report(args: argparse.Namespace, timed: dict[str, Any],
           mem: dict[str, dict[str, float]] | None) -> str:
    import torch

    import camlens

    times, paired = timed["times"], timed["paired"]
    base = statistics.median(times["forward"])
    base_cpu = statistics.median(timed["cpu"]["forward"])
    lines = [
        f"# Explaining a folder: {args.photos} photos, bundled model, top-1",
        "",
        f"camlens {camlens.__version__} (commit {_commit()}), torch {torch.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores, "
        f"torch.set_num_threads({args.threads}), batch size {args.batch_size}, "
        f"{args.rounds} rounds; timing process: GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES')}"
        f" OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; load average at the end "
        f"{os.getloadavg()[0]:.1f}. Photos: {timed['photo_bytes'] / 1e6:.1f} MB of JPEG.",
        "",
        f"Command: `python benchmarks/folder.py {' '.join(args.argv)}`",
        "",
        "| job | median s | x forward | paired (median) | bar | CPU s (x forward) | runs (s) "
        "| output | peak RSS (increase) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ["forward", *[j for j in args.jobs if j != "forward"]]:
        t = times[name]
        med = statistics.median(t)
        pair = f"{statistics.median(paired[name]):.2f}x" if name in paired else ""
        bar = ""
        if name in BARS:
            ratio = statistics.median(paired[name])
            bar = f"<= {BARS[name]}x: {'met' if ratio <= BARS[name] else 'MISSED'}"
        size = timed["output_bytes"].get(name)
        out = f"{size / 1e6:.1f} MB" if size is not None else ""
        m = (mem or {}).get(name)
        rss = (f"{m['peak_kib'] / 1024:.0f} MiB (+{(m['peak_kib'] - m['before_kib']) / 1024:.0f})"
               if m else "")
        runs = ", ".join(f"{x:.1f}" for x in t)
        c = statistics.median(timed["cpu"][name])
        lines.append(f"| {name} | {med:.2f} | {med / base:.2f}x | {pair} | {bar} | "
                     f"{c:.1f} ({c / base_cpu:.2f}x) | {runs} | {out} | {rss} |")
    lines += ["", "x forward: median of the job / median of forward; paired: median over "
              "rounds of the job / the forward run just before it (the bars are read on it); "
              "CPU: user + system seconds of the process, all threads, median."]
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def profile(args: argparse.Namespace, work: Path) -> None:
    """cProfile of one job: the main thread (batching, explaining), and for the ``camlens
    explain`` jobs the loader and writer stages too (each stage's calls go through one
    profiler under a lock, so the profiled run loads and writes one image at a time)."""
    import threading

    import torch

    from camlens.pipeline import images

    torch.set_num_threads(args.threads)
    folder = work / "photos"
    paths = make_photos(folder, args.photos)
    run = job(args.profile, folder, paths, work / "out", args.batch_size)
    run()  # warm
    stages = {"load": cProfile.Profile(), "write": cProfile.Profile()}
    lock = threading.Lock()
    originals = {name: getattr(images._Run, name) for name in stages}

    def profiled(name: str) -> Callable[..., Any]:
        def call(self: Any, *a: Any) -> Any:
            with lock:
                stages[name].enable()
                try:
                    return originals[name](self, *a)
                finally:
                    stages[name].disable()

        return call

    for name in stages:
        setattr(images._Run, name, profiled(name))
    main_thread = cProfile.Profile()
    try:
        main_thread.runcall(run)
    finally:
        for name, original in originals.items():
            setattr(images._Run, name, original)
    for title, prof in [("main thread", main_thread), *stages.items()]:
        if not prof.getstats():
            continue
        print(f"==================== {title}")
        pstats.Stats(prof).sort_stats("cumulative").print_stats(20)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", default=",".join(JOBS),
                        help=f"comma list of {', '.join(JOBS)} (forward always runs)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    parser.add_argument("--profile", choices=JOBS, help="cProfile one job and stop")
    parser.add_argument("--child", choices=JOBS, help=argparse.SUPPRESS)
    parser.add_argument("--child-folder", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    args.jobs = [j for j in args.jobs.split(",") if j]
    if args.child:
        child(args)
        return
    if os.environ.get("GLIBC_TUNABLES") != TUNABLES or "OMP_WAIT_POLICY" not in os.environ:
        env = {**os.environ, "GLIBC_TUNABLES": TUNABLES,
               "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)
    with tempfile.TemporaryDirectory(prefix="camlens-folder-") as tmp:
        work = Path(tmp)
        if args.profile:
            profile(args, work)
            return
        timed = time_jobs(args, work)
        mem = None if args.no_memory else memory(args, work)
    text = report(args, timed, mem)
    print(text)
    if args.out:
        Path(args.out + ".md").write_text(text)
        Path(args.out + ".json").write_text(json.dumps(
            {"args": args.argv, "timed": timed, "memory": mem}, indent=1) + "\n")


if __name__ == "__main__":
    main()
