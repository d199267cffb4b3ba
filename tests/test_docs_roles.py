"""docs_hooks/sphinx_roles.py, the griffe extension that turns the docstrings' Sphinx roles into
cross-references for the API pages: what each role resolves to in camlens's own package, and
what it writes for a name that resolves to nothing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from module_support import load_file  # noqa: E402

griffe = pytest.importorskip("griffe")  # the docs extra

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = "camlens.evaluate.datasets.Sample"
roles = load_file(ROOT / "docs_hooks" / "sphinx_roles.py", "sphinx_roles")


@pytest.fixture(scope="module")
def pkg() -> object:
    return griffe.load("camlens", search_paths=[str(ROOT / "src")])


@pytest.mark.parametrize("owner, target, path", [
    # a name imported into the owner's module: its definition, not the import
    ("camlens.detection", "TargetError", "camlens.errors.TargetError"),
    ("camlens", "explain", "camlens.api.explain"),
    # not in the module: found in its package (Sphinx's module-then-global search)
    ("camlens.targets", "explain", "camlens.api.explain"),
    ("camlens.targets", "no_such_thing", None),
    # absolute from the package root, through a re-export
    ("camlens.detection.BoxTarget", "camlens.explain", "camlens.api.explain"),
    ("camlens.detection.BoxTarget", "camlens.errors.DataError", "camlens.errors.DataError"),
    # a method named from its own class, and from the class's module
    ("camlens.evaluate.datasets.Sample", "object_mask", f"{SAMPLE}.object_mask"),
    ("camlens.evaluate.datasets", "Sample.object_mask", f"{SAMPLE}.object_mask"),
    ("camlens.detection", "box_iou()", "camlens.detection.box_iou"),
    ("camlens.detection", "torch.overrides.TorchFunctionMode", None),  # outside the package
])
def test_resolve(pkg: object, owner: str, target: str, path: str | None) -> None:
    obj = pkg[owner.removeprefix("camlens.")] if owner != "camlens" else pkg  # type: ignore[index]
    assert roles.resolve(obj, target) == path


def test_rewrite(pkg: object) -> None:
    owner = pkg["detection"]  # type: ignore[index]
    text = ("raises :class:`TargetError` (see :func:`~camlens.errors.TargetError`), "
            ":py:mod:`camlens.tasks`, and :data:`NOWHERE`; ``:notarole:`x` `` stays")
    assert roles.rewrite(owner, text) == (
        'raises <autoref identifier="camlens.errors.TargetError" optional><code>TargetError'
        '</code></autoref> (see <autoref identifier="camlens.errors.TargetError" optional>'
        '<code>TargetError</code></autoref>), <autoref identifier="camlens.tasks" optional>'
        "<code>camlens.tasks</code></autoref>, and `NOWHERE`; ``:notarole:`x` `` stays")


def _ours(target: str) -> bool:
    """A role's target that should name something of camlens's: a bare or relative name
    (``Sample.mask``) or a path into camlens, not a path into another installed package
    (``torch.x``, ``fastapi.x``)."""
    root = target.lstrip("~.").split(".")[0]
    return root == "camlens" or importlib.util.find_spec(root) is None


def test_every_role_in_camlens_resolves(pkg: object) -> None:
    """Every role that names something of camlens's finds it (other packages' names, torch's,
    fastapi's, ..., have no page here)."""
    missing = []

    def walk(obj: object) -> None:
        doc = obj.docstring  # type: ignore[attr-defined]
        if doc is not None:
            missing.extend(f"{obj.path}: {m.group(0)}"  # type: ignore[attr-defined]
                           for m in roles.ROLE.finditer(doc.value)
                           if _ours(m.group(2))
                           and roles.resolve(obj, m.group(2)) is None)
        for member in obj.members.values():  # type: ignore[attr-defined]
            if not member.is_alias:
                walk(member)

    walk(pkg)
    assert missing == []
