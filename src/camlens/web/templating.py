"""The Jinja2 templates of the web app, shared with the human-study pages.

Templates are searched in ``camlens/web/templates`` first, then ``camlens/study/templates``
(when that package is installed), so a study page can ``{% extends "base.html" %}`` and fill
its blocks ``title`` and ``content``.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

__all__ = ["STATIC", "TEMPLATES", "template_dirs", "templates"]

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def template_dirs() -> list[Path]:
    """The template folders searched, in order: the web app's, then the studies'."""
    dirs = [TEMPLATES]
    spec = importlib.util.find_spec("camlens.study")
    if spec is not None and spec.submodule_search_locations:
        study = Path(next(iter(spec.submodule_search_locations))) / "templates"
        if study.is_dir():
            dirs.append(study)
    return dirs


@cache
def templates() -> Jinja2Templates:
    """The one :class:`~fastapi.templating.Jinja2Templates` of the app (HTML autoescaped)."""
    env = Environment(loader=ChoiceLoader([FileSystemLoader(d) for d in template_dirs()]),
                      autoescape=select_autoescape(default=True), trim_blocks=True,
                      lstrip_blocks=True)
    return Jinja2Templates(env=env)
