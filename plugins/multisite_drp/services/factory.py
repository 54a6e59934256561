"""Build the ports from plain settings: the one place that knows which adapter is which.

Settings are small JSON-able dicts (an Airflow Connection's ``extra``, plus what the
campaign file says about each site), so the same code builds the services in a
worker, in a trigger and in a test, and a trigger can carry them in its kwargs.

``adapter`` picks the implementation:

* ``embedded``: the local adapters (detached ``run-qbb``; the local replica catalogue
  and conveyor). They need nothing but paths, which come from the campaign.
* ``panda`` / ``rucio``: the production adapters. They are not in this build yet; asking
  for one fails before any external action, naming the connection and the field.

No Airflow imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from multisite_drp.campaign.config import CampaignConfig

if TYPE_CHECKING:  # the adapters pull in the LSST middleware; keep DAG parsing light
    from multisite_drp.services.replica.base import ReplicaService
    from multisite_drp.services.workflow.base import WorkflowService

__all__ = [
    "DEFAULT_POLL_SECONDS",
    "AdapterError",
    "build_context",
    "replica_service",
    "replica_settings",
    "workflow_service",
    "workflow_settings",
]

WORKFLOW_ADAPTERS = ("embedded", "panda")
REPLICA_ADAPTERS = ("embedded", "rucio")
BUTLER_ADAPTERS = ("embedded", "production")
# Seconds between two status calls of a trigger, unless the connection says otherwise.
DEFAULT_POLL_SECONDS = {"embedded": 2.0, "panda": 120.0, "rucio": 60.0}


class AdapterError(ValueError):
    """A connection asks for an adapter this build cannot provide, or its settings are wrong."""


def _adapter(extra: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> str:
    name = extra.get("adapter")
    if name not in allowed:
        raise AdapterError(f"{where}: extra field 'adapter' is {name!r}; expected one of {list(allowed)}")
    if name != "embedded":
        raise AdapterError(
            f"{where}: adapter {name!r} is the production adapter, which this build does not include yet; "
            "use adapter 'embedded' for the local sites"
        )
    return name


def poll_seconds(extra: Mapping[str, Any], adapter: str, where: str) -> float:
    value = extra.get("poll_interval", DEFAULT_POLL_SECONDS[adapter])
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0.1 <= seconds <= 3600:
        raise AdapterError(f"{where}: extra field 'poll_interval' is {value!r}; expected seconds in [0.1, 3600]")
    return seconds


def workflow_settings(site: str, extra: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validated, JSON-able settings of one site's workflow service."""
    adapter = _adapter(extra, WORKFLOW_ADAPTERS, where)
    processes = extra.get("processes", 1)
    if not isinstance(processes, int) or isinstance(processes, bool) or not 1 <= processes <= 64:
        raise AdapterError(f"{where}: extra field 'processes' is {processes!r}; expected an integer in [1, 64]")
    return {"adapter": adapter, "site": site, "processes": processes,
            "poll_interval": poll_seconds(extra, adapter, where)}


def workflow_service(settings: Mapping[str, Any]) -> WorkflowService:
    from multisite_drp.services.workflow.embedded import EmbeddedWorkflowService

    return EmbeddedWorkflowService(settings["site"], processes=settings["processes"])


def replica_settings(config: CampaignConfig, extra: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validated, JSON-able settings of the campaign's replica service (one Rucio)."""
    adapter = _adapter(extra, REPLICA_ADAPTERS, where)
    return {
        "adapter": adapter,
        "catalogue": str(config.work_path / "replicas" / "catalogue.sqlite"),
        "sites": {s.name: [s.rse, config.repo_of(s)] for s in config.sites},
        "poll_interval": poll_seconds(extra, adapter, where),
    }


def replica_service(settings: Mapping[str, Any]) -> ReplicaService:
    from multisite_drp.services.replica.embedded import EmbeddedReplicaService

    return EmbeddedReplicaService(settings["catalogue"], {k: tuple(v) for k, v in settings["sites"].items()})


def butler_settings(config: CampaignConfig, site: str, extra: Mapping[str, Any], where: str) -> dict[str, Any]:
    name = extra.get("adapter", "embedded")
    if name not in BUTLER_ADAPTERS:
        raise AdapterError(f"{where}: extra field 'adapter' is {name!r}; expected one of {list(BUTLER_ADAPTERS)}")
    return {"adapter": name, "site": site, "repo": extra.get("repo") or config.repo_of(site)}


def build_context(config: CampaignConfig, workflows: Mapping[str, Mapping[str, Any]],
                  replica: Mapping[str, Any], butlers: Mapping[str, Mapping[str, Any]], generation: int = 0):
    """A ``CampaignContext`` from validated settings (see the ``*_settings`` functions)."""
    from multisite_drp.services.actions import CampaignContext
    from multisite_drp.services.butler import SiteButler

    return CampaignContext(
        config=config,
        workflows={site: workflow_service(s) for site, s in workflows.items()},
        replica=replica_service(replica),
        butlers={site: SiteButler(site, s["repo"]) for site, s in butlers.items()},
        generation=generation,
    )
