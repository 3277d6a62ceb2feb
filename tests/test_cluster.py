"""Past one machine, all at once: the demo ablation through ``python -m engine demo`` with the
store in PostgreSQL, artifacts in an S3 bucket (moto on 127.0.0.1) and every job a task on a
local Ray head with two worker processes; then a second machine, with an empty workspace and
only the two shared settings, draws the curve on the Ablation page.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import jobs
from engine.store import Store
from tests.conftest import kill_workspace_processes
from tests.pg_server import PostgresServer
from tests.s3 import FAKE_SECRET, S3Server, bucket_files, s3_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_ablation_runs_on_ray_with_the_store_in_postgresql_and_models_in_a_bucket(
    pg_server: PostgresServer,
    s3_server: S3Server,
    ray_address: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = s3_env(s3_server, monkeypatch)
    db_url = pg_server.new_database()
    monkeypatch.setenv("SENSEI_DB_URL", db_url)
    monkeypatch.setenv("SENSEI_EXECUTOR", "ray")
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    home = tmp_path / "head-node"
    cmd = [sys.executable, "-m", "engine", "--home", str(home), "demo", "--preset", "fast"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=540, check=False)
    finally:
        kill_workspace_processes(home)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "curve field_accuracy: 16=" in proc.stdout

    store = Store(home, db_url=db_url)
    assert not (home / "sensei.db").exists()  # nobody fell back to SQLite
    [exp] = store.list_experiments()
    done = store.list_jobs(experiment_id=exp["id"])
    assert {j["kind"] for j in done} >= {"teacher", "train"}
    assert all(j["status"] == "succeeded" for j in done), [(j["kind"], j["error"]) for j in done]
    assert all(str(j["executor_ref"]).startswith("ray:") for j in done)  # each one a Ray task
    runs = store.list_runs(exp["id"])
    assert sorted(r["train_size"] for r in runs) == [16, 64]

    files = bucket_files(s3_server, url)
    for run in runs:
        assert {f"runs/{run['id']}/model/config.json", f"runs/{run['id']}/metadata.json"} <= set(files)
    assert not any(FAKE_SECRET.encode() in blob for blob in files.values())
    # Each task uploaded its job's log, so any machine reads it (here: with the node's copy gone).
    assert {f"logs/{j['id']}.log" for j in done} <= set(files)
    shutil.rmtree(home / "logs")
    train = next(j for j in done if j["kind"] == "train")
    assert f"job {train['id']} (train) starting" in jobs.read_log(train)
    blobs = [p.read_bytes() for p in home.rglob("*") if p.is_file()]
    assert not any(FAKE_SECRET.encode() in b or pg_server.password.encode() in b for b in blobs)

    # Another machine: an empty workspace, the same database and bucket.
    monkeypatch.setenv("SENSEI_HOME", str(tmp_path / "laptop"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("views/ablation.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("plotly_chart")) == 1
    assert "curve field_accuracy: 16=" in "\n".join(c.value for c in at.caption)
    table = at.dataframe[0].value
    assert list(table["train_size"]) == [16, 64]
