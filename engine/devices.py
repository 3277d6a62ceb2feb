"""Device slots: which GPUs this machine has and which job gets which.

The scheduler gives each job its own GPU(s) through ``CUDA_VISIBLE_DEVICES``; a job that
needs several GPUs is started through ``accelerate launch`` (one process per GPU). With no
GPU the scheduler falls back to a CPU concurrency limit (``SENSEI_MAX_JOBS``).

Slots come from, in order: ``SENSEI_GPUS`` (e.g. ``0,1,3``; empty means none),
``CUDA_VISIBLE_DEVICES``, then ``nvidia-smi``. Torch is deliberately not imported: the
scheduler must start fast and never touch CUDA itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any


def gpu_slots() -> list[str]:
    """The GPU ids jobs may use on this machine (empty on a CPU-only machine)."""
    for var in ("SENSEI_GPUS", "CUDA_VISIBLE_DEVICES"):
        value = os.environ.get(var)
        if value is not None:
            return [d.strip() for d in value.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]


def job_gpus(job: dict[str, Any]) -> int:
    """How many GPUs a job wants when GPUs exist: ``spec.gpus`` if given, else by kind."""
    spec = job.get("spec") or {}
    if "gpus" in spec:
        return int(spec["gpus"])
    if job.get("kind") == "train":
        return int(((spec.get("experiment") or {}).get("student") or {}).get("gpus", 1))
    if job.get("kind") == "teacher":
        return 1 if ((spec.get("experiment") or {}).get("teacher") or {}).get("kind") == "local" else 0
    return 0


def assign(need: int, slots: list[str], busy: set[str]) -> list[str] | None:
    """The first ``need`` free slots, or None if not enough are free right now."""
    free = [s for s in slots if s not in busy]
    return free[:need] if len(free) >= need else None


def worker_command(job_id: str, home: str, devices: list[str]) -> list[str]:
    """The worker's command line: plain Python, or ``accelerate launch`` for several GPUs."""
    tail = ["-m", "engine", "worker", job_id, "--home", home]
    if len(devices) > 1:
        return [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            str(len(devices)),
            *tail,
        ]
    return [sys.executable, *tail]
