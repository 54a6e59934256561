"""A PostgreSQL 15 cluster under a directory of ours, on loopback (standard library only).

Shared by the local Rucio (``localrucio.deploy``) and the local Airflow stack
(``airflowstack``): one cluster each, under its own root. As root, ``initdb``/``pg_ctl``/
``psql`` run as the ``postgres`` user (they refuse root), so the data and socket directories
are handed to that user. The cluster listens on 127.0.0.1 only; local (socket) connections
are trusted for the superuser, TCP connections need a password (scram-sha-256).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from localrucio import _procs

DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_SUPERUSER = "postgres"


class PgCluster:
    """The cluster whose data lives in ``pgdata`` (socket and server log in ``pgrun``)."""

    def __init__(self, pgdata: Path, pgrun: Path, pg_bin: Path | None = None, cwd: Path | None = None,
                 max_connections: int = 200):
        self.pgdata = Path(pgdata)
        self.pgrun = Path(pgrun)
        self.pg_bin = Path(pg_bin or DEFAULT_PG_BIN)
        self.cwd = Path(cwd or self.pgdata.parent)
        self.max_connections = max_connections

    def check_install(self) -> None:
        for exe in ("initdb", "pg_ctl", "postgres", "psql"):
            if not (self.pg_bin / exe).exists() and not shutil.which(exe):
                raise RuntimeError(f"PostgreSQL {exe} not found in {self.pg_bin}")

    def _as_pg(self, argv: Sequence[str | Path]) -> list[str]:
        argv = [str(a) for a in argv]
        if os.geteuid() == 0:
            return ["runuser", "-u", PG_SUPERUSER, "--", *argv]
        return argv

    def exe(self, name: str) -> str:
        exe = self.pg_bin / name
        return str(exe) if exe.exists() else (shutil.which(name) or name)

    def run(self, argv: Sequence[str | Path], input: str | None = None, timeout: float = 120) -> str:
        proc = subprocess.run(self._as_pg(argv), check=False, input=input, capture_output=True, text=True,
                              cwd=self.cwd, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(str(argv[0])).name} failed ({proc.returncode}): "
                               f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def _own(self, path: Path, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_SUPERUSER)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chmod(path, mode)

    def initdb(self) -> bool:
        """Create the cluster if there is none; True if it did."""
        if (self.pgdata / "PG_VERSION").exists():
            return False
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-made cluster from an interrupted initdb
        self._own(self.pgdata, 0o700)
        self._own(self.pgrun, 0o700)
        self.run([self.exe("initdb"), "-D", self.pgdata, "-U", PG_SUPERUSER, "-E", "UTF8",
                  "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"])
        return True

    def pid(self) -> int | None:
        """The postmaster's pid if it runs (from postmaster.pid), else None."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError, PermissionError):
            return None
        return pid if _procs.start_time(pid) is not None else None

    def port(self) -> int | None:
        """The port of the running (or last) postmaster, from postmaster.pid."""
        try:
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[3])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def start(self, preferred_port: int | None = None, avoid: Sequence[int] = ()) -> tuple[int, bool]:
        """Start the cluster unless it runs: (port, True if it was started)."""
        if self.pid() is not None:
            return (self.port() or preferred_port or 0), False
        self._own(self.pgrun, 0o700)
        port = _procs.free_port(preferred_port, avoid=[a for a in avoid if a])
        opts = (f"-p {port} -k {shlex.quote(str(self.pgrun))} -c listen_addresses=127.0.0.1 -c synchronous_commit=off "
                f"-c max_connections={self.max_connections} -c unix_socket_permissions=0700")
        self.run([self.exe("pg_ctl"), "-D", self.pgdata, "-l", self.pgrun / "postgres.log",
                  "-w", "-t", "60", "-o", opts, "start"])
        return port, True

    def stop(self) -> bool:
        """``pg_ctl stop -m fast`` (SIGTERM/SIGKILL to the postmaster's pid if that fails)."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            self.run([self.exe("pg_ctl"), "-D", self.pgdata, "-m", "fast", "-w", "-t", "30", "stop"], timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            _procs.terminate({"pid": pid, "start": _procs.start_time(pid)}, timeout=10)
        deadline = time.monotonic() + 10
        while _procs.start_time(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        return True

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self.run([self.exe("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                         "-h", self.pgrun, "-p", str(self.port()), "-U", PG_SUPERUSER, "-d", db], input=sql)

    def ensure_db(self, db: str, user: str, password: str) -> None:
        """Role ``user`` (LOGIN, ``password``) and database ``db`` owned by it; ``password`` must be
        SQL-literal safe (the callers generate URL-safe tokens)."""
        self.psql(
            f"DO $$ BEGIN\n"
            f"  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN\n"
            f"    CREATE ROLE {user} LOGIN PASSWORD '{password}';\n"
            f"  ELSE\n"
            f"    ALTER ROLE {user} LOGIN PASSWORD '{password}';\n"
            f"  END IF;\n"
            f"END $$;\n"
            f"SELECT 'CREATE DATABASE {db} OWNER {user}'"
            f" WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db}')\\gexec\n"
        )

    def drop_db(self, db: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE);\n")

    def db_size(self, db: str) -> int:
        """Bytes on disk of database ``db``."""
        return int(self.psql(f"SELECT pg_database_size('{db}');\n").strip() or 0)
