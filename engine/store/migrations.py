"""The workspace database's schema: ordered, named, append-only migrations."""

from __future__ import annotations

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
    (
        # The value of the experiment's ``ablation.vary`` this run trains with, as canonical JSON
        # (engine.specs.variant_key); NULL when the experiment varies nothing.
        "0005_run_variant",
        "ALTER TABLE runs ADD COLUMN variant_value TEXT",
    ),
]
