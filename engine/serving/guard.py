"""Run a model server and stop it once nobody has used it for a while.

A model server started by the Compare page holds its model in memory (on a GPU machine, GPU
memory a training job may be waiting for) long after the browser tab that wanted it closed.
:mod:`engine.serving.server` therefore starts ``transformers serve`` under this guard::

    python -m engine.serving.guard --registry <workspace>/servers/<key>.json --idle 1800 -- CMD...

The guard runs ``CMD`` as its child and watches the server's registry entry, a JSON file that
names the guard's pid and whose modification time :func:`engine.serving.server.ensure_model_server`
touches on every use. It stops the server (SIGTERM, then SIGKILL) and exits when the entry is
older than ``--idle`` seconds (removing the entry first, so nobody is handed a dying server),
when the entry is removed or names another server (stopped, or replaced), or when the server
never registered within ``--startup`` seconds. The child gets SIGTERM if the guard itself
dies, so a killed guard leaves no orphan server. The guard exits with the server's code when
the server ends by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.procs import die_with_parent

POLL_S = 1.0


def _stop(child: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    child.terminate()
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _owner(registry: Path) -> int | None:
    """The guard pid the registry entry names (None: absent, half-written or unreadable)."""
    try:
        return int(json.loads(registry.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def should_stop(
    registry: Path, idle_s: float, started: float, startup_s: float, seen: bool, now: float, me: int
) -> tuple[str | None, bool]:
    """``(reason to stop or None, own entry seen so far)`` for one look at the registry.

    Args:
        registry: The server's registry file.
        idle_s: Seconds without a use before stopping.
        started: When the guard started (epoch seconds).
        startup_s: Seconds the server may take to register.
        seen: Whether an earlier look found the guard's own entry.
        now: The time of this look.
        me: The guard's pid, which its own entry names.
    """
    owner = _owner(registry)
    if owner is None:
        if seen and not registry.exists():
            return "its registry entry was removed", seen
        if now - started > startup_s:
            return f"it did not register within {startup_s:.0f} s", seen
        return None, seen
    if owner != me:
        return f"its registry entry names another server (pid {owner})", seen
    try:
        used = registry.stat().st_mtime
    except OSError:
        return None, True
    if now - used > idle_s:
        return f"unused for {now - used:.0f} s (idle limit {idle_s:.0f} s)", True
    return None, True


def guard(cmd: list[str], registry: Path, idle_s: float, startup_s: float, poll_s: float = POLL_S) -> int:
    """Run ``cmd`` until it exits or :func:`should_stop` says so; see the module docstring."""
    child = subprocess.Popen(cmd, preexec_fn=die_with_parent(signal.SIGTERM))  # no orphan server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    started, seen, me = time.time(), False, os.getpid()
    try:
        while child.poll() is None:
            time.sleep(poll_s)
            reason, seen = should_stop(registry, idle_s, started, startup_s, seen, time.time(), me)
            if reason:
                print(f"serving_guard: stopping the server: {reason}", flush=True)
                if "unused" in reason and _owner(registry) == me:
                    registry.unlink(missing_ok=True)  # first: no one is handed a dying server
                return 0
        code = child.returncode or 0
        return code if code >= 0 else 128 - code  # a signal, as a shell would report it
    finally:
        if child.poll() is None:
            _stop(child)


def main(argv: list[str] | None = None) -> int:
    """Parse ``--registry``, ``--idle``, ``--startup``, ``--poll`` and the command after ``--``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True, help="the server's registry file")
    parser.add_argument("--idle", type=float, required=True, help="seconds unused before stopping")
    parser.add_argument("--startup", type=float, default=600.0, help="seconds allowed to register")
    parser.add_argument("--poll", type=float, default=POLL_S, help="seconds between looks")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the server command")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no server command after --")
    return guard(cmd, args.registry, args.idle, args.startup, args.poll)


if __name__ == "__main__":
    sys.exit(main())
