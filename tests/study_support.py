"""Helpers for the human-study tests: studies with known trials (no model, tiny pictures),
simulated participants. (Browser tests serve the app with the ``live_server`` fixture of
conftest.py, as the web app's do.)"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from camlens.study import StudyStore
from camlens.study.build import PAPER_CLASS_METHODS, PAPER_TRUST_METHODS, TRUST_SCALE
from camlens.study.store import Study, Trial, new_id


def png(colour: tuple[int, int, int] = (120, 130, 140), size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def class_study(path: Path, images: int = 10, methods: Sequence[str] = PAPER_CLASS_METHODS,
                ratings: int = 9, seed: int = 0) -> tuple[StudyStore, str]:
    """A class-discrimination study of ``images`` images with categories ``alpha-i`` and
    ``beta-i``: ``2 * len(methods)`` trials per image, the option order random."""
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    trials = []
    m = len(methods)
    for item in range(images):
        photo = new_id()
        files[photo] = png()
        names = (f"alpha-{item}", f"beta-{item}")
        for cat in range(2):
            for j, method in enumerate(methods):
                pic = new_id()
                files[pic] = png((40 * j % 256, 90, 60 * cat))
                order = [cat, 1 - cat] if rng.random() < 0.5 else [1 - cat, cat]
                options = tuple((str(v), names[c]) for v, c in enumerate(order))
                trials.append(Trial(new_id(), item, j + m * cat, method, photo, (pic,), "",
                                    options, str(order.index(cat)),
                                    {"image": f"img-{item}", "category": names[cat],
                                     "other": names[1 - cat], "class": cat}))
    study = Study("class-discrimination", "Test study", "Which category?", tuple(methods),
                  ratings, {"data": "test"}, seed)
    return StudyStore.create(path, study, trials, files)


def trust_study(path: Path, images: int = 10, methods: Sequence[str] = PAPER_TRUST_METHODS,
                ratings: int = 9, seed: int = 0) -> tuple[StudyStore, str]:
    """A trust study: per image and method, model A's and B's pictures, A first at random."""
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    trials = []
    for item in range(images):
        photo = new_id()
        files[photo] = png()
        for j, method in enumerate(methods):
            a, b = new_id(), new_id()
            files[a], files[b] = png((200, 0, 0)), png((0, 0, 200))
            a_first = bool(rng.random() < 0.5)
            trials.append(Trial(new_id(), item, j, method, photo, (a, b) if a_first else (b, a),
                                f"Predicted category: thing-{item}", TRUST_SCALE,
                                "1" if a_first else "2",
                                {"image": f"img-{item}", "category": f"thing-{item}",
                                 "model_a": "model-alpha", "model_b": "model-beta"}))
    study = Study("trust", "Trust test", "Which model?", tuple(methods), ratings,
                  {"data": "test"}, seed)
    return StudyStore.create(path, study, trials, files)
