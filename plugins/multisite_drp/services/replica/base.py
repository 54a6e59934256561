"""The replica port: register butler outputs as Rucio datasets, replicate them by rules,
and confirm they were ingested at the destination.

The vocabulary is Rucio's, so the production adapter (rucio-clients +
lsst-rucio-register) drops in without the DAG changing:

* ``register`` makes a *dataset* DID from butler datasets at a site: one file DID per
  butler file, named by its path relative to the RSE root, carrying lsst-rucio-register's
  ``rubin_butler`` / ``rubin_sidecar`` metadata so the destination can ingest without the
  source registry.
* ``add_rule`` asks for a dataset at a site's RSE. A rule is identified by (dataset, RSE)
  and adding it twice returns the first rule: no duplicates, ever.
* ``rule_status`` reports many rules in one call (Rucio's states).
* ``verify_ingested`` queries the destination *butler*, because the ingest daemon at a
  Data Facility (ctrl_ingestd) reports nothing back.

No Airflow imports.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from multisite_drp.errors import DRPError, InputError, TransientError

if TYPE_CHECKING:
    from lsst.daf.butler import DatasetRef

__all__ = [
    "IngestCheck",
    "RegisteredDataset",
    "ReplicaAuthError",
    "ReplicaError",
    "ReplicaService",
    "ReplicaUnavailableError",
    "ReplicationProgress",
    "RuleRef",
    "RuleState",
    "RuleStatus",
    "replication_progress",
]


class ReplicaError(DRPError, RuntimeError):
    """The replica service refused a request."""


class ReplicaAuthError(ReplicaError, InputError):
    """The replica service refused a site's credentials (login, password or token)."""


class ReplicaUnavailableError(ReplicaError, TransientError):
    """The replica service could not be reached for longer than the adapter waits: try later."""


class RuleState(str, enum.Enum):
    """Rucio replication-rule states."""

    REPLICATING = "REPLICATING"
    OK = "OK"
    STUCK = "STUCK"
    SUSPENDED = "SUSPENDED"
    WAITING_APPROVAL = "WAITING_APPROVAL"
    INJECT = "INJECT"


@dataclasses.dataclass(frozen=True)
class RegisteredDataset:
    name: str
    site: str
    files: int
    bytes: int
    new_files: int


@dataclasses.dataclass(frozen=True)
class RuleRef:
    """A small, JSON-friendly handle for XCom."""

    rule_id: str
    dataset: str
    site: str
    rse: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> RuleRef:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class RuleStatus:
    rule_id: str
    state: RuleState
    locks_ok: int = 0
    locks_replicating: int = 0
    locks_stuck: int = 0
    bytes: int = 0
    error: str = ""
    created: float | None = None  # Rucio's created_at (epoch seconds)
    updated: float | None = None  # Rucio's updated_at: for an OK rule, when it became OK

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["state"] = self.state.value
        return d


@dataclasses.dataclass(frozen=True)
class IngestCheck:
    """What the destination butler knows of a replicated dataset."""

    dataset: str
    site: str
    expected: int
    found: int

    @property
    def complete(self) -> bool:
        return self.found == self.expected


class ReplicaService(abc.ABC):
    """One per campaign (Rucio is one service); sites are addressed by name, mapped to RSEs."""

    #: The base URL of the service's web pages (the Rucio WebUI), if the deployment has one.
    webui_url: str | None = None

    def webui_link(self, recorded: object) -> str:
        """The web page of what a replication task recorded (its XCom): a rule (``rule_id``),
        the first of a list of rules, or a dataset (``name``, in the service's ``scope`` unless
        it says its own). ``""`` when the service has no web pages or there is nothing to show."""
        return webui_link(self.webui_url, recorded, getattr(self, "scope", None))

    @abc.abstractmethod
    def register(self, site: str, dataset: str, refs: Sequence[DatasetRef]) -> RegisteredDataset:
        """Register the files of ``refs`` (resolved in ``site``'s butler) into ``dataset``.

        Idempotent: files already in the dataset are not added again; a dataset can
        hold files first registered by other datasets (Rucio attaches existing DIDs).
        """

    @abc.abstractmethod
    def add_rule(self, dataset: str, site: str) -> RuleRef:
        """Require ``dataset`` at ``site``'s RSE; returns the existing rule if there is one."""

    @abc.abstractmethod
    def find_rule(self, dataset: str, site: str) -> RuleRef | None:
        """The rule for (dataset, site) if it exists."""

    @abc.abstractmethod
    def rule_status(self, rules: Sequence[RuleRef]) -> dict[str, RuleStatus]:
        """Many rules in one call, keyed by rule_id."""

    @abc.abstractmethod
    def dataset_refs(self, dataset: str) -> list[DatasetRef]:
        """The butler datasets (from their sidecars) that make up ``dataset``."""

    @abc.abstractmethod
    def verify_ingested(self, rule: RuleRef) -> IngestCheck:
        """Count the rule's datasets that the destination butler has ingested."""

    def retry(self, rule: RuleRef) -> RuleRef:
        """Re-evaluate a STUCK rule. Default: nothing to do."""
        return rule

    def delete_rule(self, rule: RuleRef) -> None:
        """Withdraw a rule (a killed wait whose policy is ``on_kill.replication: cancel``).
        Safe on a rule already gone."""
        raise ReplicaError(f"{type(self).__name__} cannot delete rule {rule.rule_id}")

    def check(self) -> dict[str, str]:
        """Reach the service as every site and confirm what the campaign needs exists;
        raise ``ReplicaError`` naming the site otherwise. Returns site -> identity."""
        return {}


@dataclasses.dataclass
class ReplicationProgress:
    """Where a set of rules stands: ``stuck`` (any rule STUCK), ``ok`` (every rule OK and
    every dataset ingested at its destination) or ``waiting``."""

    state: str
    states: dict[str, str]  # "dataset@site" -> rule state
    stuck: dict[str, str] = dataclasses.field(default_factory=dict)  # "dataset@site" -> error
    ingested: dict[str, str] = dataclasses.field(default_factory=dict)  # "dataset@site" -> "found/expected"


def webui_link(base: str | None, recorded: object, scope: str | None = None) -> str:
    """The Rucio WebUI page (``{base}/rule?rule_id=...``, ``{base}/did?scope=...&name=...``, the
    WebUI's own routes) of a rule or dataset as a replication task records it; see
    :meth:`ReplicaService.webui_link`."""
    if not base:
        return ""
    if isinstance(recorded, list):
        recorded = recorded[0] if recorded else None
    if not isinstance(recorded, Mapping):
        return ""
    base = base.rstrip("/")
    if recorded.get("rule_id"):
        return f"{base}/rule?{urlencode({'rule_id': str(recorded['rule_id'])})}"
    scope, name = recorded.get("scope") or scope, recorded.get("name")
    if scope and name:
        return f"{base}/did?{urlencode({'scope': str(scope), 'name': str(name)})}"
    return ""


def replication_progress(service: ReplicaService, rules: Sequence[RuleRef],
                         status: Mapping[str, RuleStatus] | None = None) -> ReplicationProgress:
    """One status call for all ``rules`` (none if ``status`` already holds theirs: a trigger
    sharing one call with others), then (once all are OK) the destination butlers.

    Rucio saying OK is not enough: the ingest daemon at a Data Facility may still be
    catching up, so the butler is asked. The sensor, the trigger and the benchmark's
    script all wait on this.
    """
    status = service.rule_status(rules) if status is None else status
    key = {r.rule_id: f"{r.dataset}@{r.site}" for r in rules}
    states = {key[r.rule_id]: status[r.rule_id].state.value for r in rules}
    stuck = {key[r.rule_id]: status[r.rule_id].error for r in rules if status[r.rule_id].state is RuleState.STUCK}
    if stuck:
        return ReplicationProgress("stuck", states, stuck=stuck)
    if not all(status[r.rule_id].state is RuleState.OK for r in rules):
        return ReplicationProgress("waiting", states)
    checks = [service.verify_ingested(r) for r in rules]
    ingested = {f"{c.dataset}@{c.site}": f"{c.found}/{c.expected}" for c in checks}
    return ReplicationProgress("ok" if all(c.complete for c in checks) else "waiting", states, ingested=ingested)
