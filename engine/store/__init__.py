"""The workspace store: one database plus artifact folders.

* :mod:`engine.store.db` — :class:`Store`: experiments, datasets, jobs, runs, metrics, outputs;
* :mod:`engine.store.backends` — where the database lives: SQLite (default) or PostgreSQL
  (``SENSEI_DB_URL``), one SQL path for both;
* :mod:`engine.store.migrations` — the schema as ordered, named, append-only migrations;
* :mod:`engine.store.review` — review records (SME annotations, taxonomy, judge verdicts),
  mixed into :class:`Store`;
* :mod:`engine.store.access` — users, their roles and the audit log, mixed into :class:`Store`.
"""

from engine.store.db import ACTIVE, SCHEMA_VERSION, TERMINAL, Store
from engine.store.migrations import MIGRATIONS

__all__ = ["ACTIVE", "MIGRATIONS", "SCHEMA_VERSION", "TERMINAL", "Store"]
