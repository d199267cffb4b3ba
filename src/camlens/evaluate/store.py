"""Per-image rows in one CSV file, appended as images finish, resumed by configuration.

A run's configuration (task, method, layer, options, thresholds, model) is hashed
(:func:`config_hash`); every row carries the hash in its ``config`` column and the file's
``<name>.config.json`` keeps the configuration itself. With ``resume=True`` a rerun reads the
rows back and skips their images; a file made with another configuration is refused (naming
what differs), never mixed. One image's rows are written in one go and flushed; a row cut short
by a crash is dropped, and so is the rest of its image, so that image is redone.

Rows are dataclasses; their fields become the CSV columns (``image_id`` first, then the
fields, then ``n_rows`` and ``config``). Cells: booleans ``1``/``0``, ``None`` empty, numbers
as Python writes them (``nan`` included), lists and dicts as JSON.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar

from camlens.errors import DataError
from camlens.io import atomic_path

Row = TypeVar("Row")


def config_hash(config: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``config`` as canonical JSON (sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _encode(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float, str)):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, separators=(",", ":"))


def _decode(text: str, kind: Any) -> Any:
    """A cell back to the field's type (``kind`` from the row's type hints)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        if text == "":
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is bool:
        return text == "1"
    if kind in (int, float, str):
        return kind(text)
    return json.loads(text)


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now"
                     for k in keys if old.get(k) != new.get(k))


class RowStore(Generic[Row]):
    """The rows of one run, by image id (``done``), mirrored to a CSV file when ``path`` is
    given. :meth:`add` is called from one thread at a time (the executor's writer)."""

    def __init__(self, path: str | os.PathLike[str] | None, row_type: type[Row],
                 config: Mapping[str, Any], resume: bool = True) -> None:
        if not dataclasses.is_dataclass(row_type):
            raise TypeError(f"rows must be dataclasses, got {row_type!r}")
        hints = typing.get_type_hints(row_type)
        self.row_type = row_type
        self.kinds = {f.name: hints[f.name] for f in dataclasses.fields(row_type)}
        self.fields = ["image_id", *self.kinds, "n_rows", "config"]
        self.config = dict(config)
        self.hash = config_hash(self.config)
        self.path = Path(path) if path is not None else None
        self.done: dict[str, list[Row]] = {}
        self._fh: TextIO | None = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.is_file() and self.path.stat().st_size > 0:
            self._read_back()
        else:
            with open(self.path, "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh, lineterminator="\n").writerow(self.fields)
            self._sidecar().write_text(json.dumps({"config_hash": self.hash,
                                                   "config": self.config}, indent=1),
                                       encoding="utf-8")
        self._fh = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115

    def _sidecar(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".config.json")

    def _refuse(self, why: str) -> DataError:
        assert self.path is not None
        try:
            old = json.loads(self._sidecar().read_text(encoding="utf-8"))["config"]
            detail = f" ({_differences(old, self.config)})"
        except (OSError, ValueError, KeyError, TypeError):
            detail = ""
        return DataError(f"{self.path}: {why}{detail}; use another CSV file, or resume=False "
                         "(--no-resume) to start it over")

    def _read_back(self) -> None:
        assert self.path is not None
        text = self.path.read_text(encoding="utf-8")
        clean = text.endswith("\n")
        if not clean:  # a crash cut the last row short: drop it
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames != self.fields:
            raise self._refuse(f"its columns {reader.fieldnames} are not this evaluation's "
                               f"{self.fields}")
        groups: dict[str, list[dict[str, str]]] = {}
        for cells in reader:
            if cells.get("config") != self.hash:
                raise self._refuse(f"its rows were made with configuration {cells.get('config')}"
                                   f", this run's is {self.hash}")
            groups.setdefault(cells["image_id"], []).append(cells)
        complete = {k: v for k, v in groups.items() if len(v) == int(v[0]["n_rows"])}
        self.done = {k: [self._row(c) for c in v] for k, v in complete.items()}
        if not clean or len(complete) != len(groups):  # rewrite without the broken image(s)
            with atomic_path(self.path) as tmp, open(tmp, "x", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, self.fields, lineterminator="\n")
                writer.writeheader()
                for rows in complete.values():
                    writer.writerows(rows)

    def _row(self, cells: Mapping[str, str]) -> Row:
        return self.row_type(**{k: _decode(cells[k], t) for k, t in self.kinds.items()})

    def add(self, image_id: str, rows: Sequence[Row]) -> None:
        """Record one image's rows (written in one go and flushed)."""
        if self._fh is not None:
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            for row in rows:
                writer.writerow([image_id, *(_encode(getattr(row, k)) for k in self.kinds),
                                 len(rows), self.hash])
            self._fh.write(buf.getvalue())
            self._fh.flush()
        self.done[image_id] = list(rows)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RowStore[Row]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
