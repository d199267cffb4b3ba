"""Load test of ``camlens serve`` on loopback: N concurrent clients for S seconds mixing page
views and explanations.

    PYTHONPATH=src nice -n 10 python3 benchmarks/web_load.py --clients 16 --seconds 60

Starts ``python -m camlens serve`` on a free loopback port (its own process, as a user would
run it), then each client thread loops: with probability ``--explain-share`` it posts a photo
to ``POST /api/explain`` (one of two uploads, two method sets) and downloads the result's
maps.npz, which must equal the library's maps for that photo (camlens.explain on the model's
input, computed here beforehand; float16 tolerance); otherwise it views a page (the explain
page, the stylesheet, a result page). Reports requests/s, p50/p95 latency per kind, 429s,
errors (anything but 200/429, and wrong maps), the server's peak RSS (VmHWM) and the load
average. ``--json FILE`` writes the numbers.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

import camlens
from camlens import io as cio
from camlens import output
from camlens.models import load_model

METHOD_SETS = (("gradcam", "counterfactual-gradcam"),
               ("guided-backprop", "gradcam", "guided-gradcam", "counterfactual-gradcam"))
TOLERANCE = 5e-4
"""maps.npz holds float16: at most 2.4e-4 from the float32 map in [0, 1]"""


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    busy: int = 0
    errors: list[str] = field(default_factory=list)
    explained: int = 0
    checked_maps: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float, status: int) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            self.statuses[status] += 1
            if status == 429:
                self.busy += 1

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


def photos() -> list[tuple[str, bytes, Image.Image]]:
    """Two uploads: chelsea and coffee shrunk to 200 x 133, as PNG (their maps are compared
    at this size, the output size of so small a photo)."""
    out = []
    for name in ("chelsea", "coffee"):
        img = cio.load_image(cio.sample_image(name)).resize((200, 133))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append((f"{name}.png", buf.getvalue(), img))  # PNG: the server decodes img
    return out


def references(model: str, uploads: list[tuple[str, bytes, Image.Image]]
               ) -> dict[tuple[str, tuple[str, ...]], dict[str, np.ndarray]]:
    """The library's maps of every (photo, method set): camlens.explain on the model's input,
    resized to the photo (top-1 class)."""
    loaded = load_model(model)
    out = {}
    for name, _, img in uploads:
        x = loaded.preprocess(img)[None]
        for methods in METHOD_SETS:
            ex = camlens.explain(loaded.model, x, method=list(methods),
                                 layer=loaded.default_layer, top_k=1)
            out[(name, methods)] = {
                f"{m}/{int(ex[m].targets[0, 0])}": output.resized(ex[m].maps[0, 0],
                                                                  (img.height, img.width))
                for m in methods}
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: str, port: int, workers: int, queue: int,
                 log: Any) -> subprocess.Popen[bytes]:
    """``python -m camlens serve`` of this camlens on ``port``; its output goes to ``log``
    (a file: a pipe nobody reads would fill and stop the server)."""
    src = str(Path(camlens.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "camlens", "serve", "--model", model, "--port", str(port),
         "--workers", str(workers), "--queue", str(queue)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the server stopped: {log.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start in 600 s")


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM of ``pid`` (its peak resident set) in MiB; None where /proc is missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def client(base: str, seed: int, stop: float, share: float, tally: Tally,
           uploads: list[tuple[str, bytes, Image.Image]],
           refs: dict[tuple[str, tuple[str, ...]], dict[str, np.ndarray]],
           results: list[str]) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=600) as http:
        while time.monotonic() < stop:
            try:
                if rng.random() < share:
                    explain(http, rng, tally, uploads, refs, results)
                else:
                    view(http, rng, tally, results)
            except httpx.HTTPError as exc:
                tally.error(f"{type(exc).__name__}: {exc}")


def timed(tally: Tally, kind: str, call: Any) -> httpx.Response:
    start = time.perf_counter()
    r: httpx.Response = call()
    tally.add(kind, time.perf_counter() - start, r.status_code)
    if r.status_code not in (200, 429):
        tally.error(f"{kind}: HTTP {r.status_code}: {r.text[:200]}")
    return r


def explain(http: httpx.Client, rng: random.Random, tally: Tally,
            uploads: list[tuple[str, bytes, Image.Image]],
            refs: dict[tuple[str, tuple[str, ...]], dict[str, np.ndarray]],
            results: list[str]) -> None:
    name, data, _ = rng.choice(uploads)
    methods = rng.choice(METHOD_SETS)
    r = timed(tally, "explain", lambda: http.post(
        "/api/explain", files={"file": (name, data, "image/png")},
        data={"method": list(methods)}))
    if r.status_code == 429:
        time.sleep(min(float(r.headers.get("retry-after", "1")), 2.0) * rng.random())
        return
    if r.status_code != 200:
        return
    rid = r.json()["result_id"]
    npz = timed(tally, "download", lambda: http.get(f"/results/{rid}/files/maps.npz"))
    if npz.status_code != 200:
        return
    with np.load(io.BytesIO(npz.content), allow_pickle=False) as z:
        got = {k: z[k].astype(np.float32) for k in z.files}
    want = refs[(name, methods)]
    if sorted(got) != sorted(want):
        tally.error(f"{name} {methods}: maps {sorted(got)}, expected {sorted(want)}")
        return
    for key, m in want.items():
        diff = float(np.abs(got[key] - m).max())
        if diff > TOLERANCE:
            tally.error(f"{name} {key}: differs from the library's map by {diff:.2e}")
            return
    with tally.lock:
        tally.explained += 1
        tally.checked_maps += len(want)
        results.append(rid)


def view(http: httpx.Client, rng: random.Random, tally: Tally, results: list[str]) -> None:
    pick = rng.random()
    if pick < 0.4 or not results:
        timed(tally, "page /", lambda: http.get("/"))
    elif pick < 0.6:
        timed(tally, "static css", lambda: http.get("/static/camlens.css"))
    else:
        rid = rng.choice(results[-32:])  # the newest are still kept
        r = timed(tally, "result page", lambda: http.get(f"/results/{rid}"))
        if r.status_code == 200 and "Top-5 predictions" not in r.text:
            tally.error(f"result page {rid} lacks its predictions")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run(model: str, clients: int, seconds: float, workers: int, queue: int,
        share: float) -> dict[str, Any]:
    uploads = photos()
    refs = references(model, uploads)
    port = free_port()
    load_before = os.getloadavg()
    log = tempfile.TemporaryFile()
    server = start_server(model, port, workers, queue, log)
    base = f"http://127.0.0.1:{port}"
    tally = Tally()
    results: list[str] = []
    try:
        start = time.monotonic()
        stop = start + seconds
        threads = [threading.Thread(target=client, args=(base, i, stop, share, tally, uploads,
                                                         refs, results))
                   for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - start
        rss = peak_rss_mib(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.seek(0)
        logged = log.read().decode(errors="replace")
        log.close()
    tracebacks = logged.count("Traceback")
    if tracebacks:
        tally.error(f"the server logged {tracebacks} traceback(s)")
    everything = [x for v in tally.latencies.values() for x in v]
    return {
        "model": model, "clients": clients, "seconds": round(wall, 1), "workers": workers,
        "queue": queue, "explain_share": share, "cpus": os.cpu_count(),
        "torch_threads_per_worker": max(1, (os.cpu_count() or 1) // workers),
        "requests": len(everything), "requests_per_s": round(len(everything) / wall, 2),
        "p50_s": round(percentile(everything, 50), 3),
        "p95_s": round(percentile(everything, 95), 3),
        "by_kind": {k: {"n": len(v), "p50_s": round(percentile(v, 50), 3),
                        "p95_s": round(percentile(v, 95), 3)}
                    for k, v in sorted(tally.latencies.items())},
        "statuses": dict(sorted(tally.statuses.items())),
        "http_429": tally.busy, "errors": len(tally.errors), "error_samples": tally.errors[:5],
        "explanations_checked": tally.explained, "maps_checked": tally.checked_maps,
        "peak_rss_mib": None if rss is None else round(rss, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="synthetic:resnet")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--queue", type=int, default=8)
    p.add_argument("--explain-share", type=float, default=0.3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    report = run(args.model, args.clients, args.seconds, args.workers, args.queue,
                 args.explain_share)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
