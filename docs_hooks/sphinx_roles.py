"""Griffe extension: Sphinx roles in camlens's docstrings become links (or code) in the API pages.

camlens's docstrings cross-reference with Sphinx roles (``:func:`explain```, ``:class:`~x.Y```,
``:mod:``, ``:data:``, ``:meth:``, ``:attr:``...), which mkdocstrings would print literally. Before
the docstrings are parsed, each role becomes an autorefs cross-reference to the object it names,
resolved as Sphinx does: from the object's own class and module outwards, then from the package
root. The reference is *optional*: an object the site renders is linked, any other shows as plain
code, without a warning (the API reference documents a selection of camlens, not every helper).
A name that resolves to nothing is code as well. ``~`` shows only the last component, as in Sphinx.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|data|meth|attr|exc|obj|const|type):`(~?)([^`]+)`")


def _lookup(scope: Any, dotted: str) -> Any:
    """The member ``dotted`` (a.b.c) of ``scope``, or None; aliases are followed."""
    obj = scope
    for part in dotted.split("."):
        try:
            if getattr(obj, "is_alias", False):
                obj = obj.final_target
            obj = obj.members[part]
        except (KeyError, AttributeError, griffe.AliasResolutionError,
                griffe.CyclicAliasError):
            return None
    return obj


def resolve(owner: Any, target: str) -> str | None:
    """The canonical path of ``target`` as written in ``owner``'s docstring, or None."""
    target = target.strip().rstrip("()")
    scope = owner
    while scope is not None:  # the owner itself (a class's methods), then its parents
        found = _lookup(scope, target)
        if found is not None:
            break
        scope = scope.parent
    else:
        root = owner
        while root.parent is not None:
            root = root.parent
        head, _, rest = target.partition(".")
        found = _lookup(root, rest) if head == root.name and rest else None
        if found is None:
            return None
    try:
        return str(found.final_target.path if found.is_alias else found.path)
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return str(found.target_path)


def rewrite(owner: Any, text: str) -> str:
    """``text`` with every Sphinx role replaced by an optional autorefs reference (or code)."""

    def one(match: re.Match[str]) -> str:
        short, target = match.group(1) == "~", match.group(2)
        shown = target.rsplit(".", 1)[-1] if short else target
        path = resolve(owner, target)
        if path is None:
            return f"`{shown}`"
        return (f'<autoref identifier="{html.escape(path)}" optional>'
                f"<code>{html.escape(shown)}</code></autoref>")

    return ROLE.sub(one, text)


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring of the package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg)

    def _walk(self, obj: Any) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member)
