"""The study store: schema migrations, the Latin-square assignment, answers, concurrency."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest

from camlens.study import BadChoice, DuplicateResponse, StudyError, StudyStore, UnknownTrial
from camlens.study.store import (
    SCHEMA_VERSION,
    Study,
    Trial,
    connect,
    latin_square_order,
    migrate,
    new_id,
    schema_version,
)
from study_support import class_study, png, trust_study


def test_new_database_is_wal_and_at_the_latest_version(tmp_path: Path) -> None:
    store, admin = class_study(tmp_path / "s.sqlite", images=2)
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")] \
        == list(range(1, SCHEMA_VERSION + 1))
    # tokens are stored hashed only
    assert admin not in store.path.read_bytes().decode("latin-1")
    assert store.is_admin(admin) and not store.is_admin(admin + "x")


def test_upgrade_from_v1_keeps_the_answers(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = connect(path, wal=True)
    assert migrate(conn, target=1) == 1
    files = {"f" * 32: png()}
    options = '[["0", "a"], ["1", "b"]]'
    conn.execute("INSERT INTO study VALUES (1, 'class-discrimination', 't', 'q', "
                 "'[\"gradcam\"]', 3, '{}', 0, 'h', 'now')")
    conn.execute("INSERT INTO files VALUES (?, ?)", ("f" * 32, files["f" * 32]))
    conn.execute("INSERT INTO trials VALUES (?, 0, 0, 'gradcam', ?, ?, '', ?, '1', '{}')",
                 ("a" * 32, "f" * 32, f'["{"f" * 32}"]', options))
    conn.execute("INSERT INTO participants VALUES (0, 'hash', 'then')")
    conn.execute("INSERT INTO assignments VALUES (0, 0, ?)", ("a" * 32,))
    conn.execute("INSERT INTO responses VALUES (1, 0, ?, '1', '2026-01-01T00:00:00')",
                 ("a" * 32,))
    conn.close()
    store = StudyStore(path)  # opening upgrades
    with connect(path) as c:
        assert schema_version(c) == SCHEMA_VERSION
        columns = [r[1] for r in c.execute("PRAGMA table_info(responses)")]
    assert columns[-2:] == ["shown_at", "response_ms"]
    [old] = store.responses()
    assert (old.choice, old.answered_at, old.response_ms) == ("1", "2026-01-01T00:00:00", None)
    assert store.study.methods == ("gradcam",)
    # a new participant's answer gets its server-side response time
    [token] = store.invite(1)
    who = store.participant(token)
    trial = store.next_trial(who)
    store.submit(who, trial.id, "0")
    assert store.responses()[-1].response_ms is not None


def test_newer_or_foreign_databases_are_refused(tmp_path: Path) -> None:
    store, _ = class_study(tmp_path / "s.sqlite", images=1)
    with connect(store.path) as c:
        c.execute(f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION + 1}, 'later')")
    with pytest.raises(StudyError, match="newer than this camlens"):
        StudyStore(store.path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StudyError, match="not a camlens study database"):
        StudyStore(junk)
    with pytest.raises(StudyError, match="no study database"):
        StudyStore(tmp_path / "missing.sqlite")
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    with pytest.raises(StudyError, match="holds no study"):
        StudyStore(empty)


def test_create_refuses_a_second_study_and_missing_pictures(tmp_path: Path) -> None:
    store, _ = class_study(tmp_path / "s.sqlite", images=1)
    trial = store.trials()[0]
    study = Study("trust", "t", "q", ("gradcam",), 1, {}, 0)
    with pytest.raises(StudyError, match="already holds a study"):
        StudyStore.create(store.path, study, [trial], {trial.photo: b"x",
                                                       trial.panels[0]: b"y"})
    with pytest.raises(StudyError, match="not in files"):
        StudyStore.create(tmp_path / "other.sqlite", study, [trial], {})
    with pytest.raises(StudyError, match="kind"):
        StudyStore.create(tmp_path / "x.sqlite", Study("poll", "t", "q", (), 1, {}, 0),
                          [trial], {})


def test_latin_square_gives_every_trial_the_same_number_of_ratings(tmp_path: Path) -> None:
    store, _ = class_study(tmp_path / "s.sqlite", images=9, ratings=3)
    trials = store.trials()
    conditions = 8  # 4 methods x 2 categories
    counts: Counter[str] = Counter()
    for p in range(3 * conditions):
        order = latin_square_order(p, trials, seed=0)
        assert order == latin_square_order(p, trials, seed=0)  # reproducible
        seen = [next(t for t in trials if t.id == tid) for tid in order]
        assert sorted(t.item for t in seen) == list(range(9))  # every image once
        per_method = Counter(t.method for t in seen)
        assert max(per_method.values()) - min(per_method.values()) <= 1
        # methods interleaved: each run of 4 holds distinct methods up to the round seams
        assert len({t.method for t in seen[:4]}) == 4
        counts.update(order)
    assert set(counts.values()) == {3} and len(counts) == len(trials)
    assert latin_square_order(0, trials, seed=0) != latin_square_order(0, trials, seed=1)


def test_answers_and_their_errors(tmp_path: Path) -> None:
    store, _ = trust_study(tmp_path / "t.sqlite", images=3)
    a, b = store.invite(2)
    pa, pb = store.participant(a), store.participant(b)
    assert store.participant("no-such-token") is None
    assert store.progress(pa) == (0, 3)
    trial = store.next_trial(pa)
    assert trial.position == 1 and trial.total == 3
    assert [v for v, _ in trial.options] == ["-2", "-1", "0", "1", "2"]
    with pytest.raises(BadChoice, match="one of -2, -1, 0, 1, 2"):
        store.submit(pa, trial.id, "3")
    foreign = next(t.id for t in store.trials()
                   if t.id not in latin_square_order(pa.id, store.trials(), 0))
    with pytest.raises(UnknownTrial):
        store.submit(pa, foreign, "0")
    with pytest.raises(UnknownTrial):
        store.submit(pa, new_id(), "0")
    assert store.submit(pa, trial.id, "2") == (1, 3)
    with pytest.raises(DuplicateResponse):
        store.submit(pa, trial.id, "-2")
    assert [r.choice for r in store.responses()] == ["2"]  # the first answer is kept
    assert store.next_trial(pa).position == 2  # resume where they stopped
    assert store.completion() == (2, 1, 0)
    assert store.file_for(pa, trial.photo) is not None
    assert store.file_for(pb, new_id()) is None
    foreign_panel = next(t.panels[0] for t in store.trials()
                         if t.id not in latin_square_order(pa.id, store.trials(), 0))
    assert store.file_for(pa, foreign_panel) is None  # not one of theirs
    assert store.file_for(None, foreign_panel) is not None  # the admin sees all
    with pytest.raises(StudyError):
        store.invite(0)


def test_concurrent_participants_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """24 participants answer all their trials from 24 threads at once, each trial twice
    (a double click): exactly one answer per (participant, trial) is stored, every second
    attempt is refused as a duplicate, readers run throughout."""
    store, _ = class_study(tmp_path / "c.sqlite", images=6, ratings=3)
    tokens = store.invite(24)
    stored: list[int] = []
    duplicates: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(25)
    done = threading.Event()

    def participant(token: str) -> None:
        ok = dup = 0
        try:
            mine = StudyStore(store.path)  # its own store, as another process would
            who = mine.participant(token)
            start.wait()
            while (trial := mine.next_trial(who)) is not None:
                for _ in range(2):
                    try:
                        mine.submit(who, trial.id, "0")
                        ok += 1
                    except DuplicateResponse:
                        dup += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        stored.append(ok)
        duplicates.append(dup)

    def reader() -> None:
        start.wait()
        while not done.is_set():
            store.responses()
            store.completion()

    threads = [threading.Thread(target=participant, args=(t,)) for t in tokens]
    watcher = threading.Thread(target=reader)
    for t in [*threads, watcher]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not errors
    assert sum(stored) == 24 * 6 and sum(duplicates) == 24 * 6
    rows = store.responses()
    assert len(rows) == 24 * 6
    assert len({(r.participant, r.trial.id) for r in rows}) == 24 * 6
    assert Counter(r.trial.id for r in rows) == Counter({t.id: 3 for t in store.trials()})
    assert store.completion() == (24, 24, 24)


def test_trial_record_round_trip(tmp_path: Path) -> None:
    store, _ = class_study(tmp_path / "s.sqlite", images=1)
    t = store.trials()[0]
    assert isinstance(t, Trial) and len(t.options) == 2 and t.answer in ("0", "1")
    assert t.meta["category"] == dict(t.options)[t.answer]
