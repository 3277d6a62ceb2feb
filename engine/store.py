"""The workspace: one SQLite database (WAL mode) plus artifact folders.

Layout under ``SENSEI_HOME`` (default ``./workspace``)::

    sensei.db            jobs, experiments, datasets, runs, metrics, outputs
    llm_cache.db         the teacher/judge request cache (engine.llm)
    runs/<run_id>/       spec, checkpoints, model/adapter, metadata.json
    experiments/<id>/    shared artifacts of one experiment (e.g. the tiny base model)
    logs/<job_id>.log    a worker's stdout/stderr

Every public method opens its own short connection, so any process (Streamlit, scheduler,
workers, CLI) can use a :class:`Store` safely at the same time. Writes are transactions:
nothing half-written is ever visible. Schema changes are ordered, named migrations; the
applied version lives in ``PRAGMA user_version`` so old workspaces keep loading.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")

# Ordered, append-only migrations: (name, SQL). Never edit a released one; add a new one.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_initial",
        """
        CREATE TABLE experiments (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, spec_json TEXT NOT NULL,
            spec_hash TEXT NOT NULL, created_at REAL NOT NULL, dataset_id TEXT
        );
        CREATE TABLE datasets (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, content_hash TEXT NOT NULL,
            task_json TEXT NOT NULL, n_train INTEGER NOT NULL, n_test INTEGER NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE examples (
            dataset_id TEXT NOT NULL, idx INTEGER NOT NULL, split TEXT NOT NULL,
            input TEXT NOT NULL, prompt TEXT NOT NULL, reference TEXT, meta_json TEXT,
            PRIMARY KEY (dataset_id, idx)
        );
        CREATE TABLE teacher_responses (
            dataset_id TEXT NOT NULL, teacher_key TEXT NOT NULL, idx INTEGER NOT NULL,
            request_hash TEXT NOT NULL, output TEXT, valid INTEGER, input_tokens INTEGER,
            output_tokens INTEGER, latency_s REAL, cost_usd REAL, error TEXT, created_at REAL NOT NULL,
            PRIMARY KEY (dataset_id, teacher_key, idx)
        );
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY, experiment_id TEXT, run_id TEXT, kind TEXT NOT NULL,
            spec_json TEXT NOT NULL, status TEXT NOT NULL, depends_on_json TEXT NOT NULL,
            created_at REAL NOT NULL, started_at REAL, finished_at REAL, pid INTEGER,
            pid_started_at REAL, exit_code INTEGER, log_path TEXT, progress REAL NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '', error TEXT, heartbeat_at REAL
        );
        CREATE INDEX jobs_status ON jobs(status, created_at);
        CREATE INDEX jobs_experiment ON jobs(experiment_id);
        CREATE TABLE runs (
            id TEXT PRIMARY KEY, experiment_id TEXT, job_id TEXT, train_size INTEGER,
            seed INTEGER, variant TEXT NOT NULL DEFAULT 'sft', run_dir TEXT NOT NULL,
            metrics_json TEXT, created_at REAL NOT NULL
        );
        CREATE INDEX runs_experiment ON runs(experiment_id);
        CREATE TABLE metric_points (
            run_id TEXT NOT NULL, step INTEGER NOT NULL, name TEXT NOT NULL,
            value REAL NOT NULL, ts REAL NOT NULL
        );
        CREATE INDEX metric_points_run ON metric_points(run_id, name, step);
        CREATE TABLE outputs (
            run_id TEXT NOT NULL, idx INTEGER NOT NULL, prompt TEXT NOT NULL,
            output TEXT NOT NULL, reference TEXT, scores_json TEXT NOT NULL,
            PRIMARY KEY (run_id, idx)
        );
        CREATE TABLE events (
            job_id TEXT, run_id TEXT, ts REAL NOT NULL, level TEXT NOT NULL,
            kind TEXT NOT NULL, message TEXT NOT NULL
        );
        CREATE INDEX events_job ON events(job_id);
        """,
    ),
    (
        "0002_annotations",
        """
        CREATE TABLE annotations (
            id INTEGER PRIMARY KEY AUTOINCREMENT, item_ref TEXT NOT NULL, annotator TEXT NOT NULL,
            label TEXT NOT NULL CHECK (label IN ('accept', 'reject')), category TEXT,
            note TEXT NOT NULL DEFAULT '', ts REAL NOT NULL
        );
        CREATE INDEX annotations_item ON annotations(item_ref, annotator, id);
        CREATE TABLE error_categories (
            name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL
        );
        INSERT INTO error_categories(name, description, created_at) VALUES
            ('wrong field value', 'a field is present but holds the wrong value', 0),
            ('invalid format', 'not the required format (e.g. not one JSON object)', 0),
            ('extra prose', 'the answer is wrapped in chatter', 0),
            ('hallucination', 'states something the input does not support', 0),
            ('other', 'anything else: say what in the note', 0);
        CREATE TABLE judge_verdicts (
            judge_name TEXT NOT NULL, item_ref TEXT NOT NULL, verdict TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '', raw TEXT, ts REAL NOT NULL,
            PRIMARY KEY (judge_name, item_ref)
        );
        """,
    ),
    (
        "0003_job_devices",
        "ALTER TABLE jobs ADD COLUMN devices_json TEXT",
    ),
]
ANNOTATION_LABELS = ("accept", "reject")
SCHEMA_VERSION = len(MIGRATIONS)


def new_id(prefix: str) -> str:
    """A sortable unique id: prefix, millisecond time (base 36, fixed width), randomness."""
    ms = int(time.time() * 1000)
    stamp = _base36(ms).rjust(9, "0")
    return f"{prefix}-{stamp}{secrets.token_hex(3)}"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def default_home() -> Path:
    """The workspace folder: ``$SENSEI_HOME`` or ``./workspace``."""
    return Path(os.environ.get("SENSEI_HOME") or "workspace").resolve()


def _row(r: sqlite3.Row | None) -> dict[str, Any] | None:
    if r is None:
        return None
    d = dict(r)
    for key in list(d):
        if key.endswith("_json") and d[key] is not None:
            d[key.removesuffix("_json")] = json.loads(d.pop(key))
    return d


class Store:
    """Access to one workspace. Cheap to create; holds no open connection."""

    def __init__(self, home: str | Path | None = None):
        self.home = Path(home).resolve() if home else default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        for sub in ("runs", "experiments", "logs"):
            (self.home / sub).mkdir(exist_ok=True)
        self.db_path = self.home / "sensei.db"
        self._migrate()

    # ----------------------------------------------------------------- plumbing
    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def experiments_dir(self) -> Path:
        return self.home / "experiments"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): all or nothing."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection (sees the last committed state)."""
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    def _migrate(self) -> None:
        with self.tx() as conn:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.db_path}: schema version {current} is newer than this Sensei "
                    f"({SCHEMA_VERSION}); upgrade Sensei"
                )
            for version, (_name, sql) in enumerate(MIGRATIONS, start=1):
                if version > current:
                    for statement in sql.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={version}")

    def schema_version(self) -> int:
        with self.read() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    # ------------------------------------------------------------- experiments
    def add_experiment(self, conn: sqlite3.Connection, name: str, spec: dict, spec_hash: str) -> str:
        exp_id = new_id("exp")
        conn.execute(
            "INSERT INTO experiments(id, name, spec_json, spec_hash, created_at) VALUES (?,?,?,?,?)",
            (exp_id, name, json.dumps(spec), spec_hash, time.time()),
        )
        return exp_id

    def get_experiment(self, exp_id: str) -> dict[str, Any] | None:
        with self.read() as conn:
            return _row(conn.execute("SELECT * FROM experiments WHERE id=?", (exp_id,)).fetchone())

    def list_experiments(self) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute("SELECT * FROM experiments ORDER BY created_at DESC, id DESC")
            return [_row(r) for r in rows]  # type: ignore[misc]

    def set_experiment_dataset(self, exp_id: str, dataset_id: str) -> None:
        with self.tx() as conn:
            conn.execute("UPDATE experiments SET dataset_id=? WHERE id=?", (dataset_id, exp_id))

    # ---------------------------------------------------------------- datasets
    def save_dataset(
        self,
        name: str,
        content_hash: str,
        task: dict,
        examples: Iterable[dict[str, Any]],
        dataset_id: str | None = None,
    ) -> str:
        """Save a dataset and all its examples in one transaction.

        Each example: ``idx``, ``split`` (train|test), ``input``, ``prompt``, optional
        ``reference`` and ``meta``. A dataset with the same content hash is reused.
        """
        rows = list(examples)
        with self.tx() as conn:
            found = conn.execute("SELECT id FROM datasets WHERE content_hash=?", (content_hash,)).fetchone()
            if found:
                return str(found["id"])
            ds_id = dataset_id or new_id("ds")
            n_test = sum(1 for r in rows if r["split"] == "test")
            conn.execute(
                "INSERT INTO datasets(id, name, content_hash, task_json, n_train, n_test, created_at)"
                " VALUES (?,?,?,?,?,?,?)",
                (ds_id, name, content_hash, json.dumps(task), len(rows) - n_test, n_test, time.time()),
            )
            conn.executemany(
                "INSERT INTO examples(dataset_id, idx, split, input, prompt, reference, meta_json)"
                " VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        ds_id,
                        r["idx"],
                        r["split"],
                        r["input"],
                        r["prompt"],
                        r.get("reference"),
                        json.dumps(r.get("meta") or {}),
                    )
                    for r in rows
                ],
            )
            return ds_id

    def get_dataset(self, dataset_id: str) -> dict[str, Any] | None:
        with self.read() as conn:
            return _row(conn.execute("SELECT * FROM datasets WHERE id=?", (dataset_id,)).fetchone())

    def list_datasets(self) -> list[dict[str, Any]]:
        with self.read() as conn:
            return [_row(r) for r in conn.execute("SELECT * FROM datasets ORDER BY created_at DESC")]  # type: ignore[misc]

    def get_examples(self, dataset_id: str, split: str | None = None) -> list[dict[str, Any]]:
        with self.read() as conn:
            if split:
                rows = conn.execute(
                    "SELECT * FROM examples WHERE dataset_id=? AND split=? ORDER BY idx",
                    (dataset_id, split),
                )
            else:
                rows = conn.execute("SELECT * FROM examples WHERE dataset_id=? ORDER BY idx", (dataset_id,))
            return [_row(r) for r in rows]  # type: ignore[misc]

    # -------------------------------------------------------- teacher answers
    def save_teacher_responses(
        self, dataset_id: str, teacher_key: str, responses: Iterable[dict[str, Any]]
    ) -> None:
        """Upsert one teacher's answers (one row per example): output, validity, tokens, cost.

        ``teacher_key`` (``ExperimentSpec.teacher_key()``) keeps answers of different teachers
        or prompts on the same dataset apart.
        """
        now = time.time()
        with self.tx() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO teacher_responses(dataset_id, teacher_key, idx, request_hash,"
                " output, valid, input_tokens, output_tokens, latency_s, cost_usd, error, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        dataset_id,
                        teacher_key,
                        r["idx"],
                        r["request_hash"],
                        r.get("output"),
                        r.get("valid"),
                        r.get("input_tokens"),
                        r.get("output_tokens"),
                        r.get("latency_s"),
                        r.get("cost_usd"),
                        r.get("error"),
                        now,
                    )
                    for r in responses
                ],
            )

    def get_teacher_responses(self, dataset_id: str, teacher_key: str) -> dict[int, dict[str, Any]]:
        """One teacher's answers on a dataset, keyed by example index."""
        with self.read() as conn:
            rows = conn.execute(
                "SELECT * FROM teacher_responses WHERE dataset_id=? AND teacher_key=? ORDER BY idx",
                (dataset_id, teacher_key),
            )
            return {r["idx"]: dict(r) for r in rows}

    # -------------------------------------------------------------------- jobs
    def add_job(
        self,
        conn: sqlite3.Connection,
        kind: str,
        spec: dict[str, Any],
        experiment_id: str | None = None,
        depends_on: list[str] | None = None,
        run_id: str | None = None,
    ) -> str:
        """Queue a job inside the caller's transaction; returns its id."""
        job_id = new_id("job")
        conn.execute(
            "INSERT INTO jobs(id, experiment_id, run_id, kind, spec_json, status, depends_on_json,"
            " created_at, log_path) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                job_id,
                experiment_id,
                run_id,
                kind,
                json.dumps(spec),
                "queued",
                json.dumps(depends_on or []),
                time.time(),
                str(self.logs_dir / f"{job_id}.log"),
            ),
        )
        return job_id

    def enqueue(self, kind: str, spec: dict[str, Any], **kwargs: Any) -> str:
        """Queue one job in its own transaction."""
        with self.tx() as conn:
            return self.add_job(conn, kind, spec, **kwargs)

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        with self.read() as conn:
            return _row(conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())

    def list_jobs(
        self,
        experiment_id: str | None = None,
        statuses: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Jobs, newest first, optionally filtered by experiment and status."""
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if experiment_id:
            sql += " AND experiment_id=?"
            args.append(experiment_id)
        if statuses:
            st = list(statuses)
            sql += f" AND status IN ({','.join('?' * len(st))})"
            args.extend(st)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self.read() as conn:
            return [_row(r) for r in conn.execute(sql, args)]  # type: ignore[misc]

    def mark_started(
        self, job_id: str, pid: int, pid_started_at: float | None, devices: list[str] | None = None
    ) -> bool:
        """queued -> running with the worker's pid and the GPUs it holds. False if the job was
        no longer queued."""
        with self.tx() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status='running', pid=?, pid_started_at=?, started_at=?,"
                " heartbeat_at=?, devices_json=? WHERE id=? AND status='queued'",
                (pid, pid_started_at, time.time(), time.time(), json.dumps(devices or []), job_id),
            )
            return cur.rowcount == 1

    def set_progress(self, job_id: str, progress: float, message: str = "") -> None:
        """Record progress (0..1) and a short message; also a heartbeat."""
        with self.tx() as conn:
            conn.execute(
                "UPDATE jobs SET progress=?, message=?, heartbeat_at=? WHERE id=?",
                (max(0.0, min(1.0, float(progress))), message, time.time(), job_id),
            )

    def finish_job(
        self,
        job_id: str,
        status: str,
        error: str | None = None,
        exit_code: int | None = None,
        message: str | None = None,
    ) -> bool:
        """Move a job to a terminal status unless it already is in one. True if it moved."""
        assert status in TERMINAL, status
        with self.tx() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status=?, error=COALESCE(?, error), exit_code=COALESCE(?, exit_code),"
                " finished_at=?, message=COALESCE(?, message),"
                " progress=CASE WHEN ?='succeeded' THEN 1.0 ELSE progress END"
                f" WHERE id=? AND status NOT IN ({','.join('?' * len(TERMINAL))})",
                (status, error, exit_code, time.time(), message, status, job_id, *TERMINAL),
            )
            return cur.rowcount == 1

    def set_exit_code(self, job_id: str, exit_code: int) -> None:
        with self.tx() as conn:
            conn.execute("UPDATE jobs SET exit_code=? WHERE id=?", (exit_code, job_id))

    # -------------------------------------------------------------------- runs
    def add_run(
        self,
        conn: sqlite3.Connection,
        experiment_id: str | None,
        train_size: int | None,
        seed: int | None,
        variant: str = "sft",
    ) -> str:
        run_id = new_id("run")
        conn.execute(
            "INSERT INTO runs(id, experiment_id, train_size, seed, variant, run_dir, created_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (run_id, experiment_id, train_size, seed, variant, str(self.runs_dir / run_id), time.time()),
        )
        return run_id

    def link_run_job(self, conn: sqlite3.Connection, run_id: str, job_id: str) -> None:
        conn.execute("UPDATE runs SET job_id=? WHERE id=?", (job_id, run_id))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.read() as conn:
            return _row(conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone())

    def list_runs(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        """Runs with their job's status and progress."""
        sql = (
            "SELECT runs.*, jobs.status AS status, jobs.progress AS progress, jobs.message AS message,"
            " jobs.started_at AS started_at, jobs.finished_at AS finished_at"
            " FROM runs LEFT JOIN jobs ON jobs.id = runs.job_id"
        )
        args: list[Any] = []
        if experiment_id:
            sql += " WHERE runs.experiment_id=?"
            args.append(experiment_id)
        sql += " ORDER BY runs.train_size, runs.seed, runs.created_at"
        with self.read() as conn:
            return [_row(r) for r in conn.execute(sql, args)]  # type: ignore[misc]

    def set_run_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        with self.tx() as conn:
            conn.execute("UPDATE runs SET metrics_json=? WHERE id=?", (json.dumps(metrics), run_id))

    # ----------------------------------------------------------------- metrics
    def log_metrics(self, run_id: str, step: int, values: dict[str, float]) -> None:
        """Append one point per metric name at ``step``."""
        now = time.time()
        with self.tx() as conn:
            conn.executemany(
                "INSERT INTO metric_points(run_id, step, name, value, ts) VALUES (?,?,?,?,?)",
                [(run_id, int(step), k, float(v), now) for k, v in values.items()],
            )

    def delete_metrics_after(self, run_id: str, step: int) -> int:
        """Drop a run's metric points logged after ``step`` (a resumed run logs them again).

        Returns:
            How many points were deleted.
        """
        with self.tx() as conn:
            cur = conn.execute("DELETE FROM metric_points WHERE run_id=? AND step>?", (run_id, int(step)))
            return cur.rowcount

    def metric_series(self, run_ids: Iterable[str], name: str) -> list[dict[str, Any]]:
        """All points of one metric for several runs: ``run_id, step, value``."""
        ids = list(run_ids)
        if not ids:
            return []
        with self.read() as conn:
            rows = conn.execute(
                f"SELECT run_id, step, value FROM metric_points WHERE name=? AND run_id IN"
                f" ({','.join('?' * len(ids))}) ORDER BY run_id, step",
                (name, *ids),
            )
            return [dict(r) for r in rows]

    # ----------------------------------------------------------------- outputs
    def save_outputs(self, run_id: str, rows: Iterable[dict[str, Any]]) -> None:
        """Per-example outputs of a run on the test split, with their scores."""
        with self.tx() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO outputs(run_id, idx, prompt, output, reference, scores_json)"
                " VALUES (?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        r["idx"],
                        r["prompt"],
                        r["output"],
                        r.get("reference"),
                        json.dumps(r.get("scores") or {}),
                    )
                    for r in rows
                ],
            )

    def list_outputs(self, run_id: str) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute("SELECT * FROM outputs WHERE run_id=? ORDER BY idx", (run_id,))
            return [_row(r) for r in rows]  # type: ignore[misc]

    # ------------------------------------------------------------------ events
    def add_event(
        self, level: str, kind: str, message: str, job_id: str | None = None, run_id: str | None = None
    ) -> None:
        """A notable thing that happened to a job or run (loss spike, worker died, ...)."""
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO events(job_id, run_id, ts, level, kind, message) VALUES (?,?,?,?,?,?)",
                (job_id, run_id, time.time(), level, kind, message),
            )

    def list_events(self, job_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute(
                "SELECT * FROM events WHERE (? IS NULL OR job_id=?) AND (? IS NULL OR run_id=?) ORDER BY ts",
                (job_id, job_id, run_id, run_id),
            )
            return [dict(r) for r in rows]

    # ------------------------------------------------------------- annotations
    def add_annotation(
        self, item_ref: str, annotator: str, label: str, category: str | None = None, note: str = ""
    ) -> int:
        """Append one SME label; earlier labels stay as history. Returns the row id.

        ``item_ref`` names what was judged: ``run:<run_id>:<idx>`` (a student answer) or
        ``teacher:<dataset_id>:<teacher_key>:<idx>`` (a teacher answer).
        """
        annotator = annotator.strip()
        if not annotator:
            raise ValueError("an annotation needs an annotator name")
        if label not in ANNOTATION_LABELS:
            raise ValueError(f"label {label!r} is not one of {', '.join(ANNOTATION_LABELS)}")
        with self.tx() as conn:
            cur = conn.execute(
                "INSERT INTO annotations(item_ref, annotator, label, category, note, ts)"
                " VALUES (?,?,?,?,?,?)",
                (item_ref, annotator, label, category or None, note.strip(), time.time()),
            )
            return int(cur.lastrowid or 0)

    def annotations(
        self,
        item_ref: str | None = None,
        annotator: str | None = None,
        current_only: bool = True,
        prefix: str | None = None,
    ) -> list[dict[str, Any]]:
        """Annotations, oldest first, filtered by item, annotator and/or item-ref prefix.

        With ``current_only`` only each annotator's latest label per item is returned. "Latest"
        is the highest row id, i.e. commit order, not ``ts``: clocks of two machines may disagree.
        """
        sql = "SELECT a.* FROM annotations a WHERE 1=1"
        args: list[Any] = []
        if current_only:
            sql += (
                " AND a.id = (SELECT MAX(b.id) FROM annotations b"
                " WHERE b.item_ref = a.item_ref AND b.annotator = a.annotator)"
            )
        for column, value in (("item_ref", item_ref), ("annotator", annotator)):
            if value is not None:
                sql += f" AND a.{column}=?"
                args.append(value)
        if prefix:
            sql += " AND substr(a.item_ref, 1, ?) = ?"
            args.extend([len(prefix), prefix])
        with self.read() as conn:
            return [dict(r) for r in conn.execute(sql + " ORDER BY a.id", args)]

    def annotation_history(self, item_ref: str) -> list[dict[str, Any]]:
        """Every label ever given to one item, by anyone, oldest first."""
        return self.annotations(item_ref=item_ref, current_only=False)

    def list_categories(self) -> list[dict[str, Any]]:
        """The error taxonomy: ``name, description, created_at`` (0 for the built-in ones)."""
        with self.read() as conn:
            rows = conn.execute("SELECT * FROM error_categories ORDER BY created_at, rowid")
            return [dict(r) for r in rows]

    def add_category(self, name: str, description: str = "") -> bool:
        """Add an error category (or update its description). False if the name is blank."""
        name = " ".join(name.split())
        if not name:
            return False
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO error_categories(name, description, created_at) VALUES (?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET description=excluded.description",
                (name, description.strip(), time.time()),
            )
        return True

    def remove_category(self, name: str) -> bool:
        """Remove a category from the taxonomy; labels that used it keep it. True if removed."""
        with self.tx() as conn:
            return conn.execute("DELETE FROM error_categories WHERE name=?", (name,)).rowcount == 1

    # ---------------------------------------------------------- judge verdicts
    def save_judge_verdicts(self, judge_name: str, rows: Iterable[dict[str, Any]]) -> None:
        """Upsert one judge's verdicts: ``item_ref``, ``verdict``, optional ``reason``, ``raw``."""
        now = time.time()
        with self.tx() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO judge_verdicts(judge_name, item_ref, verdict, reason, raw, ts)"
                " VALUES (?,?,?,?,?,?)",
                [
                    (judge_name, r["item_ref"], r["verdict"], r.get("reason") or "", r.get("raw"), now)
                    for r in rows
                ],
            )

    def list_judge_verdicts(
        self, judge_name: str | None = None, prefix: str | None = None
    ) -> list[dict[str, Any]]:
        """Stored judge verdicts, optionally of one judge and/or under an item-ref prefix."""
        sql = "SELECT * FROM judge_verdicts WHERE 1=1"
        args: list[Any] = []
        if judge_name is not None:
            sql += " AND judge_name=?"
            args.append(judge_name)
        if prefix:
            sql += " AND substr(item_ref, 1, ?) = ?"
            args.extend([len(prefix), prefix])
        with self.read() as conn:
            return [dict(r) for r in conn.execute(sql + " ORDER BY judge_name, item_ref", args)]

    def judge_names(self) -> list[str]:
        """Names of the judges that have verdicts in this workspace."""
        with self.read() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT judge_name FROM judge_verdicts ORDER BY 1")]

    # ----------------------------------------------------------------- summary
    def summary(self) -> dict[str, int]:
        """Counts for the Overview page."""
        with self.read() as conn:
            out = {
                "experiments": conn.execute("SELECT COUNT(*) FROM experiments").fetchone()[0],
                "datasets": conn.execute("SELECT COUNT(*) FROM datasets").fetchone()[0],
                "runs": conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0],
            }
            for status, n in conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
                out[f"jobs_{status}"] = n
            return out
