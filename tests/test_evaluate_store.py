"""The evaluation's CSV store: typed rows back from their cells, a configuration hash that
resumes only the same run, and images cut short by a crash redone."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass

import pytest

from camlens.errors import DataError
from camlens.evaluate.store import RowStore, config_hash


@dataclass(frozen=True)
class Row:
    name: str
    count: int
    score: float
    ok: bool
    rank: int | None
    boxes: list


CONFIG = {"task": "demo", "options": {"relu": True, "pooling": "gap"}, "threshold": 0.15}


def rows(k: int) -> list[Row]:
    return [Row(f"r{j}", j, 0.1 * j, j % 2 == 0, None if j else 3, [[1, 2, 3, 4], None])
            for j in range(k)]


def test_rows_come_back_as_they_went_in(tmp_path):
    path = tmp_path / "rows.csv"
    with RowStore(path, Row, CONFIG, resume=True) as store:
        store.add("a", rows(3))
        store.add("b", [Row("x", -7, math.nan, False, None, [])])
    back = RowStore(path, Row, CONFIG, resume=True)
    back.close()
    assert list(back.done) == ["a", "b"]
    assert back.done["a"] == rows(3)
    (nan_row,) = back.done["b"]
    assert math.isnan(nan_row.score) and nan_row.rank is None and nan_row.count == -7
    with open(path, newline="") as fh:
        cells = list(csv.DictReader(fh))
    assert list(cells[0]) == ["image_id", "name", "count", "score", "ok", "rank", "boxes",
                              "n_rows", "config"]
    assert (cells[0]["ok"], cells[1]["ok"], cells[0]["rank"], cells[1]["rank"]) == ("1", "0",
                                                                                    "3", "")
    assert cells[0]["boxes"] == "[[1,2,3,4],null]" and cells[3]["score"] == "nan"
    assert {c["config"] for c in cells} == {config_hash(CONFIG)}
    sidecar = json.loads((tmp_path / "rows.csv.config.json").read_text())
    assert sidecar == {"config_hash": config_hash(CONFIG), "config": CONFIG}


def test_config_hash_is_stable_and_sensitive():
    same = {"threshold": 0.15, "options": {"pooling": "gap", "relu": True}, "task": "demo"}
    assert config_hash(same) == config_hash(CONFIG)  # key order does not matter
    # SHA-256 of the canonical JSON: the same across runs, processes and machines
    canonical = b'{"options":{"pooling":"gap","relu":true},"task":"demo","threshold":0.15}'
    assert config_hash(CONFIG) == hashlib.sha256(canonical).hexdigest()[:16]
    other = dict(CONFIG, options={"relu": False, "pooling": "gap"})
    assert config_hash(other) != config_hash(CONFIG)


def test_another_configuration_is_refused_naming_what_differs(tmp_path):
    path = tmp_path / "rows.csv"
    with RowStore(path, Row, CONFIG) as store:
        store.add("a", rows(1))
    other = dict(CONFIG, threshold=0.3)
    with pytest.raises(DataError, match=r"threshold: 0\.15 there, 0\.3 now.*resume=False"):
        RowStore(path, Row, other, resume=True)
    # every key that differs, also one only one side has; nothing else; the way out last
    changed = {**CONFIG, "threshold": 0.3, "task": "other", "new": 1}
    del changed["options"]
    with pytest.raises(DataError) as err:
        RowStore(path, Row, changed, resume=True)
    message = str(err.value)
    assert ("(new: None there, 1 now; options: {'relu': True, 'pooling': 'gap'} there, None "
            "now; task: 'demo' there, 'other' now; threshold: 0.15 there, 0.3 now); use "
            "another CSV file") in message
    assert message.endswith("resume=False (--no-resume) to start it over")
    (tmp_path / "rows.csv.config.json").unlink()  # without the sidecar: the hashes only
    with pytest.raises(DataError, match=config_hash(other)):
        RowStore(path, Row, other, resume=True)
    fresh = RowStore(path, Row, other, resume=False)  # starts the file over
    fresh.close()
    assert fresh.done == {} and path.read_text().count("\n") == 1


def test_other_columns_are_refused(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("image_id,something,n_rows,config\nx,1,1,abc\n")
    with pytest.raises(DataError, match="columns"):
        RowStore(path, Row, CONFIG)


@pytest.mark.parametrize("cut", ["mid-row", "row boundary"])
def test_an_image_cut_short_is_dropped_and_redone(tmp_path, cut):
    path = tmp_path / "rows.csv"
    with RowStore(path, Row, CONFIG) as store:
        store.add("a", rows(2))
        store.add("b", rows(3))
    whole = path.read_text()
    lines = whole.splitlines(keepends=True)
    # "b" has three rows: keep its first two (a crash between rows), or half of its last one
    cut_text = "".join(lines[:-1]) + (lines[-1][:10] if cut == "mid-row" else "")
    path.write_text(cut_text)
    store = RowStore(path, Row, CONFIG)
    assert list(store.done) == ["a"]  # "b" is not done: it will be redone
    store.add("b", rows(3))
    store.close()
    assert path.read_bytes() == whole.encode()  # bytes: the rewrite ends its lines in "\n" too


def test_a_failed_rewrite_keeps_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "rows.csv"
    with RowStore(path, Row, CONFIG) as store:
        store.add("a", rows(2))
        store.add("b", rows(2))
    cut = path.read_text()[:-5]  # b's last row cut short: reading it back rewrites the file
    path.write_text(cut)

    def full_disk(self, rows):  # the disk fills up after the header
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", full_disk)
    with pytest.raises(OSError, match="No space"):
        RowStore(path, Row, CONFIG)
    assert path.read_text() == cut
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv", "rows.csv.config.json"]


def test_without_a_path_rows_stay_in_memory():
    store = RowStore(None, Row, CONFIG)
    store.add("a", rows(2))
    store.close()
    assert store.done == {"a": rows(2)}
    with pytest.raises(TypeError, match="dataclasses"):
        RowStore(None, dict, CONFIG)


def test_missing_folders_are_made_and_a_tiny_file_is_not_taken_for_empty(tmp_path):
    path = tmp_path / "a" / "b" / "rows.csv"
    with RowStore(path, Row, CONFIG) as store:
        store.add("a", rows(1))
    sidecar = json.loads((tmp_path / "a" / "b" / "rows.csv.config.json").read_text())
    assert sidecar == {"config_hash": config_hash(CONFIG), "config": CONFIG}
    assert (tmp_path / "a" / "b" / "rows.csv.config.json").read_text().count("\n") > 3  # readable
    path.write_text("x")  # one byte: not a file to start over silently
    with pytest.raises(DataError, match="columns"):
        RowStore(path, Row, CONFIG)
    assert path.read_text() == "x"
