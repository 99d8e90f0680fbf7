"""A throwaway PostgreSQL server for tests and benchmarks of distributed studies.

``throwaway_postgres()`` starts a private cluster from the machine's PostgreSQL binaries in a
temporary folder, listening on loopback only, and removes it afterwards. Nothing is installed
here: ``make test`` installs Debian's ``postgresql`` package when it is missing
(``scripts/ensure_postgres.sh``).

Example:
    .. code-block:: python

        import optuna
        from ttp_search.testing import throwaway_postgres

        with throwaway_postgres() as server:
            url = server.create_database("demo")
            study = optuna.create_study(storage=url)
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL's server programs are not on this machine, or the server would not start."""


def find_pg_bin() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl`` (the newest Debian version, else PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise PostgresUnavailableError(
        "PostgreSQL's server is not installed (no initdb); `make test` installs Debian's "
        "postgresql package, or run `apt-get install postgresql`"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """A running throwaway server: ``url(db)`` gives an SQLAlchemy URL for Optuna."""

    port: int
    folder: Path
    pg_bin: Path
    run_as: str | None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create a new empty database and return its URL."""
        import psycopg

        name = name or f"ttp_{uuid.uuid4().hex[:12]}"
        dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        pg_ctl, data = str(self.pg_bin / "pg_ctl"), str(self.folder / "data")
        _run(
            [pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"],
            self.run_as,
            check=False,
        )
        shutil.rmtree(self.folder, ignore_errors=True)


def _run(cmd: list[str], run_as: str | None, *, check: bool = True):
    if run_as:  # PostgreSQL refuses to run as root
        cmd = ["runuser", "-u", run_as, "--", *cmd]
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def start_postgres() -> PostgresServer:
    """Start a private server on a free loopback port; call ``stop()`` when done."""
    pg_bin = find_pg_bin()
    run_as = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError as err:
            raise PostgresUnavailableError(
                "running as root and there is no 'postgres' user to run the server as"
            ) from err
        run_as = "postgres"
    folder = Path(tempfile.mkdtemp(prefix="ttp-postgres-"))
    if run_as:
        os.chown(folder, user.pw_uid, user.pw_gid)
    port = _free_port()
    server = PostgresServer(port, folder, pg_bin, run_as)
    try:
        data, log = str(folder / "data"), str(folder / "server.log")
        initdb = [str(pg_bin / "initdb"), "-D", data, "-A", "trust", "-U", "postgres"]
        _run([*initdb, "-E", "UTF8", "--no-sync"], run_as)
        # fsync off: a test server's data is thrown away, and durability costs seconds here.
        options = (
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        pg_ctl = [str(pg_bin / "pg_ctl"), "-D", data, "-o", options, "-l", log]
        _run([*pg_ctl, "-w", "-t", "60", "start"], run_as)
    except subprocess.CalledProcessError as err:
        log = folder / "server.log"
        detail = log.read_text()[-2000:] if log.exists() else ""
        server.stop()
        raise PostgresUnavailableError(
            f"PostgreSQL would not start: {err.stderr.strip() or err}\n{detail}"
        ) from err
    return server


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """Context manager: a private PostgreSQL server for the duration of the block."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
