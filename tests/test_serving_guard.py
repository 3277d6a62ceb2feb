"""Model servers stop themselves when unused (engine.serving_guard), with a real child process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from engine.serving_guard import should_stop

ROOT = Path(__file__).resolve().parents[1]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_idle_removed_and_never_registered_servers_are_stopped(tmp_path: Path) -> None:
    registry = tmp_path / "k.json"
    now = time.time()
    assert should_stop(registry, 60, now - 5, 30, False, now) == (None, False)  # still starting
    reason, _ = should_stop(registry, 60, now - 40, 30, False, now)
    assert reason == "it did not register within 30 s"
    registry.write_text("{}")
    os.utime(registry, (now - 10, now - 10))
    assert should_stop(registry, 60, now - 40, 30, False, now) == (None, True)  # used 10 s ago
    os.utime(registry, (now - 90, now - 90))
    assert "unused for 90 s" in (should_stop(registry, 60, now, 30, True, now)[0] or "")
    registry.unlink()
    assert should_stop(registry, 60, now, 30, True, now)[0] == "its registry entry was removed"


def _guard(registry: Path, idle: float) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "engine.serving_guard", "--registry", str(registry), "--idle", str(idle)]
    return subprocess.Popen([*cmd, "--", *SLEEPER], cwd=ROOT, start_new_session=True)


def _children(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children()
        if kids:
            return kids
        time.sleep(0.05)
    raise AssertionError("the guard started no server")


@pytest.mark.parametrize("ending", ["idle", "stopped"])
def test_the_guard_ends_its_server(tmp_path: Path, ending: str) -> None:
    registry = tmp_path / "k.json"
    registry.write_text("{}")
    proc = _guard(registry, idle=2 if ending == "idle" else 600)
    try:
        (server,) = _children(proc)
        time.sleep(1.2)
        assert server.is_running() and proc.poll() is None
        if ending == "idle":
            os.utime(registry)  # a use restarts the idle clock...
            assert proc.wait(timeout=8) == 0  # ...and 2 s without one end it
            assert not registry.exists()  # an idle-stopped server leaves no stale entry
        else:
            registry.unlink()  # stop_server removes the entry first
            assert proc.wait(timeout=8) == 0
        server.wait(timeout=5)
        assert not server.is_running()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
