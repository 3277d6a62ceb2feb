"""A key written into ``base_url`` is never stored, logged or shown; bad endpoints are refused."""

from __future__ import annotations

import io
import logging
import sqlite3
from pathlib import Path

import pytest

from engine import jobs
from engine.redaction import RedactingFilter, redact_url
from engine.specs import SpecError, TeacherSpec, demo_spec, load_spec
from engine.store import Store
from engine.teacher.client import ChatClient

SECRETS = ("sk-secret", "sk-x")
LEAKY = "http://user:sk-secret@127.0.0.1:9/v1?api_key=sk-x&api-version=2024-06-01"


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        (
            "https://user:sk-secret@host/v1?api_key=sk-x",
            "https://***@host/v1?api_key=***",
        ),
        ("https://sk-token@host:8443/v1", "https://***@host:8443/v1"),
        (
            "https://host/v1?api-version=2024-06-01&token=abc&sig=xyz#access_token=t",
            "https://host/v1?api-version=2024-06-01&token=***&sig=***#access_token=***",
        ),
        ("http://localhost:8000/v1", "http://localhost:8000/v1"),
        (
            "cannot reach http://u:p@h:1/v1: connection refused; retry http://h/v1?key=k.",
            "cannot reach http://***@h:1/v1: connection refused; retry http://h/v1?key=***",
        ),
    ],
)
def test_redact_url_masks_userinfo_and_secret_parameters(url: str, clean: str) -> None:
    out = redact_url(url)
    assert out.startswith(clean.rstrip("."))
    assert redact_url(out) == out  # idempotent


def test_serialised_spec_holds_no_key_but_the_live_one_does() -> None:
    teacher = TeacherSpec(base_url=LEAKY)
    spec = demo_spec("fast").model_copy(update={"teacher": teacher})
    assert teacher.base_url == LEAKY  # in memory, as the user wrote it
    for text in (spec.to_yaml(), str(spec.model_dump(mode="json")), str(spec.model_dump())):
        assert not any(s in text for s in SECRETS), text
    stored = spec.model_dump(mode="json")["teacher"]["base_url"]
    assert stored == "http://***@127.0.0.1:9/v1?api_key=***&api-version=2024-06-01"
    # The stored form cannot be used by accident: the client says what to do instead.
    with pytest.raises(ValueError, match="api_key_env") as err:
        ChatClient(TeacherSpec(base_url=stored), None)
    assert not any(s in str(err.value) for s in SECRETS)


@pytest.mark.parametrize(
    ("teacher_yaml", "field"),
    [
        ("{kind: openai, base_url: 'ftp://host/v1'}", "teacher.base_url"),
        ("{kind: openai, base_url: 'localhost:8000/v1'}", "teacher.base_url"),
        ("{kind: openai, base_url: 'file:///etc/passwd'}", "teacher.base_url"),
        ("{kind: openai, base_url: 'http://host/v1', timeout_s: .inf}", "teacher.timeout_s"),
        ("{kind: openai, base_url: 'http://host/v1', timeout_s: .nan}", "teacher.timeout_s"),
    ],
)
def test_teacher_spec_refuses_non_http_urls_and_endless_timeouts(teacher_yaml: str, field: str) -> None:
    with pytest.raises(SpecError, match=field):
        load_spec(f"teacher: {teacher_yaml}\n")


def test_a_refused_url_is_not_echoed_with_its_key() -> None:
    with pytest.raises(SpecError) as err:
        load_spec("teacher: {kind: openai, base_url: 'ftp://u:sk-secret@host/v1'}\n")
    assert "teacher.base_url" in str(err.value) and "sk-secret" not in str(err.value)
    with pytest.raises(ValueError) as raw:
        TeacherSpec(base_url="ftp://u:sk-secret@host/v1")
    assert "sk-secret" not in str(raw.value)


def test_connection_errors_name_the_endpoint_without_its_key() -> None:
    client = ChatClient(TeacherSpec(base_url=LEAKY, max_retries=0, timeout_s=5), None)
    (result,) = client.complete_many([[{"role": "user", "content": "hi"}]])
    assert result.error is not None and "127.0.0.1:9" in result.error
    assert not any(s in result.error for s in SECRETS), result.error


def test_log_records_are_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("sensei.test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("HTTP Request: POST %s/chat/completions", LEAKY)
    finally:
        logger.removeHandler(handler)
    assert "127.0.0.1:9" in stream.getvalue() and not any(s in stream.getvalue() for s in SECRETS)


def test_a_worker_stores_and_logs_no_key_from_the_url(cleanup_processes: Store) -> None:
    store = cleanup_processes
    spec = demo_spec("fast").model_copy(update={"teacher": TeacherSpec(base_url=LEAKY, max_retries=0)})
    spec_dict = spec.model_dump(mode="json")
    with store.tx() as conn:
        exp_id = store.add_experiment(conn, spec.name, spec_dict, spec.fingerprint())
        job_id = store.add_job(conn, "teacher", {"experiment": spec_dict}, experiment_id=exp_id)
    job = store.get_job(job_id)
    assert job is not None
    proc = jobs.spawn_worker(store, job)
    assert proc is not None and proc.wait(timeout=120) == 1
    job = store.get_job(job_id)
    assert job is not None and job["status"] == "failed"
    assert "api_key_env" in job["error"] and "127.0.0.1:9" in job["error"]

    with sqlite3.connect(store.db_path) as conn:  # every text column of every table
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        dump = "\n".join(str(row) for t in tables for row in conn.execute(f"SELECT * FROM {t}"))
    log = Path(job["log_path"]).read_text(encoding="utf-8")
    assert "127.0.0.1:9" in dump and "127.0.0.1:9" in log
    assert not any(s in dump or s in log for s in SECRETS)


def test_an_old_workspace_loses_the_keys_it_stored(tmp_path: Path) -> None:
    """Specs, job errors and events written by an earlier release are masked on first open."""
    import json
    import shutil

    home = tmp_path / "old"
    shutil.copytree(Path(__file__).parent / "data" / "workspace_v1", home)
    with sqlite3.connect(home / "sensei.db") as conn:
        (spec_json,) = conn.execute("SELECT spec_json FROM experiments").fetchone()
        spec = json.loads(spec_json)
        spec["teacher"].update(kind="openai", base_url=LEAKY)
        conn.execute("UPDATE experiments SET spec_json=?", (json.dumps(spec),))
        conn.execute(
            "UPDATE jobs SET spec_json=?, error=?",
            (json.dumps({"experiment": spec}), f"cannot reach {LEAKY}"),
        )
        conn.execute(
            "INSERT INTO events(job_id, ts, level, kind, message) VALUES (NULL, 1, 'error', 'failed', ?)",
            (f"cannot reach {LEAKY}",),
        )
    store = Store(home)
    with sqlite3.connect(store.db_path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        dump = "\n".join(str(row) for t in tables for row in conn.execute(f"SELECT * FROM {t}"))
    assert "127.0.0.1:9" in dump and "api-version=2024-06-01" in dump
    assert not any(s in dump for s in SECRETS)
    (exp,) = store.list_experiments()
    assert (
        exp["spec"]["teacher"]["base_url"] == "http://***@127.0.0.1:9/v1?api_key=***&api-version=2024-06-01"
    )
