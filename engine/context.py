"""What a job's ``main`` receives: its row, its spec, the store, and a progress reporter."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from engine.store import Store


class JobCancelled(Exception):
    """Raised inside a worker when its job was cancelled (SIGTERM to its process group)."""


@dataclass
class JobContext:
    """Handed to ``main(ctx)`` of each job kind.

    Attributes:
        store: the workspace.
        job: the job row (id, kind, experiment_id, run_id, ...).
        spec: the job's spec (a dict; each job kind validates its own part).
        log: a logger whose records go to the job's log file.
    """

    store: Store
    job: dict[str, Any]
    spec: dict[str, Any]
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("sensei.job"))
    _last_progress: float = 0.0

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    def progress(self, fraction: float, message: str = "", force: bool = False) -> None:
        """Report progress (0..1) and a short message, at most a few times a second."""
        now = time.monotonic()
        if force or now - self._last_progress >= 0.5 or fraction >= 1.0:
            self._last_progress = now
            self.store.set_progress(self.job_id, fraction, message)
