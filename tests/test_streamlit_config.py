"""The dashboard's Streamlit settings are the safe ones, and `make run` shows details only to developers."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_config_is_local_quiet_and_protected() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    server, client = config["server"], config["client"]
    assert server["address"] == "127.0.0.1"  # loopback only
    assert server["fileWatcherType"] == "none" and server["runOnSave"] is False
    # In Streamlit, true means CORS *protection* on; false sends Access-Control-Allow-Origin: *.
    assert server["enableCORS"] is True and server["enableXsrfProtection"] is True
    assert client["showErrorDetails"] == "none"


def test_upload_limit_is_what_an_import_reads() -> None:
    from engine.data.roots import MAX_IMPORT_MB

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["server"]["maxUploadSize"] == MAX_IMPORT_MB


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(("dev", "shown"), [("1", True), ("", False), ("0", False)])
def test_make_run_shows_error_details_only_with_sensei_dev(dev: str, shown: bool) -> None:
    env = {**os.environ, "SENSEI_DEV": dev}
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "run"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    run_line = next(line for line in out.stdout.splitlines() if "streamlit run app.py" in line)
    assert ("--client.showErrorDetails=full" in run_line) is shown
