"""The pilot wrapper around one job attempt (standard library only; run as a script).

    python -I pilot.py --exit-file FILE [--lock LOCKFILE] -- COMMAND

The relay starts this in the job's own session, with cwd = the job's fresh working
directory (``PILOT_HOME``) and stdout/stderr going to the job's log. It

* optionally takes an exclusive ``fcntl.flock`` on ``LOCKFILE`` (opened ``a+``: the
  protocol of ``multisite_drp.services.fileio.file_lock`` / ``site_write_lock``), held
  until the command ends - this is the computeSite's ``db_limit`` for final jobs;
* runs ``bash -c COMMAND`` (the work's executable with ``${IN/L}`` already replaced by the
  job's pseudo input name, as PanDA's pilot does);
* writes the exit code (128+N for a signal N) to ``FILE`` atomically, so that a relay
  restarted while the job ran can still learn how it ended, and exits with it.

Killing the session's process group (cancel, ``kill_job`` fault) kills this wrapper and
the job alike; no exit file is written then.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    exit_file = lock = None
    args = list(argv)
    while args and args[0] != "--":
        opt = args.pop(0)
        if opt == "--exit-file":
            exit_file = args.pop(0)
        elif opt == "--lock":
            lock = args.pop(0)
        else:
            print(f"localpanda pilot: unknown option {opt}", file=sys.stderr)
            return 2
    if not args or exit_file is None:
        print("usage: pilot.py --exit-file FILE [--lock LOCKFILE] -- COMMAND", file=sys.stderr)
        return 2
    command = args[1] if len(args) > 1 else ""
    lock_fh = None
    if lock:
        os.makedirs(os.path.dirname(os.path.abspath(lock)), exist_ok=True)
        print(f"localpanda pilot: waiting for the site lock {lock}", flush=True)
        t0 = time.monotonic()
        lock_fh = open(lock, "a+")  # noqa: SIM115 - held until the command ends
        fcntl.flock(lock_fh, fcntl.LOCK_EX)
        print(f"localpanda pilot: holding the site lock after {time.monotonic() - t0:.2f} s", flush=True)
    try:
        rc = subprocess.run(["bash", "-c", command], stdin=subprocess.DEVNULL, check=False).returncode
    finally:
        if lock_fh is not None:
            fcntl.flock(lock_fh, fcntl.LOCK_UN)
            lock_fh.close()
    if rc < 0:
        rc = 128 - rc
    tmp = f"{exit_file}.tmp"
    with open(tmp, "w") as fh:
        fh.write(str(rc))
    os.replace(tmp, exit_file)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
