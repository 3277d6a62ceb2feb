"""The command line: malformed specs are refused before anything is queued."""

from __future__ import annotations

import pytest

from engine.__main__ import main
from engine.access import sign_in
from engine.store import Store
from tests.actors import ADMIN


def test_launch_refuses_malformed_spec_and_queues_nothing(tmp_path, capsys, store: Store) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nstudent:\n  batch_size: 0\n  learnig_rate: 0.1\n")
    assert main(["--home", str(store.home), "launch", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "student.batch_size" in err and "student.learnig_rate" in err and "nothing queued" in err
    assert store.list_jobs() == [] and store.list_experiments() == []


def test_launch_refuses_bad_override(tmp_path, capsys, store: Store) -> None:
    spec = tmp_path / "ok.yaml"
    spec.write_text("name: x\n")
    assert main(["--home", str(store.home), "launch", str(spec), "-o", "ablation.seeds=[]"]) == 2
    assert "ablation.seeds" in capsys.readouterr().err
    assert store.list_jobs() == []


def test_status_on_empty_workspace(capsys, store: Store) -> None:
    assert main(["--home", str(store.home), "status"]) == 0
    assert "no experiments yet" in capsys.readouterr().out


def test_cancel_unknown_job(capsys, store: Store) -> None:
    assert main(["--home", str(store.home), "cancel", "job-nope"]) == 2


@pytest.mark.usefixtures("cleanup_processes")
def test_cancel_experiment_from_cli(capsys, store: Store, monkeypatch) -> None:
    from engine import ablation
    from engine.specs import demo_spec

    exp_id = ablation.launch_experiment(store, demo_spec("fast"), actor=ADMIN)
    assert main(["--home", str(store.home), "cancel", exp_id]) == 0
    assert "cancelled 3 job(s)" in capsys.readouterr().out
    assert {j["status"] for j in store.list_jobs(experiment_id=exp_id)} == {"cancelled"}


@pytest.mark.slow
@pytest.mark.usefixtures("cleanup_processes")
def test_versus_teacher_from_the_cli_runs_in_a_worker(capsys, store: Store) -> None:
    from tests.review_data import N, populate

    pop = populate(store)
    assert main(["--home", str(store.home), "versus-teacher", pop.experiment_id, "--wait"]) == 0
    out = capsys.readouterr().out
    assert "queued 1 comparison(s)" in out and "pairwise succeeded" in out
    row = out.strip().splitlines()[-1].split()
    # n=16 seed 0: the demo judge (no reference) sees the teacher win 2 of 12 pairs.
    assert row[:3] == ["16", "0", f"{5 / 12:.3f}"] and row[-2:] == [str(N), "vs-teacher"]
    assert main(["--home", str(store.home), "versus-teacher", pop.experiment_id]) == 0
    assert "queued 0 comparison(s)" in capsys.readouterr().out  # judged already


def test_the_cli_acts_as_the_local_admin(capsys, store: Store, monkeypatch) -> None:
    monkeypatch.setenv("SENSEI_LOCAL_USER", "ops")
    job_id = store.enqueue("sleep", {"seconds": 60})
    assert main(["--home", str(store.home), "cancel", job_id]) == 0
    (line,) = store.audit_log(actor=ADMIN, action="cancel")
    assert (line["actor_sub"], line["actor_name"], line["actor_role"]) == ("local:ops", "ops", "admin")
    assert store.get_job(job_id)["error"] == "cancelled by ops"


def test_users_lists_sign_ins_and_sets_roles(capsys, store: Store) -> None:
    home = str(store.home)
    assert main(["--home", home, "users"]) == 0
    assert "nobody has signed in" in capsys.readouterr().out
    sign_in(store, {"sub": "u1", "name": "Una"})
    sign_in(store, {"sub": "u2", "name": "Dos"})
    assert main(["--home", home, "users", "set-role", "u2", "launcher"]) == 0
    assert main(["--home", home, "users"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("u1  Una  admin (from first user)")
    assert out[-1].startswith("u2  Dos  launcher (from admin)")
    assert main(["--home", home, "users", "set-role", "u1", "viewer"]) == 2  # the last admin
    assert "last admin" in capsys.readouterr().err
    assert main(["--home", home, "users", "set-role", "u1"]) == 2
