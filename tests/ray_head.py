"""A real local Ray head on 127.0.0.1 for tests and benchmarks (``ray start --head --block``).

It runs in its own session and temporary folder, so stopping it ends exactly the processes it
started (its GCS, raylet and workers), never another Ray on the machine (no ``ray stop``).
It has its own token (Ray's token authentication, whatever ``~/.ray`` holds) and binds the
loopback address: Ray resolves ``127.0.0.1`` to the machine's address unless told that this
is a one-machine cluster (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's switch for that).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from tests.loopback import free_port


@contextlib.contextmanager
def local_ray_head(temp_dir: Path, num_cpus: int = 2, timeout_s: float = 180) -> Iterator[str]:
    """Start a Ray head offering ``num_cpus`` CPUs (one worker process each) and no GPU;
    yield its address (``127.0.0.1:<port>``, what ``RAY_ADDRESS`` takes); stop it on exit.

    While it runs, this process's environment holds what a driver needs to join it (its
    token, loopback mode); the previous values come back afterwards.
    """
    temp_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ray_env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
    }
    saved = {k: os.environ.get(k) for k in ray_env}
    os.environ.update(ray_env)
    env = dict(os.environ)
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    with open(temp_dir / "head.log", "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        # `ray start` writes the cluster's address here once the head is up, just before blocking.
        deadline = time.monotonic() + timeout_s
        while not (temp_dir / "ray_current_cluster").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start: see {temp_dir / 'head.log'}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc, temp_dir)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _stop(proc: subprocess.Popen[bytes], temp_dir: Path) -> None:
    # SIGTERM lets `ray start --block` stop its processes; then whatever is left of this head
    # (its session, or any process naming its folder) is killed.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)  # it would drain for 30 s: nothing here needs draining
    mine = str(temp_dir)
    for p in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):
            if p.pid != os.getpid() and (os.getsid(p.pid) == proc.pid or mine in " ".join(p.cmdline())):
                p.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
