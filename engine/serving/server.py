"""Serve a run's model (or a Hub id or a folder under the model roots) through ``transformers serve``.

The Compare page asks the base model, a run's student and the teacher the same prompt side
by side. Students are served by ``transformers serve <folder>`` (transformers' own
OpenAI-compatible server) on 127.0.0.1 and a free port, in a detached process of its own,
so a server outlives the Streamlit rerun that started it. A registry file per server,
``<workspace>/servers/<key>.json`` (port, pid, process start time, model folder), lets any
later rerun or process find it again, and :func:`stop_server` / :func:`stop_all` end it.

Servers stop themselves when unused: each runs under :mod:`engine.serving.guard`, which
ends it once its registry file (touched on every use) is older than ``SENSEI_SERVE_IDLE_S``
seconds (default 30 minutes), so a closed browser tab never pins a model in (GPU) memory.

A run that trained a LoRA adapter is served as a merged copy (``<run>/served``, built once):
``transformers serve`` loads full models, and a merged model answers exactly like base +
adapter.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from engine.access import Actor, Right, check, done
from engine.devices import gpu_slots
from engine.jobs import process_alive
from engine.store import Store
from engine.store.artifacts import ArtifactsError, pull_base, pull_run
from engine.training.model_refs import resolve_model_ref

STARTUP_TIMEOUT_S = 180.0
"""Seconds to wait for a server's ``/health``: loading a 7B model from disk takes a while."""
IDLE_S = 1800.0
"""Default seconds a server may stay unused before it stops itself (``SENSEI_SERVE_IDLE_S``)."""


def idle_limit_s() -> float:
    """Seconds an unused server lives: ``SENSEI_SERVE_IDLE_S``, else :data:`IDLE_S`."""
    try:
        return float(os.environ.get("SENSEI_SERVE_IDLE_S") or IDLE_S)
    except ValueError:
        return IDLE_S


class ServeError(RuntimeError):
    """A model server could not be started (the message carries its log's tail)."""


@dataclass
class ServerInfo:
    """One running ``transformers serve`` process, as recorded in the registry.

    Attributes:
        key: Registry key (a run id, or ``base-<experiment id>`` for a base model).
        model_dir: The folder being served; also the model name requests must send.
        port: Port on 127.0.0.1.
        pid: Process id (the leader of its own process group).
        started_at: The process's start time (pids get reused; this tells them apart).
        log_path: Where the server's stdout and stderr go.
    """

    key: str
    model_dir: str
    port: int
    pid: int
    started_at: float
    log_path: str

    @property
    def base_url(self) -> str:
        """Root for an OpenAI client, e.g. ``http://127.0.0.1:40123/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        """The model name to send: a server pinned to a folder only answers for that path."""
        return self.model_dir


def servers_dir(store: Store) -> Path:
    """``<workspace>/servers``, created on demand."""
    path = store.home / "servers"
    path.mkdir(exist_ok=True)
    return path


def _registry_path(store: Store, key: str) -> Path:
    return servers_dir(store) / f"{key}.json"


def read_server(store: Store, key: str) -> ServerInfo | None:
    """The registered server for ``key`` if its process still runs; stale entries are removed."""
    path = _registry_path(store, key)
    try:
        info = ServerInfo(**json.loads(path.read_text()))
    except OSError:
        return None
    except (ValueError, TypeError):  # damaged or from another version: its guard lets it go
        path.unlink(missing_ok=True)
        return None
    if not process_alive(info.pid, info.started_at):
        path.unlink(missing_ok=True)
        return None
    return info


def list_servers(store: Store) -> list[ServerInfo]:
    """Every registered server whose process is alive, by key."""
    found = (read_server(store, p.stem) for p in sorted(servers_dir(store).glob("*.json")))
    return [s for s in found if s is not None]


def _free_port() -> int:
    # The kernel picks a free port; the short window before the server binds it is acceptable
    # for a local UI helper (``transformers serve`` cannot take an inherited socket).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_program() -> str:
    """The ``transformers`` CLI (from ``transformers[serving]``) beside this Python, or on PATH."""
    exe = Path(sys.executable).with_name("transformers")
    return str(exe) if exe.exists() else shutil.which("transformers") or "transformers"


def _serve_command(model_dir: Path, port: int, registry: Path, startup_s: float) -> list[str]:
    program = serve_program()
    # A GPU when the machine has one (a 7B student on CPU answers in minutes), else the CPU.
    device = os.environ.get("SENSEI_SERVE_DEVICE") or ("auto" if gpu_slots() else "cpu")
    serve = [program, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", device]
    guard = [sys.executable, "-m", "engine.serving.guard", "--registry", str(registry)]
    return [*guard, "--idle", str(idle_limit_s()), "--startup", str(startup_s + 30), "--", *serve]


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_server(store: Store, key: str, model_dir: Path, timeout_s: float = STARTUP_TIMEOUT_S) -> ServerInfo:
    """Start ``transformers serve`` for ``model_dir``, wait until healthy, and register it.

    Raises:
        ServeError: the server exited or was not healthy within ``timeout_s``; the message
            quotes the end of its log.
    """
    port = _free_port()
    log_path = servers_dir(store) / f"{key}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # The guard is ``python -m engine.serving.guard``: the project must be importable from any cwd.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            _serve_command(model_dir, port, _registry_path(store, key), timeout_s),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: survives reruns, stopped as a whole
            env=env,
        )
    import psutil

    info = ServerInfo(
        key, str(model_dir), port, proc.pid, psutil.Process(proc.pid).create_time(), str(log_path)
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServeError(
                f"transformers serve for {model_dir} exited with code {proc.returncode}:\n"
                f"{_log_tail(log_path)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0).status_code == 200:
                # Atomic: a reader (or the guard) never sees half an entry.
                tmp = _registry_path(store, key).with_suffix(".json.tmp")
                tmp.write_text(json.dumps(asdict(info)))
                os.replace(tmp, _registry_path(store, key))
                return info
        time.sleep(0.3)
    _kill(info)
    raise ServeError(
        f"transformers serve for {model_dir} was not healthy after {timeout_s:.0f} s:\n{_log_tail(log_path)}"
    )


def _kill(info: ServerInfo, grace_s: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and process_alive(info.pid, info.started_at):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(info.pid, os.WNOHANG)  # reap our own child so it stops being a zombie
        time.sleep(0.1)
    if process_alive(info.pid, info.started_at):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(info.pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(info.pid, os.WNOHANG)


def ensure_model_server(
    store: Store,
    key: str,
    model_dir: str | Path,
    timeout_s: float = STARTUP_TIMEOUT_S,
    *,
    field: str = "model",
) -> ServerInfo:
    """The running server registered as ``key`` for ``model_dir``, started if needed.

    ``model_dir`` is a Hub id or a folder under the workspace's model roots (a run's own
    folders are in the workspace); it is checked before anything looks at it.

    Raises:
        engine.training.model_refs.ModelNotAllowed: a folder outside the model roots (the
            message names ``field``, e.g. ``student.model``).
        ServeError: the server could not be started.
    """
    model_dir = resolve_model_ref(store, model_dir, field)
    info = read_server(store, key)
    if info is not None and Path(info.model_dir) == Path(model_dir):
        # A use: the guard counts idle time from the registry file's modification time.
        with contextlib.suppress(OSError):
            os.utime(_registry_path(store, key))
        return info
    if info is not None:  # same key, another folder: replace it
        stop_server(store, key)
    return start_server(store, key, Path(model_dir), timeout_s)


def merge_adapter(adapter_dir: Path, out_dir: Path, base: str | None = None) -> Path:
    """Merge a PEFT adapter into its base (default: the one it records) and save the full
    model to ``out_dir`` (once)."""
    if (out_dir / "config.json").exists():
        return out_dir
    try:  # the export module, when present, is the one place that knows how to merge
        from engine.training import export

        export.merge_run(adapter_dir.parent, out_dir, base)
        return out_dir
    except ImportError:
        pass
    except FileExistsError:  # another session merged it meanwhile
        if (out_dir / "config.json").exists():
            return out_dir
        raise
    from engine.training.student import load_student, save_student

    model, tokenizer = load_student(adapter_dir, device="cpu")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged: Any = model.merge_and_unload()  # type: ignore[operator]
    save_student(merged, tokenizer, tmp)
    os.replace(tmp, out_dir)
    return out_dir


def run_model_dir(store: Store, run_id: str) -> Path:
    """The folder to serve for a run: its ``model``, or a merged copy when that is an adapter.

    Raises:
        ServeError: the run does not exist or saved no model yet.
    """
    run = store.get_run(run_id)
    if run is None:
        raise ServeError(f"run {run_id} does not exist")
    try:  # trained on another machine: its model comes from SENSEI_ARTIFACTS
        run_dir = pull_run(store, run, names=("model", "metadata.json"))
    except ArtifactsError as err:
        raise ServeError(f"run {run_id}: {err}") from None
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").exists() and not (model_dir / "adapter_config.json").exists():
        raise ServeError(f"run {run_id} has no saved model yet (expected {model_dir})")
    if (model_dir / "adapter_config.json").exists():
        try:  # on a tiny base trained on another machine: that base, from SENSEI_ARTIFACTS
            base = pull_base(store, run_dir)
        except ArtifactsError as err:
            raise ServeError(f"run {run_id}: {err}") from None
        return merge_adapter(model_dir, run_dir / "served", base)
    return model_dir


def ensure_server(store: Store, run_id: str, timeout_s: float = STARTUP_TIMEOUT_S) -> str:
    """Serve run ``run_id``'s student (starting a server if none runs); return its base URL."""
    return ensure_model_server(store, run_id, run_model_dir(store, run_id), timeout_s).base_url


def stop_server(store: Store, key: str) -> bool:
    """Stop the server registered as ``key`` (a run id or ``base-<exp>``). True if one ran."""
    info = read_server(store, key)
    _registry_path(store, key).unlink(missing_ok=True)
    if info is None:
        return False
    _kill(info)
    return True


def stop_all(store: Store, *, actor: Actor) -> int:
    """Stop every registered server of the workspace; returns how many were running.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch (servers are started by
            asking models, which needs the same right).
    """
    check(store, actor, Right.LAUNCH, "stop model servers")
    n = sum(stop_server(store, p.stem) for p in sorted(servers_dir(store).glob("*.json")))
    done(store, actor, "stop model servers", stopped=n)
    return n
