"""Child processes: the environment they inherit, and whether a detached one still runs.

:func:`child_env` is the one place that decides what a child process of ours sees of
this process's environment: an allow-list (the system's basics, Python and the
virtualenv, the LSST stack's and PanDA's variables), plus the caller's explicit extras.
Whatever names a credential never passes (:func:`is_secret_name`: ``AIRFLOW_CONN_*``,
``AIRFLOW_VAR_*``, ``_AIRFLOW_*``, ``*PASSWORD*``, ``*TOKEN*``, ``*SECRET*``...), nor
does a value carrying a password in a URL (``scheme://user:pass@host``). A worker's
environment holds connection passwords (``AIRFLOW_CONN_*``), the metadata database's
URL and the Fernet key; a detached runner would keep them long after the task ended.
A deployment adds variable names with ``$MULTISITE_DRP_CHILD_ENV`` (comma-separated;
the credential rules still apply: S3 credentials reach the stack through
``AWS_SHARED_CREDENTIALS_FILE`` / ``AWS_PROFILE``, a database's through ``LSST_DB_AUTH``
or ``PGPASSFILE``, files rather than values).

Embedded workflow runners are started with ``start_new_session=True``, so
each is the leader of its own process group and its pid is the group id. A runner is
recorded by :func:`identity` as (host, pid, kernel start time), and
:func:`runner_liveness` reads such a record: a pid that now belongs to another process
(another start time) is dead, a record written on another host is ``other_host`` (this
host cannot see that process, so it is neither alive nor dead here), and a runner whose
leader died while its children run on (a ``run-qbb`` left behind) is still alive. The
kernel keeps a pid allocated while any process uses it as a process-group id, so a
recorded group id is never another process's group.
"""

from __future__ import annotations

import enum
import fcntl
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = ["CHILD_ENV_NAMES", "CHILD_ENV_PREFIXES", "CHILD_ENV_SUFFIXES", "Liveness", "child_env", "group_alive",
           "identity", "is_secret_name", "is_secret_value", "kill_runner", "process_start", "runner_liveness",
           "this_host"]

#: Variables a child process inherits by exact name.
CHILD_ENV_NAMES = frozenset({
    # the system
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "LANG", "LANGUAGE", "TMPDIR", "TMP", "TEMP",
    "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    # Python and the virtualenv
    "PYTHONPATH", "PYTHONHOME", "PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONDONTWRITEBYTECODE",
    "PYTHONWARNINGS", "VIRTUAL_ENV",
    # threads of the numerical libraries a quantum uses
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_MAX_THREADS", "NUMEXPR_NUM_THREADS",
    # the butler's datastore and registry credentials, as files (never the keys themselves)
    "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "S3_ENDPOINT_URL", "PGPASSFILE",
    # grid identity, as a file
    "X509_USER_PROXY", "X509_CERT_DIR",
    # services.middleware's overrides of the stack commands; the deployment's additional
    # names (CHILD_ENV_VAR), so that a grandchild (the runner's pipetask) gets them too
    "MULTISITE_PIPETASK", "MULTISITE_BUTLER", "MULTISITE_DRP_CHILD_ENV",
})
#: ... and by prefix: locales, the butler's and the stack's settings (``DAF_BUTLER_*``,
#: ``LSST_DB_AUTH``, ``LSST_RUN_TEMP_SPACE``...), EUPS and conda, PanDA and iDDS.
CHILD_ENV_PREFIXES = ("LC_", "DAF_BUTLER_", "LSST_", "EUPS_", "SETUP_", "CONDA_", "PANDA_", "PANDACACHE_",
                      "IDDS_", "BPS_")
#: ... and by suffix: an EUPS stack's product directories (``CTRL_MPEXEC_DIR``, ``OBS_LSST_DIR``...),
#: which pipelines and BPS commands name.
CHILD_ENV_SUFFIXES = ("_DIR",)
#: A deployment's additional names (comma-separated); the credential rules still apply.
CHILD_ENV_VAR = "MULTISITE_DRP_CHILD_ENV"

_SECRET_PREFIXES = ("AIRFLOW_CONN_", "AIRFLOW_VAR_", "_AIRFLOW_")
_SECRET_PARTS = ("PASSWORD", "PASSWD", "TOKEN", "SECRET", "FERNET", "SQL_ALCHEMY_CONN", "PRIVATE_KEY",
                 "API_KEY", "ACCESS_KEY")
#: ``scheme://user:password@host``: a password inside a URL.
_URL_CREDENTIALS = re.compile(r"://[^/@\s:]*:[^/@\s]+@")


def is_secret_name(name: str) -> bool:
    """True for an environment variable that may hold a credential: Airflow's connections
    and variables (``AIRFLOW_CONN_*``, ``AIRFLOW_VAR_*``, ``_AIRFLOW_*``), and any name
    containing PASSWORD, TOKEN, SECRET, FERNET, SQL_ALCHEMY_CONN, ... (case-insensitive)."""
    upper = name.upper()
    return upper.startswith(_SECRET_PREFIXES) or any(part in upper for part in _SECRET_PARTS)


def is_secret_value(value: str) -> bool:
    """True for a value that carries a password in a URL (``postgresql://u:p@host``,
    ``redis://:p@host``, a proxy's ``http://u:p@proxy``)."""
    return bool(_URL_CREDENTIALS.search(value))


def _allowed(name: str, deployment: frozenset[str]) -> bool:
    return (name in CHILD_ENV_NAMES or name in deployment or name.startswith(CHILD_ENV_PREFIXES)
            or name.endswith(CHILD_ENV_SUFFIXES))


def child_env(extra: Mapping[str, str] | None = None, *, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: the allow-listed part of ``base`` (default
    ``os.environ``) with no credential in it, then ``extra`` on top.

    ``extra`` is the caller's explicit decision, but a credential's name or a password in a
    URL is refused there too (``ValueError`` naming the variable): a child gets a file that
    holds a secret (``RUCIO_CONFIG``, ``AWS_SHARED_CREDENTIALS_FILE``), never the secret.
    """
    base = os.environ if base is None else base
    deployment = frozenset(n.strip() for n in base.get(CHILD_ENV_VAR, "").split(",") if n.strip())
    env = {k: v for k, v in base.items()
           if _allowed(k, deployment) and not is_secret_name(k) and not is_secret_value(v)}
    for k, v in (extra or {}).items():
        if is_secret_name(k) or is_secret_value(str(v)):
            raise ValueError(f"child_env: extra variable {k!r} names or carries a credential; expected "
                             "a setting or a path (pass secrets to a child in a 0600 file, never in its environment)")
        env[k] = str(v)
    return env


def _group_exists(pgid: int) -> bool:
    """True while the kernel knows process group ``pgid`` (signal 0; zombies answer too)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int | None) -> bool:
    """True while the process group ``pgid`` has a live (non-zombie) leader."""
    if not pgid or not _group_exists(pgid):
        return False
    # A zombie leader still answers signal 0; look at its state in /proc.
    fields = _stat(pgid)
    return fields is None or fields[0] != "Z"


# -- liveness of a recorded runner ------------------------------------------------------------


class Liveness(str, enum.Enum):
    """What this host can say of a recorded runner."""

    alive = "alive"
    dead = "dead"
    other_host = "other_host"  # recorded on another host: this host cannot tell


def this_host() -> str:
    """The name a runner record carries for the host it runs on."""
    return socket.gethostname()


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (field 3 first), or None if no such process."""
    try:
        raw = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    return raw[raw.rfind(")") + 2:].split()


def process_start(pid: int) -> str | None:
    """The kernel start time of a live (non-zombie) process (field 22 of /proc/<pid>/stat,
    clock ticks since boot), or None: with the pid it names one process for good."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def identity(pid: int) -> dict[str, object]:
    """The record of a runner: host, pid (its process-group id) and kernel start time."""
    return {"pgid": int(pid), "host": this_host(), "start": process_start(pid)}


def _group_has_live_member(pgid: int) -> bool:
    if not _group_exists(pgid):
        return False
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
                return True
    return False


def runner_liveness(record: Mapping[str, object] | None) -> Liveness:
    """Whether the runner a record names (``pgid``, ``host``, ``start``) still runs.

    * recorded on another host: ``other_host``;
    * its pid now belongs to another process (another start time): ``dead``;
    * its leader is gone (or a zombie) but a process of its group runs on: ``alive``;
    * a record without a start time (written before they were recorded): the group is asked.
    """
    if not record or not record.get("pgid"):
        return Liveness.dead
    pgid = int(record["pgid"])  # type: ignore[arg-type]
    host = record.get("host")
    if host and host != this_host():
        return Liveness.other_host
    start = record.get("start")
    if start is None:
        return Liveness.alive if group_alive(pgid) else Liveness.dead
    fields = _stat(pgid)
    if fields is not None and fields[0] not in ("Z", "X"):
        # The pid is in use: ours if it started when we recorded, else reused (and then our
        # group is gone: the kernel does not reuse a pid that still names a group).
        return Liveness.alive if fields[19] == str(start) else Liveness.dead
    return Liveness.alive if _group_has_live_member(pgid) else Liveness.dead


def kill_runner(record: Mapping[str, object] | None, sig: int = signal.SIGTERM) -> bool:
    """Signal the recorded runner's whole process group if it is alive on this host (never
    a process that merely reuses its pid). True if a signal was sent."""
    if runner_liveness(record) is not Liveness.alive:
        return False
    try:
        os.killpg(int(record["pgid"]), sig)  # type: ignore[index, arg-type]
    except ProcessLookupError:
        return False
    return True


#: How long a launch waits for a runner lock held by a status probe (an instant) before it
#: concludes a runner holds it (for its whole life).
PROBE_GRACE_SECONDS = 2.0


def lock_held(lock: str | os.PathLike[str]) -> bool:
    """True while another process holds the ``flock`` on ``lock`` (a detached runner's lock)."""
    path = Path(lock)
    if not path.exists():
        return False
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def launch_holding_lock(lock: str | os.PathLike[str], argv: Sequence[str], *,
                        stdout: int | IO = subprocess.DEVNULL) -> int | None:
    """Start ``argv + ["--lock-fd", N]`` detached (its own process group, :func:`child_env`),
    handing it the ``flock`` on ``lock`` taken here, so the lock is held for the child's life.
    Returns its pid (= its pgid), or None if the lock is still held after
    :data:`PROBE_GRACE_SECONDS` (another runner has it: the caller must not start one)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + PROBE_GRACE_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.02)
        proc = subprocess.Popen(
            [*argv, "--lock-fd", str(fd)], stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a cancel kills the whole tree
            close_fds=True, pass_fds=(fd,),  # the child inherits the held lock
            env=child_env({"PYTHONUNBUFFERED": "1"}),  # no credential reaches the child
        )
    finally:
        os.close(fd)  # the lock stays held by the child's copy of the descriptor
    return proc.pid
