"""Artifacts beyond one machine (``SENSEI_ARTIFACTS``): a run's model, records and checkpoints
reach the bucket (moto's S3 on 127.0.0.1) or a shared folder, and a machine with an empty
workspace (here: a copy of the database and nothing else) exports, serves or resumes it."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine import jobs
from engine.ablation.curve import experiment_curve
from engine.serving import compare
from engine.specs import ExperimentSpec, demo_spec
from engine.store import Store
from engine.store.artifacts import Artifacts, ArtifactsError, artifacts
from engine.training.resume import resume_job
from engine.training.uploads import CheckpointUploader
from tests.actors import ADMIN
from tests.inline_jobs import run_queued
from tests.s3 import FAKE_SECRET, S3Server, bucket_files, s3_env
from tests.test_resume import _add_train_job, resumable_spec
from tests.test_train_job import _setup

REPO = Path(__file__).resolve().parent.parent


def _tiny_spec(max_steps: int = 10) -> ExperimentSpec:
    return resumable_spec(max_steps, test_size=5, num_layers=1, max_new_tokens=8)


def _another_machine(store: Store, home: Path) -> Store:
    """A workspace on "another machine": the shared database (copied), no artifact at all.

    The first machine's workspace is deleted, so nothing can be read from it by accident.
    """
    home.mkdir(parents=True)
    src, dst = sqlite3.connect(store.db_path), sqlite3.connect(home / "sensei.db")
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    shutil.rmtree(store.home)
    return Store(home)


def _no_secret_in(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert FAKE_SECRET.encode() not in path.read_bytes(), path


def test_a_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactsError, match=r"SENSEI_ARTIFACTS=s4://bucket: .*expected s3://bucket/prefix"):
        Artifacts(tmp_path, "s4://bucket")
    with pytest.raises(ArtifactsError, match=r"SENSEI_ARTIFACTS=s3://: name a bucket"):
        Artifacts(tmp_path, "s3://")
    shared = Artifacts(tmp_path / "ws", str(tmp_path / "shared"))
    (tmp_path / "elsewhere.txt").write_text("not in the workspace")
    with pytest.raises(ArtifactsError, match="outside the workspace"):
        shared.push(tmp_path / "elsewhere.txt")
    local = Artifacts(tmp_path / "ws")  # unset: one machine, nothing to mirror
    assert not local.remote and local.pull(tmp_path / "ws" / "runs" / "x") == tmp_path / "ws" / "runs" / "x"


def test_shown_url_is_redacted(tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    s3_env(s3_server, monkeypatch)
    arts = Artifacts(tmp_path, f"s3://someone:{FAKE_SECRET}@bucket/prefix")
    assert FAKE_SECRET not in arts.shown and arts.shown.startswith("s3://***@")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["s3", "shared"])
def test_a_run_lands_in_the_bucket_and_exports_from_an_empty_workspace(
    where: str, store: Store, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    if where == "s3":
        url = s3_env(s3_server, monkeypatch)
    else:  # a folder every machine mounts (NFS, a volume), given as file://
        url = (tmp_path / "shared").as_uri()
        monkeypatch.setenv("SENSEI_ARTIFACTS", url)
    spec = _tiny_spec()
    # The shared-folder run trains a LoRA adapter: exporting it needs the experiment's base too.
    spec.student.lora.enabled = where == "shared"
    exp_id, _ = _setup(store, spec)
    run_id, job_id = _add_train_job(store, spec.model_dump(mode="json"), exp_id, 16, 0)
    run_queued(store, "train")
    assert store.get_job(job_id)["status"] == "succeeded"

    if where == "s3":
        files = set(bucket_files(s3_server, url))
    else:
        shared = tmp_path / "shared"
        files = {p.relative_to(shared).as_posix() for p in shared.rglob("*") if p.is_file()}
    run = f"runs/{run_id}"
    model_file = f"{run}/model/adapter_config.json" if where == "shared" else f"{run}/model/config.json"
    assert {f"{run}/metadata.json", f"{run}/spec.json", model_file} <= files
    assert f"experiments/{exp_id}/base_model/config.json" in files
    # Checkpoints were uploaded as they were saved, and dropped once the run was done.
    assert not any(f.startswith(f"{run}/checkpoints") for f in files)
    _no_secret_in(store.home)

    other = _another_machine(store, tmp_path / "elsewhere")
    # The Ablation page and Compare on the other machine find the run through the bucket.
    curve = experiment_curve(other, exp_id, with_fit=False)
    assert curve is not None and curve.runs[0]["stop"] == "steps"  # from metadata.json
    assert [r["id"] for r in compare.servable_runs(other, exp_id)] == [run_id]
    assert compare.run_mode(other, run_id) == "completion"
    out = tmp_path / "export"
    cmd = [sys.executable, "-m", "engine", "--home", str(other.home), "export", run_id, str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert FAKE_SECRET not in proc.stdout + proc.stderr

    from engine.training.generate import generate
    from engine.training.student import load_student

    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    model, tokenizer = load_student(out)
    first = other.list_outputs(run_id)[0]
    answer = generate(model, tokenizer, [first["prompt"]], spec.student.max_new_tokens)
    if where == "s3":  # a full model answers exactly what was scored (a merged adapter: up to rounding)
        assert answer == [first["output"]]
    _no_secret_in(other.home)
    _no_secret_in(out)


@pytest.mark.slow
def test_a_killed_run_resumes_on_another_machine_from_its_uploaded_checkpoint(
    cleanup_processes: Store, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = cleanup_processes
    monkeypatch.setenv("WANDB_MODE", "disabled")
    url = s3_env(s3_server, monkeypatch)
    spec = _tiny_spec(max_steps=40)
    exp_id, _ = _setup(store, spec)
    run_id, job_id = _add_train_job(store, spec.model_dump(mode="json"), exp_id, 32, 0)

    # A real worker process, SIGKILLed once the bucket holds a complete checkpoint.
    proc = jobs.spawn_worker(store, store.get_job(job_id))
    assert proc is not None
    prefix = f"runs/{run_id}/checkpoints/"
    deadline = time.monotonic() + 240
    complete = "/trainer_state.json"  # uploaded last: the checkpoint is whole
    while not any(k.startswith(prefix) and k.endswith(complete) for k in bucket_files(s3_server, url)):
        assert proc.poll() is None, "the worker ended before its first checkpoint was uploaded"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert jobs.reconcile(store) == [job_id]

    other = _another_machine(store, tmp_path / "elsewhere")
    new_id = resume_job(other, job_id, actor=ADMIN)
    queued = [e["message"] for e in other.list_events(run_id=run_id) if e["kind"] == "resumed"]
    assert queued and "from checkpoint-" in queued[0]
    run_queued(other, "train")

    assert other.get_job(new_id)["status"] == "succeeded"
    resumed = [e["message"] for e in other.list_events(run_id=run_id) if e["job_id"] == new_id]
    assert any(m.startswith("resuming training from checkpoint-") for m in resumed)
    metrics = other.get_run(run_id)["metrics"]
    assert metrics["train_steps"] == spec.student.max_steps
    steps = [p["step"] for p in other.metric_series([run_id], "loss")]
    assert steps == list(range(5, spec.student.max_steps + 1, 5))  # nothing lost, nothing twice
    files = bucket_files(s3_server, url)
    assert f"runs/{run_id}/model/config.json" in files and not any(k.startswith(prefix) for k in files)
    assert all(FAKE_SECRET.encode() not in body for body in files.values())


def test_a_failed_checkpoint_upload_warns_and_training_goes_on(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_env(s3_server, monkeypatch)
    arts = Artifacts(tmp_path, "s3://no-such-bucket/sensei")
    ckpt = tmp_path / "runs" / "run-x" / "checkpoints" / "checkpoint-5"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    warnings: list[str] = []
    args, state = (
        SimpleNamespace(output_dir=str(ckpt.parent)),
        SimpleNamespace(global_step=5, is_world_process_zero=True),
    )
    CheckpointUploader(arts, warnings.append).on_save(args, state, None)
    assert len(warnings) == 1 and "checkpoint-5 was not uploaded" in warnings[0]
    assert "SENSEI_ARTIFACTS=s3://no-such-bucket/sensei" in warnings[0] and FAKE_SECRET not in warnings[0]


def test_workspace_store_names_its_artifacts(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENSEI_ARTIFACTS", raising=False)
    assert not artifacts(store).remote and artifacts(store).shown == str(store.home)


def test_a_running_tasks_log_reaches_every_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.ray_executor import LogMirror

    shared = tmp_path / "shared"
    node_log = tmp_path / "node" / "logs" / "j1.log"
    node_log.parent.mkdir(parents=True)
    node_log.write_text("job j1 (train) starting\n")
    remote = shared / "logs" / "j1.log"

    def uploaded(text: str) -> bool:
        deadline = time.monotonic() + 60
        while not (remote.is_file() and remote.read_text() == text):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    with LogMirror(
        str(node_log.parents[1]), str(node_log), {"SENSEI_ARTIFACTS": shared.as_uri()}, every_s=0.05
    ):
        assert uploaded("job j1 (train) starting\n")  # while the task runs
        with node_log.open("a") as fh:
            fh.write("step 5 loss 2.1\n")
        assert uploaded("job j1 (train) starting\nstep 5 loss 2.1\n")
        with node_log.open("a") as fh:
            fh.write("done\n")
    assert remote.read_text().endswith("done\n")  # the last lines, on the way out

    node_log.unlink()  # a machine that never ran the job (or the node is gone)
    job = {"log_path": str(node_log)}
    assert jobs.read_log(job) == ""  # SENSEI_ARTIFACTS unset: nothing to read
    monkeypatch.setenv("SENSEI_ARTIFACTS", shared.as_uri())
    assert jobs.read_log(job) == "job j1 (train) starting\nstep 5 loss 2.1\ndone\n"
    with remote.open("a") as fh:
        fh.write("resumed\n")
    assert jobs.read_log(job).endswith("done\nresumed\n")  # fetched again once it grew


def test_compare_offers_this_machines_runs_while_the_bucket_is_unreachable(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import ablation
    from engine.store.artifacts import run_folder
    from tests.loopback import free_port

    exp_id = ablation.launch_experiment(store, demo_spec("fast"), actor=ADMIN)
    train = [j for j in store.list_jobs(experiment_id=exp_id) if j["kind"] == "train"]
    for job in train:
        store.finish_job(job["id"], "succeeded")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing answers
    monkeypatch.setenv("SENSEI_ARTIFACTS", "s3://team-bucket/sensei")
    here, elsewhere = sorted(store.list_runs(exp_id), key=lambda r: r["train_size"])
    (run_folder(store, here) / "model").mkdir(parents=True)
    (run_folder(store, here) / "model" / "config.json").write_text("{}")
    assert elsewhere["status"] == "succeeded"  # its model could only be in the bucket: it asks, in vain
    assert [r["id"] for r in compare.servable_runs(store, exp_id)] == [here["id"]]
