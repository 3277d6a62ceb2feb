"""Weights & Biases glue: offline by default, runs inside the workspace, never a secret in config.

The store's ``metric_points`` table is the source of truth for the dashboard; W&B is an
optional mirror for people who already live there. Without ``WANDB_API_KEY`` runs are
written offline under ``<workspace>/wandb`` and can be uploaded later with ``wandb sync``.
Set ``WANDB_MODE=disabled`` to turn the mirror off entirely.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PROJECT = "sensei"
_SECRET_MARKERS = ("key", "token", "secret", "password")


def wandb_env(store_home: Path) -> dict[str, str]:
    """Environment for W&B in a worker: values to ``os.environ.update`` with.

    Settings the user already made (``WANDB_MODE``, ``WANDB_DIR``, ``WANDB_PROJECT``) win.

    Args:
        store_home: The workspace folder; runs land in its ``wandb`` subfolder.

    Returns:
        Variable name -> value.
    """
    env = {
        # Offline unless the user gave a key: a demo must never try to phone home.
        "WANDB_MODE": os.environ.get("WANDB_MODE")
        or ("online" if os.environ.get("WANDB_API_KEY") else "offline"),
        "WANDB_DIR": os.environ.get("WANDB_DIR") or str(Path(store_home) / "wandb"),
        "WANDB_PROJECT": os.environ.get("WANDB_PROJECT") or PROJECT,
        "WANDB_SILENT": "true",
        # The store already keeps the model; uploading checkpoints to W&B is opt-in.
        "WANDB_LOG_MODEL": os.environ.get("WANDB_LOG_MODEL") or "false",
    }
    Path(env["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)
    return env


def wandb_available() -> bool:
    """True when ``wandb`` is importable and not switched off with ``WANDB_MODE=disabled``."""
    if os.environ.get("WANDB_MODE", "").lower() == "disabled":
        return False
    return importlib.util.find_spec("wandb") is not None


def report_to() -> list[str]:
    """The ``report_to`` value for transformers' ``TrainingArguments``."""
    return ["wandb"] if wandb_available() else []


def safe_config(obj: Any) -> Any:
    """A copy of a spec dict without any entry whose key names a key, token, secret or password.

    Specs hold only the *name* of a key's environment variable, but a config mirrored to a
    third-party service is scrubbed anyway: defence in depth is cheap here.
    """
    if isinstance(obj, Mapping):
        return {
            k: safe_config(v) for k, v in obj.items() if not any(m in str(k).lower() for m in _SECRET_MARKERS)
        }
    if isinstance(obj, list | tuple):
        return [safe_config(v) for v in obj]
    return obj


def start_run(
    store_home: Path, name: str, group: str | None, config: Mapping[str, Any], tags: list[str] | None = None
) -> Any | None:
    """Start a W&B run that transformers' ``WandbCallback`` then reuses (it only inits if none).

    Args:
        store_home: The workspace folder (for ``WANDB_DIR``).
        name: Run name (the store's run id, so the two are easy to match).
        group: Group (the experiment id), so a whole ablation grid is one group.
        config: The resolved spec; scrubbed with :func:`safe_config`.
        tags: Optional tags.

    Returns:
        The W&B run, or ``None`` when W&B is unavailable.
    """
    if not wandb_available():
        return None
    os.environ.update(wandb_env(store_home))
    import wandb

    run = wandb.init(
        project=os.environ["WANDB_PROJECT"],
        name=name,
        group=group,
        tags=tags,
        config=safe_config(dict(config)),
        dir=os.environ["WANDB_DIR"],
        # Explicit, not left to wandb's process-wide settings cache: a long-lived process (tests,
        # a notebook) may have set up wandb earlier with another mode.
        mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
        reinit="finish_previous",
    )
    from engine.training.wandb_links import record_run

    record_run(store_home, name, run)  # lets the Runs page link to (or sync) this run
    return run


def log_generations(run: Any | None, rows: Sequence[Mapping[str, Any]], limit: int = 50) -> None:
    """Log a ``wandb.Table`` of sample generations (prompt, output, reference) to ``run``.

    Args:
        run: The active W&B run (no-op for ``None``).
        rows: Per-example outputs with ``prompt``, ``output`` and ``reference``.
        limit: At most this many rows (the first ones) go into the table.
    """
    if run is None or not rows:
        return
    import wandb

    table = wandb.Table(columns=["prompt", "output", "reference"])
    for row in rows[:limit]:
        table.add_data(row.get("prompt"), row.get("output"), row.get("reference"))
    run.log({"eval/samples": table})


def finish_run(run: Any | None, summary: Mapping[str, float] | None = None, failed: bool = False) -> None:
    """Write final metrics into the run's summary and close it (no-op for ``None``)."""
    if run is None:
        return
    for key, value in (summary or {}).items():
        run.summary[f"eval/{key}"] = value
    run.finish(exit_code=1 if failed else 0)
