"""Run queued jobs in the test process, as a worker would (status, errors, exit code).

With ``SENSEI_NO_AUTOSTART=1`` (conftest) no scheduler starts, so a page that queues a job
leaves it queued; a test runs it here, then reruns the page.
"""

from __future__ import annotations

import logging
import signal

from engine import jobs
from engine.store import Store


def run_queued(store: Store, kind: str | None = None) -> list[str]:
    """Run every queued job (of ``kind``) through :func:`engine.jobs.run_worker`; their ids.

    The worker configures logging and a SIGTERM handler for its own process: both are put
    back afterwards, so later tests see the test process as it was.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    on_term = signal.getsignal(signal.SIGTERM)
    ran = []
    try:
        for job in reversed(store.list_jobs(statuses=("queued",))):  # oldest first
            if kind is None or job["kind"] == kind:
                jobs.run_worker(store, job["id"])
                ran.append(job["id"])
    finally:
        signal.signal(signal.SIGTERM, on_term)
        root.handlers[:] = handlers
        root.setLevel(level)
    return ran
