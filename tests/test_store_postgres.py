"""The store on PostgreSQL (``SENSEI_DB_URL``): the setting and its errors, the password kept
out of sight, migrations when several processes start at once, and a job run by the scheduler
and a worker that find the database through the environment they inherit.

The store's own behaviour is tested on both databases by the ``both_backends`` modules
(test_store, test_review, test_access, ...); these are what only PostgreSQL has.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import jobs
from engine.store import SCHEMA_VERSION, Store
from tests.actors import ADMIN
from tests.pg_server import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
on_postgresql = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def test_a_url_that_is_not_postgresql_is_refused_naming_the_setting(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SENSEI_DB_URL", "mysql://ada:hunter2@db.example:3306/sensei")
    with pytest.raises(ValueError, match="SENSEI_DB_URL must be a postgresql://") as err:
        Store(tmp_path / "ws")
    assert "hunter2" not in str(err.value) and "db.example" in str(err.value)


@pytest.mark.parametrize(
    ("password", "where"),
    [("wrong-secret-1", "127.0.0.1:{port}"), ("wrong-secret-2", "127.0.0.1:notaport")],
    ids=["wrong password", "malformed URL"],
)
def test_a_database_that_refuses_us_is_named_without_the_password(
    pg_server: PostgresServer, tmp_path: Path, password: str, where: str
) -> None:
    url = f"postgresql://sensei:{password}@{where.format(port=pg_server.port)}/postgres"
    with pytest.raises((RuntimeError, ValueError), match="SENSEI_DB_URL") as err:
        Store(tmp_path / "ws", db_url=url)
    assert password not in str(err.value)
    assert err.value.__suppress_context__  # psycopg's own exception is not chained into tracebacks


def test_processes_starting_at_once_migrate_the_empty_database_once(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    url, go = pg_server.new_database(), tmp_path / "go"
    code = (
        "import sys, time, pathlib; from engine.store import Store\n"
        "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.005)\n"
        "s = Store(sys.argv[2]); print(s.schema_version(), len(s.list_categories()))\n"
    )
    env = {**os.environ, "SENSEI_DB_URL": url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(go), str(tmp_path / f"ws{i}")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    time.sleep(1.0)  # let them import; then all open the store at the same moment
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    assert {out.strip() for out, _ in outs} == {f"{SCHEMA_VERSION} 5"}  # the 5 built-in categories, once


def _database_text(store: Store) -> str:
    with store.read() as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        return "\n".join(repr(conn.execute(f"SELECT * FROM {t[0]}").fetchall()) for t in tables)


def _scheduler(store: Store) -> subprocess.Popen[bytes]:
    """``python -m engine scheduler`` for ``store``'s workspace, in its own session."""
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "--home", str(store.home), "scheduler"],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@on_postgresql
@pytest.mark.slow
def test_a_job_runs_through_the_scheduler_with_the_store_in_postgresql(
    cleanup_processes: Store, pg_server: PostgresServer
) -> None:
    store = cleanup_processes
    job_id = store.enqueue("sleep", {"seconds": 0.3})
    sched = _scheduler(store)
    try:
        deadline = time.monotonic() + 60
        while store.get_job(job_id)["exit_code"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sched.terminate()
        sched.wait(10)
    job = store.get_job(job_id)
    assert (job["status"], job["exit_code"], job["progress"]) == ("succeeded", 0, 1.0)
    assert job["pid"] and job["message"].startswith("slept")  # written by the worker, through PostgreSQL
    assert "succeeded" in Path(job["log_path"]).read_text()
    assert not (store.home / "sensei.db").exists()  # nobody fell back to SQLite
    files = [p.read_bytes() for p in store.home.rglob("*") if p.is_file()]
    assert not any(pg_server.password.encode() in blob for blob in files)  # logs, specs, exports
    assert pg_server.password not in _database_text(store)


@on_postgresql
@pytest.mark.slow
def test_machines_that_share_the_database_share_one_scheduler(
    cleanup_processes: Store, tmp_path: Path
) -> None:
    store = cleanup_processes
    second = Store(tmp_path / "second-machine")  # its own folder (lock file), the same database
    job_id = store.enqueue("sleep", {"seconds": 300})  # runs until cancelled below
    sched = _scheduler(store)
    try:
        deadline = time.monotonic() + 60
        while store.get_job(job_id)["status"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert jobs.scheduler_state(second) == "running"  # its sidebar says so, and nothing starts
        assert not jobs.ensure_scheduler(second)
        cmd = [sys.executable, "-m", "engine", "--home", str(second.home), "scheduler"]
        there = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert there.returncode == 3, there.stdout + there.stderr
        assert "another scheduler is running for the database postgresql://***@" in there.stderr
        assert store.get_job(job_id)["status"] == "running"  # the first machine's job was not taken for dead
        assert jobs.cancel_job(store, job_id, actor=ADMIN)
        while store.get_job(job_id)["exit_code"] is None and time.monotonic() < deadline + 60:
            time.sleep(0.1)
    finally:
        sched.terminate()
        sched.wait(10)
    assert store.get_job(job_id)["status"] == "cancelled"
    assert jobs.scheduler_state(second) == "idle"  # the lock went with the scheduler


@on_postgresql
def test_the_dashboard_names_the_database_without_its_password(pg_server: PostgresServer) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    captions = "\n".join(c.value for c in at.sidebar.caption)
    assert f"postgresql://***@127.0.0.1:{pg_server.port}/" in captions
    assert pg_server.password not in captions and pg_server.password not in str(at)


@on_postgresql
def test_connections_the_server_dropped_are_replaced(
    store: Store, pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from engine.store import backends

    monkeypatch.setattr(backends._POOL, "check_after_s", 0.0)  # check every idle connection
    job_id = store.enqueue("sleep", {})
    with psycopg.connect(pg_server.url(), autocommit=True) as admin:  # as a server restart would
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname <> current_database()"
        )
    assert store.get_job(job_id)["status"] == "queued"
