"""``camlens serve``: the web app (:mod:`camlens.web`) on uvicorn."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import Any

from camlens import io as cio
from camlens.cli import say
from camlens.cli.options import bounded, model_options, non_negative_int, positive_int
from camlens.errors import DataError
from camlens.loading import CliError
from camlens.models import load_model

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 20
DEFAULT_MAX_PIXELS = 40_000_000


def add(sub: Any) -> None:
    sv = sub.add_parser(
        "serve", help="the web app: explain photos in a browser, JSON API, human studies",
        parents=[model_options()],
        description="Serve the web app (needs `pip install \"camlens[web]\"`): an explain page "
                    "(upload a photo or pick a sample; top-5 predictions, Figure 1, each map "
                    "over the photo with an opacity slider, downloads), POST /api/explain "
                    "(explanation.json's schema; OpenAPI at /api/openapi.json), the textual "
                    "explanation (Sec. 7) where the model's units are named and, with "
                    "--db, the human studies under /study. Works offline.",
    )
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only; "
                         "0.0.0.0 opens it to the network)")
    sv.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                    help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    sv.add_argument("--db", metavar="FILE", type=Path,
                    help="a study database (SQLite, `camlens study create`): serve its pages")
    sv.add_argument("--dissection", metavar="FILE",
                    help="dissection.json written by `camlens dissect` for the model's Grad-CAM "
                         "layer: the result pages show Sec. 7's textual explanation with its "
                         "unit names (default: the shipped dissection of a world v2 net, "
                         "synthetic:NAME; other models have none)")
    sv.add_argument("--workers", type=positive_int, default=None, metavar="N",
                    help="threads that explain at once (default: 2, or 1 on a 1-core "
                         "machine); torch gets cores / N threads each")
    sv.add_argument("--queue", type=non_negative_int, default=8, metavar="N",
                    help="explanations that may wait for a worker; more get HTTP 429 with "
                         "Retry-After (default 8)")
    sv.add_argument("--max-upload-mb", type=positive_int, default=DEFAULT_MAX_UPLOAD_MB,
                    metavar="MB", help=f"largest upload (default {DEFAULT_MAX_UPLOAD_MB} MB)")
    sv.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                    metavar="N", help="refuse images above N pixels, a decompression-bomb "
                                      f"guard (default {DEFAULT_MAX_PIXELS})")
    sv.add_argument("--keep", type=positive_int, default=64, metavar="N",
                    help="results kept for their pages and downloads (default 64, the newest)")
    sv.set_defaults(func=run)


port_number = bounded(int, lambda v: 0 <= v <= 65535, "a port number 0-65535")


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, or a :class:`CliError` that says why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family = infos[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another "
                       "--port or --host") from None


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from camlens.web import create_app
    except ModuleNotFoundError as exc:
        raise CliError(f"camlens serve needs {exc.name}: pip install \"camlens[web]\"") from None
    import torch

    if args.db is not None and not args.db.is_file():
        raise CliError(f"--db {cio.display_path(args.db)}: no such file; create a study with "
                       "`camlens study create ...`")
    cores = os.cpu_count() or 1
    workers = args.workers or (2 if cores > 1 else 1)
    loaded = load_model(args.model, weights=args.weights, labels=args.labels,
                        input_size=args.input_size, mean=args.mean, std=args.std,
                        device=args.device, max_input_side=args.max_input_side)
    try:
        app = create_app(loaded, db=args.db, dissection=args.dissection, workers=workers,
                         queue=args.queue, max_upload=args.max_upload_mb * 2**20,
                         max_pixels=args.max_pixels, keep=args.keep)
    except DataError as exc:
        raise CliError(str(exc)) from exc
    torch.set_num_threads(max(1, cores // workers))
    sock = listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    say(f"camlens serve: {loaded.name} on http://{shown}:{port}/ ({workers} worker(s), "
        f"queue {args.queue}); Ctrl-C stops it")
    config = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=10)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
