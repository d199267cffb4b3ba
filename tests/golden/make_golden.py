"""Write tests/golden/chelsea_coffee.npz: the outputs of

    camlens explain sample:chelsea sample:coffee --top-k 1

(default methods, bundled EfficientNet-Lite0, default input size 224), reduced to fit in a
few hundred kB. tests/test_golden.py runs the same command and compares its outputs with this
file: maps to atol 2e-3 (what float16 storage allows), summary.png to the same size and a mean
absolute difference below 1 (on 0..255).

When to regenerate: only when a change of the maps or of the Figure 1 layout is intended and
reviewed (a fixed bug in a map, a new default, a new summary layout); say so in the commit.
Never regenerate to make a refactor pass: the point of the file is that a redesign (issue 9)
reproduces the outputs of the code it replaces. Generated from the code of commit 2281c93.

    cd <checkout> && PYTHONPATH=src python3 tests/golden/make_golden.py

What is stored, per photo (``<stem>/`` prefix), all float16:

- ``<method>/<class>/sub``: the map of maps.npz sampled every 2nd pixel (heatmaps) or every
  3rd (pixel-space maps, which are noise-like and do not compress);
- ``<method>/<class>/block``: the map's means over 8 x 8 pixel blocks (every pixel counts);
- ``summary/size``: summary.png's (width, height); ``summary/mean4``: its 4 x 4 block means.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

GOLDEN = Path(__file__).with_name("chelsea_coffee.npz")
STEMS = ("chelsea", "coffee")
COMMAND = ["explain", "sample:chelsea", "sample:coffee", "--top-k", "1"]
STRIDE_HEATMAP = 2
STRIDE_PIXEL = 3
BLOCK = 8
SUMMARY_BLOCK = 4


def block_mean(a: np.ndarray, n: int) -> np.ndarray:
    """Means over n x n blocks of an (H, W) or (H, W, C) array (the ragged edge dropped)."""
    a = np.asarray(a, dtype=np.float64)
    h, w = a.shape[0] // n * n, a.shape[1] // n * n
    a = a[:h, :w]
    return a.reshape(h // n, n, w // n, n, *a.shape[2:]).mean(axis=(1, 3))


def reduce_maps(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """maps.npz's ``<method>/<class>`` arrays -> the reduced arrays stored in the golden file."""
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        a = np.asarray(value, dtype=np.float32)
        stride = STRIDE_PIXEL if a.ndim == 3 else STRIDE_HEATMAP
        out[f"{key}/sub"] = a[::stride, ::stride]
        out[f"{key}/block"] = block_mean(a, BLOCK).astype(np.float32)
    return out


def reduce_summary(path: Path) -> dict[str, np.ndarray]:
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
        size = np.array(img.size, dtype=np.int64)
    return {"summary/size": size, "summary/mean4": block_mean(rgb, SUMMARY_BLOCK)}


def reduce_outputs(out: Path) -> dict[str, np.ndarray]:
    """The reduced outputs of one ``camlens explain ... --out OUT`` run, keyed ``<stem>/...``."""
    reduced: dict[str, np.ndarray] = {}
    for stem in STEMS:
        folder = out / stem
        with np.load(folder / "maps.npz") as npz:
            maps = {k: npz[k] for k in npz.files}
        parts = {**reduce_maps(maps), **reduce_summary(folder / "summary.png")}
        reduced.update({f"{stem}/{k}": v for k, v in parts.items()})
    return reduced


def main() -> int:
    from camlens.cli import main as camlens_main

    with tempfile.TemporaryDirectory() as tmp:
        code = camlens_main(COMMAND + ["--out", tmp, "--quiet"])
        if code != 0:
            print(f"camlens exited with {code}", file=sys.stderr)
            return code
        reduced = reduce_outputs(Path(tmp))
    stored: dict[str, Any] = {k: (v if v.dtype.kind == "i" else v.astype(np.float16))
                              for k, v in reduced.items()}
    np.savez_compressed(GOLDEN, **stored)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes, {len(stored)} arrays)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
