"""The real thing: ``streamlit run app.py`` driven by Debian's Chromium through Playwright.

Click "Run the demo", watch the jobs progress live on Runs, wait for the curve on Ablation,
then launch the demo again and cancel a job from the UI. Screenshots of every page land in
``$SENSEI_SCREENSHOTS`` (default: the test's tmp folder). Needs ``/usr/bin/chromium``
(``make chromium``); never ``playwright install``. Skipped without Chromium unless ``CI`` is set.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from engine import ablation
from engine.store import Store
from tests.loopback import free_port

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
DEMO_TIMEOUT_MS = 240_000

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"streamlit not healthy at {url} after {timeout:.0f} s")


def stop_workspace_processes(home: Path) -> None:
    """Stop the workspace's detached scheduler (pid in scheduler.lock) and its workers."""
    lock = home / "scheduler.lock"
    pids = []
    with contextlib.suppress(OSError, ValueError):
        pids.append(int(lock.read_text().strip()))
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "engine" in cmd and ("worker" in cmd or "scheduler" in cmd) and str(home) in cmd:
            pids.append(proc.pid)
    for pid in set(pids):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # workers lead their own group (teacher server too)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def dashboard(port: int, home: Path, env: dict[str, str], log_path: Path, *args: str) -> Iterator[str]:
    """``streamlit run app.py`` (plus ``args``) on ``port`` with ``env``, its output in
    ``log_path``; yields its URL once healthy, then stops it and every process of ``home``."""
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            *args,
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        stop_workspace_processes(home)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Streamlit server on a free port over a fresh workspace; everything stopped after."""
    if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
        pytest.skip(f"{CHROMIUM} is missing: install it with `make chromium` (required in CI)")
    home = Path(os.environ.get("SENSEI_HOME") or tmp_path / "workspace").resolve()
    port = free_port()
    env = dict(
        os.environ, SENSEI_HOME=str(home), SENSEI_DEMO_PRESET="fast", WANDB_MODE="offline", HF_HUB_OFFLINE="1"
    )
    env.pop("SENSEI_NO_AUTOSTART", None)  # this test wants the real scheduler and workers
    with dashboard(port, home, env, tmp_path / "streamlit.log") as url:
        yield url, home


def live(page: Any) -> Any:
    """The page's current elements: while Streamlit reruns, an element whose place in the
    layout moved is shown twice for a moment, the old copy marked stale (``data-stale``).
    Look widgets up through this after a click, or a loaded machine catches both copies."""
    return page.locator('[data-testid="stElementContainer"]:not([data-stale="true"])')


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SENSEI_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_demo_end_to_end_in_a_real_browser(server: tuple[str, Path], shots: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, home = server
    expect.set_options(timeout=60_000)  # a loaded 2-core machine renders slowly
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)

        def shot(name: str) -> None:
            page.wait_for_timeout(800)  # let charts finish drawing
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

        def nav(title: str) -> None:
            page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
            expect(
                page.get_by_role("heading", name=title if title != "Overview" else "Sensei")
            ).to_be_visible()

        try:
            page.goto(url)
            expect(page.get_by_text("Click Run the demo, or go to Launch")).to_be_visible()
            shot("overview-empty")
            for title in ("Launch", "Runs", "Ablation"):
                nav(title)
                shot(f"{title.lower()}-empty")
            nav("Overview")

            # 1. The demo is queued and its jobs progress live on Runs.
            page.get_by_role("button", name="Run the demo").click()
            expect(page).to_have_url(re.compile(r"/runs(\?experiment=[\w-]+)?$"))
            expect(page.get_by_text(re.compile(r"^Status: (queued|running)$"))).to_be_visible()
            shot("runs-queued")
            expect(page.get_by_text("Status: running")).to_be_visible(timeout=60_000)
            # Anchored on the status line: the log panel also says "job ... succeeded".
            expect(page.get_by_text(re.compile(r"^Status: .*\b\d+ succeeded"))).to_be_visible(
                timeout=DEMO_TIMEOUT_MS
            )
            shot("runs-running")

            # 2. All runs finish and the curve appears on Ablation.
            expect(page.get_by_text("Status: succeeded")).to_be_visible(timeout=DEMO_TIMEOUT_MS)
            shot("runs-finished")
            nav("Ablation")
            expect(page.get_by_text(re.compile(r"^curve field_accuracy: 16="))).to_be_visible(timeout=30_000)
            expect(page.get_by_test_id("stPlotlyChart")).to_be_visible()
            shot("ablation-curve")
            nav("Overview")
            shot("overview-populated")

            # 3. Launch the demo again and cancel a job from the UI.
            page.get_by_role("button", name="Run the demo").click()
            expect(page).to_have_url(re.compile(r"/runs(\?experiment=[\w-]+)?$"))
            expect(page.get_by_role("button", name="Cancel job")).to_be_visible()
            page.get_by_role("button", name="Cancel job").click()
            expect(page.get_by_text(re.compile(r"^Job job-\S+ cancelled\.$"))).to_be_visible()
            expect(page.get_by_text(re.compile(r"^Status: .*\b\d+ cancelled"))).to_be_visible()
            shot("runs-cancelled")
            # The train jobs depended on the cancelled one: the scheduler cancels them too.
            expect(page.get_by_text("Status: cancelled")).to_be_visible(timeout=30_000)

            nav("Launch")
            shot("launch")

            # What the browser showed is what the store holds.
            first, second = sorted(Store(home).list_experiments(), key=lambda e: e["created_at"])
            assert ablation.experiment_status(Store(home), first["id"]) == "succeeded"
            assert ablation.experiment_status(Store(home), second["id"]) == "cancelled"
        except Exception:
            shot("failure")
            raise
        finally:
            browser.close()
