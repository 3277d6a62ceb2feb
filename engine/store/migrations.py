"""The workspace database's schema: ordered, named, append-only migrations.

A migration is SQL, or a function of the open connection for what SQL alone cannot compute
(new hashes of old records). Each runs once, in the same transaction that bumps the schema
version. A function migration keeps its own frozen copy of every formula it needs: the live
code may change later, what an old workspace holds does not.

The SQL is SQLite's; on PostgreSQL :meth:`engine.store.backends.Backend.ddl` maps its types.
The function migrations rewrite records that releases before the PostgreSQL backend wrote, so
they only have work on SQLite: a PostgreSQL database starts empty at 0001.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.backends import Connection

Migration = str | Callable[["Connection"], None]

BUILTIN_CATEGORIES = ("wrong field value", "invalid format", "extra prose", "hallucination", "other")
"""The error taxonomy 0002 starts with, in its order (all ``created_at`` 0)."""


def _spec_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _teacher_ident(spec: dict[str, Any], with_url: bool) -> dict[str, Any]:
    """``ExperimentSpec.teacher_key``'s identity: the form up to 0004 (``with_url``) or from 0005."""
    t, task = spec.get("teacher") or {}, spec.get("task") or {}
    kind = t.get("kind", "openai")
    model = t.get("model") or "teacher"
    ident: dict[str, Any] = {"kind": kind}
    if with_url:
        ident["base_url"] = t.get("base_url")
    ident.update(
        model=model if with_url else (t.get("name") or model),
        temperature=t.get("temperature", 0.0),
        max_tokens=t.get("max_tokens", 256),
        system_prompt=task.get("system_prompt", ""),
        prompt_template=task.get("prompt_template", "{input}"),
    )
    if kind == "demo":
        seed = (spec.get("data") or {}).get("seed", 0)
        ident.update(error_rate=t.get("demo_error_rate", 0.15), seed=seed)
    if kind == "local":
        ident.update(revision=t.get("revision"))
    return ident


def _request_hash(scope: str, model: str, messages: list[dict[str, str]], t: dict[str, Any]) -> str:
    """``engine.teacher.client.request_hash`` as of 0005 (sampling read from the teacher spec ``t``)."""
    request = {
        "scope": scope,
        "model": model,
        "messages": messages,
        "temperature": t.get("temperature", 0.0),
        "max_tokens": t.get("max_tokens", 256),
    }
    blob = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _messages(task: dict[str, Any], input_text: str) -> list[dict[str, str]]:
    """``engine.teacher.client.build_messages`` as of 0005."""
    prompt = str(task.get("prompt_template", "{input}")).format(input=input_text)
    system = task.get("system_prompt", "")
    return [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": prompt}]


def _teacher_keys_without_url(conn: Connection) -> None:
    """Re-key stored teacher answers (and their request hashes) off the endpoint URL.

    Up to 0003 ``teacher_key`` hashed ``teacher.base_url``, and an ``openai``-kind teacher's
    request hashes were scoped by it, so moving the endpoint re-paid every prompt. For every
    experiment, its answers move from the old key to the new one (``teacher.name`` or model,
    sampling, prompt); SME labels and judge verdicts on them follow. For an endpoint teacher
    the request hash of each answer is recomputed with the URL-free scope ``"openai"``, and the
    answer cache (``llm_cache.db`` beside the database) gets each prompt's cached answer under
    its new hash too, saved or not.
    Where two old keys meet in one new key, an answer wins over a failure; the loser stays
    under its old key, unread.
    """
    if conn.dialect != "sqlite":
        return  # no record from before 0005 (see the module's docstring)
    db_file = next((row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"), "")
    cache_copies: list[tuple[str, str]] = []  # (new hash, old hash)
    seen: set[tuple[str, str]] = set()
    experiments = conn.execute("SELECT spec_json, dataset_id FROM experiments ORDER BY created_at")
    for spec_json, exp_dataset in experiments.fetchall():
        try:
            spec = json.loads(spec_json)
            old, new = _spec_hash(_teacher_ident(spec, True)), _spec_hash(_teacher_ident(spec, False))
        except (ValueError, TypeError, AttributeError):
            continue  # not a spec this migration understands: leave its answers where they are
        t, task = spec.get("teacher") or {}, spec.get("task") or {}
        endpoint = t.get("kind", "openai") == "openai"
        model = t.get("name") or t.get("model") or "teacher"
        if endpoint and exp_dataset and t.get("base_url"):
            # Answers cached but never saved (a killed job) are found under their new hash too.
            legacy_scope = str(t["base_url"]).rstrip("/")
            for (input_text,) in conn.execute(
                "SELECT input FROM examples WHERE dataset_id=?", (exp_dataset,)
            ):
                messages = _messages(task, input_text)
                old_hash = _request_hash(legacy_scope, t.get("model") or "teacher", messages, t)
                cache_copies.append((_request_hash("openai", model, messages, t), old_hash))
        if old == new or (old, new) in seen:
            continue
        seen.add((old, new))
        rows = conn.execute(
            "SELECT r.dataset_id, r.idx, r.request_hash, r.error, e.input FROM teacher_responses r"
            " LEFT JOIN examples e ON e.dataset_id = r.dataset_id AND e.idx = r.idx"
            " WHERE r.teacher_key=?",
            (old,),
        ).fetchall()
        for dataset_id, idx, old_hash, error, input_text in rows:
            new_hash = old_hash
            if endpoint and input_text is not None:
                new_hash = _request_hash("openai", model, _messages(task, input_text), t)
            there = conn.execute(
                "SELECT error FROM teacher_responses WHERE dataset_id=? AND teacher_key=? AND idx=?",
                (dataset_id, new, idx),
            ).fetchone()
            if there is not None:
                if there[0] is None or error is not None:
                    continue  # the answer already under the new key stays
                conn.execute(
                    "DELETE FROM teacher_responses WHERE dataset_id=? AND teacher_key=? AND idx=?",
                    (dataset_id, new, idx),
                )
            conn.execute(
                "UPDATE teacher_responses SET teacher_key=?, request_hash=?"
                " WHERE dataset_id=? AND teacher_key=? AND idx=?",
                (new, new_hash, dataset_id, old, idx),
            )
        # Item refs of teacher answers: teacher:<dataset_id>:<teacher_key>:<idx>
        for table, verb in (("annotations", "UPDATE"), ("judge_verdicts", "UPDATE OR IGNORE")):
            conn.execute(
                f"{verb} {table} SET item_ref = replace(item_ref, ?, ?) WHERE item_ref LIKE ?",
                (f":{old}:", f":{new}:", f"teacher:%:{old}:%"),
            )
    if cache_copies and db_file:
        _copy_cache_entries(Path(db_file).parent / "llm_cache.db", cache_copies)


def _copy_cache_entries(path: Path, pairs: list[tuple[str, str]]) -> None:
    """Store each cached answer under its new request hash too (the old entry stays)."""
    if not path.exists():
        return
    cache = sqlite3.connect(path, timeout=30.0)
    try:
        with cache:
            cache.executemany(
                "INSERT OR IGNORE INTO responses SELECT ?, content, input_tokens, output_tokens,"
                " latency_s, finish_reason, created_at FROM responses WHERE key=?",
                [(new, old) for new, old in pairs if new != old],
            )
    except sqlite3.Error:
        pass  # the cache only saves money: the answers themselves are re-keyed above
    finally:
        cache.close()


def _mask_stored_credentials(conn: Connection) -> None:
    """Mask credentials that earlier releases stored inside URLs (``base_url`` with a key).

    Specs (experiments and jobs), job errors and messages, and events are rewritten through
    :func:`engine.redaction.redact_url` (masking is idempotent, so a later, stricter helper
    only masks more). A queued job whose endpoint needed such a key then fails saying to use
    ``api_key_env``, as a new one would. Worker logs and run folders on disk are not touched.
    """
    if conn.dialect != "sqlite":
        return  # no record from before 0006 (see the module's docstring)
    from engine.redaction import redact_url

    for table, key, columns in (
        ("experiments", "id", ("spec_json",)),
        ("jobs", "id", ("spec_json", "error", "message")),
        ("events", "rowid", ("message",)),
    ):
        for column in columns:
            rows = conn.execute(f"SELECT {key}, {column} FROM {table} WHERE {column} LIKE '%://%'")
            for row_id, text in rows.fetchall():
                clean = redact_url(text)
                if clean != text:
                    conn.execute(f"UPDATE {table} SET {column}=? WHERE {key}=?", (clean, row_id))


# Ordered, append-only migrations: (name, SQL or function). Never edit a released one; add a new one.
MIGRATIONS: list[tuple[str, Migration]] = [
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
    (
        "0004_experiment_notes",
        """
        CREATE TABLE experiment_notes (
            id INTEGER PRIMARY KEY AUTOINCREMENT, experiment_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('comment', 'decision')),
            author TEXT NOT NULL, text TEXT NOT NULL, ts REAL NOT NULL
        );
        CREATE INDEX experiment_notes_exp ON experiment_notes(experiment_id, id);
        """,
    ),
    ("0005_teacher_keys_without_url", _teacher_keys_without_url),
    ("0006_mask_stored_credentials", _mask_stored_credentials),
    (
        # The value of the experiment's ``ablation.vary`` this run trains with, as canonical JSON
        # (engine.specs.variant_key); NULL when the experiment varies nothing.
        "0007_run_variant",
        "ALTER TABLE runs ADD COLUMN variant_value TEXT",
    ),
    (
        # Who signed in (role and where it came from), the audit log, and the subject of whoever
        # labelled or commented. Until now every label and note came from local single-user
        # mode under a typed name, so their subject is ``local:<that name>`` (engine.access).
        "0008_identity",
        """
        CREATE TABLE users (
            subject TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL DEFAULT '',
            role TEXT NOT NULL CHECK (role IN ('viewer', 'annotator', 'launcher', 'admin')),
            role_source TEXT NOT NULL, created_at REAL NOT NULL, last_seen_at REAL NOT NULL
        );
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, actor_sub TEXT NOT NULL,
            actor_name TEXT NOT NULL, actor_role TEXT NOT NULL, action TEXT NOT NULL,
            target TEXT NOT NULL DEFAULT '', detail_json TEXT NOT NULL DEFAULT '{}',
            outcome TEXT NOT NULL CHECK (outcome IN ('done', 'refused'))
        );
        CREATE INDEX audit_log_actor ON audit_log(actor_sub, id);
        ALTER TABLE annotations ADD COLUMN annotator_sub TEXT;
        UPDATE annotations SET annotator_sub = 'local:' || annotator;
        CREATE INDEX annotations_item_sub ON annotations(item_ref, annotator_sub, id);
        ALTER TABLE experiment_notes ADD COLUMN author_sub TEXT;
        UPDATE experiment_notes SET author_sub = 'local:' || author
        """,
    ),
    (
        # Where a job's worker runs when it is not a local process: ``ray:<task id>`` for a Ray
        # task (engine.ray_executor); NULL for a local subprocess (its pid says where).
        "0009_job_executor_ref",
        "ALTER TABLE jobs ADD COLUMN executor_ref TEXT",
    ),
]
