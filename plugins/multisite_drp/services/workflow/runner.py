"""The detached process behind an embedded workflow: what a BPS workflow runs at a site.

``python -m multisite_drp.services.workflow.runner SUBMIT_DIR`` reads ``spec.json`` and runs

1. ``pipetask pre-exec-init-qbb`` (once per submission; init-outputs are not rewritten),
2. ``pipetask run-qbb -j N --summary`` (quanta whose outputs exist are skipped, which is
   what makes a restart rerun only the unfinished quanta),
3. the final job, always, like BPS's finalJob: merge whatever was produced into the
   site butler (``butler transfer-from-graph``), under the site's write lock.

Progress and quantum counts go to ``state.json`` after every phase.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from multisite_drp.services import middleware
from multisite_drp.services.butler import site_write_lock
from multisite_drp.services.fileio import atomic_write_json, read_json
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


def main(submit_dir: str) -> int:
    sdir = Path(submit_dir)
    spec = read_json(sdir / "spec.json")
    if spec is None:
        print(f"no spec.json in {sdir}", file=sys.stderr)
        return 2
    state_path = sdir / "state.json"
    state = read_json(state_path) or {}
    logs = sdir / "logs"
    logs.mkdir(exist_ok=True)
    attempt = int(state.get("attempt", 1))
    repo, qgraph = spec["butler_repo"], spec["qgraph"]

    def update(**kw: object) -> None:
        atomic_write_json(state_path, kw, merge=True)

    update(state=WmsStates.RUNNING.name, started=state.get("started") or time.time(), phase="pre-exec-init")
    total = read_graph(qgraph).n_quanta
    message = ""
    run_ok = False
    try:
        if not state.get("init_done"):
            middleware.run_command(middleware.pre_exec_init_qbb_argv(repo, qgraph), logs / "pre_exec_init.log")
            update(init_done=True)
        update(phase="run-qbb", counts={"total": total, "succeeded": 0, "failed": 0, "blocked": total})
        summary = sdir / f"summary.{attempt}.json"
        try:
            middleware.run_command(
                middleware.run_qbb_argv(repo, qgraph, processes=int(spec.get("processes", 2)), summary_path=summary),
                logs / f"run_qbb.{attempt}.log",
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
    try:
        with site_write_lock(repo):
            middleware.run_command(middleware.merge_argv(repo, qgraph), logs / f"merge.{attempt}.log")
        update(merged=True)
    except CommandError as exc:
        message = (message + "; " if message else "") + f"merge failed: {_short(exc)}"
        run_ok = False
    final = WmsStates.SUCCEEDED if run_ok and counts["failed"] == 0 and counts["blocked"] == 0 else WmsStates.FAILED
    update(state=final.name, message=message, finished=time.time(), phase="done")
    print(json.dumps({"name": spec["name"], "state": final.name, "counts": counts, "message": message}))
    return 0 if final is WmsStates.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
