"""Run a model server and stop it once nobody has used it for a while.

A model server started by the Compare page holds its model in memory (on a GPU machine, GPU
memory a training job may be waiting for) long after the browser tab that wanted it closed.
:mod:`engine.serving` therefore starts ``transformers serve`` under this guard::

    python -m engine.serving_guard --registry <workspace>/servers/<key>.json --idle 1800 -- CMD...

The guard runs ``CMD`` as its child in the same process group and watches the server's
registry file, whose modification time :func:`engine.serving.ensure_model_server` touches on
every use. It stops the server (SIGTERM, then SIGKILL) and exits when the file is older than
``--idle`` seconds, when the file is removed (the server was stopped or replaced), or when
the server never registered within ``--startup`` seconds. It exits with the server's code
when the server ends by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 1.0


def _stop(child: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    child.terminate()
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def should_stop(
    registry: Path, idle_s: float, started: float, startup_s: float, seen: bool, now: float
) -> tuple[str | None, bool]:
    """``(reason to stop or None, registry seen so far)`` for one look at the registry file."""
    try:
        used = registry.stat().st_mtime
    except OSError:
        if seen:
            return "its registry entry was removed", seen
        if now - started > startup_s:
            return f"it did not register within {startup_s:.0f} s", seen
        return None, seen
    if now - used > idle_s:
        return f"unused for {now - used:.0f} s (idle limit {idle_s:.0f} s)", True
    return None, True


def guard(cmd: list[str], registry: Path, idle_s: float, startup_s: float, poll_s: float = POLL_S) -> int:
    """Run ``cmd`` until it exits or :func:`should_stop` says so; see the module docstring."""
    child = subprocess.Popen(cmd)

    def _terminate(*_: object) -> None:
        _stop(child)
        sys.exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, _terminate)
    started, seen = time.time(), False
    while child.poll() is None:
        time.sleep(poll_s)
        reason, seen = should_stop(registry, idle_s, started, startup_s, seen, time.time())
        if reason:
            print(f"serving_guard: stopping the server: {reason}", flush=True)
            _stop(child)
            with contextlib.suppress(OSError):
                if seen and registry.exists() and "unused" in reason:
                    registry.unlink()
            return 0
    return int(child.returncode or 0)


def main(argv: list[str] | None = None) -> int:
    """Parse ``--registry``, ``--idle``, ``--startup`` and the command after ``--``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True, help="the server's registry file")
    parser.add_argument("--idle", type=float, required=True, help="seconds unused before stopping")
    parser.add_argument("--startup", type=float, default=600.0, help="seconds allowed to register")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the server command")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no server command after --")
    return guard(cmd, args.registry, args.idle, args.startup)


if __name__ == "__main__":
    sys.exit(main())
