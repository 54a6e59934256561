"""Small durable-file helpers shared by the embedded adapters.

State files are the durable truth of the embedded services, so they are written
atomically (temp file + fsync + rename) and merged under an exclusive lock: two
processes updating the same state file never lose each other's keys.

Every lock wait is bounded: :func:`file_lock` raises :class:`LockTimeoutError` (naming
the lock file, the limit and the setting that gives it) instead of waiting for ever
behind a holder that hangs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from multisite_drp.errors import TransientError

__all__ = ["STATE_LOCK_SECONDS", "LockTimeoutError", "adler32_of", "atomic_write_json", "file_lock", "read_json",
           "sha256_of"]

#: Longest wait for the lock of a state file: it guards a write of a few milliseconds.
STATE_LOCK_SECONDS = 60.0


class LockTimeoutError(TransientError, TimeoutError):
    """A lock was not obtained within its limit; the message names the lock file and the limit."""


def _poll_lock(fd: int, path: Path, timeout: float | None, what: str) -> None:
    """Take an exclusive flock on ``fd`` within ``timeout`` seconds (None: wait for ever)."""
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeoutError(f"{path}: {what} still held by another process after {timeout:g} s") from None
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
            delay = min(delay * 2, 0.5)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], timeout: float | None = None, what: str = "the lock") -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if missing), released on exit.

    ``timeout``: seconds to wait for another holder before :class:`LockTimeoutError`
    (``what`` names the lock and the setting that limits it in that message); None waits
    for ever. The kernel releases the lock when its holder dies, however it dies.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+") as fh:
        _poll_lock(fh.fileno(), p, timeout, what)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None if the file does not exist."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def atomic_write_json(path: str | os.PathLike[str], data: dict[str, Any], *, merge: bool = False) -> dict[str, Any]:
    """Write ``data`` to ``path`` atomically; with ``merge`` update the existing object."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(p.with_name(p.name + ".lock"), STATE_LOCK_SECONDS, "the state file's lock"):
        if merge:
            data = {**(read_json(p) or {}), **data}
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=2, sort_keys=True, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, p)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return data


def adler32_of(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Rucio's default checksum: adler32 as 8 lowercase hex digits."""
    value = 1
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            value = zlib.adler32(block, value)
    return f"{value & 0xFFFFFFFF:08x}"


def sha256_of(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
