"""The on-disk answer cache shared by every teacher and judge client (``<home>/llm_cache.db``).

A SQLite table keyed by request hash (:func:`engine.teacher.client.request_hash`): an answer that is in
the cache is never asked for again, whichever client (HTTP or local model) produced it. Only
successful answers are stored; nothing about the endpoint's credentials ever is.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, content TEXT NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, latency_s REAL, finish_reason TEXT, created_at REAL NOT NULL
)
"""


def open_cache(path: Path | None) -> sqlite3.Connection | None:
    """Open (creating if needed) the cache at ``path``; None when caching is off."""
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    # One commit per answer: without this, each would wait for an fsync.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute(SCHEMA)
    return conn


def cache_get(conn: sqlite3.Connection | None, key: str) -> tuple[Any, ...] | None:
    """``(content, input_tokens, output_tokens, finish_reason)`` of a cached answer, or None."""
    if conn is None:
        return None
    return conn.execute(
        "SELECT content, input_tokens, output_tokens, finish_reason FROM responses WHERE key=?",
        (key,),
    ).fetchone()


def cache_put(
    conn: sqlite3.Connection | None,
    key: str,
    content: str,
    input_tokens: int,
    output_tokens: int,
    latency_s: float,
    finish_reason: str | None,
) -> None:
    """Store one successful answer (committed at once: a killed worker loses nothing saved)."""
    if conn is not None:
        conn.execute(
            "INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?)",
            (key, content, input_tokens, output_tokens, latency_s, finish_reason, time.time()),
        )


def cached_keys(path: Path, keys: list[str]) -> set[str]:
    """Which of ``keys`` the cache at ``path`` holds (an absent file holds none)."""
    if not path.exists():
        return set()
    conn = sqlite3.connect(path, timeout=30.0)
    try:
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = conn.execute(
                f"SELECT key FROM responses WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update(r[0] for r in rows)
        return found
    finally:
        conn.close()
