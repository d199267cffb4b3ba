"""MkDocs hook: the site's generated parts, made by camlens itself on every build.

Pictures: ``camlens explain sample:chelsea`` (the bundled EfficientNet-Lite0 on skimage's
photo) runs into a temporary folder, and its PNGs join the site as ``img/chelsea/<file>.png``:
nothing binary is committed, and a change to a method shows in the next build (about 2 s).

Help texts: a line ``<!-- camlens-help: explain -->`` in a page becomes the output of
``camlens explain --help``, so the command-line page cannot fall behind the parser.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

from mkdocs.structure.files import File, Files

METHODS = ("guided-backprop", "gradcam", "guided-gradcam", "counterfactual-gradcam",
           "gradcampp", "layercam", "eigencam")
TARGETS = ("282", "242")  # tiger cat and boxer, the paper's Figure 1 classes
_TMP: tempfile.TemporaryDirectory[str] | None = None


def on_files(files: Files, config: Any, **_: Any) -> Files:
    """Run camlens and add its pictures to the site's files."""
    global _TMP
    from camlens.cli import main  # imported here: `mkdocs serve` reloads this hook

    on_shutdown()  # a rebuild (mkdocs serve) replaces the previous build's pictures
    _TMP = tempfile.TemporaryDirectory(prefix="camlens-docs-")
    argv = ["explain", "sample:chelsea", "--out", _TMP.name, "--save", "png,summary",
            "--max-output-side", "320"]
    for m in METHODS:
        argv += ["--method", m]
    for t in TARGETS:
        argv += ["--target", t]
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise RuntimeError(f"camlens explain exited with {code} while building the docs")
    for png in sorted(Path(_TMP.name, "chelsea").glob("*.png")):
        files.append(File.generated(config, f"img/chelsea/{png.name}", abs_src_path=str(png)))
    return files


HELP = re.compile(r"^<!-- camlens-help:(.*)-->$", re.M)


def _help(match: re.Match[str]) -> str:
    from camlens.cli import main

    out = io.StringIO()
    width = mock.patch.dict(os.environ, {"COLUMNS": "100"})  # argparse's wrapping width
    with width, contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*match.group(1).split(), "--help"])
    if not out.getvalue():
        raise RuntimeError(f"camlens{match.group(1)}--help printed nothing")
    return f"```text\n{out.getvalue().rstrip()}\n```"


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each help marker by the command's ``--help`` output."""
    return HELP.sub(_help, markdown)


def on_shutdown(**_: Any) -> None:
    """Remove the pictures' temporary folder (the site has its own copies by now)."""
    global _TMP
    if _TMP is not None:
        _TMP.cleanup()
        _TMP = None
