"""The workflow port: submit a site's QuantumGraph, follow it, cancel or restart it.

Shaped like lsst.ctrl.bps's ``BaseWmsService`` (submit, report, status, cancel,
restart) with two additions an orchestrator needs:

* ``find`` looks a workflow up by its deterministic name, so a retried Airflow task
  finds the submission its earlier try made instead of making a second one;
* ``status`` takes many workflows at once, so a trigger polls a whole site with one
  call per interval instead of one call per workflow.

States are ctrl_bps's ``WmsStates``, mirrored here member for member (same names, same
values; ``tests/services/test_workflow_states.py`` holds the two equal): importing
``lsst.ctrl.bps`` runs its package ``__init__``, which loads ``lsst.daf.butler``,
``lsst.pipe.base`` and networkx (about 2 s of a task's start-up), while most tasks only
compare a state. No Airflow imports.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Sequence

from multisite_drp.errors import DRPError

__all__ = [
    "TERMINAL_STATES",
    "WmsStates",
    "WorkflowError",
    "WorkflowRef",
    "WorkflowService",
    "WorkflowSpec",
    "WorkflowStatus",
]


class WmsStates(enum.Enum):
    """Run and job states: ``lsst.ctrl.bps.wms_service.WmsStates``'s members and values."""

    UNKNOWN = 10
    MISFIT = 11
    UNREADY = 12
    READY = 13
    PENDING = 14
    RUNNING = 15
    DELETED = 16
    HELD = 17
    SUCCEEDED = 0
    FAILED = 19
    PRUNED = 20


TERMINAL_STATES = frozenset({WmsStates.SUCCEEDED, WmsStates.FAILED, WmsStates.DELETED, WmsStates.PRUNED})


class WorkflowError(DRPError, RuntimeError):
    """The workflow system refused or lost a request."""


@dataclasses.dataclass(frozen=True)
class WorkflowSpec:
    """Everything needed to run one (campaign, step, site, generation) workflow.

    ``name`` is deterministic, so it doubles as the idempotency key: PanDA's request
    name, the embedded runner's submit directory.
    """

    name: str
    site: str
    qgraph: str
    butler_repo: str
    output_run: str
    submit_dir: str
    bps_config: str | None = None
    processes: int | None = None  # None: the service's own setting (the connection's `processes`)


@dataclasses.dataclass(frozen=True)
class WorkflowRef:
    """A small, JSON-friendly handle: what XCom carries."""

    run_id: str
    name: str
    site: str
    submit_dir: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> WorkflowRef:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class WorkflowStatus:
    """State and quantum counts of one workflow, as the trigger and the report see them."""

    run_id: str
    state: WmsStates
    quanta_total: int = 0
    quanta_succeeded: int = 0
    quanta_failed: int = 0
    quanta_blocked: int = 0
    attempt: int = 1
    started: float | None = None
    finished: float | None = None
    merged: bool = False
    message: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def failed_fraction(self) -> float:
        return (self.quanta_failed + self.quanta_blocked) / self.quanta_total if self.quanta_total else 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["state"] = self.state.name
        return d

    @classmethod
    def from_dict(cls, data: dict) -> WorkflowStatus:
        data = dict(data)
        data["state"] = WmsStates[data["state"]]
        return cls(**data)


class WorkflowService(abc.ABC):
    """One per site. Implementations: embedded (local detached run-qbb), PanDA (ctrl_bps_panda).

    ``status(...)[id].merged`` says whether the workflow's final job merged its outputs into
    the site butler; ``actions.merge`` relies on it, never on an adapter's private files.
    """

    @abc.abstractmethod
    def find(self, spec: WorkflowSpec) -> WorkflowRef | None:
        """The workflow already submitted under ``spec.name``, if any."""

    @abc.abstractmethod
    def submit(self, spec: WorkflowSpec) -> WorkflowRef:
        """Submit, or return the existing submission of the same name (never a duplicate)."""

    @abc.abstractmethod
    def status(self, refs: Sequence[WorkflowRef]) -> dict[str, WorkflowStatus]:
        """States of many workflows in one call, keyed by run_id."""

    def report(self, ref: WorkflowRef) -> WorkflowStatus:
        """Detailed status of one workflow (defaults to ``status``)."""
        return self.status([ref])[ref.run_id]

    @abc.abstractmethod
    def cancel(self, ref: WorkflowRef) -> None:
        """Stop the workflow's jobs. Safe to call on a finished workflow."""

    @abc.abstractmethod
    def restart(self, ref: WorkflowRef) -> WorkflowRef:
        """Rerun the unfinished part of a failed workflow, as-is (``bps restart``)."""

    def rescue(self, spec: WorkflowSpec) -> WorkflowRef:
        """A new submission of the same graph that runs only the quanta whose outputs are
        missing (DP0.2's "rescue"); by default the same as ``restart``, since a rerun of a
        graph skips quanta whose outputs exist."""
        ref = self.find(spec)
        if ref is None:
            raise WorkflowError(f"{spec.name}: nothing to rescue, it was never submitted")
        return self.restart(ref)

    def monitor_url(self, ref: WorkflowRef) -> str | None:
        """A page where an operator follows the workflow (the PanDA monitor); by default its
        submit directory's logs (``file://``: the embedded runner's, on the Airflow host)."""
        if not ref.submit_dir:
            return None
        from pathlib import Path

        return (Path(ref.submit_dir) / "logs").as_uri()
