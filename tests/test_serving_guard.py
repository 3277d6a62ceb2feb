"""Model servers stop themselves when unused (engine.serving.guard), with a real child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest

from engine.serving import server as serving
from engine.serving.guard import should_stop
from engine.store import Store

ROOT = Path(__file__).resolve().parents[1]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
ME = 4242


def test_idle_removed_replaced_and_never_registered_servers_are_stopped(tmp_path: Path) -> None:
    registry = tmp_path / "k.json"
    now = time.time()
    assert should_stop(registry, 60, now - 5, 30, False, now, ME) == (None, False)  # still starting
    assert should_stop(registry, 60, now - 40, 30, False, now, ME)[0] == "it did not register within 30 s"
    registry.write_text("{half an entr")  # being written: not ours yet
    assert should_stop(registry, 60, now - 5, 30, False, now, ME) == (None, False)
    registry.write_text(json.dumps({"pid": ME}))
    os.utime(registry, (now - 10, now - 10))
    assert should_stop(registry, 60, now - 40, 30, False, now, ME) == (None, True)  # used 10 s ago
    os.utime(registry, (now - 90, now - 90))
    assert "unused for 90 s" in (should_stop(registry, 60, now, 30, True, now, ME)[0] or "")
    registry.write_text(json.dumps({"pid": ME + 1}))  # another server won the key
    assert "names another server" in (should_stop(registry, 60, now, 30, True, now, ME)[0] or "")
    registry.unlink()
    assert should_stop(registry, 60, now, 30, True, now, ME)[0] == "its registry entry was removed"


def _guard(registry: Path, idle: float) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "engine.serving.guard", "--registry", str(registry), "--idle", str(idle)]
    proc = subprocess.Popen([*cmd, "--poll", "0.1", "--", *SLEEPER], cwd=ROOT, start_new_session=True)
    registry.write_text(json.dumps({"pid": proc.pid}))  # what start_server writes once healthy
    return proc


def _server_of(proc: subprocess.Popen[bytes]) -> psutil.Process:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children()
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise AssertionError("the guard started no server")


@pytest.mark.parametrize("ending", ["idle", "stopped", "replaced", "guard killed"])
def test_the_guard_ends_its_server(tmp_path: Path, ending: str) -> None:
    registry = tmp_path / "k.json"
    proc = _guard(registry, idle=2 if ending == "idle" else 600)
    try:
        server = _server_of(proc)
        time.sleep(1.2)
        assert server.is_running() and proc.poll() is None
        if ending == "idle":
            os.utime(registry)  # a use at 1.2 s moves the deadline from 2 s to 3.2 s
            time.sleep(1.4)
            assert proc.poll() is None, "stopped although it was used"
            assert proc.wait(timeout=8) == 0
            assert not registry.exists()  # removed before the server was stopped
        elif ending == "stopped":
            registry.unlink()  # stop_server removes the entry first
            assert proc.wait(timeout=8) == 0
        elif ending == "replaced":
            registry.write_text(json.dumps({"pid": proc.pid + 100000}))  # another server won the key
            assert proc.wait(timeout=8) == 0 and registry.exists()  # the winner's entry stays
        else:
            os.kill(proc.pid, signal.SIGKILL)  # the guard dies: its server must not live on
            proc.wait(timeout=5)
        server.wait(timeout=5)
        assert not server.is_running()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_every_use_touches_the_registry(store: Store, tmp_path: Path) -> None:
    sleeper = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        started = psutil.Process(sleeper.pid).create_time()
        info = serving.ServerInfo("k", str(tmp_path), 1, sleeper.pid, started, str(tmp_path / "log"))
        path = serving.servers_dir(store) / "k.json"
        path.write_text(json.dumps(asdict(info)))
        os.utime(path, (1, 1))
        assert serving.ensure_model_server(store, "k", tmp_path) == info  # found, not started
        assert path.stat().st_mtime > 1  # touched: the guard's idle clock restarted
        path.write_text("{not json")
        assert serving.read_server(store, "k") is None and not path.exists()  # damaged: dropped
    finally:
        os.killpg(sleeper.pid, signal.SIGKILL)
