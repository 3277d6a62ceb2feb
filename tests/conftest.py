"""Shared fixtures: every test gets its own workspace and runs fully offline."""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from engine.store import Store
from tests.pg_server import PostgresServer, postgres_server
from tests.ray_head import local_ray_head
from tests.s3 import s3_server  # noqa: F401  (fixture: moto's S3 on 127.0.0.1, one per session)

BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # `make test` runs one pytest worker per core (pytest-xdist): each, and every job process
        # it starts, trains with one thread, as the scheduler's CPU slots do. Two threads per
        # worker on two cores made the in-process trainings 2-4x slower than one.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
    config.addinivalue_line(
        "markers", "both_backends: run the test on SQLite and on PostgreSQL (the `backend` fixture)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_backends`` run once per database if they use the store (its fixture,
    or ``backend`` to open their own)."""
    asked = "backend" in inspect.signature(metafunc.function).parameters
    uses_store = asked or "store" in metafunc.fixturenames
    if metafunc.definition.get_closest_marker("both_backends") and uses_store:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (Debian's binaries), started on first use."""
    try:
        with postgres_server() as server:
            yield server
    except FileNotFoundError as err:
        pytest.skip(f"PostgreSQL tests need Debian's postgresql package ({err}); `make test` installs it")


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Ray head for the session (two CPUs: two worker processes), started on first use;
    this process joins it as a driver (a scheduler in the test's own process)."""
    with local_ray_head(tmp_path_factory.mktemp("ray"), num_cpus=2) as address:
        import ray  # not before: Ray reads its loopback switch (see local_ray_head) on import

        ray.init(address=address, log_to_driver=False, configure_logging=False)
        try:
            yield address
        finally:
            ray.shutdown()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The store's database in this test: "sqlite" unless the test is marked ``both_backends``."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session", autouse=True)
def _model_roots(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Models may be loaded from anywhere under pytest's temporary folder.

    Tests build tiny models in ``tmp_path`` beside the workspace (``tmp_path / "workspace"``),
    outside its model roots; an admin would list such a folder in ``SENSEI_MODEL_ROOTS``, and
    so do the tests, for the whole session: before any fixture builds a model or any worker
    (a subprocess, which inherits the environment) starts. Every test's environment is
    restored to this one afterwards (``_restore_environ``).
    """
    os.environ["SENSEI_MODEL_ROOTS"] = str(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True)
def _restore_environ():
    """Code under test may set variables in-process (e.g. W&B's WANDB_DIR): undo it."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _isolated_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _restore_environ: None, backend: str, request
) -> None:
    home = tmp_path / "workspace"
    monkeypatch.setenv("SENSEI_HOME", str(home))
    if backend == "postgresql":  # a fresh database; workers inherit the variable
        monkeypatch.setenv("SENSEI_DB_URL", request.getfixturevalue("pg_server").new_database())
    else:
        monkeypatch.delenv("SENSEI_DB_URL", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("SENSEI_NO_AUTOSTART", "1")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "workspace")


@pytest.fixture
def empty_store(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Store:
    """A second, empty workspace beside ``store``: its own folder and, on PostgreSQL, its own database."""
    url = request.getfixturevalue("pg_server").new_database() if backend == "postgresql" else None
    return Store(tmp_path / "empty-workspace", db_url=url)


def kill_workspace_processes(home: Path) -> None:
    """Stop every scheduler/worker process started for ``home`` (tests must not leak them)."""
    home_s = str(home)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "engine" in cmd and home_s in cmd and proc.pid != os.getpid():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(psutil.Error):
                    proc.kill()


@pytest.fixture
def cleanup_processes(store: Store):
    """Yield the store; kill its scheduler and workers afterwards."""
    yield store
    kill_workspace_processes(store.home)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    """A tiny Llama base (BPE trained on the rows) and 96 demo prompt/completion rows."""
    from engine.demo.task import DEMO_TEMPLATE, generate_examples
    from engine.specs import TinyModelSpec
    from engine.training.student import build_tiny_student

    rows = [
        {"prompt": DEMO_TEMPLATE.format(input=ex["input"]), "completion": ex["reference"]}
        for ex in generate_examples(96, seed=3)
    ]
    texts = [r["prompt"] for r in rows] + [r["completion"] for r in rows]
    tiny = TinyModelSpec(hidden_size=64, num_layers=2, num_heads=4, vocab_size=384)
    return build_tiny_student(texts, tiny, tmp_path_factory.mktemp("base"), seed=0), rows
