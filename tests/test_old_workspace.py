"""A workspace made by an earlier release still opens: store, curve, review records, pages.

``tests/data/workspace_v1`` was written by commit 81b78cd (before ``engine/`` was regrouped
into domain packages): ``python -m engine demo --preset fast`` plus one SME label, one
taxonomy category and one judge verdict. Model weights were left out to keep it small; the
run folders keep ``spec.json`` and ``metadata.json``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import ablation
from engine.access import local_admin
from engine.store import Store
from engine.training.metadata import read_metadata

FIXTURE = Path(__file__).parent / "data" / "workspace_v1"
APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def old_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    home = tmp_path / "old"
    shutil.copytree(FIXTURE, home)
    monkeypatch.setenv("SENSEI_HOME", str(home))
    return Store(home)


def test_old_workspace_opens_with_its_records(old_store: Store) -> None:
    (exp,) = old_store.list_experiments()
    assert exp["name"] == "demo-fast"
    runs = old_store.list_runs(exp["id"])
    assert sorted(r["train_size"] for r in runs) == [16, 64]
    assert all(r["status"] == "succeeded" for r in runs)
    assert ablation.experiment_status(old_store, exp["id"]) == "succeeded"
    curve = ablation.experiment_curve(old_store, exp["id"])
    assert curve is not None and curve.sizes == [16, 64]
    ref = next(a["item_ref"] for a in old_store.annotations())
    assert ref.startswith("run:")
    assert old_store.judge_names() == ["demo-judge"]
    assert "wrong-field" in [c["name"] for c in old_store.list_categories()]
    for run in runs:
        meta = read_metadata(old_store.runs_dir / run["id"])
        assert meta and meta["train_size"] == run["train_size"]


def test_old_labels_belong_to_the_local_user_of_that_name(old_store: Store) -> None:
    """Before sign-in existed every label came from local single-user mode under a typed name:
    the migration gives it the subject ``local:<name>``, so that user edits it, history kept."""
    (old,) = old_store.annotations()
    assert (old["annotator"], old["annotator_sub"], old["label"]) == ("alice", "local:alice", "reject")
    old_store.add_annotation(old["item_ref"], "accept", actor=local_admin("alice"))
    (now,) = old_store.annotations(item_ref=old["item_ref"])
    assert (now["annotator_sub"], now["label"]) == ("local:alice", "accept")
    assert [a["label"] for a in old_store.annotation_history(old["item_ref"])] == ["reject", "accept"]
    assert old_store.list_users() == []  # nobody has signed in: the first to do so becomes admin


def test_old_workspace_pages_render(old_store: Store) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    for page in ("views/runs.py", "views/ablation.py", "views/review.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
