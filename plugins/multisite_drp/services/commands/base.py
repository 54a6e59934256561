"""The command-runner port: run one stack command (graph build, merge, registration) somewhere.

Shaped like the workflow port (``services.workflow.base``, itself after ctrl_bps's
``BaseWmsService``): a spec dataclass, a small JSON-friendly ref, a handful of states.

* ``start`` is idempotent on ``spec.name`` (``campaign.names.command_name``): a spec
  whose name already exists, running or succeeded, is found, not started again, so a
  retried Airflow task finds its predecessor. A predecessor that failed (or was lost) is
  replaced by a new attempt under the same name; one whose argv differs is refused
  (:class:`CommandConflictError`): the same name must always mean the same command.
* ``status`` takes many refs of one site at once, so a trigger polls a site with one call
  per interval, however many groups it follows.
* ``result`` gives the exit code and the log's last lines; ``run`` = ``start`` + wait +
  ``result`` for the synchronous path, raising :class:`CommandFailedError` (a
  ``MiddlewareCommandError``: the same error, with the same log tail, that
  ``middleware.run_command`` raises today).

Adapters: ``embedded`` (``services.commands.embedded``: a detached local subprocess) and
``kubernetes`` (``hooks.pods``: one pod per command through the cncf-kubernetes provider,
which lives in the Airflow glue because it imports Airflow). No Airflow imports here.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from multisite_drp.errors import DRPError, InputError
from multisite_drp.services.middleware import LOG_TAIL_LINES, MiddlewareCommandError, MiddlewareTimeoutError

__all__ = [
    "LOG_TAIL_LINES",
    "TERMINAL",
    "CommandConflictError",
    "CommandFailedError",
    "CommandRef",
    "CommandResult",
    "CommandService",
    "CommandSpec",
    "CommandState",
    "Resources",
]


class CommandState(str, enum.Enum):
    """Where a command stands (a pod's phases, and what only an orchestrator needs)."""

    MISSING = "MISSING"      # no command of that name (never started, or removed)
    PENDING = "PENDING"      # accepted, not running yet (a pod being scheduled, an image pulled)
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"  # exit code 0
    FAILED = "FAILED"        # non-zero exit, killed at its time limit, cancelled
    LOST = "LOST"            # its runner vanished without an exit code (node lost, process killed)

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({CommandState.SUCCEEDED, CommandState.FAILED, CommandState.LOST, CommandState.MISSING})


class CommandConflictError(InputError, ValueError):
    """A command of that name exists with another argv: the name no longer names one command."""


class CommandFailedError(MiddlewareCommandError):
    """A command ended with a non-zero exit (or was lost): argv, log and its last lines."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """What a command asks of the machine: Kubernetes quantities (``"4"``, ``"500m"``,
    ``"32Gi"``); None leaves it to the site's connection. The embedded adapter records them."""

    cpu: str | None = None
    memory: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    ephemeral_storage: str | None = None

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class CommandSpec:
    """One stack command. ``name`` is deterministic (``campaign.names.command_name``) and is
    the idempotency key; ``argv`` is the exact argument vector (never a shell string);
    ``log_path`` is where its output is kept (the embedded adapter writes it; the pod
    adapter's log is the pod's, copied there when ``result`` is read and the path is
    reachable). ``labels``: what the name is made of (campaign, step, site, generation,
    group, kind), for the pod's labels and the report. ``env``: plain settings for the
    command (paths, switches), never a secret (refused, as ``procs.child_env`` does).
    ``lock``: a file the runner holds (``flock``) for the command's whole life, waiting at
    most ``lock_seconds`` for it (a local butler's write lock, for a merge into an embedded
    site's repository: the lock outlives the task that started the command, so the task may
    defer). A pod cannot hold a lock on the worker's disk: the pod adapter refuses one."""

    name: str
    site: str
    kind: str
    argv: tuple[str, ...]
    log_path: str
    timeout: float | None = None
    resources: Resources | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    lock: str | None = None
    lock_seconds: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.argv, str) or not self.argv:
            raise TypeError(f"{self.name}: argv must be a non-empty sequence of strings, not a shell string")
        object.__setattr__(self, "argv", tuple(str(a) for a in self.argv))
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"{self.name}: timeout must be > 0 seconds or None, got {self.timeout!r}")

    @property
    def argv_digest(self) -> str:
        """SHA-256 of the argv (JSON): how a found predecessor is checked to be the same command."""
        return hashlib.sha256(json.dumps(list(self.argv)).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["argv"] = list(self.argv)
        d["labels"] = dict(self.labels)
        d["env"] = dict(self.env)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CommandSpec:
        data = dict(data)
        res = data.get("resources")
        data["resources"] = Resources(**res) if res else None
        data["argv"] = tuple(data["argv"])
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class CommandRef:
    """A small, JSON-friendly handle (what XCom and a trigger carry; no secret): the
    command's name, site and kind, where the adapter put it (a record directory, a pod
    ``namespace/name``), which attempt, and whether ``start`` found it rather than started it."""

    name: str
    site: str
    kind: str
    handle: str
    log_path: str
    attempt: int = 1
    found: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CommandRef:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """How a command ended: its state, exit code (None while running or when lost), the
    last lines of its log, and a message in words."""

    state: CommandState
    exit_code: int | None
    tail: str = ""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "state": self.state.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CommandResult:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in fields}, "state": CommandState(data["state"])})


class CommandService(abc.ABC):
    """One per site. Implementations: embedded (a local detached subprocess), kubernetes (a pod)."""

    #: Seconds between two status calls while ``run`` waits.
    wait_interval: float = 0.1

    @abc.abstractmethod
    def find(self, spec: CommandSpec) -> CommandRef | None:
        """The command already started under ``spec.name``, if any (a different argv: refused)."""

    @abc.abstractmethod
    def start(self, spec: CommandSpec) -> CommandRef:
        """Start the command, or return the one of the same name that runs or succeeded
        (``found``); a failed or lost one is replaced by a new attempt under the same name."""

    @abc.abstractmethod
    def status(self, refs: Sequence[CommandRef]) -> dict[str, CommandState]:
        """States of many commands of this site in one call, keyed by name."""

    @abc.abstractmethod
    def result(self, ref: CommandRef) -> CommandResult:
        """Exit code and log tail of one command."""

    @abc.abstractmethod
    def cancel(self, ref: CommandRef) -> None:
        """Stop the command and everything it started. Safe on a finished one."""

    @abc.abstractmethod
    def discard(self, ref: CommandRef) -> None:
        """Forget a command that succeeded, so the next ``start`` of its name runs it as a new
        attempt (its output is gone or stale). Does nothing to one that has not succeeded."""

    @staticmethod
    def check(ref: CommandRef, result: CommandResult, argv: Sequence[str], timeout: float | None) -> None:
        """Raise :class:`CommandFailedError` (or ``MiddlewareTimeoutError``) unless it succeeded."""
        if result.state is CommandState.SUCCEEDED:
            return
        if "timed out" in result.message and timeout:
            raise MiddlewareTimeoutError(argv, timeout, ref.log_path, result.tail)  # type: ignore[arg-type]
        code = result.exit_code if result.exit_code is not None else -1
        raise CommandFailedError(argv, code, ref.log_path, (result.message + "\n" + result.tail).strip())  # type: ignore[arg-type]

    def begin(self, spec: CommandSpec, *, again: bool = False) -> CommandRef:
        """``start``; with ``again`` (the caller knows a succeeded predecessor's output is gone
        or stale) that predecessor is discarded first, so the command runs anew. What ``run``
        and a deferring operator (``operators.commands``) both start with."""
        if again:
            found = self.find(spec)
            if found is not None and self.status([found])[found.name] is CommandState.SUCCEEDED:
                self.discard(found)
        return self.start(spec)

    def wait(self, ref: CommandRef, timeout: float | None = None) -> CommandState:
        """Poll ``status`` until the command ends (``timeout``: give up with the state so far)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.status([ref])[ref.name]
            if state.terminal or (deadline is not None and time.monotonic() >= deadline):
                return state
            time.sleep(self.wait_interval)

    def run(self, spec: CommandSpec, *, again: bool = False) -> CommandResult:
        """``start`` + wait + ``result``: the synchronous path. Raises :class:`CommandFailedError`
        with the log's tail on failure, ``MiddlewareTimeoutError`` past ``spec.timeout``.

        A predecessor of the same name that runs is waited for, one that succeeded is found
        (not run again), one that failed is replaced by a new attempt. ``again``: the caller
        knows the succeeded predecessor's output is gone or stale, so it is discarded and the
        command runs anew."""
        ref = self.begin(spec, again=again)
        try:
            self.wait(ref)
        except BaseException:  # interrupted (the task killed): take the command down with us
            self.cancel(ref)
            raise
        result = self.result(ref)
        self.check(ref, result, spec.argv, spec.timeout)
        return result


class CommandError(DRPError, RuntimeError):
    """The command runner refused or lost a request."""
