"""The supervisor of one embedded command: ``python -m multisite_drp.services.commands.local_runner DIR``.

Reads ``DIR/spec.json``, runs its argv with :func:`middleware.run_command` (no shell; the
allow-listed child environment with the spec's ``env`` on top; output appended to the
spec's log; past ``timeout`` the whole tree is killed) and writes ``DIR/result.json``:
state, exit code, the log's last lines, a message. It holds ``DIR/runner.lock`` for its
whole life (inherited from the starter as ``--lock-fd``), which is how a status probe
knows it still runs, and the spec's ``lock`` (a butler's write lock) while the argv runs.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sys
from pathlib import Path

from multisite_drp.services import middleware
from multisite_drp.services.commands.base import CommandResult, CommandState
from multisite_drp.services.fileio import LockTimeoutError, atomic_write_json, file_lock, read_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("record_dir")
    parser.add_argument("--lock-fd", type=int, default=None)
    args = parser.parse_args(argv)
    d = Path(args.record_dir)
    fd = args.lock_fd
    if fd is None:  # started by hand: take the lock, or leave it to the supervisor that holds it
        fd = os.open(d / "runner.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{d}: another supervisor holds runner.lock", file=sys.stderr)
            return 3
    spec = read_json(d / "spec.json")
    if not spec:
        print(f"{d}: no spec.json", file=sys.stderr)
        return 2
    try:
        with contextlib.ExitStack() as held:
            if spec.get("lock"):
                held.enter_context(file_lock(spec["lock"], spec.get("lock_seconds"),
                                             f"{spec['lock']} (command {spec['name']}; limit: the campaign's "
                                             "timeouts.lock_seconds)"))
            middleware.run_command(spec["argv"], spec["log_path"], env=spec.get("env") or None,
                                   timeout=spec.get("timeout"))
        result = CommandResult(CommandState.SUCCEEDED, 0, "", "")
    except LockTimeoutError as exc:
        result = CommandResult(CommandState.FAILED, None, "", f"command {spec['name']} did not start: {exc}")
    except middleware.MiddlewareTimeoutError as exc:
        result = CommandResult(CommandState.FAILED, exc.returncode, exc.tail,
                               f"command {spec['name']} timed out after {exc.timeout:g} s and was killed")
    except middleware.MiddlewareCommandError as exc:
        result = CommandResult(CommandState.FAILED, exc.returncode, exc.tail,
                               f"command {spec['name']} failed with exit code {exc.returncode}")
    except OSError as exc:  # the executable is missing or not executable
        result = CommandResult(CommandState.FAILED, 127, "", f"command {spec['name']} could not start: {exc}")
    atomic_write_json(d / "result.json", {**result.to_dict(), "attempt": spec.get("attempt", 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
