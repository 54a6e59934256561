"""Real Airflow 3.3 processes on this machine, on a PostgreSQL metadata database.

:class:`AirflowStack` runs, under one root directory:

* a PostgreSQL 15 cluster (``<root>/pg``; socket and server log in ``<root>/pgrun``) on a
  free loopback port, with an ``airflow`` database and role (generated password), through
  the same helper as the local Rucio (``localrucio._pg``);
* ``airflow db migrate`` once per database (stamped in ``state.json``);
* ``airflow scheduler`` (LocalExecutor), ``airflow triggerer``, ``airflow dag-processor``
  and ``airflow api-server`` (127.0.0.1, a free port), each in its own process group with
  its output in ``<root>/logs/<name>.log``.

Login: Airflow's SimpleAuthManager with one admin user, ``admin``, whose password is
generated once and kept in ``<root>/passwords.json`` (0600; the auth manager's own passwords
file, so it never generates or prints one). ``secrets.json`` (0600) holds the database
password, the JWT secret shared by the API server and the executor's task supervisors, the
API secret key and the Fernet key. Nothing of them is logged.

The processes' environment is built from the caller's (see :func:`passed_env`): PATH and
the locale, PYTHONPATH, the ``AIRFLOW_CONN_*``/``AIRFLOW_VAR_*`` variables, and the
project's own (``MULTISITE_*``, ``PANDA_*``, ``X509_*``, ``RUCIO_*``, ``LOCALRUCIO_*``,
``LOCALPANDA_*``, ``DAF_BUTLER_*``, ``LSST_*``), plus the stack's ``AIRFLOW__*`` settings
(:meth:`AirflowStack.airflow_env`); no other ``AIRFLOW__*`` of the caller's goes through.

``up()`` is idempotent: it finds the running processes (pid + kernel start time) and starts
only what is missing. If the environment the processes would get changed (a connection,
the DAGs folder, ...; compared by hash, never stored), the Airflow processes are restarted
on the same ports. ``down()`` stops each recorded process by pid and process group, then
PostgreSQL (``pg_ctl stop``). A record whose process is gone (or whose pid was reused) is
stale and simply replaced. Concurrent calls on one root are serialised by a file lock.

Tuned for a 2-core machine (:data:`TUNING`, documented there).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localrucio import _procs
from localrucio._pg import PgCluster

from airflowstack.preload import LOCAL_SETTINGS

INCLUDE = Path(__file__).resolve().parents[1]
REPO = INCLUDE.parent
DB_NAME = "airflow"
DB_USER = "airflow"
USERNAME = "admin"
# Start order: the scheduler's LocalExecutor workers call the API server's execution API, and
# the dag-processor fills the serialized DAGs the scheduler and the API read.
PROCESSES = ("api-server", "dag-processor", "scheduler", "triggerer")

# Settings for this 2-core machine, every one a deliberate choice:
TUNING = {
    # At most 6 task processes at once (a LocalExecutor worker each, ~150 MB, and the CPU of two
    # cores): the campaign's waits are deferred and hold no slot, so 6 covers three sites'
    # stack commands and hand-offs without queueing the CPU-bound work behind itself.
    "AIRFLOW__CORE__PARALLELISM": "6",
    "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "6",
    # A slow parse under load must not be cut off (default 30 s).
    "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
    "AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT": "180",
    # One parsing process (default 2): there is one DAG file and two cores.
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    # The DAGs folder is listed every 5 s (default 300 s), so a new DAG file is seen within
    # seconds; a known file is re-parsed at most every 30 s (the default).
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
    # The scheduler's loop: 1 s idle sleep (default), a 5 s heartbeat (default); the task
    # supervisors heartbeat every 5 s (default) too.
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "5",
    # A scheduler whose heartbeat is older than this is taken for dead, and the periodic
    # orphan check resets the task instances it queued. On two busy cores the scheduler's own
    # heartbeat was seen 48 s late (load 16): with the default 30 s it declared itself dead
    # and killed its five running tasks mid-flight. 180 s.
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "180",
    # One API server worker (uvicorn), as Airflow recommends per core-pair.
    "AIRFLOW__API__WORKERS": "1",
    # New DAGs paused, as in production: the client unpauses the one it triggers.
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
}

#: Settings for a stack whose DAG files do not change while it runs (the tests' stacks): a known
#: file is re-parsed at most hourly instead of every 30 s. A file that does change is still
#: re-parsed within the 5 s refresh: with ``[dag_processor] file_parsing_sort_mode``
#: ``modified_time`` (the default) a file modified since its last parse is queued whatever the
#: interval. ``make up`` keeps 30 s because the campaign DAG also reads the campaign file when it
#: is parsed (its shape, its deadline), and that file's edits do not touch the DAG file's mtime.
#: At 30 s the end-to-end module's dag-processors spent 122 CPU-s on an unchanged file; with
#: this setting, 24 CPU-s.
STATIC_DAGS = {"AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600"}

_PASS_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "TMPDIR", "PYTHONPATH",
               "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
_PASS_PREFIXES = ("AIRFLOW_CONN_", "AIRFLOW_VAR_", "MULTISITE_", "PANDA_", "X509_", "RUCIO_", "LOCALRUCIO_",
                  "LOCALPANDA_", "DAF_BUTLER_", "LSST_")


def passed_env(source: Mapping[str, str]) -> dict[str, str]:
    """The part of ``source`` the Airflow processes get (see the module docstring)."""
    return {k: v for k, v in source.items() if k in _PASS_NAMES or k.startswith(_PASS_PREFIXES)}


@dataclass(frozen=True)
class StackEndpoint:
    """How to reach the running stack's API server."""

    url: str  # http://127.0.0.1:PORT
    username: str
    password_file: Path  # {"admin": "<password>"} (0600)
    root: Path
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def password(self) -> str:
        return json.loads(self.password_file.read_text())[self.username]

    def client(self, timeout: float = 60.0):
        from airflowstack.client import AirflowClient

        return AirflowClient(self.url, self.username, self.password, timeout=timeout)


class AirflowStack:
    """The stack rooted at ``root`` (see the module docstring)."""

    def __init__(
        self,
        root: Path | str,
        *,
        dags_folder: Path | str | None = None,
        plugins_folder: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        airflow_bin: Path | str | None = None,
        pg_bin: Path | str | None = None,
        settings: Mapping[str, str] | None = None,
        preload: bool = True,
    ):
        self.root = Path(root).resolve()
        self.dags_folder = Path(dags_folder or REPO / "dags").resolve()
        self.plugins_folder = Path(plugins_folder or REPO / "plugins").resolve()
        self.base_env = passed_env(os.environ if env is None else env)
        self.airflow_bin = Path(airflow_bin or Path(sys.executable).with_name("airflow"))
        self.settings = dict(settings or {})
        self.preload = preload
        self.pg = PgCluster(self.root / "pg", self.root / "pgrun", Path(pg_bin) if pg_bin else None, cwd=self.root)
        self.last_up: dict[str, Any] = {}
        self._lock = _procs.FileLock(self.root / "run" / "lock")

    # ------------------------------------------------------------------ paths
    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    @property
    def password_file(self) -> Path:
        return self.root / "passwords.json"

    # ------------------------------------------------------------------ public API
    def up(self, timeout: float = 300.0, fresh: bool = False) -> StackEndpoint:
        """Start everything, or reuse what runs; return the endpoint once the API answers.

        ``fresh``: an empty metadata database (dropped, made again and migrated; the Airflow
        processes restarted), so that no run of an earlier session is still queued or running.
        Timings of this call are in ``self.last_up``."""
        t0 = time.monotonic()
        steps: dict[str, float] = {}
        with self._lock.hold():
            if not self.airflow_bin.exists():
                raise RuntimeError(f"{self.airflow_bin} missing: build the virtualenv with `make venv`")
            if not self.dags_folder.is_dir():
                raise RuntimeError(f"DAGs folder {self.dags_folder} is not a directory")
            self.pg.check_install()
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o755)  # PostgreSQL (another user when we are root) traverses it
            for d in (self.home, self.logs, self.home / "config"):
                d.mkdir(exist_ok=True)
            # Every Airflow process imports it at start-up; it preloads only when told (env below).
            (self.home / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
            sec = self._secrets()
            state = self._state()
            t = time.monotonic()
            if self.pg.initdb():
                steps["initdb"] = time.monotonic() - t
            t = time.monotonic()
            port, started = self.pg.start(state.get("pg_port"), avoid=[state.get("api_port") or 0])
            if started:
                steps["postgres"] = time.monotonic() - t
            state["pg_port"] = port
            procs = state.setdefault("processes", {})
            if fresh:
                t = time.monotonic()
                with ThreadPoolExecutor(len(PROCESSES)) as pool:
                    list(pool.map(lambda n: _procs.terminate(procs.pop(n, None), 20), list(PROCESSES)))
                self.pg.drop_db(DB_NAME)
                state.pop("migrated", None)
                steps["fresh"] = time.monotonic() - t
            self.pg.ensure_db(DB_NAME, DB_USER, sec["db_password"])
            running = {n for n in PROCESSES if _procs.alive(procs.get(n))}
            api_port = state.get("api_port") if "api-server" in running else None
            api_port = api_port or _procs.free_port(state.get("api_port"), avoid=[port])
            env = self.airflow_env(port, api_port, sec)
            env_hash = hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()
            if running and state.get("env_hash") != env_hash:
                with ThreadPoolExecutor(len(PROCESSES)) as pool:  # another environment: restart, same ports
                    list(pool.map(lambda n: _procs.terminate(procs.pop(n, None), 20), list(PROCESSES)))
                running = set()
                steps["restart"] = 0.0
            state["api_port"] = api_port
            self._save_state(state)
            db_key = hashlib.sha256(f"{self.pg.pgdata}:{self._airflow_version()}".encode()).hexdigest()
            if state.get("migrated") != db_key:
                t = time.monotonic()
                self._migrate(env)
                state["migrated"] = db_key
                steps["migrate"] = time.monotonic() - t
            t = time.monotonic()
            for name in PROCESSES:
                if name in running:
                    continue
                procs[name] = _procs.spawn([self.airflow_bin, *self._argv(name)], env=env,
                                           log=self.logs / f"{name}.log", cwd=self.root)
            state["env_hash"] = env_hash
            self._save_state(state)
            url = f"http://127.0.0.1:{api_port}"
            self._wait_ready(url, procs, timeout)
            if len(running) < len(PROCESSES):
                steps["processes"] = time.monotonic() - t
        total = time.monotonic() - t0
        self.last_up = {"seconds": round(total, 2), "reused": not steps,
                        "steps": {k: round(v, 2) for k, v in steps.items()}}
        return self.endpoint()

    def endpoint(self) -> StackEndpoint:
        state = self._state()
        return StackEndpoint(url=f"http://127.0.0.1:{state.get('api_port')}", username=USERNAME,
                             password_file=self.password_file, root=self.root,
                             pids={n: r["pid"] for n, r in (state.get("processes") or {}).items() if r})

    def down(self) -> dict[str, bool]:
        """Stop the Airflow processes (by recorded pid and process group), then PostgreSQL."""
        with self._lock.hold():
            state = self._state()
            procs = state.get("processes") or {}
            # SIGTERM to every process group at once (the API server takes ~10 s to drain).
            with ThreadPoolExecutor(len(PROCESSES)) as pool:
                futures = {name: pool.submit(_procs.terminate, procs.pop(name, None), 20) for name in PROCESSES}
            stopped = {name: futures[name].result() for name in reversed(PROCESSES)}
            self._save_state(state)
            stopped["postgres"] = self.pg.stop()
        return stopped

    def status(self) -> dict[str, Any]:
        state = self._state()
        procs = state.get("processes") or {}
        out: dict[str, Any] = {"root": str(self.root), "url": f"http://127.0.0.1:{state.get('api_port')}",
                               "login": {"username": USERNAME, "password_file": str(self.password_file)},
                               "postgres": {"pid": self.pg.pid(), "port": state.get("pg_port")}}
        for name in PROCESSES:
            rec = procs.get(name) or {}
            out[name] = {"pid": rec.get("pid"), "running": _procs.alive(rec), "log": rec.get("log")}
        return out

    def pids(self) -> dict[str, int]:
        """Every live pid of the stack: each Airflow process's group members and PostgreSQL."""
        out: dict[str, int] = {}
        for name, rec in (self._state().get("processes") or {}).items():
            if _procs.alive(rec):
                for pid in _procs.group_members(int(rec["pid"])):
                    out[f"{name}:{pid}"] = pid
        pg = self.pg.pid()
        if pg:
            out["postgres"] = pg
        return out

    # ------------------------------------------------------------------ environment
    def airflow_env(self, pg_port: int, api_port: int, sec: Mapping[str, str]) -> dict[str, str]:
        """The Airflow processes' environment (secrets included: never log it)."""
        url = f"http://127.0.0.1:{api_port}"
        env = dict(self.base_env)
        paths = [str(REPO / "plugins"), str(INCLUDE), str(REPO)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths + [p for p in env.get("PYTHONPATH", "").split(
            os.pathsep) if p]))
        env.setdefault("PATH", os.defpath)
        env["PATH"] = os.pathsep.join(dict.fromkeys([str(self.airflow_bin.parent), *env["PATH"].split(os.pathsep)]))
        env.update(TUNING)
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
                f"postgresql+psycopg2://{DB_USER}:{sec['db_password']}@127.0.0.1:{pg_port}/{DB_NAME}",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC":
                f"postgresql+asyncpg://{DB_USER}:{sec['db_password']}@127.0.0.1:{pg_port}/{DB_NAME}",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.password_file),
            "AIRFLOW__CORE__FERNET_KEY": sec["fernet_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": sec["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": sec["api_secret_key"],
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            # airflowstack.preload: the scheduler and triggerer import the campaign's modules once.
            "AIRFLOWSTACK_PRELOAD": "1" if self.preload else "0",
        })
        env.update(self.settings)
        return env

    def _argv(self, name: str) -> list[str]:
        if name == "api-server":
            return ["api-server", "--host", "127.0.0.1", "--port", str(self._state()["api_port"]), "--workers", "1"]
        if name in ("scheduler", "triggerer"):
            return [name, "--skip-serve-logs"]  # task logs are files under the stack's home: no log servers
        return [name]

    # ------------------------------------------------------------------ helpers
    def _airflow_version(self) -> str:
        from importlib.metadata import version

        return version("apache-airflow-core")

    def _migrate(self, env: Mapping[str, str]) -> None:
        log = self.logs / "db-migrate.log"
        with open(log, "ab") as out:
            proc = subprocess.run([str(self.airflow_bin), "db", "migrate"], env=dict(env), cwd=self.root,
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=600,
                                  check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed ({proc.returncode}):\n{_procs.tail(log)}")

    def _wait_ready(self, url: str, procs: Mapping[str, Any], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            dead = [n for n in PROCESSES if not _procs.alive(procs.get(n))]
            if dead:
                name = dead[0]
                raise RuntimeError(f"airflow {name} exited; see {self.logs / (name + '.log')}:\n"
                                   f"{_procs.tail(self.logs / (name + '.log'))}")
            try:
                with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API server at {url} did not answer within {timeout:.0f} s; see "
                                   f"{self.logs / 'api-server.log'}")
            time.sleep(0.5)

    def _state(self) -> dict[str, Any]:
        return _procs.read_json(self.state_file)

    def _save_state(self, state: dict[str, Any]) -> None:
        _procs.write_json(self.state_file, state)

    def _secrets(self) -> dict[str, str]:
        import base64

        def token() -> str:
            return secrets.token_urlsafe(24)  # [A-Za-z0-9_-]: safe in URLs and SQL literals

        sec = _procs.fill_secrets(self.secrets_file, {
            "db_password": token, "jwt_secret": token, "api_secret_key": token,
            "fernet_key": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()})
        passwords = _procs.read_json(self.password_file)
        if not passwords.get(USERNAME):
            passwords[USERNAME] = secrets.token_urlsafe(18)
            _procs.write_json(self.password_file, passwords, private=True)
        return sec
