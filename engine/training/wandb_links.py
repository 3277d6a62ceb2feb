"""Find a training run's Weights & Biases record, link to it, and upload offline runs.

Every train job starts a W&B run named after the store's run id (:mod:`engine.training.tracking`).
When it starts, :func:`record_run` writes a small sidecar,
``<workspace>/wandb/sensei-runs/<run_id>.json`` (W&B id, project, entity, local folder, URL),
so the Runs page can say where a run is without asking W&B. Runs logged before sidecars
existed are found by scanning the offline folders' ``.wandb`` files for the run id.

Offline runs (no ``WANDB_API_KEY``) are uploaded with ``wandb sync <folder>``; the URL it
prints is written back into the sidecar.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.access import Actor, Right, check, done
from engine.store import Store
from engine.store.artifacts import Artifacts, ArtifactsError, artifacts, artifacts_url

_URL = re.compile(r"https://\S+/runs/[A-Za-z0-9_-]+")


class WandbSyncError(RuntimeError):
    """``wandb sync`` could not upload a run (the message says why)."""


@dataclass
class WandbRun:
    """Where one training run's W&B record lives.

    Attributes:
        run_id: The store's run id (the W&B run's name).
        wandb_id: W&B's own run id.
        path: The local run folder (``offline-run-*`` or ``run-*``), if known.
        url: The run's page on W&B once it is online (live or synced), else None.
        project: W&B project.
        entity: W&B entity (user or team), when known.
    """

    run_id: str
    wandb_id: str
    path: str | None
    url: str | None = None
    project: str | None = None
    entity: str | None = None

    @property
    def offline(self) -> bool:
        """True while the run exists only on this disk."""
        return self.url is None


def wandb_root(store_home: Path) -> Path:
    """Where W&B writes its run folders for this workspace (``$WANDB_DIR`` wins)."""
    return Path(os.environ.get("WANDB_DIR") or Path(store_home) / "wandb") / "wandb"


def sidecar_path(store_home: Path, run_id: str) -> Path:
    """Where :func:`record_run` keeps what it knows of ``run_id``'s W&B run."""
    return Path(store_home) / "wandb" / "sensei-runs" / f"{run_id}.json"


def _write(store_home: Path, info: WandbRun) -> None:
    path = sidecar_path(store_home, info.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(info), indent=2))


def record_run(store_home: Path, run_id: str, run: Any) -> None:
    """Remember where W&B put ``run`` (called right after ``wandb.init``)."""
    offline = getattr(getattr(run, "settings", None), "mode", "") in ("offline", "dryrun")
    folder = Path(run.dir).parent if getattr(run, "dir", None) else None
    url = None if offline else getattr(run, "url", None)
    entity = None if offline else getattr(run, "entity", None)
    info = WandbRun(run_id, str(run.id), str(folder) if folder else None, url, run.project, entity)
    _write(store_home, info)


def find_run(store_home: Path, run_id: str) -> WandbRun | None:
    """The W&B record of ``run_id``: from its sidecar, else by scanning offline folders."""
    try:
        arts = Artifacts(store_home, artifacts_url())
        # Trained on another machine: its sidecar (and later its folder) come from SENSEI_ARTIFACTS.
        info = WandbRun(**json.loads(arts.pull_file(sidecar_path(store_home, run_id)).read_text()))
    except (OSError, ValueError, TypeError, ArtifactsError):
        pass
    else:
        if arts.remote and info.path and not Path(info.path).is_dir():
            info.path = str(wandb_root(store_home) / Path(info.path).name)
        return info
    needle = run_id.encode()
    for folder in sorted(wandb_root(store_home).glob("*run-*"), reverse=True):
        for record in folder.glob("run-*.wandb"):
            if needle in record.read_bytes():
                wandb_id = record.stem.removeprefix("run-")
                return WandbRun(run_id, wandb_id, str(folder))
    return None


def sync_available() -> bool:
    """True when an upload can work: a key is configured (``WANDB_API_KEY``)."""
    return bool(os.environ.get("WANDB_API_KEY"))


def sync_offline(store: Store, info: WandbRun, timeout_s: float = 300.0, *, actor: Actor) -> str:
    """Upload an offline run with ``wandb sync``; return its URL (also saved in the sidecar).

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch (the upload uses the
            server's W&B key).
        WandbSyncError: no key is configured, the folder is gone, or ``wandb sync`` failed.
    """
    check(store, actor, Right.LAUNCH, "sync runs to W&B", info.run_id)
    if not sync_available():
        raise WandbSyncError("set WANDB_API_KEY (or run `wandb login`) before syncing runs to W&B")
    if info.path and not Path(info.path).is_dir():
        with contextlib.suppress(ArtifactsError):
            artifacts(store).pull(info.path)
    if not info.path or not Path(info.path).is_dir():
        raise WandbSyncError(f"the run's W&B folder is missing: {info.path}")
    cmd = [sys.executable, "-m", "wandb", "sync", info.path]
    env = {**os.environ, "WANDB_MODE": "online"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise WandbSyncError(f"wandb sync did not finish in {timeout_s:.0f} s") from None
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-10:])
        raise WandbSyncError(f"wandb sync failed (exit {proc.returncode}):\n{tail}")
    match = _URL.search(output)
    info.url = match.group(0) if match else info.url
    _write(store.home, info)
    done(store, actor, "sync to W&B", info.run_id)
    return info.url or "(synced; W&B printed no URL)"
