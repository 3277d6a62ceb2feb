"""The command line: malformed specs are refused before anything is queued."""

from __future__ import annotations

import pytest

from engine.__main__ import main
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
