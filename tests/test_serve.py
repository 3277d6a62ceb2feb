"""`make serve`: a team server on 0.0.0.0 only with sign-in configured; local mode stays on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.access.server import auth_problems, default_secrets_files, is_loopback

ROOT = Path(__file__).resolve().parents[1]
CLIENT_SECRET = "s3cr3t-client-PLANTED"
COOKIE_SECRET = "s3cr3t-cookie-PLANTED"
AUTH = f"""
[auth]
redirect_uri = "https://sensei.example.com/oauth2callback"
cookie_secret = "{COOKIE_SECRET}"
client_id = "sensei"
client_secret = "{CLIENT_SECRET}"
server_metadata_url = "https://id.example.com/.well-known/openid-configuration"
"""


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m engine serve`` in a scratch folder (its own HOME: no developer's secrets)."""
    env = {**os.environ, "HOME": str(tmp_path), "SENSEI_HOME": str(tmp_path / "ws"), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "engine", "serve", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_refuses_without_sign_in(tmp_path: Path) -> None:
    empty = tmp_path / "secrets.toml"
    empty.write_text('[other]\nkey = "value"\n')
    out = serve(tmp_path, "--secrets-file", str(empty), "--dry-run")
    assert out.returncode == 2 and out.stdout == ""
    assert "refused to serve on the network without sign-in: no [auth] table" in out.stderr
    assert "make run" in out.stderr and "127.0.0.1" in out.stderr


def test_serve_names_what_sign_in_lacks_without_printing_secrets(tmp_path: Path) -> None:
    partial = tmp_path / "secrets.toml"
    partial.write_text(AUTH.replace(f'client_secret = "{CLIENT_SECRET}"\n', ""))
    out = serve(tmp_path, "--secrets-file", str(partial), "--dry-run")
    assert out.returncode == 2
    assert "a provider with client_id, client_secret, server_metadata_url" in out.stderr
    assert COOKIE_SECRET not in out.stderr + out.stdout


def test_serve_binds_every_interface_with_errors_hidden_and_cors_on(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(AUTH)
    out = serve(tmp_path, "--secrets-file", str(secrets), "--port", "8600", "--dry-run")
    assert out.returncode == 0, out.stderr
    cmd = out.stdout.split()
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=False))
    assert cmd[1:5] == ["-m", "streamlit", "run", str(ROOT / "app.py")]
    assert flags["--server.address"] == "0.0.0.0" and flags["--server.port"] == "8600"
    assert flags["--client.showErrorDetails"] == "none"
    assert flags["--server.enableCORS"] == "true" and flags["--server.enableXsrfProtection"] == "true"
    assert flags["--secrets.files"] == str(secrets.resolve())
    assert CLIENT_SECRET not in out.stdout + out.stderr


def test_named_providers_count_as_configured() -> None:
    shared = {"redirect_uri": "https://x/oauth2callback", "cookie_secret": "c"}
    provider = {"client_id": "i", "client_secret": "s", "server_metadata_url": "https://id/.well-known"}
    assert auth_problems({**shared, "okta": provider}) == []
    assert auth_problems({**shared, "okta": {**provider, "client_secret": ""}}) != []
    assert auth_problems({"cookie_secret": "c", **provider}) == ["auth.redirect_uri"]


def test_streamlit_secrets_locations_in_its_order(tmp_path: Path) -> None:
    found = default_secrets_files(ROOT, cwd=tmp_path / "cwd", home=tmp_path / "home")
    assert found == [
        (tmp_path / "home" / ".streamlit" / "secrets.toml").resolve(),
        (tmp_path / "cwd" / ".streamlit" / "secrets.toml").resolve(),
        ROOT / ".streamlit" / "secrets.toml",
    ]


@pytest.mark.parametrize(
    ("address", "local"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True), ("127.0.1.1", True)],
)
def test_loopback_addresses(address: str, local: bool) -> None:
    assert is_loopback(address) is local


@pytest.mark.parametrize("address", ["0.0.0.0", "", None, "192.168.1.5", "::", "sensei.example.com"])
def test_other_addresses_are_not_loopback(address: str | None) -> None:
    assert not is_loopback(address)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_serve_goes_through_the_check() -> None:
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "serve", "PORT=8600"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "engine serve" in x)
    assert line.endswith("-m engine serve --port 8600")
    assert "streamlit run" not in out.stdout  # only through the check, never directly
