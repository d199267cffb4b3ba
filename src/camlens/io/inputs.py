"""Input specs: the bundled sample photos and folders expanded into image paths.

* :func:`sample_image` resolves the bundled sample photos (``sample:chelsea``...)
  from the installed scikit-image / matplotlib packages, without any download.
* :func:`resolve_inputs` expands folders and ``sample:`` specs into image paths.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

from camlens.io.files import display_path, is_inside
from camlens.io.images import ImageError

#: Extensions picked up when a folder is expanded (compared case-insensitively).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)

SAMPLE_PREFIX = "sample:"

#: Sample name -> (python package that ships it, path inside the package, pip extra).
SAMPLE_IMAGES: dict[str, tuple[str, str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png", "samples"),
    "chelsea": ("skimage", "data/chelsea.png", "samples"),
    "coffee": ("skimage", "data/coffee.png", "samples"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "viz"),
    "rocket": ("skimage", "data/rocket.jpg", "samples"),
}

_PIP_NAMES = {"skimage": "scikit-image", "matplotlib": "matplotlib"}


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_image(name: str) -> Path:
    """Return the path of a bundled sample photo: ``chelsea``, ``coffee``, ``rocket``,
    ``astronaut`` (scikit-image) or ``grace_hopper`` (matplotlib).

    A leading ``sample:`` is accepted. Nothing is downloaded.
    """
    key = name[len(SAMPLE_PREFIX) :] if name.lower().startswith(SAMPLE_PREFIX) else name
    key = key.strip().lower()
    available = ", ".join(sorted(SAMPLE_IMAGES))
    if key not in SAMPLE_IMAGES:
        raise ImageError(f"unknown sample {name!r}; available samples: {available}")
    package, relative, extra = SAMPLE_IMAGES[key]
    pip_name = _PIP_NAMES[package]
    root = _package_dir(package)
    if root is None:
        raise ImageError(
            f"sample:{key} comes with {pip_name}, which is not installed; "
            f'install it with `pip install "camlens[{extra}]"`'
        )
    path = root / relative
    if not path.is_file():
        raise ImageError(
            f"sample:{key}: {path} is missing from the installed {pip_name}; "
            f'reinstall it with `pip install --force-reinstall "camlens[{extra}]"`'
        )
    return path


def _normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    return frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def _images_in_folder(folder: Path, extensions: frozenset[str], exclude: Path | None) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and not (
            exclude is not None and is_inside(os.path.join(root, d), exclude))]
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def resolve_inputs(
    specs: Iterable[str | Path],
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    exclude: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Expand input specs into image paths, in order, without duplicates.

    A spec is a file (taken as is, whatever its extension or kind: :func:`load_image` says
    what is wrong with a FIFO or a link loop), a folder (searched recursively for files with
    one of ``extensions``, case-insensitive, sorted, hidden files and folders skipped, and
    the folder ``exclude`` and everything below it skipped) or ``sample:NAME`` (see
    :func:`sample_image`). Missing paths and folders without images raise :class:`ImageError`.
    """
    exts = _normalise_extensions(extensions)
    skip = Path(exclude) if exclude is not None else None
    result: list[Path] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.realpath(path)  # no error on a symbolic link loop, unlike Path.resolve
        if key not in seen:
            seen.add(key)
            result.append(path)

    for spec in specs:
        text = os.fspath(spec)
        if isinstance(spec, str) and text.lower().startswith(SAMPLE_PREFIX):
            add(sample_image(text))
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            images = _images_in_folder(path, exts, skip)
            if not images:
                raise ImageError(
                    f"{display_path(path)}: folder contains no images; expected files ending in "
                    f"{', '.join(sorted(exts))}"
                    + (f" (outside {display_path(skip)})" if skip is not None else "")
                )
            for image in images:
                add(image)
        elif os.path.lexists(path):
            add(path)
        else:
            raise ImageError(
                f"{display_path(path)}: no such file or folder; give an image file, a folder of "
                f"images or sample:NAME ({', '.join(sorted(SAMPLE_IMAGES))})"
            )
    return result
