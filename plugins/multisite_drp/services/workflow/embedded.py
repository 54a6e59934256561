"""Embedded workflow adapter: a site's QuantumGraph run locally with the real middleware.

A submission is a detached process group (``python -m
multisite_drp.services.workflow.runner SUBMIT_DIR``) that runs what a BPS workflow
runs at a Data Facility: ``pipetask pre-exec-init-qbb``, ``pipetask run-qbb -j N``,
then the final job that merges the outputs into the site butler (even after failed
quanta, as BPS's finalJob does).

All state lives in the submit directory (``spec.json``, ``state.json``, logs), never
in this process, so a worker, triggerer or scheduler restart loses nothing: the next
``status`` call reads the file and checks the process group is still alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from multisite_drp.services.fileio import atomic_write_json, read_json
from multisite_drp.services.procs import child_env, group_alive
from multisite_drp.services.workflow.base import (
    WmsStates,
    WorkflowError,
    WorkflowRef,
    WorkflowService,
    WorkflowSpec,
    WorkflowStatus,
)

__all__ = ["EmbeddedWorkflowService"]

SPEC_FILE = "spec.json"
STATE_FILE = "state.json"


class EmbeddedWorkflowService(WorkflowService):
    """Runs workflows as local detached process groups, state in the submit directory."""

    def __init__(self, site: str, processes: int = 1, python: str | None = None) -> None:
        self.site = site
        self.processes = processes
        self.python = python or sys.executable

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _ref(spec_or_state: dict) -> WorkflowRef:
        return WorkflowRef(
            run_id=spec_or_state["name"],
            name=spec_or_state["name"],
            site=spec_or_state["site"],
            submit_dir=spec_or_state["submit_dir"],
        )

    def _launch(self, submit_dir: Path) -> int:
        log = open(submit_dir / "runner.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                [self.python, "-m", "multisite_drp.services.workflow.runner", str(submit_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel kills the whole tree
                close_fds=True,
                env=child_env({"PYTHONUNBUFFERED": "1"}),  # no credential outlives the task in the runner
            )
        finally:
            log.close()
        return proc.pid

    # -- port ----------------------------------------------------------------------------------

    def find(self, spec: WorkflowSpec) -> WorkflowRef | None:
        state = read_json(Path(spec.submit_dir) / STATE_FILE)
        return self._ref(state) if state else None

    def submit(self, spec: WorkflowSpec) -> WorkflowRef:
        existing = self.find(spec)
        if existing is not None:
            return existing
        submit_dir = Path(spec.submit_dir)
        submit_dir.mkdir(parents=True, exist_ok=True)
        if not Path(spec.qgraph).is_file():
            raise WorkflowError(f"{spec.name}: quantum graph {spec.qgraph} does not exist")
        spec_dict = {
            "name": spec.name,
            "site": spec.site,
            "qgraph": str(spec.qgraph),
            "butler_repo": spec.butler_repo,
            "output_run": spec.output_run,
            "submit_dir": str(submit_dir),
            "bps_config": spec.bps_config,
            "processes": spec.processes or self.processes,
        }
        atomic_write_json(submit_dir / SPEC_FILE, spec_dict)
        pgid = self._launch(submit_dir)
        # state.json is the submission record; writing it last makes submit all-or-nothing
        # for find(): a crash before this line leaves no record and a retry submits again.
        atomic_write_json(
            submit_dir / STATE_FILE,
            {**spec_dict, "pgid": pgid, "state": WmsStates.PENDING.name, "attempt": 1,
             "submitted": time.time(), "phase": "submitted"},
            merge=True,
        )
        return self._ref(spec_dict)

    def _status_one(self, ref: WorkflowRef) -> WorkflowStatus:
        state = read_json(Path(ref.submit_dir) / STATE_FILE)
        if not state:
            return WorkflowStatus(run_id=ref.run_id, state=WmsStates.UNKNOWN, message="no state file")
        st = WmsStates[state.get("state", "UNKNOWN")]
        message = state.get("message", "")
        if st not in (WmsStates.SUCCEEDED, WmsStates.FAILED, WmsStates.DELETED) and not group_alive(state.get("pgid")):
            # The runner died without recording an end (killed, machine restart).
            st, message = WmsStates.FAILED, f"runner process {state.get('pgid')} is gone (phase {state.get('phase')})"
        counts = state.get("counts", {})
        return WorkflowStatus(
            run_id=ref.run_id,
            state=st,
            quanta_total=counts.get("total", 0),
            quanta_succeeded=counts.get("succeeded", 0),
            quanta_failed=counts.get("failed", 0),
            quanta_blocked=counts.get("blocked", 0),
            attempt=state.get("attempt", 1),
            started=state.get("started"),
            finished=state.get("finished"),
            merged=bool(state.get("merged")),
            message=message,
        )

    def status(self, refs: Sequence[WorkflowRef]) -> dict[str, WorkflowStatus]:
        return {ref.run_id: self._status_one(ref) for ref in refs}

    def cancel(self, ref: WorkflowRef) -> None:
        path = Path(ref.submit_dir) / STATE_FILE
        state = read_json(path)
        if not state:
            return
        pgid = state.get("pgid")
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGTERM)
            for _ in range(50):
                if not group_alive(pgid):
                    break
                time.sleep(0.1)
            else:
                os.killpg(pgid, signal.SIGKILL)
        if state.get("state") not in (WmsStates.SUCCEEDED.name, WmsStates.FAILED.name):
            atomic_write_json(path, {"state": WmsStates.DELETED.name, "message": "cancelled",
                                     "finished": time.time()}, merge=True)

    def restart(self, ref: WorkflowRef) -> WorkflowRef:
        """Rerun the same graph: run-qbb skips quanta whose outputs exist, so only the
        unfinished ones run again; the merge then runs over everything."""
        path = Path(ref.submit_dir) / STATE_FILE
        state = read_json(path)
        if not state:
            raise WorkflowError(f"{ref.name}: nothing to restart, no submission in {ref.submit_dir}")
        if group_alive(state.get("pgid")):
            return ref  # still running: restarting would duplicate it
        if state.get("state") == WmsStates.SUCCEEDED.name:
            return ref
        attempt = int(state.get("attempt", 1)) + 1
        atomic_write_json(path, {"state": WmsStates.PENDING.name, "attempt": attempt, "message": "",
                                 "phase": "restarted", "finished": None, "merged": False}, merge=True)
        pgid = self._launch(Path(ref.submit_dir))
        atomic_write_json(path, {"pgid": pgid}, merge=True)
        return ref
