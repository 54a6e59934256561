"""Embedded workflow adapter: a site's QuantumGraph run locally with the real middleware.

A submission is a detached process group (``python -m
multisite_drp.services.workflow.runner SUBMIT_DIR``) that runs what a BPS workflow
runs at a Data Facility: ``pipetask pre-exec-init-qbb``, ``pipetask run-qbb -j N``,
then the final job that merges the outputs into the site butler (even after failed
quanta, as BPS's finalJob does).

All state lives in the submit directory (``spec.json``, ``state.json``, logs), never
in this process, so a worker, triggerer or scheduler restart loses nothing: the next
``status`` call reads the file and checks the runner is still alive.

Crash safety (a worker may die at any line):

* ``submit`` writes the complete record (name, spec, ``phase: starting``) atomically
  *before* it starts the runner, then the runner's identity (host, pid, kernel start
  time). A record still ``starting`` whose runner is not alive is resumed by the next
  ``submit`` or ``restart`` (same attempt): no manual clean-up, no KeyError.
* ``submit``, ``restart`` and ``cancel`` of one workflow take the submit directory's
  lock (``submit.lock``, waited for at most ``timeouts.submit_lock_seconds``).
* The runner holds ``runner.lock`` for its whole life: the submitter takes it and the
  runner inherits it, so there is no moment when a started runner does not hold it, and
  a second runner in the same directory refuses to run. The kernel releases it when the
  runner dies, however it dies.
* Liveness is the runner lock, then the recorded identity
  (:func:`multisite_drp.services.procs.runner_liveness`): a pid now used by another
  process is dead. A runner recorded on **another host** sharing the file system is
  neither: ``status`` reports UNKNOWN (not terminal, so a wait goes on, and it sees the
  runner's end in the state file when it finishes there), and ``submit``/``restart``/
  ``cancel`` raise a ``WorkflowError`` naming that host rather than assume it dead and
  start a second runner.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from multisite_drp.campaign.config import TimeoutSettings
from multisite_drp.crashpoints import crashpoint
from multisite_drp.services.fileio import atomic_write_json, file_lock, read_json
from multisite_drp.services.procs import (
    Liveness,
    identity,
    kill_runner,
    launch_holding_lock,
    lock_held,
    runner_liveness,
    this_host,
)
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
SUBMIT_LOCK = "submit.lock"
RUNNER_LOCK = "runner.lock"
#: Phases of a record whose runner has not (yet) confirmed it runs.
STARTING_PHASES = ("starting", "restarting")
#: The limits a runner gets when the service is given none (the campaign's defaults).
DEFAULT_TIMEOUTS = TimeoutSettings().model_dump()
#: Seconds a launch waits for the runner lock, which a status probe may hold for an instant.
#: Seconds a cancelled runner gets to stop after SIGTERM before SIGKILL.
CANCEL_GRACE_SECONDS = 5.0
#: Seconds a runner that has recorded its end (FAILED, DELETED) gets to exit before a restart
#: gives up on it: status already reads terminal while its Python is still shutting down.
EXIT_GRACE_SECONDS = 60.0


def runner_busy(submit_dir: str | os.PathLike[str]) -> bool:
    """True while a runner holds the directory's runner lock."""
    return lock_held(Path(submit_dir) / RUNNER_LOCK)


class EmbeddedWorkflowService(WorkflowService):
    """Runs workflows as local detached process groups, state in the submit directory.

    ``timeouts``: the campaign's ``timeouts`` (``command_seconds``, ``lock_seconds``,
    ``submit_lock_seconds``); missing keys take the defaults.
    """

    def __init__(self, site: str, processes: int = 1, python: str | None = None,
                 timeouts: Mapping[str, float] | None = None) -> None:
        self.site = site
        self.processes = processes
        self.python = python or sys.executable
        self.timeouts = {**DEFAULT_TIMEOUTS, **(timeouts or {})}

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _ref(spec_or_state: dict) -> WorkflowRef:
        return WorkflowRef(
            run_id=spec_or_state["name"],
            name=spec_or_state["name"],
            site=spec_or_state["site"],
            submit_dir=spec_or_state["submit_dir"],
        )

    @contextlib.contextmanager
    def _submit_lock(self, submit_dir: Path, name: str) -> Iterator[None]:
        submit_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(submit_dir / SUBMIT_LOCK, self.timeouts["submit_lock_seconds"],
                       f"the submit lock of workflow {name} (limit: the campaign's timeouts.submit_lock_seconds)"):
            yield

    @staticmethod
    def _liveness(state: Mapping, submit_dir: Path) -> Liveness:
        if runner_busy(submit_dir):
            return Liveness.alive
        return runner_liveness(state)

    @staticmethod
    def _elsewhere(state: Mapping, what: str) -> WorkflowError:
        return WorkflowError(
            f"{state.get('name')}: cannot {what}: its runner was recorded on host {state.get('host')!r} and this is "
            f"{this_host()!r}, which cannot tell whether it still runs; {what} it on {state.get('host')!r}, or, if "
            f"that host is gone for good, remove {Path(state['submit_dir']) / STATE_FILE}'s 'host' and try again"
        )

    def _launch(self, submit_dir: Path) -> int:
        """Start the runner holding the directory's runner lock; return its pid (= its pgid).
        A status probe (runner_busy) holds the lock for an instant; a runner holds it for its life."""
        with open(submit_dir / "runner.log", "ab") as log:
            pid = launch_holding_lock(submit_dir / RUNNER_LOCK,
                                      [self.python, "-m", "multisite_drp.services.workflow.runner", str(submit_dir)],
                                      stdout=log)
        if pid is None:
            raise WorkflowError(f"{submit_dir}: a runner already holds {RUNNER_LOCK}; not starting another")
        return pid

    def _start(self, submit_dir: Path) -> None:
        """Launch the runner, then record who it is (the runner records itself too)."""
        pid = self._launch(submit_dir)
        crashpoint("submit.after_launch")
        atomic_write_json(submit_dir / STATE_FILE, identity(pid), merge=True)

    # -- port ----------------------------------------------------------------------------------

    def find(self, spec: WorkflowSpec) -> WorkflowRef | None:
        state = read_json(Path(spec.submit_dir) / STATE_FILE)
        # A record without a name was cut short by an older version's crash: no submission.
        return self._ref(state) if state and state.get("name") else None

    def submit(self, spec: WorkflowSpec) -> WorkflowRef:
        submit_dir = Path(spec.submit_dir)
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
            "timeouts": {k: self.timeouts[k] for k in ("command_seconds", "lock_seconds")},
        }
        state_path = submit_dir / STATE_FILE
        with self._submit_lock(submit_dir, spec.name):
            state = read_json(state_path) or {}
            if state.get("name"):
                if state.get("phase") not in STARTING_PHASES:
                    return self._ref(state)  # submitted by an earlier try
                live = self._liveness(state, submit_dir)
                if live is Liveness.other_host:
                    raise self._elsewhere(state, "submit")
                if live is Liveness.alive:
                    return self._ref(state)
                # An earlier try recorded the submission but its runner never ran: resume it.
            else:
                atomic_write_json(submit_dir / SPEC_FILE, spec_dict)
                # The complete record, before anything is started (replacing a nameless one).
                atomic_write_json(state_path, {**spec_dict, "state": WmsStates.PENDING.name, "attempt": 1,
                                               "submitted": time.time(), "phase": "starting"})
                crashpoint("submit.after_record")
            self._start(submit_dir)
        return self._ref(spec_dict)

    def _status_one(self, ref: WorkflowRef) -> WorkflowStatus:
        sdir = Path(ref.submit_dir)
        state = read_json(sdir / STATE_FILE)
        if not state or not state.get("name"):
            return WorkflowStatus(run_id=ref.run_id, state=WmsStates.UNKNOWN, message="no submission record")
        st = WmsStates[state.get("state", "UNKNOWN")]
        message = state.get("message", "")
        if st not in (WmsStates.SUCCEEDED, WmsStates.FAILED, WmsStates.DELETED):
            live = self._liveness(state, sdir)
            if live is Liveness.other_host:
                st, message = WmsStates.UNKNOWN, (
                    f"runner recorded on host {state.get('host')!r}; this is {this_host()!r}, which cannot see it "
                    f"(phase {state.get('phase')}): its end shows here when it finishes there")
            elif live is Liveness.dead and state.get("phase") in STARTING_PHASES:
                st, message = WmsStates.FAILED, (
                    f"the submission stopped before its runner ran (phase {state.get('phase')}); "
                    "submit or restart starts it")
            elif live is Liveness.dead:
                # The runner died without recording an end (killed, machine restart).
                st, message = WmsStates.FAILED, (f"runner process {state.get('pgid')} is gone "
                                                 f"(phase {state.get('phase')})")
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
        sdir = Path(ref.submit_dir)
        path = sdir / STATE_FILE
        with self._submit_lock(sdir, ref.name):
            state = read_json(path)
            if not state:
                return
            live = self._liveness(state, sdir)
            if live is Liveness.other_host:
                raise self._elsewhere(state, "cancel")
            if live is Liveness.alive:
                deadline = time.monotonic() + CANCEL_GRACE_SECONDS
                while not state.get("pgid") and time.monotonic() < deadline:  # started, not yet recorded
                    time.sleep(0.1)
                    state = read_json(path) or state
                kill_runner(state, signal.SIGTERM)
                while self._liveness(state, sdir) is Liveness.alive and time.monotonic() < deadline:
                    time.sleep(0.1)
                if self._liveness(state, sdir) is Liveness.alive:
                    kill_runner(state, signal.SIGKILL)
            if state.get("state") not in (WmsStates.SUCCEEDED.name, WmsStates.FAILED.name):
                atomic_write_json(path, {"state": WmsStates.DELETED.name, "message": "cancelled",
                                         "finished": time.time()}, merge=True)

    def restart(self, ref: WorkflowRef) -> WorkflowRef:
        """Rerun the same graph: run-qbb skips quanta whose outputs exist, so only the
        unfinished ones run again; the merge then runs over everything. A submission whose
        runner never ran (still ``starting``) is started as the same attempt."""
        sdir = Path(ref.submit_dir)
        path = sdir / STATE_FILE
        with self._submit_lock(sdir, ref.name):
            state = read_json(path)
            if not state or not state.get("name"):
                raise WorkflowError(f"{ref.name}: nothing to restart, no submission in {ref.submit_dir}")
            live = self._liveness(state, sdir)
            if live is Liveness.other_host:
                raise self._elsewhere(state, "restart")
            if live is Liveness.alive and state.get("state") in (WmsStates.FAILED.name, WmsStates.DELETED.name):
                # Its end is recorded (what status reports) but the process is still exiting: a
                # restart asked now must wait for it, not be dropped as "still running".
                deadline = time.monotonic() + EXIT_GRACE_SECONDS
                while live is Liveness.alive and time.monotonic() < deadline:
                    time.sleep(0.1)
                    live = self._liveness(state, sdir)
                if live is Liveness.alive:
                    raise WorkflowError(
                        f"{ref.name}: its runner recorded state {state['state']} but has not exited after "
                        f"{EXIT_GRACE_SECONDS:.0f} s (pgid {state.get('pgid')}); restart it once it has")
            if live is Liveness.alive:
                return ref  # still running: restarting would duplicate it
            if state.get("state") == WmsStates.SUCCEEDED.name:
                return ref
            if state.get("phase") not in STARTING_PHASES:
                attempt = int(state.get("attempt", 1)) + 1
                atomic_write_json(path, {"state": WmsStates.PENDING.name, "attempt": attempt, "message": "",
                                         "phase": "restarting", "finished": None, "merged": False}, merge=True)
            self._start(sdir)
        return ref
