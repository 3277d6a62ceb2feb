"""The Compare page (empty and populated, no model server started) and the Runs page's W&B line."""

from __future__ import annotations

import json
from pathlib import Path

from engine.serving import server as serving
from engine.store import Store
from tests.test_pages import app, finished_experiment, queued_experiment, texts


def _save_fake_model(store: Store, exp_id: str) -> dict:
    run = store.list_runs(exp_id)[-1]
    model = Path(run["run_dir"]) / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    return run


def test_compare_empty_state_points_to_launch(store: Store) -> None:
    queued_experiment(store)  # queued: no saved model yet
    at = app("views/chat.py")
    assert at.title[0].value == "Compare"
    assert "No trained student yet" in texts(at)
    assert not at.selectbox
    assert at.button(key="stop_servers").disabled


def test_compare_lists_runs_with_a_model_without_starting_servers(store: Store) -> None:
    exp_id = finished_experiment(store)
    run = _save_fake_model(store, exp_id)
    at = app("views/chat.py")
    assert at.selectbox[0].value == exp_id
    assert at.selectbox[1].value == run["id"] and at.selectbox[1].options == [
        f"n={run['train_size']} seed {run['seed']} · {run['id']}"
    ]
    assert at.text_area[0].value == ""  # this fake experiment has no dataset: nothing to prefill
    assert "No model servers running" in texts(at)
    assert serving.list_servers(store) == []
    ask = next(b for b in at.button if b.label == "Ask")
    assert ask.disabled  # no prompt typed yet


def test_runs_page_shows_an_offline_wandb_run_with_sync_disabled(store: Store) -> None:
    exp_id = finished_experiment(store)
    run = store.list_runs(exp_id)[-1]
    sidecar = store.home / "wandb" / "sensei-runs" / f"{run['id']}.json"
    sidecar.parent.mkdir(parents=True)
    folder = store.home / "wandb" / "wandb" / "offline-run-1-abc"
    sidecar.write_text(json.dumps({"run_id": run["id"], "wandb_id": "abc", "path": str(folder)}))
    at = app("views/runs.py")
    at.selectbox[-1].set_value(run["job_id"]).run()
    assert f"W&B (offline): `{folder}`" in texts(at)
    sync = at.button(key="wandb_sync")
    assert sync.disabled and "WANDB_API_KEY" in sync.help
