"""The embedded command runner: each command a detached local subprocess, as today.

A command's record is a directory named after it (``campaign.names.command_dir`` /
``<name>``) holding ``spec.json`` (the command, with its argv's digest), ``runner.json``
(who runs it: host, pid, kernel start time, :func:`procs.identity`) and, once it has
ended, ``result.json`` (state, exit code, the log's last lines). The command runs under
a small supervisor (``python -m multisite_drp.services.commands.local_runner``) that
holds the directory's ``runner.lock`` for its whole life, runs the argv with
:func:`middleware.run_command` (the allow-listed child environment, the log file, the
time limit killing the whole process tree) and writes ``result.json``. The supervisor
is the leader of its own process group (``start_new_session``), so ``cancel`` signals
the whole tree and a task that dies leaves no orphan without a record.

So the outcome is today's: the same argv, the same log file, the same error with the
same tail; what is new is that a second ``start`` of the same name finds the first
(running or succeeded) instead of running it twice, and that a trigger can follow it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from multisite_drp.services.commands.base import (
    CommandConflictError,
    CommandError,
    CommandRef,
    CommandResult,
    CommandService,
    CommandSpec,
    CommandState,
)
from multisite_drp.services.fileio import atomic_write_json, file_lock, read_json
from multisite_drp.services.middleware import LOG_TAIL_LINES
from multisite_drp.services.procs import (
    Liveness,
    child_env,
    identity,
    kill_runner,
    launch_holding_lock,
    lock_held,
    runner_liveness,
)

__all__ = ["EmbeddedCommandService"]

SPEC_FILE = "spec.json"
RUNNER_FILE = "runner.json"
RESULT_FILE = "result.json"
RUNNER_LOCK = "runner.lock"
START_LOCK = "start.lock"
#: A status probe holds the runner lock for an instant; a launch waits this long for it.
#: Longest wait for another ``start`` or ``cancel`` of the same name (each takes milliseconds).
START_LOCK_SECONDS = 120.0


def _busy(record_dir: Path) -> bool:
    """True while a supervisor holds the record's runner lock."""
    return lock_held(record_dir / RUNNER_LOCK)


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


class EmbeddedCommandService(CommandService):
    """Runs a site's commands as local detached process groups, records under ``root``."""

    wait_interval = 0.05

    def __init__(self, site: str, root: str | os.PathLike[str], python: str | None = None) -> None:
        self.site = site
        self.root = Path(root)
        self.python = python or sys.executable

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _ref(self, spec: Mapping, attempt: int, found: bool) -> CommandRef:
        return CommandRef(name=spec["name"], site=spec["site"], kind=spec["kind"], handle=str(self._dir(spec["name"])),
                          log_path=spec["log_path"], attempt=attempt, found=found)

    @staticmethod
    def _same(spec: CommandSpec, recorded: Mapping, where: Path) -> None:
        if recorded.get("argv_digest") != spec.argv_digest:
            raise CommandConflictError(
                f"command {spec.name}: {where / SPEC_FILE} records another argv ({recorded.get('argv')}) than the "
                f"one asked for ({list(spec.argv)}); a command name must always mean the same command (was the "
                "campaign file changed without a new generation?)")

    # -- port ----------------------------------------------------------------------------------

    def find(self, spec: CommandSpec) -> CommandRef | None:
        d = self._dir(spec.name)
        recorded = read_json(d / SPEC_FILE)
        if not recorded:
            return None
        self._same(spec, recorded, d)
        return self._ref(recorded, int(recorded.get("attempt", 1)), found=True)

    def start(self, spec: CommandSpec) -> CommandRef:
        if spec.site != self.site:
            raise CommandError(f"command {spec.name} is for site {spec.site}, this runner serves {self.site}")
        child_env(spec.env)  # a secret in the command's env is refused before anything starts
        d = self._dir(spec.name)
        d.mkdir(parents=True, exist_ok=True)
        with file_lock(d / START_LOCK, START_LOCK_SECONDS, f"the start lock of command {spec.name}"):
            recorded = read_json(d / SPEC_FILE)
            attempt = 1
            if recorded:
                self._same(spec, recorded, d)
                attempt = int(recorded.get("attempt", 1))
                state = self._state(d)
                if state not in (CommandState.FAILED, CommandState.LOST, CommandState.MISSING):
                    return self._ref(recorded, attempt, found=True)
                # Failed or lost: a new attempt under the same name; the old result is kept aside.
                with contextlib.suppress(FileNotFoundError):
                    (d / RESULT_FILE).rename(d / f"result.{attempt}.json")
                attempt += 1
            record = {**spec.to_dict(), "argv_digest": spec.argv_digest, "attempt": attempt, "started": time.time()}
            atomic_write_json(d / SPEC_FILE, record)
            pid = self._launch(d)
            atomic_write_json(d / RUNNER_FILE, {**identity(pid), "recorded": time.time()})
        return self._ref(record, attempt, found=False)

    def _launch(self, d: Path) -> int:
        pid = launch_holding_lock(d / RUNNER_LOCK,
                                  [self.python, "-m", "multisite_drp.services.commands.local_runner", str(d)])
        if pid is None:
            raise CommandError(f"{d}: a runner already holds {RUNNER_LOCK}; not starting another")
        return pid

    def _state(self, d: Path) -> CommandState:
        result = read_json(d / RESULT_FILE)
        if result:
            return CommandState(result["state"])
        spec = read_json(d / SPEC_FILE)
        if not spec:
            return CommandState.MISSING
        if _busy(d):
            return CommandState.RUNNING
        runner = read_json(d / RUNNER_FILE)
        if runner is None or float(runner.get("recorded", 0)) < float(spec.get("started", 0)):
            # Launched, its record not written yet (``start`` writes it just after the launch);
            # a start that died in between leaves no runner: lost after a minute.
            fresh = time.time() - float(spec.get("started", 0)) < 60.0
            return CommandState.PENDING if fresh else CommandState.LOST
        live = runner_liveness(runner)
        if live is Liveness.other_host:
            return CommandState.RUNNING  # this host cannot tell; the host it runs on sees it end
        # The lock is free: the supervisor has ended (its result written just now) or is gone.
        result = read_json(d / RESULT_FILE)
        if result:
            return CommandState(result["state"])
        return CommandState.RUNNING if live is Liveness.alive else CommandState.LOST

    def status(self, refs: Sequence[CommandRef]) -> dict[str, CommandState]:
        return {r.name: self._state(self._dir(r.name)) for r in refs}

    def result(self, ref: CommandRef) -> CommandResult:
        d = self._dir(ref.name)
        data = read_json(d / RESULT_FILE)
        if data:
            return CommandResult.from_dict(data)
        state = self._state(d)
        tail = _tail(Path(ref.log_path))
        if state is CommandState.LOST:
            return CommandResult(state, None, tail, f"command {ref.name}: its runner is gone without an exit code")
        return CommandResult(state, None, tail, "")

    def discard(self, ref: CommandRef) -> None:
        """The success kept aside (``result.<attempt>.discarded.json``) and the record marked
        LOST, which ``start`` replaces by a new attempt under the same name."""
        d = self._dir(ref.name)
        with file_lock(d / START_LOCK, START_LOCK_SECONDS, f"the start lock of command {ref.name}"):
            data = read_json(d / RESULT_FILE)
            if not data or data.get("state") != CommandState.SUCCEEDED.value:
                return
            attempt = int((read_json(d / SPEC_FILE) or {}).get("attempt", 1))
            (d / RESULT_FILE).rename(d / f"result.{attempt}.discarded.json")
            atomic_write_json(d / RESULT_FILE, {**CommandResult(
                CommandState.LOST, None, "", f"command {ref.name}: attempt {attempt} succeeded, discarded (its "
                "output was gone or stale)").to_dict(), "attempt": attempt})

    def cancel(self, ref: CommandRef) -> None:
        d = self._dir(ref.name)
        with file_lock(d / START_LOCK, START_LOCK_SECONDS, f"the start lock of command {ref.name}"):
            if (d / RESULT_FILE).exists():
                return
            sent = kill_runner(read_json(d / RUNNER_FILE), signal.SIGTERM)
            deadline = time.monotonic() + 10.0
            while sent and _busy(d) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _busy(d):
                kill_runner(read_json(d / RUNNER_FILE), signal.SIGKILL)
            if not (d / RESULT_FILE).exists():
                atomic_write_json(d / RESULT_FILE, CommandResult(
                    CommandState.FAILED, -signal.SIGTERM, _tail(Path(ref.log_path)),
                    f"command {ref.name}: cancelled").to_dict())
