"""The SQLite store of one human study: its trials, pictures, participants and responses.

One database file holds one study. Every connection runs in WAL mode (readers never block the
writer) with a busy timeout; every write is one ``BEGIN IMMEDIATE`` transaction, so concurrent
participants never lose or duplicate a response: ``UNIQUE(participant_id, trial_id)`` refuses a
second answer to one trial (:class:`DuplicateResponse`).

The schema is versioned: ``schema_version`` lists the migrations applied, :data:`MIGRATIONS`
are ordered functions, and opening a store applies the missing ones in one transaction each
(v1: study, files, trials, participants, assignments, responses; v2: server-side response
times: a ``views`` table with when each trial was last shown, ``responses.shown_at`` and
``responses.response_ms``).

Tokens (admin and participant) are random (``secrets.token_urlsafe``) and stored only as
SHA-256 hashes: a leaked database does not give access to the study pages.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "KINDS", "MIGRATIONS", "SCHEMA_VERSION", "StudyError", "DuplicateResponse", "UnknownTrial",
    "BadChoice", "Study", "Trial", "PublicTrial", "Participant", "Response", "StudyStore",
    "connect", "migrate", "schema_version", "latin_square_order",
]

KINDS = ("class-discrimination", "trust")


class StudyError(Exception):
    """A problem with a study database or a request to it; ``str()`` is a one-line message."""


class DuplicateResponse(StudyError):
    """The participant already answered this trial (the first answer is kept)."""


class UnknownTrial(StudyError):
    """The trial does not exist or is not one of this participant's."""


class BadChoice(StudyError):
    """The submitted choice is not one of the trial's options."""


def _now() -> tuple[float, str]:
    t = time.time()
    return t, datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_id() -> str:
    """A random public id (32 hex digits): it says nothing about what it names."""
    return secrets.token_hex(16)


# ------------------------------------------------------------------------------ connections


def connect(path: str | Path, *, wal: bool = False) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit, see :func:`transaction`), foreign
    keys on, waiting up to 30 s for a lock. ``wal``: switch the database to WAL mode (a
    setting kept in the file: done once, when a store is created or opened)."""
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error): the write lock is taken
    at the start, so read-then-write inside is never interleaved with another writer."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# ------------------------------------------------------------------------------- migrations


def _v1(conn: sqlite3.Connection) -> None:
    """The first schema: one study, its pictures, trials, participants and answers."""
    for sql in (
        """CREATE TABLE study (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            kind TEXT NOT NULL CHECK (kind IN ('class-discrimination', 'trust')),
            title TEXT NOT NULL,
            question TEXT NOT NULL,
            methods TEXT NOT NULL,
            ratings INTEGER NOT NULL CHECK (ratings >= 1),
            config TEXT NOT NULL,
            seed INTEGER NOT NULL,
            admin_hash TEXT NOT NULL,
            created_at TEXT NOT NULL)""",
        "CREATE TABLE files (id TEXT PRIMARY KEY, png BLOB NOT NULL)",
        """CREATE TABLE trials (
            id TEXT PRIMARY KEY,
            item INTEGER NOT NULL,
            condition INTEGER NOT NULL,
            method TEXT NOT NULL,
            photo TEXT NOT NULL REFERENCES files(id),
            panels TEXT NOT NULL,
            caption TEXT NOT NULL,
            options TEXT NOT NULL,
            answer TEXT NOT NULL,
            meta TEXT NOT NULL,
            UNIQUE (item, condition))""",
        """CREATE TABLE participants (
            id INTEGER PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL)""",
        """CREATE TABLE assignments (
            participant_id INTEGER NOT NULL REFERENCES participants(id),
            position INTEGER NOT NULL,
            trial_id TEXT NOT NULL REFERENCES trials(id),
            PRIMARY KEY (participant_id, position),
            UNIQUE (participant_id, trial_id))""",
        """CREATE TABLE responses (
            id INTEGER PRIMARY KEY,
            participant_id INTEGER NOT NULL REFERENCES participants(id),
            trial_id TEXT NOT NULL REFERENCES trials(id),
            choice TEXT NOT NULL,
            answered_at TEXT NOT NULL,
            UNIQUE (participant_id, trial_id))""",
    ):
        conn.execute(sql)


def _v2(conn: sqlite3.Connection) -> None:
    """Server-side response times: when each trial was last shown to each participant; the
    time from that to the answer. Answers stored under v1 keep NULL times."""
    for sql in (
        """CREATE TABLE views (
            participant_id INTEGER NOT NULL REFERENCES participants(id),
            trial_id TEXT NOT NULL REFERENCES trials(id),
            shown_at REAL NOT NULL,
            PRIMARY KEY (participant_id, trial_id))""",
        "ALTER TABLE responses ADD COLUMN shown_at TEXT",
        "ALTER TABLE responses ADD COLUMN response_ms INTEGER",
        "CREATE INDEX responses_by_trial ON responses (trial_id)",
    ):
        conn.execute(sql)


#: Ordered migrations: ``(version, function)``; version ``v`` turns a version ``v - 1``
#: database into a version ``v`` one.
MIGRATIONS: tuple[tuple[int, Callable[[sqlite3.Connection], None]], ...] = ((1, _v1), (2, _v2))
SCHEMA_VERSION = MIGRATIONS[-1][0]


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest migration applied (0: an empty database)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version "
                 "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply the migrations after the database's version up to ``target``, each in its own
    transaction (a failure leaves the database at the previous version); return the version.

    A database newer than this camlens is refused (:class:`StudyError`)."""
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise StudyError(f"the study database has schema version {current}, newer than this "
                         f"camlens understands ({SCHEMA_VERSION}); upgrade camlens")
    for version, apply in MIGRATIONS:
        if version > target:
            break
        with transaction(conn):
            # re-read under the write lock: another process may have migrated meanwhile
            if schema_version(conn) >= version:
                continue
            apply(conn)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, _now()[1]))
    return schema_version(conn)


# ---------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Study:
    """What a study asks: its kind, question, methods (conditions), the ratings wanted per
    trial, how it was built (``config``: data, models, layer...) and its seed."""

    kind: str
    title: str
    question: str
    methods: tuple[str, ...]
    ratings: int
    config: dict[str, Any]
    seed: int
    created_at: str = ""


@dataclass(frozen=True)
class Trial:
    """One trial as stored. Public: ``id``, ``photo`` and ``panels`` (file ids), ``caption``
    and ``options`` (``(value, label)`` pairs, in the order shown). Secret: ``item`` (the
    image: a participant sees each item once), ``condition`` (which of the item's trials:
    class discrimination ``method + M * category``, trust the method's index), ``method``,
    ``answer`` (class discrimination: the option value of the visualised category; trust:
    ``"1"`` or ``"2"``, the position of model A) and ``meta``."""

    id: str
    item: int
    condition: int
    method: str
    photo: str
    panels: tuple[str, ...]
    caption: str
    options: tuple[tuple[str, str], ...]
    answer: str
    meta: dict[str, Any]

    def public(self, position: int, total: int, question: str) -> PublicTrial:
        return PublicTrial(self.id, self.photo, self.panels, self.caption, question,
                           self.options, position, total)


@dataclass(frozen=True)
class PublicTrial:
    """What a participant may see of a trial: nothing of its method, item or answer."""

    id: str
    photo: str
    panels: tuple[str, ...]
    caption: str
    question: str
    options: tuple[tuple[str, str], ...]
    position: int
    total: int

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "photo": self.photo, "panels": list(self.panels),
                "caption": self.caption, "question": self.question,
                "options": [{"value": v, "label": lab} for v, lab in self.options],
                "position": self.position, "total": self.total}


@dataclass(frozen=True)
class Participant:
    id: int
    created_at: str


@dataclass(frozen=True)
class Response:
    """One stored answer with its trial (for the statistics and the CSV)."""

    participant: int
    trial: Trial
    choice: str
    answered_at: str
    shown_at: str | None
    response_ms: int | None


# ---------------------------------------------------------------------------------- ordering


def latin_square_order(participant: int, trials: Sequence[Trial], seed: int) -> list[str]:
    """The trial ids participant ``participant`` answers, in order.

    Assignment (a Latin square over items and conditions): for item ``i`` with ``C`` trials
    (conditions ``0 .. C-1``) the participant sees condition ``(participant + i) % C``. So each
    participant sees every item (image) once, conditions (methods, and for class
    discrimination the two categories) about equally often, and ``R * C`` participants give
    every trial ``R`` ratings. Order: the participant's trials are shuffled within each method
    and dealt in rounds of one per method (a random method order each round), so methods stay
    interleaved. Reproducible from ``(seed, participant)``.
    """
    by_item: dict[int, list[Trial]] = {}
    for t in trials:
        by_item.setdefault(t.item, []).append(t)
    groups: dict[str, list[str]] = {}
    for i, item in enumerate(sorted(by_item)):
        conditions = sorted(by_item[item], key=lambda t: t.condition)
        trial = conditions[(participant + i) % len(conditions)]
        groups.setdefault(trial.method, []).append(trial.id)
    names = sorted(groups)
    rng = np.random.default_rng([seed, participant])
    for name in names:
        rng.shuffle(groups[name])
    order: list[str] = []
    while any(groups.values()):
        for k in rng.permutation(len(names)):
            ids = groups[names[int(k)]]
            if ids:
                order.append(ids.pop())
    return order


# ------------------------------------------------------------------------------------ store


def _trial(row: sqlite3.Row | tuple[Any, ...]) -> Trial:
    tid, item, condition, method, photo, panels, caption, options, answer, meta = row
    return Trial(tid, int(item), int(condition), method, photo, tuple(json.loads(panels)), caption,
                 tuple((str(v), str(lab)) for v, lab in json.loads(options)), answer,
                 json.loads(meta))


_TRIAL_COLUMNS = ("t.id, t.item, t.condition, t.method, t.photo, t.panels, t.caption, t.options, "
                  "t.answer, t.meta")


class StudyStore:
    """One study database. Each call opens its own connection (safe from any thread, from
    several processes at once) and closes it."""

    def __init__(self, path: str | Path) -> None:
        """Open an existing study database, upgrading its schema (:func:`migrate`).

        Raises :class:`StudyError` when the file does not exist or holds no study."""
        self.path = Path(path)
        if not self.path.is_file():
            raise StudyError(f"no study database at {self.path}; create one with "
                             "`camlens study create ... --db FILE`")
        try:
            with self._conn(wal=True) as conn:
                migrate(conn)
                row = conn.execute("SELECT kind, title, question, methods, ratings, config, "
                                   "seed, created_at FROM study").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StudyError(f"{self.path} is not a camlens study database ({exc})") from None
        # Closing the last connection to a WAL database checkpoints it and deletes the WAL
        # (an fsync: ~20 ms on a busy disk); this one stays open while the store lives, so
        # the per-call connections close cheaply.
        self._anchor = sqlite3.connect(str(self.path), check_same_thread=False)
        weakref.finalize(self, self._anchor.close)
        if row is None:
            raise StudyError(f"{self.path} holds no study; create one with "
                             "`camlens study create ... --db FILE`")
        kind, title, question, methods, ratings, config, seed, created = row
        self.study = Study(kind, title, question, tuple(json.loads(methods)), int(ratings),
                           json.loads(config), int(seed), created)

    @contextmanager
    def _conn(self, wal: bool = False) -> Iterator[sqlite3.Connection]:
        conn = connect(self.path, wal=wal)
        try:
            yield conn
        finally:
            conn.close()

    # ---------------------------------------------------------------------------- creation

    @classmethod
    def create(cls, path: str | Path, study: Study, trials: Sequence[Trial],
               files: dict[str, bytes]) -> tuple[StudyStore, str]:
        """Write a new study to ``path`` (a new file, or an empty database) in one
        transaction; return the store and the admin token (shown once, stored hashed)."""
        path = Path(path)
        if study.kind not in KINDS:
            raise StudyError(f"unknown study kind {study.kind!r}; choose one of {KINDS}")
        if not trials:
            raise StudyError("a study needs at least one trial")
        missing = {f for t in trials for f in (t.photo, *t.panels)} - set(files)
        if missing:
            raise StudyError(f"{len(missing)} picture(s) of the trials are not in files")
        if not path.parent.is_dir():
            raise StudyError(f"folder {path.parent} does not exist")
        admin = secrets.token_urlsafe(24)
        conn = connect(path, wal=True)
        try:
            migrate(conn)
            with transaction(conn):
                if conn.execute("SELECT COUNT(*) FROM study").fetchone()[0]:
                    raise StudyError(f"{path} already holds a study; give another --db")
                conn.execute(
                    "INSERT INTO study VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (study.kind, study.title, study.question, json.dumps(list(study.methods)),
                     study.ratings, json.dumps(study.config), study.seed, token_hash(admin),
                     _now()[1]))
                conn.executemany("INSERT INTO files VALUES (?, ?)", files.items())
                conn.executemany(
                    "INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(t.id, t.item, t.condition, t.method, t.photo, json.dumps(list(t.panels)),
                      t.caption,
                      json.dumps([list(o) for o in t.options]), t.answer, json.dumps(t.meta))
                     for t in trials])
        finally:
            conn.close()
        return cls(path), admin

    # -------------------------------------------------------------------------- reading

    def trials(self) -> list[Trial]:
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {_TRIAL_COLUMNS} FROM trials t ORDER BY t.item, "
                                "t.condition").fetchall()
        return [_trial(r) for r in rows]

    def is_admin(self, token: str) -> bool:
        with self._conn() as conn:
            row = conn.execute("SELECT admin_hash FROM study").fetchone()
        return row is not None and secrets.compare_digest(row[0], token_hash(token))

    def participant(self, token: str) -> Participant | None:
        """The participant with ``token``, or None."""
        with self._conn() as conn:
            row = conn.execute("SELECT id, created_at FROM participants WHERE token_hash = ?",
                               (token_hash(token),)).fetchone()
        return Participant(int(row[0]), row[1]) if row else None

    def completion(self) -> tuple[int, int, int]:
        """(invited, started, finished) participants: started = at least one answer,
        finished = every assigned trial answered."""
        with self._conn() as conn:
            invited, started, finished = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(done > 0), 0), COALESCE(SUM(done = total), 0) "
                "FROM (SELECT p.id, (SELECT COUNT(*) FROM responses r WHERE r.participant_id "
                "= p.id) AS done, (SELECT COUNT(*) FROM assignments a WHERE a.participant_id "
                "= p.id) AS total FROM participants p)").fetchone()
        return int(invited), int(started), int(finished)

    def progress(self, participant: Participant) -> tuple[int, int]:
        """(answered, assigned) trials of ``participant``."""
        with self._conn() as conn:
            done = conn.execute("SELECT COUNT(*) FROM responses WHERE participant_id = ?",
                                (participant.id,)).fetchone()[0]
            total = conn.execute("SELECT COUNT(*) FROM assignments WHERE participant_id = ?",
                                 (participant.id,)).fetchone()[0]
        return int(done), int(total)

    def next_trial(self, participant: Participant, *, mark_shown: bool = True
                   ) -> PublicTrial | None:
        """The participant's first unanswered trial in their order (None when all are done);
        ``mark_shown`` records now as the moment it was shown (the response time starts)."""
        with self._conn() as conn:
            total = conn.execute("SELECT COUNT(*) FROM assignments WHERE participant_id = ?",
                                 (participant.id,)).fetchone()[0]
            row = conn.execute(
                f"SELECT a.position, {_TRIAL_COLUMNS} FROM assignments a "
                "JOIN trials t ON t.id = a.trial_id "
                "WHERE a.participant_id = ? AND NOT EXISTS (SELECT 1 FROM responses r "
                "WHERE r.participant_id = a.participant_id AND r.trial_id = a.trial_id) "
                "ORDER BY a.position LIMIT 1", (participant.id,)).fetchone()
            if row is None:
                return None
            trial = _trial(row[1:])
            if mark_shown:
                with transaction(conn):
                    conn.execute("INSERT INTO views VALUES (?, ?, ?) ON CONFLICT "
                                 "(participant_id, trial_id) DO UPDATE SET shown_at = "
                                 "excluded.shown_at", (participant.id, trial.id, _now()[0]))
        return trial.public(int(row[0]) + 1, int(total), self.study.question)

    def file_for(self, participant: Participant | None, file_id: str) -> bytes | None:
        """The PNG ``file_id`` if it belongs to one of ``participant``'s trials (any trial
        for None: the admin), else None."""
        with self._conn() as conn:
            if participant is None:
                row = conn.execute("SELECT png FROM files WHERE id = ?", (file_id,)).fetchone()
                return bytes(row[0]) if row else None
            trials = conn.execute(
                "SELECT t.photo, t.panels FROM assignments a JOIN trials t "
                "ON t.id = a.trial_id WHERE a.participant_id = ?", (participant.id,)).fetchall()
            if not any(file_id == photo or file_id in json.loads(panels)
                       for photo, panels in trials):
                return None
            row = conn.execute("SELECT png FROM files WHERE id = ?", (file_id,)).fetchone()
        return bytes(row[0]) if row else None

    def responses(self) -> list[Response]:
        """Every stored answer with its trial, in the order they were stored."""
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT r.participant_id, r.choice, r.answered_at, r.shown_at, r.response_ms, "
                f"{_TRIAL_COLUMNS} FROM responses r JOIN trials t ON t.id = r.trial_id "
                "ORDER BY r.id").fetchall()
        return [Response(int(r[0]), _trial(r[5:]), r[1], r[2], r[3],
                         None if r[4] is None else int(r[4])) for r in rows]

    # -------------------------------------------------------------------------- writing

    def invite(self, n: int) -> list[str]:
        """Add ``n`` participants (each with the next Latin-square order, see
        :func:`latin_square_order`); return their tokens (shown once, stored hashed)."""
        if n < 1:
            raise StudyError(f"invite at least one participant, got {n}")
        trials = self.trials()
        tokens = [secrets.token_urlsafe(16) for _ in range(n)]
        with self._conn() as conn, transaction(conn):
            first = int(conn.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM participants")
                        .fetchone()[0])
            created = _now()[1]
            for k, token in enumerate(tokens):
                pid = first + k
                conn.execute("INSERT INTO participants VALUES (?, ?, ?)",
                             (pid, token_hash(token), created))
                order = latin_square_order(pid, trials, self.study.seed)
                conn.executemany("INSERT INTO assignments VALUES (?, ?, ?)",
                                 [(pid, pos, tid) for pos, tid in enumerate(order)])
        return tokens

    def submit(self, participant: Participant, trial_id: str, choice: str) -> tuple[int, int]:
        """Store ``participant``'s answer ``choice`` (an option value) to ``trial_id`` in one
        transaction; return their (answered, assigned) counts.

        Raises :class:`UnknownTrial` (not one of theirs), :class:`BadChoice` (not an option),
        :class:`DuplicateResponse` (already answered; the first answer is kept)."""
        with self._conn() as conn, transaction(conn):
            row = conn.execute(
                "SELECT t.options FROM assignments a JOIN trials t ON t.id = a.trial_id "
                "WHERE a.participant_id = ? AND a.trial_id = ?",
                (participant.id, trial_id)).fetchone()
            if row is None:
                raise UnknownTrial("no such trial among this participant's trials")
            values = [str(v) for v, _ in json.loads(row[0])]
            if choice not in values:
                raise BadChoice(f"choice must be one of {', '.join(values)}; got {choice!r}")
            now, stamp = _now()
            shown = conn.execute("SELECT shown_at FROM views WHERE participant_id = ? AND "
                                 "trial_id = ?", (participant.id, trial_id)).fetchone()
            shown_at = ms = None
            if shown is not None:
                shown_at = datetime.fromtimestamp(shown[0], timezone.utc).isoformat(
                    timespec="milliseconds")
                ms = max(0, round((now - shown[0]) * 1000))
            try:
                conn.execute("INSERT INTO responses (participant_id, trial_id, choice, "
                             "answered_at, shown_at, response_ms) VALUES (?, ?, ?, ?, ?, ?)",
                             (participant.id, trial_id, choice, stamp, shown_at, ms))
            except sqlite3.IntegrityError:
                raise DuplicateResponse("this trial was already answered; the first answer "
                                        "is kept") from None
            done = conn.execute("SELECT COUNT(*) FROM responses WHERE participant_id = ?",
                                (participant.id,)).fetchone()[0]
            total = conn.execute("SELECT COUNT(*) FROM assignments WHERE participant_id = ?",
                                 (participant.id,)).fetchone()[0]
        return int(done), int(total)
