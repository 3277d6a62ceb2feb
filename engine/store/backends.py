"""Where the workspace database lives: SQLite beside the artifacts (the default) or PostgreSQL.

``SENSEI_DB_URL=postgresql://user:password@host:port/database`` moves the database (never the
artifacts) to PostgreSQL through psycopg 3; unset, it is ``<workspace>/sensei.db`` in WAL mode.
The store's SQL is written once, in what both speak (``?`` placeholders, ``INSERT ... ON
CONFLICT``, ``RETURNING``); this module opens connections, runs transactions and bridges the
rest:

* placeholders ``?`` become ``%s`` (and a literal ``%`` is doubled) on PostgreSQL;
* a migration's DDL gets PostgreSQL's types: ``DOUBLE PRECISION`` for ``REAL`` (not float4),
  ``BIGINT``, identity columns for ``AUTOINCREMENT``, and ``TEXT COLLATE "C"`` so text sorts
  and compares by code point as in SQLite, whatever the server's locale;
* the schema version lives in ``PRAGMA user_version`` or in a one-row ``schema_version`` table;
* a write transaction is exclusive on both: SQLite's ``BEGIN IMMEDIATE`` takes the database's
  write lock, PostgreSQL's takes one transaction-level advisory lock. The store's
  check-then-write transactions (first admin, dataset dedup, a job started once) rely on it,
  and migrations run under it, so processes that start at once migrate once. Waiting for it
  gives up after 30 s on both (SQLite's busy timeout, PostgreSQL's ``lock_timeout``).

Connections are short-lived for the caller: SQLite opens one per call, PostgreSQL takes one
from a small per-process pool (a connection costs a server process and an authentication).
The password in the URL never reaches a message: :attr:`Backend.location` and every error
about the database show the URL redacted.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from engine.redaction import MASK, redact_url

DB_URL_VAR = "SENSEI_DB_URL"
"""Server environment variable: the database's URL (``postgresql://...``); unset means SQLite."""

BUSY_TIMEOUT_S = 30.0
_WRITE_LOCK = 0x53454E53  # "SENS": the advisory lock every write transaction takes on PostgreSQL
_SCHEDULER_LOCK = 0x53434844  # "SCHD": held by the one scheduler of a PostgreSQL database


class SchedulerLock:
    """What a scheduler holds beyond its workspace's lock file, for as long as it runs.

    On SQLite the file lock is the whole story (the database is a file of that workspace);
    this lock is then always held and never lost.
    """

    def alive(self) -> bool:
        """Whether it is still held (a database server restart drops it)."""
        return True

    def release(self) -> None:
        """Let another scheduler take it."""


class Connection(Protocol):
    """What the store's methods use of a connection (``sqlite3.Connection`` or its PostgreSQL twin).

    Rows read back index by position and by column name, and ``dict(row)`` works.
    """

    dialect: str

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Any: ...


class Backend:
    """A database: transactions, read connections and the schema version."""

    name: str
    location: str
    """For people: the SQLite file, or the PostgreSQL URL without its credentials."""

    def tx(self) -> AbstractContextManager[Connection]:
        """A write transaction, exclusive among writers: all or nothing."""
        raise NotImplementedError

    def read(self) -> AbstractContextManager[Connection]:
        """A connection that reads the last committed state."""
        raise NotImplementedError

    def schema_version(self, conn: Connection) -> int:
        raise NotImplementedError

    def set_schema_version(self, conn: Connection, version: int) -> None:
        raise NotImplementedError

    def ddl(self, sql: str) -> str:
        """A migration's SQL (written for SQLite) in this database's words."""
        return sql

    def take_scheduler_lock(self) -> SchedulerLock | None:
        """The database's scheduler lock, or ``None`` when another scheduler holds it."""
        return SchedulerLock()

    def scheduler_lock_taken(self) -> bool:
        """Whether some scheduler (on any machine) holds the database's scheduler lock."""
        return False


def open_backend(home: Path, url: str | None = None) -> Backend:
    """The database of the workspace at ``home``: ``url``, else ``$SENSEI_DB_URL``, else SQLite.

    Raises:
        ValueError: the URL is not a ``postgresql://`` one (the message names the setting).
    """
    url = (url if url is not None else os.environ.get(DB_URL_VAR, "")).strip()
    if not url:
        return SQLiteBackend(home / "sensei.db")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(
            f"{DB_URL_VAR} must be a postgresql://user:password@host:port/database URL (or unset for"
            f" SQLite in the workspace); got {_scrub(url, url)!r}"
        )
    return PostgresBackend(url)


# ---------------------------------------------------------------------------- SQLite
class SQLiteConnection(sqlite3.Connection):
    dialect = "sqlite"


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, path: Path):
        self.path = path
        self.location = str(path)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, factory=SQLiteConnection
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn  # type: ignore[misc]
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        conn = self._connect()
        try:
            yield conn  # type: ignore[misc]
        finally:
            conn.close()

    def schema_version(self, conn: Connection) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, conn: Connection, version: int) -> None:
        conn.execute(f"PRAGMA user_version={int(version)}")


# ------------------------------------------------------------------------ PostgreSQL
class Row(tuple):  # type: ignore[type-arg]
    """A PostgreSQL row that reads like ``sqlite3.Row``: ``row[0]``, ``row["name"]``, ``dict(row)``."""

    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Any:
    index: dict[str, int] = {}
    for i, column in enumerate(cursor.description or ()):
        index.setdefault(column.name, i)

    def make(values: Sequence[Any]) -> Row:
        row = Row(values)
        row._index = index
        return row

    return make


@lru_cache(maxsize=1024)
def to_postgres(sql: str) -> str:
    """``?`` placeholders outside quotes become ``%s``; every ``%`` is doubled for psycopg."""
    out, quote = [], ""
    for ch in sql:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            out.append("%s")
            continue
        out.append("%%" if ch == "%" else ch)
    return "".join(out)


_DDL = (
    (
        re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"),
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bTEXT\b"), 'TEXT COLLATE "C"'),
)


class PostgresConnection:
    """A psycopg connection that takes the store's SQLite-flavoured SQL (see :func:`to_postgres`)."""

    dialect = "postgresql"

    def __init__(self, raw: Any):
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        return self.raw.execute(to_postgres(sql), tuple(parameters))

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Any:
        cur = self.raw.cursor()
        rows = [tuple(p) for p in seq_of_parameters]
        if rows:
            cur.executemany(to_postgres(sql), rows)
        return cur


def _scrub(text: str, url: str) -> str:
    """``text`` without the URL's credentials: URLs redacted, and the password itself masked
    wherever a message quotes it (a malformed URL's parse error may)."""
    text = redact_url(text)
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if not password:
        m = re.match(r"[^:/]+://[^:@/]*:([^@]*)@", url)
        password = m.group(1) if m else None
    return text.replace(password, MASK) if password else text


@lru_cache(maxsize=1)
def _bool_dumper() -> type:
    """Python bools as integers: flags (``valid``) are INTEGER columns, as in SQLite."""
    from psycopg.types.numeric import Int8Dumper

    class BoolAsInt(Int8Dumper):
        def dump(self, obj: Any) -> Any:
            return super().dump(int(obj))

    return BoolAsInt


class _Pool:
    """Idle PostgreSQL connections of this process, a few, across URLs (oldest closed first).

    One idle for a while is checked before reuse: the server may have restarted, or a proxy
    dropped it, meanwhile.
    """

    def __init__(self, size: int = 4, check_after_s: float = 30.0):
        self.size, self.check_after_s = size, check_after_s
        self._idle: list[tuple[str, Any, float]] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self, url: str) -> Any | None:
        while True:
            with self._lock:
                self._forget_after_fork()
                i = next((i for i, (u, _, _) in enumerate(self._idle) if u == url), None)
                if i is None:
                    return None
                _, conn, since = self._idle.pop(i)
            if time.monotonic() - since < self.check_after_s or _alive(conn):
                return conn
            conn.close()

    def give(self, url: str, conn: Any) -> None:
        from psycopg.pq import TransactionStatus

        if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
            conn.close()
            return
        with self._lock:
            self._forget_after_fork()
            self._idle.append((url, conn, time.monotonic()))
            extra, self._idle = self._idle[: -self.size], self._idle[-self.size :]
        for _, old, _ in extra:
            old.close()

    def _forget_after_fork(self) -> None:
        # A forked child must not use, nor close (that would end the parent's sessions), the
        # parent's connections: keep them unreachable but alive.
        if os.getpid() != self._pid:
            _ORPHANS.extend(self._idle)
            self._idle, self._pid = [], os.getpid()


def _alive(conn: Any) -> bool:
    try:
        conn.execute("SELECT 1")
    except Exception:  # any failure means: open a new one
        return False
    return True


_ORPHANS: list[tuple[str, Any, float]] = []
_POOL = _Pool()


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, url: str):
        try:
            import psycopg  # noqa: F401
        except ImportError:  # pragma: no cover - psycopg is in requirements.txt
            raise RuntimeError(
                f"{DB_URL_VAR} names PostgreSQL, which needs psycopg: pip install 'psycopg[binary]'"
            ) from None
        self.url = url
        self.location = _scrub(url, url)

    def _connect(self) -> Any:
        import psycopg

        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                conn = psycopg.connect(self.url, autocommit=True, prepare_threshold=None)
                break
            except psycopg.OperationalError as err:
                # The server starting up or out of connection slots: wait, as SQLite waits for a lock.
                if err.sqlstate in ("57P03", "53300") and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                why = _scrub(str(err), self.url)
                raise RuntimeError(
                    f"cannot connect to the database {self.location} ({DB_URL_VAR}): {why}"
                ) from None
            except psycopg.ProgrammingError as err:  # a malformed URL
                why = _scrub(str(err), self.url)
                raise ValueError(f"{DB_URL_VAR} is not a valid PostgreSQL URL: {why}") from None
        conn.adapters.register_dumper(bool, _bool_dumper())
        conn.row_factory = _row_factory
        conn.execute(f"SET lock_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        return conn

    @contextmanager
    def _session(self) -> Iterator[Any]:
        conn = _POOL.take(self.url) or self._connect()
        try:
            yield conn
        finally:
            _POOL.give(self.url, conn)

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self._session() as raw, raw.transaction():
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            yield PostgresConnection(raw)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._session() as raw:
            yield PostgresConnection(raw)

    def schema_version(self, conn: Connection) -> int:
        # A scan of pg_tables, not to_regclass(): that reads the backend's catalog cache, which
        # an advisory lock does not refresh, so a process that waited for another's migration
        # could still see no table and migrate again (DuplicateTable). A query's MVCC snapshot,
        # taken after the lock, sees the other's commit.
        found = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_tables"
            " WHERE schemaname = current_schema() AND tablename = 'schema_version'"
        ).fetchone()[0]
        if not found:
            return 0
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def take_scheduler_lock(self) -> SchedulerLock | None:
        """A session advisory lock on a connection of its own, held while the scheduler runs:
        every machine that shares this database (each with its own workspace folder, so its
        own lock file) sees one scheduler, which alone starts and reconciles jobs."""
        conn = self._connect()
        if conn.execute("SELECT pg_try_advisory_lock(%s)", (_SCHEDULER_LOCK,)).fetchone()[0]:
            return _PostgresSchedulerLock(conn)
        conn.close()
        return None

    def scheduler_lock_taken(self) -> bool:
        with self._session() as raw:
            row = raw.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid = 0 AND objid = %s AND objsubid = 1"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                (_SCHEDULER_LOCK,),
            ).fetchone()
        return bool(row[0])

    def set_schema_version(self, conn: Connection, version: int) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version(version) VALUES (?)", (int(version),))

    def ddl(self, sql: str) -> str:
        for pattern, replacement in _DDL:
            sql = pattern.sub(replacement, sql)
        return sql


class _PostgresSchedulerLock(SchedulerLock):
    def __init__(self, conn: Any):
        self._conn = conn

    def alive(self) -> bool:
        return _alive(self._conn)

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()  # the session's advisory lock goes with it


def upsert_sql(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """``INSERT`` one row of ``columns`` or, when a row with the same ``key`` exists, overwrite
    its other columns: SQLite's ``INSERT OR REPLACE`` in words both databases speak."""
    others = [c for c in columns if c not in key]
    return (
        f"INSERT INTO {table}({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})"
        f" ON CONFLICT({', '.join(key)}) DO UPDATE SET {', '.join(f'{c}=excluded.{c}' for c in others)}"
    )
