"""The detached process behind an embedded workflow: what a BPS workflow runs at a site.

``python -m multisite_drp.services.workflow.runner SUBMIT_DIR`` reads ``spec.json`` and runs

1. ``pipetask pre-exec-init-qbb`` (once per submission; init-outputs are not rewritten),
2. ``pipetask run-qbb -j N --summary`` (quanta whose outputs exist are skipped, which is
   what makes a restart rerun only the unfinished quanta),
3. the final job, always, like BPS's finalJob: merge whatever was produced into the
   site butler (``butler transfer-from-graph``), under the site's write lock.

Progress and quantum counts go to ``state.json`` after every phase.

The runner holds the submit directory's ``runner.lock`` for its whole life (inherited
from the submitter as ``--lock-fd``, or taken here when started by hand), so two runners
never work in one directory: a second one exits at once with code 3. It records its own
identity (host, pid, kernel start time) on start. Every command and the site's write
lock are waited for at most the limits in ``spec.json``'s ``timeouts`` (the campaign's
``timeouts.command_seconds`` / ``lock_seconds``); a limit reached fails the phase with a
message naming the command or the lock and the limit.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from pathlib import Path

from multisite_drp.crashpoints import crashpoint
from multisite_drp.services import middleware
from multisite_drp.services.butler import DEFAULT_LOCK_SECONDS, site_write_lock
from multisite_drp.services.fileio import LockTimeoutError, atomic_write_json, read_json
from multisite_drp.services.procs import identity
from multisite_drp.services.qgraph import read_graph
from multisite_drp.services.workflow.base import WmsStates

CommandError = middleware.MiddlewareCommandError


def _short(exc: CommandError) -> str:
    lines = [ln for ln in exc.tail.splitlines() if ln.strip()]
    return f"exit {exc.returncode}, see {exc.log_path}: " + (lines[-1][:300] if lines else "")


def summarise(summary_path: Path, total: int) -> dict[str, int]:
    """Quantum counts from run-qbb's ``--summary`` report (lsst.pipe.base Report).

    lsst.pipe.base reports a quantum that ran (or was skipped because its outputs exist,
    on a restart) as ``success``, one that raised or timed out as ``failure``/``timeout``,
    and one not run because an upstream quantum failed as ``skipped``: that one is
    blocked, as is any quantum the report does not list.
    """
    report = read_json(summary_path) or {}
    succeeded = failed = 0
    for q in report.get("quantaReports", []):
        status = q.get("status", "success")
        if status == "success":
            succeeded += 1
        elif status in ("failure", "timeout"):
            failed += 1
    summary = report.get("qgraphSummary") or {}
    total = total or int(summary.get("numQuanta", 0) or 0)
    blocked = max(total - succeeded - failed, 0)
    return {"total": total, "succeeded": succeeded, "failed": failed, "blocked": blocked}


def _hold_runner_lock(sdir: Path, lock_fd: int | None) -> int | None:
    """The runner lock's descriptor, held; None if another runner holds it."""
    if lock_fd is not None:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # already ours (inherited): a no-op
        return lock_fd
    fd = os.open(sdir / "runner.lock", os.O_RDWR | os.O_CREAT, 0o644)
    for _ in range(20):  # a status probe holds it for microseconds
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            time.sleep(0.1)
    os.close(fd)
    return None


def main(submit_dir: str, lock_fd: int | None = None) -> int:
    sdir = Path(submit_dir)
    spec = read_json(sdir / "spec.json")
    if spec is None:
        print(f"no spec.json in {sdir}", file=sys.stderr)
        return 2
    if _hold_runner_lock(sdir, lock_fd) is None:
        print(f"another runner holds {sdir / 'runner.lock'}: not running a second one", file=sys.stderr)
        return 3
    state_path = sdir / "state.json"
    state = read_json(state_path) or {}
    logs = sdir / "logs"
    logs.mkdir(exist_ok=True)
    attempt = int(state.get("attempt", 1))
    repo, qgraph = spec["butler_repo"], spec["qgraph"]
    limits = spec.get("timeouts") or {}
    command_seconds = limits.get("command_seconds")
    lock_seconds = limits.get("lock_seconds", DEFAULT_LOCK_SECONDS)

    def update(**kw: object) -> None:
        atomic_write_json(state_path, kw, merge=True)

    print(f"runner started: pid {os.getpid()}, attempt {attempt}, {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    update(state=WmsStates.RUNNING.name, started=state.get("started") or time.time(), phase="pre-exec-init",
           **identity(os.getpid()))
    total = read_graph(qgraph).n_quanta
    message = ""
    run_ok = False
    try:
        if not state.get("init_done"):
            middleware.run_command(middleware.pre_exec_init_qbb_argv(repo, qgraph), logs / "pre_exec_init.log",
                                   timeout=command_seconds)
            update(init_done=True)
        update(phase="run-qbb", counts={"total": total, "succeeded": 0, "failed": 0, "blocked": total})
        summary = sdir / f"summary.{attempt}.json"
        try:
            middleware.run_command(
                middleware.run_qbb_argv(repo, qgraph, processes=int(spec.get("processes", 2)), summary_path=summary),
                logs / f"run_qbb.{attempt}.log",
                timeout=command_seconds,
            )
            run_ok = True
        except CommandError as exc:
            message = f"run-qbb failed: {_short(exc)}"
        counts = summarise(summary, total)
        update(counts=counts)
    except CommandError as exc:
        message = f"pre-exec-init failed: {_short(exc)}"
        update(state=WmsStates.FAILED.name, message=message, finished=time.time(), phase="failed")
        return 1

    # Final job: merge what exists, even after failures (partial outputs are kept).
    update(phase="merge")
    crashpoint("runner.before_merge")
    try:
        with site_write_lock(repo, lock_seconds):
            middleware.run_command(middleware.merge_argv(repo, qgraph), logs / f"merge.{attempt}.log",
                                   timeout=command_seconds)
        crashpoint("runner.after_merge")
        update(merged=True)
    except CommandError as exc:
        message = (message + "; " if message else "") + f"merge failed: {_short(exc)}"
        run_ok = False
    except LockTimeoutError as exc:
        message = (message + "; " if message else "") + f"merge not run: {exc}"
        run_ok = False
    final = WmsStates.SUCCEEDED if run_ok and counts["failed"] == 0 and counts["blocked"] == 0 else WmsStates.FAILED
    update(state=final.name, message=message, finished=time.time(), phase="done")
    print(json.dumps({"name": spec["name"], "state": final.name, "counts": counts, "message": message}))
    return 0 if final is WmsStates.SUCCEEDED else 1


if __name__ == "__main__":
    _p = argparse.ArgumentParser(prog="python -m multisite_drp.services.workflow.runner")
    _p.add_argument("submit_dir")
    _p.add_argument("--lock-fd", type=int, default=None, help="the runner lock, inherited already held")
    _a = _p.parse_args()
    sys.exit(main(_a.submit_dir, _a.lock_fd))
