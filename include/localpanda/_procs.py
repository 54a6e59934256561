"""Process, port and file helpers for the local PanDA relay (standard library only).

The same conventions as ``localrucio._procs``: a process is recorded as ``{"pid", "start"}``
(``start`` is the kernel start time from ``/proc/<pid>/stat``, so a reused pid is told
apart), started in its own session (process group) and stopped by that group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The process, port, JSON and lock helpers are localrucio's (one implementation); this module
# adds what the relay needs besides: signalling a job's group, thread-safe atomic writes.
from localrucio._procs import (  # noqa: F401 - re-exported for the relay's modules
    FileLock,
    alive,
    group_members,
    port_free,
    read_json,
    spawn,
    start_time,
    tail,
    terminate,
)


def kill_group(rec: Mapping[str, Any] | None, sig: int = signal.SIGKILL) -> bool:
    """Signal the process group led by the recorded process, if that process still lives."""
    if not alive(rec):
        return False
    try:
        os.killpg(int(rec["pid"]), sig)  # type: ignore[index]
    except (ProcessLookupError, PermissionError):
        return False
    return True


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if it can be bound on 127.0.0.1, else a fresh free port."""
    if preferred and port_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_text(path: Path, text: str, private: bool = False) -> None:
    """Write ``text`` to ``path`` atomically (same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any, private: bool = False) -> None:
    write_text(path, json.dumps(data, indent=1, sort_keys=True), private=private)
