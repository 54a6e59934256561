"""A complete Rucio on this machine, started and stopped by the project.

:class:`LocalRucio` runs, under one root directory (``var/rucio`` by default):

* a PostgreSQL 15 cluster (``<root>/pg``; socket and log in ``<root>/pgrun``) on a free
  loopback port, with a ``rucio`` database and role (generated password). As root,
  ``initdb``/``pg_ctl``/``psql`` run as the ``postgres`` user (they refuse root);
* the Rucio 41.5.1 REST server: ``rucio.web.rest.flaskapi.v1.main:application`` under
  gunicorn from the server virtualenv (``.venv-rucio``), on a free loopback port, plain
  http, no gunicorn control socket;
* one daemons process, ``python -m localrucio.daemons`` from the same virtualenv: judge
  injector/evaluator/repairer and conveyor submitter/poller/finisher passes in a loop,
  transfers done by the local-copy transfertool (see those modules);
* any extra supervised processes the caller starts with :meth:`LocalRucio.start_process`.

Everything it generates lives under the root: ``state.json`` (ports, pids, process start
times), ``secrets.json`` (0600: database, root and site-account passwords), ``etc/``
(0600 server config, alembic.ini, one client config per account), ``logs/``, ``run/``
(daemons status, transfer job files, the lock), ``tmp/<account>/`` (the TMPDIR that
:meth:`LocalRucio.client_env` gives client processes: their auth tokens go there). Nothing
of it belongs in the repository.

``up()`` is idempotent: a second call, from this or any other process, finds the running
pieces (pid + kernel start time, server ``/ping``) and reuses them, starting only what is
missing. ``down()`` stops what was started, by recorded pid and process group (gunicorn
master and workers, the daemons process, extra processes) and ``pg_ctl stop`` for
PostgreSQL. Concurrent calls on one root are serialised by a file lock.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localrucio import _procs
from localrucio._pg import DEFAULT_PG_BIN, PG_SUPERUSER, PgCluster  # noqa: F401 - re-exported

INCLUDE = Path(__file__).resolve().parents[1]
REPO = INCLUDE.parent
DEFAULT_ROOT = REPO / "var" / "rucio"
DEFAULT_SERVER_VENV = REPO / ".venv-rucio"

ROOT_ACCOUNT = "root"
ROOT_USERNAME = "root"
DB_NAME = "rucio"
DB_USER = "rucio"

_SITE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,19}$")
_RSE_RE = re.compile(r"^[A-Z0-9]+([_-][A-Z0-9]+)*$")


@dataclass(frozen=True)
class SiteSpec:
    """One Data Facility: its Rucio RSE, where that RSE's files live, and its butler."""

    site: str  # lower case; the Rucio account is drp_<site>
    rse: str  # e.g. USDF_LOCAL_DISK
    rse_root: Path  # the RSE's file protocol prefix
    butler_repo: Path  # recorded as RSE attribute butler_repo

    def __post_init__(self) -> None:
        if not _SITE_RE.match(self.site):
            raise ValueError(f"site {self.site!r}: lower-case letters, digits, '_' or '-', at most 20")
        if not _RSE_RE.match(self.rse):
            raise ValueError(f"RSE name {self.rse!r} does not match Rucio's pattern {_RSE_RE.pattern}")
        object.__setattr__(self, "rse_root", Path(self.rse_root))
        object.__setattr__(self, "butler_repo", Path(self.butler_repo))

    @property
    def account(self) -> str:
        return f"drp_{self.site}"


@dataclass(frozen=True)
class RucioEndpoint:
    """How to reach the running deployment as its root account."""

    url: str  # http://127.0.0.1:PORT (REST and auth)
    account: str  # "root"
    username: str  # root's userpass identity
    password: str = field(repr=False)
    client_config: Path = Path()  # [client] config for root, password included (0600)
    root: Path = Path()  # the deployment root

    def client_kwargs(self) -> dict[str, Any]:
        """Arguments for ``rucio.client.Client`` (works without any config file)."""
        return {"rucio_host": self.url, "auth_host": self.url, "account": self.account,
                "auth_type": "userpass", "creds": {"username": self.username, "password": self.password}}


Creds = dict[str, str]


def _password() -> str:
    return secrets.token_urlsafe(24)  # [A-Za-z0-9_-]: safe in URLs, ini files and SQL literals


class LocalRucio:
    """The local Rucio deployment rooted at ``root`` (see the module docstring)."""

    def __init__(
        self,
        root: Path | str = DEFAULT_ROOT,
        *,
        server_venv: Path | str | None = None,
        pg_bin: Path | str | None = None,
        workers: int = 2,
        threads: int = 4,
        daemons_interval: float = 0.5,
    ):
        self.root = Path(root).resolve()
        self.server_venv = Path(server_venv or os.environ.get("LOCALRUCIO_SERVER_VENV") or DEFAULT_SERVER_VENV)
        self.pg_bin = Path(pg_bin or os.environ.get("LOCALRUCIO_PG_BIN") or DEFAULT_PG_BIN)
        self.workers = workers
        self.threads = threads
        self.daemons_interval = daemons_interval
        self.last_up: dict[str, Any] = {}
        self._lock = _procs.FileLock(self.root / "run" / "lock")
        self.pg = PgCluster(self.pgdata, self.pgrun, self.pg_bin, cwd=self.root)

    # ------------------------------------------------------------------ paths
    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def pgdata(self) -> Path:
        return self.root / "pg"

    @property
    def pgrun(self) -> Path:
        return self.root / "pgrun"

    @property
    def server_config(self) -> Path:
        return self.etc / "rucio.cfg"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    def client_config_path(self, account: str) -> Path:
        return self.etc / f"client-{account}.cfg"

    # ------------------------------------------------------------------ public API
    def up(self, reset: bool = False) -> RucioEndpoint:
        """Start everything, or reuse what already runs; ``reset`` empties the database first.

        With ``reset`` the server and daemons are restarted around a dropped, re-created
        and re-bootstrapped database (same ports, same root password); extra processes are
        left running. Timings of this call are in ``self.last_up``.
        """
        t0 = time.monotonic()
        steps: dict[str, float] = {}
        with self._lock.hold():
            self._check_install()
            self._make_dirs()
            sec = self._secrets()
            state = self._state()
            ports = state.setdefault("ports", {})

            t = time.monotonic()
            if self._initdb():
                steps["initdb"] = time.monotonic() - t
            t = time.monotonic()
            pg_started = self._pg_start(state)
            if pg_started:
                steps["postgres"] = time.monotonic() - t
            self._save_state(state)
            self._pg_ensure_db(sec["db_password"])

            self._write_configs(ports["pg"], sec)
            hashes = {"server": self._config_hash(), "daemons": self._config_hash(with_code=True)}
            for name in ("daemons", "server"):
                rec = state.get(name)
                # A server that outlived PostgreSQL holds dead pooled connections (its next
                # requests would fail): restart it. The daemons reconnect on their next pass.
                stale = name == "server" and pg_started
                if rec and (reset or stale or rec.get("config_hash") != hashes[name] or not _procs.alive(rec)):
                    _procs.terminate(rec)
                    state.pop(name, None)
            self._save_state(state)

            t = time.monotonic()
            if reset:
                self._pg_drop_db()
                self._pg_ensure_db(sec["db_password"])
                shutil.rmtree(self.run_dir / "transfers", ignore_errors=True)
                # Cached client tokens under tmp/ are now unknown to the server: a client
                # gets a 401 and re-authenticates by itself.
            if self._bootstrap_needed():
                self._bootstrap()
                steps["bootstrap"] = time.monotonic() - t

            t = time.monotonic()
            if not (_procs.alive(state.get("server")) and self._ping_patiently(ports.get("server"))):
                _procs.terminate(state.pop("server", None))  # a hung server would keep the port
                self._start_server(state, hashes["server"])
                steps["server"] = time.monotonic() - t
            t = time.monotonic()
            if not (_procs.alive(state.get("daemons")) and self._daemons_progressing(state["daemons"])):
                _procs.terminate(state.pop("daemons", None))
                self._start_daemons(state, hashes["daemons"])
                steps["daemons"] = time.monotonic() - t
            self._save_state(state)
        total = time.monotonic() - t0
        self.last_up = {"seconds": round(total, 2), "cold": "initdb" in steps, "reused": not steps,
                        "reset": reset, "steps": {k: round(v, 2) for k, v in steps.items()}}
        return self.endpoint()

    def endpoint(self) -> RucioEndpoint:
        """The root endpoint of the deployment (as recorded; does not start anything)."""
        state = self._state()
        sec = _procs.read_json(self.secrets_file)
        port = (state.get("ports") or {}).get("server")
        if not port or not sec:
            raise RuntimeError(f"no deployment recorded under {self.root}: call up() first")
        return RucioEndpoint(url=f"http://127.0.0.1:{port}", account=ROOT_ACCOUNT, username=ROOT_USERNAME,
                             password=sec["root_password"], client_config=self.client_config_path(ROOT_ACCOUNT),
                             root=self.root)

    def ensure_sites(self, scope: str, sites: Sequence[SiteSpec]) -> dict[str, Creds]:
        """Create (idempotently) the scope, per-site accounts and RSEs, limits and distances.

        * the scope, owned by root;
        * per site an account ``drp_<site>`` (USER) with a userpass identity of the same
          name (generated password, kept in ``secrets.json``), the ``admin`` account
          attribute (Rucio's generic policy only lets root or admins register replicas on
          an RSE that is not *SCRATCHDISK/USERDISK, attach to a root-owned scope, or
          update - e.g. boost - a rule), and an unlimited local limit on every RSE;
        * per site a deterministic DISK RSE with one ``file`` protocol
          (``rucio.rse.protocols.posix.Default``, hostname localhost, port 0, prefix =
          ``rse_root``; lan read/write/delete, wan read/write/delete and third-party-copy
          read/write), attributes ``lfn2pfn_algorithm=identity``, ``butler_repo`` and
          ``site``. PFNs are ``file://localhost:0<rse_root>/<scope>/<name>``. The local
          transfertool needs no further attribute;
        * a distance of 1 between every ordered pair of this deployment's RSEs.

        If an RSE already exists with another prefix (a new test session with fresh site
        directories), the protocol's prefix is updated in place. Rucio keeps the replicas
        it already has on that RSE and now resolves them under the new prefix, where the
        files are not: they still count as AVAILABLE, so a transfer using one as source
        fails (and, after Rucio's retries, its rule goes STUCK) and a rule counting on one
        is OK with no file behind it. Use new DID names (or ``up(reset=True)``) after
        moving an RSE.

        Returns ``{site: {"account", "username", "password"}}``.
        """
        from rucio.common.exception import CannotAuthenticate, Duplicate

        with self._lock.hold():
            sec = self._secrets()
            client = self._root_client()
            try:
                client.add_scope(ROOT_ACCOUNT, scope)
            except Duplicate:
                pass
            existing_accounts = {a["account"] for a in client.list_accounts()}
            creds: dict[str, Creds] = {}
            for spec in sites:
                account = spec.account
                password = sec["accounts"].get(account)
                if password is None:
                    password = sec["accounts"][account] = _password()
                    self._save_secrets(sec)
                if account not in existing_accounts:
                    client.add_account(account, "USER", f"{account}@localhost")
                identities = {(i["identity"], i["type"]) for i in client.list_identities(account)}
                if (account, "USERPASS") in identities:
                    try:
                        self._client(account, account, password)
                    except CannotAuthenticate:
                        client.del_identity(account, account, "USERPASS")
                        identities.discard((account, "USERPASS"))
                if (account, "USERPASS") not in identities:
                    client.add_identity(account, account, "USERPASS", f"{account}@localhost",
                                        default=True, password=password)
                if "admin" not in _account_attrs(client, account):
                    client.add_account_attribute(account, "admin", "True")
                self._ensure_rse(client, spec)
                creds[spec.site] = {"account": account, "username": account, "password": password}
                self._write_client_config(account, account, password)

            rses = sorted(r["rse"] for r in client.list_rses())
            accounts = {a["account"] for a in client.list_accounts()}
            for account in [ROOT_ACCOUNT, *sorted(a for a in sec["accounts"] if a in accounts)]:
                for rse in rses:
                    client.set_local_account_limit(account, rse, -1)
            for src in rses:
                for dst in rses:
                    if src != dst:
                        try:
                            client.add_distance(src, dst, {"distance": 1})
                        except Duplicate:
                            pass
            return creds

    def start_process(self, name: str, argv: Sequence[str | Path], env: Mapping[str, str] | None = None,
                      log: Path | str | None = None, *, inherit: bool = True) -> int:
        """Start a supervised extra process (stopped by ``down()``); returns its pid.

        ``env`` is added to this process's environment, or with ``inherit=False`` is the
        whole environment of the process. Output goes to ``log`` (default
        ``<root>/logs/<name>.log``). If a process of that name still runs with the same
        argv it is kept (its pid returned); with another argv it is replaced.
        """
        if not re.match(r"^[A-Za-z0-9_.-]+$", name):
            raise ValueError(f"process name {name!r}: letters, digits, '_', '.', '-'")
        argv = [str(a) for a in argv]
        with self._lock.hold():
            self._make_dirs()
            state = self._state()
            extra = state.setdefault("extra", {})
            rec = extra.get(name)
            if _procs.alive(rec) and rec["argv"] == argv:
                return int(rec["pid"])
            _procs.terminate(rec)
            full_env = dict(os.environ) if inherit else {}
            full_env.update(env or {})
            log_path = Path(log) if log else self.logs / f"{name}.log"
            extra[name] = _procs.spawn(argv, env=full_env, log=log_path, cwd=self.root)
            self._save_state(state)
            return int(extra[name]["pid"])

    def stop_process(self, name: str) -> bool:
        """Stop one extra process; True if it was running."""
        with self._lock.hold():
            state = self._state()
            rec = (state.get("extra") or {}).pop(name, None)
            stopped = _procs.terminate(rec)
            self._save_state(state)
            return stopped

    def stop_server(self) -> bool:
        """Stop only the REST server (an outage; daemons and PostgreSQL keep running).

        The next ``up()`` starts it again on the same port. True if it was running.
        """
        with self._lock.hold():
            state = self._state()
            stopped = _procs.terminate(state.pop("server", None), timeout=15)
            self._save_state(state)
            return stopped

    def down(self) -> dict[str, bool]:
        """Stop everything this deployment started; idempotent. Returns what was running."""
        stopped: dict[str, bool] = {}
        if not self.root.exists():
            return stopped
        with self._lock.hold():
            state = self._state()
            for name, rec in list((state.get("extra") or {}).items()):
                stopped[f"extra:{name}"] = _procs.terminate(rec)
            state["extra"] = {}
            for name in ("daemons", "server"):
                stopped[name] = _procs.terminate(state.pop(name, None), timeout=15)
                self._save_state(state)
            stopped["postgres"] = self._pg_stop()
            state.pop("postgres", None)
            self._save_state(state)
        return stopped

    def status(self) -> dict[str, Any]:
        """What runs: pids, ports, server ping, the daemons' last iteration."""
        state = self._state()
        ports = state.get("ports") or {}
        pg_pid = self._pg_pid()
        server = state.get("server") or {}
        daemons = state.get("daemons") or {}
        dstat = _procs.read_json(self.run_dir / "daemons-status.json")
        if dstat.get("token") != daemons.get("token"):
            dstat = {}
        server_up = _procs.alive(server)
        return {
            "root": str(self.root),
            "url": f"http://127.0.0.1:{ports['server']}" if ports.get("server") else None,
            "postgres": {"pid": pg_pid, "port": ports.get("pg"), "running": pg_pid is not None},
            "server": {"pid": server.get("pid"), "port": ports.get("server"), "running": server_up,
                       "ping": bool(server_up and self._ping(ports.get("server")))},
            "daemons": {"pid": daemons.get("pid"), "running": _procs.alive(daemons),
                        "iteration": dstat.get("iteration"), "last_iteration_at": dstat.get("last_iteration_at"),
                        "last_iteration_seconds": dstat.get("last_iteration_seconds"),
                        "errors_total": dstat.get("errors_total"), "passes": dstat.get("passes")},
            "extra": {name: {"pid": rec.get("pid"), "running": _procs.alive(rec), "log": rec.get("log")}
                      for name, rec in (state.get("extra") or {}).items()},
        }

    def client_env(self, creds_for_site: str | Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a rucio-clients process talking to this deployment.

        ``creds_for_site``: None for root, a site name (after ``ensure_sites``), or a creds
        dict as ``ensure_sites`` returns. ``RUCIO_CONFIG`` names a [client] config (0600)
        with the server URL and that account's username and password;
        ``RUCIO_ACCOUNT``/``RUCIO_AUTH_TYPE`` are set too because, inherited from
        elsewhere, they would override the config file. ``TMPDIR`` is a private directory
        ``<root>/tmp/<account>/`` (0700): rucio-clients caches tokens under
        ``$TMPDIR/<user>/.rucio_<user>/`` by account name only, so without it processes of
        the same OS user would share tokens across deployments. (The config has no
        ``auth_token_file_path``: that names one file for every account, and a client
        made in the same process for another account would send root's token.)
        """
        sec = _procs.read_json(self.secrets_file)
        if not sec:
            raise RuntimeError(f"no deployment recorded under {self.root}: call up() first")
        if creds_for_site is None:
            account, username, password = ROOT_ACCOUNT, ROOT_USERNAME, sec["root_password"]
        elif isinstance(creds_for_site, str):
            account = f"drp_{creds_for_site}"
            if account not in sec.get("accounts", {}):
                raise KeyError(f"site {creds_for_site!r} has no account yet: call ensure_sites()")
            username, password = account, sec["accounts"][account]
        else:
            account = creds_for_site["account"]
            username, password = creds_for_site["username"], creds_for_site["password"]
        path = self._write_client_config(account, username, password)
        tmp = self.root / "tmp" / account
        tmp.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o700)
        return {"RUCIO_CONFIG": str(path), "RUCIO_ACCOUNT": account, "RUCIO_AUTH_TYPE": "userpass",
                "RUCIO_CLIENT_MODE": "1", "TMPDIR": str(tmp)}

    # ------------------------------------------------------------------ state and secrets
    def _state(self) -> dict[str, Any]:
        return _procs.read_json(self.state_file)

    def _save_state(self, state: dict[str, Any]) -> None:
        _procs.write_json(self.state_file, state)

    def _secrets(self) -> dict[str, Any]:
        return _procs.fill_secrets(self.secrets_file, {"db_password": _password, "root_password": _password,
                                                       "accounts": dict})

    def _save_secrets(self, sec: dict[str, Any]) -> None:
        _procs.write_json(self.secrets_file, sec, private=True)

    def _check_install(self) -> None:
        for exe in (self.server_venv / "bin" / "gunicorn", self.server_venv / "bin" / "python"):
            if not exe.exists():
                raise RuntimeError(f"{exe} missing: build the server virtualenv with `make rucio-venv`")
        self.pg.check_install()

    def _make_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # PostgreSQL (another user when we are root) traverses it
        for d in (self.etc, self.logs, self.run_dir):
            d.mkdir(exist_ok=True)
        os.chmod(self.etc, 0o700)

    # ------------------------------------------------------------------ PostgreSQL (localrucio._pg)
    def _initdb(self) -> bool:
        return self.pg.initdb()

    def _pg_pid(self) -> int | None:
        return self.pg.pid()

    def _pg_start(self, state: dict[str, Any]) -> bool:
        """Start PostgreSQL unless it runs; True if it was started."""
        ports = state["ports"]
        port, started = self.pg.start(ports.get("pg"), avoid=[ports.get("server") or 0])
        ports["pg"] = port
        if started:
            state["postgres"] = {"pid": self.pg.pid(), "port": port}
        return started

    def _pg_stop(self) -> bool:
        return self.pg.stop()

    def _psql(self, sql: str, db: str = "postgres") -> str:
        return self.pg.psql(sql, db=db)

    def _pg_ensure_db(self, db_password: str) -> None:
        self.pg.ensure_db(DB_NAME, DB_USER, db_password)

    def _pg_drop_db(self) -> None:
        self.pg.drop_db(DB_NAME)

    def _bootstrap_needed(self) -> bool:
        out = self._psql(
            "SELECT CASE WHEN to_regclass('public.accounts') IS NULL THEN 'empty'"
            " WHEN to_regclass('public.alembic_version') IS NULL THEN 'partial' ELSE 'schema' END;\n",
            db=DB_NAME).strip()
        if out == "schema":
            roots = self._psql(f"SELECT count(*) FROM accounts WHERE account = '{ROOT_ACCOUNT}';\n", db=DB_NAME)
            if roots.strip() != "0":
                return False
        if out != "empty":
            sec = self._secrets()
            self._pg_drop_db()
            self._pg_ensure_db(sec["db_password"])
        return True

    def _bootstrap(self) -> None:
        """Build the schema, the base VO and root's identity (rucio/tools/bootstrap.py)."""
        code = ("from rucio.db.sqla.util import build_database, create_base_vo, create_root_account\n"
                "build_database(); create_base_vo(); create_root_account()\n")
        log = self.logs / "bootstrap.log"
        with open(log, "ab") as out:
            proc = subprocess.run([str(self.server_venv / "bin" / "python"), "-c", code], check=False,
                                  env=self._server_env(),
                                  cwd=self.root, stdout=out, stderr=subprocess.STDOUT, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"Rucio bootstrap failed ({proc.returncode}):\n{_procs.tail(log)}")

    # ------------------------------------------------------------------ configs
    def _site_packages(self) -> Path:
        found = sorted(self.server_venv.glob("lib/python3*/site-packages/rucio"))
        if not found:
            raise RuntimeError(f"no rucio package in {self.server_venv}: `make rucio-venv`")
        return found[-1].parent

    def _write_configs(self, pg_port: int, sec: dict[str, Any]) -> None:
        db_url = f"postgresql+psycopg://{DB_USER}:{sec['db_password']}@127.0.0.1:{pg_port}/{DB_NAME}"
        site_packages = self._site_packages()
        alembic_ini = self.etc / "alembic.ini"
        mail_templates = self.server_venv / "rucio" / "etc" / "mail_templates"
        server_cfg = f"""# Generated by localrucio for {self.root}; rewritten on every up().
[common]
logdir = {self.logs}
loglevel = WARNING
mailtemplatedir = {mail_templates}

[database]
default = {db_url}
pool_size = 5
max_overflow = 10
pool_recycle = 600
pool_reset_on_return = rollback
echo = 0

[bootstrap]
userpass_identity = {ROOT_USERNAME}
userpass_pwd = {sec['root_password']}
userpass_email = root@localhost
x509_identity =
x509_email =
gss_identity =
gss_email =
ssh_identity =
ssh_email =

[alembic]
cfg = {alembic_ini}

[cache]
# No memcached: a socket path that does not exist turns Rucio's caching off, so two
# deployments on one machine never share a cache (and RSE changes show at once).
url = {self.run_dir / 'no-memcached.sock'}

[policy]
permission = generic
schema = generic
lfn2pfn_algorithm_default = identity
support = localrucio
support_rucio = https://github.com/rucio/rucio/issues/

[conveyor]
scheme = file
transfertool = local

[transfers]
# No multi-hop: every ordered pair of RSEs gets a direct distance (ensure_sites).
multihop_rse_expression =

[monitor]
enable_metrics = False

[credentials]
signature_lifetime = 3600
"""
        alembic = f"""[alembic]
sqlalchemy.url = {db_url}
script_location = {site_packages / 'rucio' / 'db' / 'sqla' / 'migrate_repo'}

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console
qualname =

[logger_sqlalchemy]
level = WARN
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = WARN
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %%(levelname)-5.5s [%%(name)s] %%(message)s
datefmt = %%H:%%M:%%S
"""
        _write_if_changed(self.server_config, server_cfg)
        _write_if_changed(alembic_ini, alembic)
        self._write_client_config(ROOT_ACCOUNT, ROOT_USERNAME, sec["root_password"])

    def _write_client_config(self, account: str, username: str, password: str) -> Path:
        port = (self._state().get("ports") or {}).get("server")
        url = f"http://127.0.0.1:{port}" if port else "http://127.0.0.1:0"
        text = f"""# Generated by localrucio: rucio-clients config for account {account}.
[client]
rucio_host = {url}
auth_host = {url}
auth_type = userpass
account = {account}
username = {username}
password = {password}
request_retries = 3
"""
        path = self.client_config_path(account)
        _write_if_changed(path, text)
        return path

    def _config_hash(self, with_code: bool = False) -> str:
        """Identifies what a running process was started with (config, and daemon code)."""
        digest = hashlib.sha256(self.server_config.read_bytes())
        if with_code:
            here = Path(__file__).resolve().parent
            for module in ("daemons.py", "transfertool.py"):
                digest.update((here / module).read_bytes())
        return digest.hexdigest()[:16]

    def _server_env(self) -> dict[str, str]:
        from multisite_drp.services.procs import child_env

        # The allow-listed environment (no Airflow connection or other credential), without
        # the project's Rucio client settings and Python path: the server has its own venv.
        env = {k: v for k, v in child_env().items() if not k.startswith("RUCIO_") and k != "PYTHONPATH"}
        env["RUCIO_CONFIG"] = str(self.server_config)
        env.pop("VIRTUAL_ENV", None)
        return env

    # ------------------------------------------------------------------ server and daemons
    def _ping(self, port: int | None, timeout: float = 2.0) -> bool:
        if not port:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _ping_patiently(self, port: int | None) -> bool:
        """A live server may be slow under load: three tries over about 15 s."""
        return any(self._ping(port, timeout=5.0) for _ in range(3))

    def _daemons_progressing(self, rec: Mapping[str, Any], stale_after: float = 600.0) -> bool:
        """False if the daemons process has not finished an iteration for ``stale_after`` s."""
        status = _procs.read_json(self.run_dir / "daemons-status.json")
        if status.get("token") != rec.get("token"):
            return False
        return time.time() - float(status.get("last_iteration_at") or 0) < stale_after

    def _start_server(self, state: dict[str, Any], config_hash: str) -> None:
        ports = state["ports"]
        port = _procs.free_port(ports.get("server"), avoid=[ports.get("pg") or 0])
        ports["server"] = port
        # The client configs name the server port.
        sec = self._secrets()
        self._save_state(state)
        self._write_client_config(ROOT_ACCOUNT, ROOT_USERNAME, sec["root_password"])
        for account, password in sec["accounts"].items():
            if self.client_config_path(account).exists():
                self._write_client_config(account, account, password)
        argv = [self.server_venv / "bin" / "gunicorn", "rucio.web.rest.flaskapi.v1.main:application",
                "--bind", f"127.0.0.1:{port}", "--workers", str(self.workers), "--threads", str(self.threads),
                "--worker-class", "gthread", "--timeout", "120", "--graceful-timeout", "5",
                "--no-control-socket", "--access-logfile", self.logs / "server-access.log",
                "--error-logfile", "-", "--chdir", self.root]
        rec = _procs.spawn(argv, env=self._server_env(), log=self.logs / "server.log", cwd=self.root)
        rec["config_hash"] = config_hash
        state["server"] = rec
        self._save_state(state)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self._ping(port, timeout=1.0):
                return
            if not _procs.alive(rec):
                break
            time.sleep(0.1)
        _procs.terminate(rec)
        state.pop("server", None)
        self._save_state(state)
        raise RuntimeError(f"Rucio server did not answer /ping on port {port}:\n"
                           f"{_procs.tail(self.logs / 'server.log')}")

    def _start_daemons(self, state: dict[str, Any], config_hash: str) -> None:
        token = secrets.token_hex(8)
        # The token is recorded before the process starts: it exits when the state stops naming it.
        state["daemons"] = {"token": token, "config_hash": config_hash}
        self._save_state(state)
        env = self._server_env()
        env["PYTHONPATH"] = str(INCLUDE)
        argv = [self.server_venv / "bin" / "python", "-m", "localrucio.daemons", "--root", self.root,
                "--token", token, "--interval", str(self.daemons_interval)]
        rec = _procs.spawn(argv, env=env, log=self.logs / "daemons.log", cwd=self.root)
        rec.update(token=token, config_hash=config_hash)
        state["daemons"] = rec
        self._save_state(state)
        status_path = self.run_dir / "daemons-status.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = _procs.read_json(status_path) if status_path.exists() else {}
            if status.get("token") == token and status.get("iteration", 0) >= 1:
                return
            if not _procs.alive(rec):
                break
            time.sleep(0.1)
        _procs.terminate(rec)
        state.pop("daemons", None)
        self._save_state(state)
        raise RuntimeError(f"Rucio daemons did not complete a first iteration:\n"
                           f"{_procs.tail(self.logs / 'daemons.log')}")

    # ------------------------------------------------------------------ clients
    def _client(self, account: str, username: str, password: str):
        from rucio.client import Client

        return Client(**RucioEndpoint(url=self.endpoint().url, account=account, username=username,
                                      password=password).client_kwargs())

    def _root_client(self):
        sec = self._secrets()
        return self._client(ROOT_ACCOUNT, ROOT_USERNAME, sec["root_password"])

    def _ensure_rse(self, client: Any, spec: SiteSpec) -> None:
        from rucio.common.exception import Duplicate

        try:
            client.add_rse(spec.rse, deterministic=True, volatile=False, rse_type="DISK")
        except Duplicate:
            pass
        prefix = str(Path(spec.rse_root).resolve())
        domains = {"lan": {"read": 1, "write": 1, "delete": 1},
                   "wan": {"read": 1, "write": 1, "delete": 1,
                           "third_party_copy_read": 1, "third_party_copy_write": 1}}
        protocol = {"scheme": "file", "impl": "rucio.rse.protocols.posix.Default", "hostname": "localhost",
                    "port": 0, "prefix": prefix, "domains": domains}
        protocols = [p for p in client.get_rse(spec.rse).get("protocols", []) if p["scheme"] == "file"]
        if protocols and (protocols[0]["prefix"] != prefix or protocols[0].get("domains") != domains):
            # Re-rooted (fresh site directories): replace the protocol. update_protocols cannot
            # address it: the client drops a port of 0 from the URL and the server then looks
            # for port None.
            client.delete_protocols(spec.rse, "file")
            protocols = []
        if not protocols:
            client.add_protocol(spec.rse, protocol)
        wanted = {"lfn2pfn_algorithm": "identity", "butler_repo": str(Path(spec.butler_repo).resolve()),
                  "site": spec.site}
        have = client.list_rse_attributes(spec.rse)
        for key, value in wanted.items():
            if str(have.get(key)) != value:
                client.add_rse_attribute(spec.rse, key, value)


def _account_attrs(client: Any, account: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for item in client.list_account_attributes(account):
        for attr in item if isinstance(item, list) else [item]:
            attrs[attr["key"]] = attr["value"]
    return attrs


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            os.chmod(path, 0o600)
            return
    except FileNotFoundError:
        pass
    _procs.write_private(path, text)


__all__ = ["DEFAULT_ROOT", "LocalRucio", "RucioEndpoint", "SiteSpec"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m localrucio up|down|status")
