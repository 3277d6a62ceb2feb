"""Finding a run's W&B record (offline under the workspace) and refusing to sync without a key."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.store import Store
from engine.training import tracking, wandb_links
from tests.actors import ADMIN


def test_offline_run_is_found_by_sidecar_and_by_scan(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # start_run exports W&B settings into os.environ; set them through monkeypatch so they are
    # restored afterwards and later tests log into their own workspace.
    for key, value in tracking.wandb_env(store.home).items():
        monkeypatch.setenv(key, value)
    run = tracking.start_run(store.home, "run-xyz123", "exp-1", {"a": 1})
    assert run is not None
    run.log({"loss": 1.0})
    tracking.finish_run(run, {"field_accuracy": 0.5})

    info = wandb_links.find_run(store.home, "run-xyz123")
    assert info is not None and info.offline and info.url is None
    assert info.path and info.path.startswith(str(store.home / "wandb"))
    assert info.wandb_id in info.path

    # Runs logged before sidecars existed: found by scanning the offline folders. W&B's
    # service may still be writing the run's log just after finish() when earlier tests
    # started it in this process, so wait (bounded) for the record that names the run.
    record = Path(info.path) / f"run-{info.wandb_id}.wandb"
    deadline = time.monotonic() + 15

    def named() -> bool:
        return record.exists() and b"run-xyz123" in record.read_bytes()

    while time.monotonic() < deadline and not named():
        time.sleep(0.1)
    (store.home / "wandb" / "sensei-runs" / "run-xyz123.json").unlink()
    scanned = wandb_links.find_run(store.home, "run-xyz123")
    files = {p.name: p.stat().st_size for p in Path(info.path).iterdir()}
    assert scanned is not None, f"no record names the run in {info.path}: {files}"
    assert scanned.path == info.path and scanned.wandb_id == info.wandb_id
    assert wandb_links.find_run(store.home, "run-other") is None

    assert not wandb_links.sync_available()
    with pytest.raises(wandb_links.WandbSyncError, match="WANDB_API_KEY"):
        wandb_links.sync_offline(store, scanned, actor=ADMIN)
