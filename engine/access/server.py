"""Which mode the dashboard runs in, and the command that serves it to a team.

* **Local single-user mode** (no ``[auth]`` in Streamlit's ``secrets.toml``): the server's own
  user acts as admin, so the dashboard must only be reachable from this machine; the app
  refuses to run it on any address but loopback (:func:`is_loopback`).
* **Team mode** (``[auth]`` configured): everyone signs in through OpenID Connect
  (``st.login``), and ``make serve`` (:func:`serve_command`) binds every interface with error
  details hidden and CORS and XSRF protection on.

Nothing here reads secret values into logs or messages: only whether the keys are there.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
SHARED_KEYS = ("redirect_uri", "cookie_secret")
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")


class NotServable(RuntimeError):
    """``make serve`` refuses: sign-in is not configured, so the dashboard stays local."""


def is_loopback(address: str | None) -> bool:
    """True for an address only this machine reaches (unset means every interface: False)."""
    return (address or "").strip().lower().strip("[]") in LOOPBACK or (address or "").startswith("127.")


def default_secrets_files(app_dir: Path, cwd: Path | None = None, home: Path | None = None) -> list[Path]:
    """Where Streamlit looks for ``secrets.toml``, lowest precedence first (as Streamlit does):
    ``~/.streamlit/``, ``<cwd>/.streamlit/``, then the app's own ``.streamlit/``."""
    found = [
        (home or Path.home()) / ".streamlit" / "secrets.toml",
        (cwd or Path.cwd()) / ".streamlit" / "secrets.toml",
        app_dir / ".streamlit" / "secrets.toml",
    ]
    return list(dict.fromkeys(p.resolve() for p in found))


def read_auth_section(files: Sequence[Path]) -> dict[str, Any] | None:
    """The ``[auth]`` table Streamlit would use (later files win), or None if there is none.

    Raises:
        NotServable: a secrets file that exists but is not valid TOML.
    """
    auth: dict[str, Any] | None = None
    for path in files:
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise NotServable(f"{path}: not valid TOML ({err})") from None
        if isinstance(data.get("auth"), dict):
            auth = data["auth"]
    return auth


def auth_problems(auth: Mapping[str, Any] | None) -> list[str]:
    """What an ``[auth]`` table lacks for ``st.login`` to work (empty: nothing)."""
    if not auth:
        return ["no [auth] table in secrets.toml"]
    missing = [f"auth.{k}" for k in SHARED_KEYS if not auth.get(k)]
    providers = [auth, *(v for v in auth.values() if isinstance(v, Mapping))]
    if not any(all(p.get(k) for k in PROVIDER_KEYS) for p in providers):
        missing.append(f"a provider with {', '.join(PROVIDER_KEYS)}")
    return missing


def serve_command(
    app: Path,
    files: Sequence[Path] | None = None,
    port: int | None = None,
    python: str | None = None,
) -> list[str]:
    """The ``streamlit run`` command line for a team server on 0.0.0.0.

    Args:
        app: ``app.py``.
        files: The secrets files to use (also passed to Streamlit); default: Streamlit's own
            search path (:func:`default_secrets_files`).
        port: The port (default: Streamlit's, 8501).
        python: The interpreter (default: this one).

    Raises:
        NotServable: sign-in is not configured (or not completely): serving the local
            single-user mode, in which everyone acts as admin, to the network is refused.
    """
    explicit = [Path(f).resolve() for f in files] if files else None
    problems = auth_problems(read_auth_section(explicit or default_secrets_files(app.resolve().parent)))
    if problems:
        raise NotServable(
            "refused to serve on the network without sign-in: "
            + "; ".join(problems)
            + ". Configure OpenID Connect in .streamlit/secrets.toml ([auth] with redirect_uri, "
            "cookie_secret, client_id, client_secret, server_metadata_url; see the README), "
            "or use `make run` for the local single-user mode on 127.0.0.1"
        )
    cmd = [python or sys.executable, "-m", "streamlit", "run", str(app)]
    cmd += ["--server.address", "0.0.0.0", "--server.headless", "true"]
    if port:
        cmd += ["--server.port", str(port)]
    # Outside local mode nobody sees tracebacks; CORS and XSRF protection stay on.
    cmd += ["--client.showErrorDetails", "none", "--server.enableCORS", "true"]
    cmd += ["--server.enableXsrfProtection", "true"]
    for path in explicit or []:
        cmd += ["--secrets.files", str(path)]
    return cmd
