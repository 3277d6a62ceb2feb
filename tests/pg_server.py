"""A throwaway PostgreSQL server on 127.0.0.1 for tests, from Debian's ``postgresql`` binaries.

``initdb`` and ``pg_ctl`` refuse to run as root, so under root (CI containers) the cluster
belongs to an unprivileged account (``postgres`` if the package created it, else ``nobody``)
and both run through ``runuser``. The cluster trades durability for speed (``fsync=off``):
it lives for one test session in a temporary folder. Each test gets a fresh database.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.loopback import free_port

USER = "sensei"


def pg_bin() -> Path | None:
    """The newest installed ``/usr/lib/postgresql/<version>/bin`` holding ``initdb``, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """One running cluster: :meth:`new_database` gives a fresh, empty database's URL."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.port = free_port()
        self.password = "pw-" + secrets.token_hex(8)  # tests check it never leaks
        self.root = Path(tempfile.mkdtemp(prefix="sensei-pg-"))
        self.data = self.root / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            account = "postgres" if _has_account("postgres") else "nobody"
            shutil.chown(self.root, account)
            self._as = ["runuser", "-u", account, "--"]
        self._count = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *cmd: str) -> None:
        done = subprocess.run([*self._as, *cmd], capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd[:2])} failed ({done.returncode}): {done.stderr or done.stdout}"
            )

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            shutil.chown(pwfile, self._as[2])
        self._run(
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories=''"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def new_database(self) -> str:
        """A fresh, empty database (``CREATE DATABASE``; milliseconds); its URL."""
        import psycopg

        self._count += 1
        name = f"t{self._count}_{secrets.token_hex(3)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def _has_account(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a cluster on a free port of 127.0.0.1; stop it and delete its files on exit.

    Raises:
        FileNotFoundError: Debian's ``postgresql`` package is not installed.
    """
    bin_dir = pg_bin()
    if bin_dir is None:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb: apt-get install postgresql")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
