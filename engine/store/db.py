"""The workspace: one database plus artifact folders.

The database is SQLite in WAL mode (``sensei.db`` in the workspace), or PostgreSQL when
``SENSEI_DB_URL`` names one (:mod:`engine.store.backends`); the artifacts stay on disk either
way. Layout under ``SENSEI_HOME`` (default ``./workspace``)::

    sensei.db            jobs, experiments, datasets, runs, metrics, outputs (SQLite only)
    llm_cache.db         the teacher/judge request cache (engine.teacher.client)
    runs/<run_id>/       spec, checkpoints, model/adapter, metadata.json
    experiments/<id>/    shared artifacts of one experiment (e.g. the tiny base model)
    logs/<job_id>.log    a worker's stdout/stderr

Every public method opens its own short connection, so any process (Streamlit, scheduler,
workers, CLI) can use a :class:`Store` safely at the same time. Writes are transactions:
nothing half-written is ever visible. Schema changes are ordered, named migrations; the
applied version lives in ``PRAGMA user_version`` (SQLite) or a ``schema_version`` table
(PostgreSQL) so old workspaces keep loading.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from engine.redaction import redact_url
from engine.store.access import AccessRecords
from engine.store.backends import Backend, Connection, SQLiteBackend, open_backend, upsert_sql
from engine.store.migrations import MIGRATIONS
from engine.store.review import ReviewRecords

TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")

SCHEMA_VERSION = len(MIGRATIONS)


_last_id = [0, 0]  # (milliseconds, random part) of this process's latest id
_id_lock = threading.Lock()


def new_id(prefix: str) -> str:
    """A sortable unique id: prefix, millisecond time (base 36, fixed width), randomness.

    Ids made by one process sort in the order they were made, even within one millisecond
    (the random part then counts up, as in monotonic ULIDs).
    """
    with _id_lock:
        ms, rand = int(time.time() * 1000), secrets.randbelow(1 << 23)
        if ms <= _last_id[0] and _last_id[1] + 1 < 1 << 24:
            ms, rand = _last_id[0], _last_id[1] + 1
        _last_id[:] = [ms, rand]
    return f"{prefix}-{_base36(ms).rjust(9, '0')}{rand:06x}"


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


def _row(r: Any) -> dict[str, Any] | None:
    if r is None:
        return None
    d = dict(r)
    for key in list(d):
        if key.endswith("_json") and d[key] is not None:
            d[key.removesuffix("_json")] = json.loads(d.pop(key))
    return d


class Store(ReviewRecords, AccessRecords):
    """Access to one workspace. Cheap to create; holds no open connection.

    Args:
        home: The workspace folder (artifacts; the SQLite database); ``$SENSEI_HOME`` by default.
        db_url: The database, ``postgresql://...``; ``$SENSEI_DB_URL`` by default, SQLite if unset.
    """

    def __init__(self, home: str | Path | None = None, db_url: str | None = None):
        self.home = Path(home).resolve() if home else default_home()
        self.db: Backend = open_backend(self.home, db_url)
        self.home.mkdir(parents=True, exist_ok=True)
        for sub in ("runs", "experiments", "logs"):
            (self.home / sub).mkdir(exist_ok=True)
        self.db_path: Path | None = self.db.path if isinstance(self.db, SQLiteBackend) else None
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

    @property
    def location(self) -> str:
        """Where the database is, for people: a file, or a URL without its credentials."""
        return self.db.location

    def tx(self) -> AbstractContextManager[Connection]:
        """A write transaction, exclusive among writers (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL
        advisory lock): all or nothing."""
        return self.db.tx()

    def read(self) -> AbstractContextManager[Connection]:
        """A read-only connection (sees the last committed state)."""
        return self.db.read()

    def _migrate(self) -> None:
        with self.read() as conn:
            if self._check_version(conn) == SCHEMA_VERSION:
                return  # the usual start: a read, no write lock
        with self.tx() as conn:
            current = self._check_version(conn)  # again: another process may have migrated meanwhile
            for version, (_name, migration) in enumerate(MIGRATIONS, start=1):
                if version > current:
                    if callable(migration):
                        migration(conn)
                    else:
                        for statement in self.db.ddl(migration).split(";"):
                            if statement.strip():
                                conn.execute(statement)
                    self.db.set_schema_version(conn, version)

    def _check_version(self, conn: Connection) -> int:
        current = self.db.schema_version(conn)
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.location}: schema version {current} is newer than this Sensei "
                f"({SCHEMA_VERSION}); upgrade Sensei"
            )
        return current

    def schema_version(self) -> int:
        with self.read() as conn:
            return self.db.schema_version(conn)

    # ------------------------------------------------------------- experiments
    def add_experiment(self, conn: Connection, name: str, spec: dict, spec_hash: str) -> str:
        exp_id = new_id("exp")
        conn.execute(
            "INSERT INTO experiments(id, name, spec_json, spec_hash, created_at) VALUES (?,?,?,?,?)",
            (exp_id, name, json.dumps(spec), spec_hash, time.time()),
        )
        return exp_id

    def set_experiment_spec(self, conn: Connection, exp_id: str, spec: dict, spec_hash: str) -> None:
        """Replace an experiment's spec (its grid grew); inside the caller's transaction."""
        conn.execute(
            "UPDATE experiments SET spec_json=?, spec_hash=? WHERE id=?",
            (json.dumps(spec), spec_hash, exp_id),
        )

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
                upsert_sql(
                    "teacher_responses",
                    (
                        "dataset_id",
                        "teacher_key",
                        "idx",
                        "request_hash",
                        "output",
                        "valid",
                        "input_tokens",
                        "output_tokens",
                        "latency_s",
                        "cost_usd",
                        "error",
                        "created_at",
                    ),
                    key=("dataset_id", "teacher_key", "idx"),
                ),
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
        conn: Connection,
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
        self, job_id: str, pid: int | None, pid_started_at: float | None, devices: list[str] | None = None
    ) -> bool:
        """queued -> running with the worker's pid (None: not a local process, e.g. a Ray task)
        and the GPUs it holds. False if the job was no longer queued."""
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
                (
                    status,
                    None if error is None else redact_url(error),  # errors quote URLs; keys stay out
                    exit_code,
                    time.time(),
                    None if message is None else redact_url(message),
                    status,
                    job_id,
                    *TERMINAL,
                ),
            )
            return cur.rowcount == 1

    def set_exit_code(self, job_id: str, exit_code: int) -> None:
        with self.tx() as conn:
            conn.execute("UPDATE jobs SET exit_code=? WHERE id=?", (exit_code, job_id))

    def set_executor_ref(self, job_id: str, ref: str) -> None:
        """Record where a running job's worker runs when it is not a local pid (a Ray task)."""
        with self.tx() as conn:
            conn.execute("UPDATE jobs SET executor_ref=? WHERE id=?", (ref, job_id))

    # -------------------------------------------------------------------- runs
    def add_run(
        self,
        conn: Connection,
        experiment_id: str | None,
        train_size: int | None,
        seed: int | None,
        variant: str = "sft",
        variant_value: str | None = None,
    ) -> str:
        """Add a run; ``variant_value`` is the canonical JSON of the value of the experiment's
        ``ablation.vary`` it trains with (None when nothing varies)."""
        run_id = new_id("run")
        conn.execute(
            "INSERT INTO runs(id, experiment_id, train_size, seed, variant, variant_value, run_dir,"
            " created_at) VALUES (?,?,?,?,?,?,?,?)",
            (
                run_id,
                experiment_id,
                train_size,
                seed,
                variant,
                variant_value,
                str(self.runs_dir / run_id),
                time.time(),
            ),
        )
        return run_id

    def link_run_job(self, conn: Connection, run_id: str, job_id: str) -> None:
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
                upsert_sql(
                    "outputs",
                    ("run_id", "idx", "prompt", "output", "reference", "scores_json"),
                    key=("run_id", "idx"),
                ),
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

    def count_usable_answers(self, dataset_id: str, teacher_key: str, require_valid: bool) -> int:
        """Train examples that have a non-empty teacher answer (a valid one, if required)."""
        sql = (
            "SELECT COUNT(*) FROM examples e JOIN teacher_responses t"
            " ON t.dataset_id = e.dataset_id AND t.idx = e.idx AND t.teacher_key = ?"
            " WHERE e.dataset_id = ? AND e.split = 'train' AND TRIM(COALESCE(t.output, '')) <> ''"
        )
        if require_valid:
            sql += " AND (t.valid IS NULL OR t.valid <> 0)"
        with self.read() as conn:
            return int(conn.execute(sql, (teacher_key, dataset_id)).fetchone()[0])

    def output_scores(self, run_ids: Iterable[str]) -> dict[str, dict[int, dict[str, float]]]:
        """Per-example scores of many runs in one read: ``{run_id: {idx: {metric: value}}}``."""
        ids = list(run_ids)
        out: dict[str, dict[int, dict[str, float]]] = {r: {} for r in ids}
        with self.read() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    f"SELECT run_id, idx, scores_json FROM outputs WHERE run_id IN ({marks})", chunk
                ):
                    out[row[0]][int(row[1])] = json.loads(row[2])
        return out

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
                (job_id, run_id, time.time(), level, kind, redact_url(message)),
            )

    def list_events(self, job_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM events WHERE 1=1", []
        for column, value in (("job_id", job_id), ("run_id", run_id)):
            if value is not None:
                sql += f" AND {column}=?"
                args.append(value)
        with self.read() as conn:
            return [dict(r) for r in conn.execute(sql + " ORDER BY ts", args)]

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
