"""Process, port and file helpers for the local deployment (standard library only)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Popen objects of the children this interpreter started, so that they are reaped
# (a killed child is a zombie until its parent waits for it).
_CHILDREN: dict[int, subprocess.Popen] = {}


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2:].split()


def start_time(pid: int) -> str | None:
    """The kernel start time of a live (not zombie) process, to tell a reused pid apart."""
    _reap(pid)
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def alive(rec: Mapping[str, Any] | None) -> bool:
    """True if the process recorded as {"pid", "start"} is still that running process."""
    if not rec or not rec.get("pid"):
        return False
    started = start_time(int(rec["pid"]))
    return started is not None and started == rec.get("start")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
            members.append(int(entry.name))
    return members


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)


def spawn(argv: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path) -> dict[str, Any]:
    """Start a process in its own session (process group), output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(map(str, argv))}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            [str(a) for a in argv], env=dict(env), cwd=str(cwd), stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    started = None
    for _ in range(50):
        started = start_time(proc.pid)
        if started is not None or proc.poll() is not None:
            break
        time.sleep(0.01)
    return {"pid": proc.pid, "start": started, "argv": [str(a) for a in argv], "log": str(log)}


def terminate(rec: Mapping[str, Any] | None, timeout: float = 10.0) -> bool:
    """Stop a process started by :func:`spawn` and everything in its process group.

    SIGTERM to the group, then SIGKILL after ``timeout``. Returns True if something was
    running. Only the recorded pid (checked against its start time) and its group are
    signalled.
    """
    if not alive(rec):
        return False
    pid = int(rec["pid"])  # type: ignore[index]
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return False
    own_group = pgid == pid

    def _signal(sig: int) -> None:
        try:
            if own_group:
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _gone() -> bool:
        if own_group:
            return not group_members(pgid)
        return not alive(rec)

    _signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone():
            break
        time.sleep(0.05)
    else:
        _signal(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not _gone():
            time.sleep(0.05)
    _reap(pid)
    return True


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None, avoid: Sequence[int] = ()) -> int:
    """``preferred`` if it can be bound on 127.0.0.1, else a fresh free port."""
    if preferred and preferred not in avoid and port_free(preferred):
        return preferred
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in avoid:
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_json(path: Path, data: Any, private: bool = False) -> None:
    text = json.dumps(data, indent=1, sort_keys=True)
    if private:
        write_private(path, text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def fill_secrets(path: Path, makers: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    """The secrets file at ``path`` with every key of ``makers`` that it lacks made now, the
    file rewritten (mode 0600) only if something was added. A deployment's generated secrets."""
    sec = read_json(path)
    missing = [k for k in makers if not sec.get(k) and sec.get(k) != {}]
    for key in missing:
        sec[key] = makers[key]()
    if missing:
        write_json(path, sec, private=True)
    return sec


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class FileLock:
    """An inter-process lock (flock) that the same LocalRucio object may re-enter."""

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._local:
            if self._depth == 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX)
                        break
                    except OSError as exc:  # pragma: no cover - EINTR
                        if exc.errno != errno.EINTR:
                            os.close(fd)
                            raise
                self._fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    os.close(self._fd)
                    self._fd = None
