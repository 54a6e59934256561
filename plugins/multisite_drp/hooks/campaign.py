"""CampaignHook: the campaign's ports, built from the Airflow Connections the campaign names.

Each site names three connections in the campaign file (``connections: {butler,
replica, workflow}``). Their ``extra`` says which adapter sits behind each port
(``adapter: embedded`` for the local sites) and how it is tuned (``processes``,
``poll_interval``). The hook validates them all before anything acts, then hands
``services.factory`` plain settings, so triggers can carry the same settings and the
DAG never knows which adapter it runs against.
"""

from __future__ import annotations

import functools
from typing import Any

from airflow.sdk import BaseHook

from multisite_drp.campaign.config import CampaignConfig, load_campaign
from multisite_drp.services import factory

__all__ = ["CampaignHook", "ConnectionMissingError"]


class ConnectionMissingError(LookupError):
    """A connection the campaign names is not defined in Airflow."""


class CampaignHook(BaseHook):
    """Loads the campaign (restricted to the selected sites) and builds its services."""

    conn_type = "generic"
    hook_name = "Multisite DRP campaign"

    def __init__(self, campaign_file: str, *, data_root: str | None = None, sites: list[str] | None = None,
                 generation: int = 0, check_pipeline: bool = False) -> None:
        super().__init__()
        self.campaign_file = campaign_file
        self.data_root = data_root
        self.sites = list(sites or [])
        self.generation = int(generation)
        self.config: CampaignConfig = load_campaign(campaign_file, data_root=data_root, sites=self.sites,
                                                    check_pipeline=check_pipeline)

    @classmethod
    def from_params(cls, params: dict[str, Any], **kwargs: Any) -> CampaignHook:
        return cls(params["campaign_file"], data_root=params.get("data_root"), sites=params.get("sites") or [],
                   generation=int(params.get("generation") or 0), **kwargs)

    def _extra(self, conn_id: str, what: str, site: str) -> tuple[dict[str, Any], str]:
        where = f"{self.campaign_file}: sites ({site}).connections.{what} = connection {conn_id!r}"
        try:
            conn = self.get_connection(conn_id)
        except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException, or the execution API's error
            raise ConnectionMissingError(
                f"{where} is not defined in Airflow ({exc}); load airflow_settings.yaml "
                "(`make airflow-settings`) or set AIRFLOW_CONN_" + conn_id.upper()
            ) from None
        return dict(conn.extra_dejson or {}), where

    @functools.cached_property
    def settings(self) -> dict[str, Any]:
        """Every site's validated adapter settings (JSON-able: a trigger can carry them)."""
        workflows, butlers = {}, {}
        for s in self.config.sites:
            extra, where = self._extra(s.connections.workflow, "workflow", s.name)
            workflows[s.name] = factory.workflow_settings(s.name, extra, where)
            extra, where = self._extra(s.connections.butler, "butler", s.name)
            butlers[s.name] = factory.butler_settings(self.config, s.name, extra, where)
        hub = self.config.hub
        extra, where = self._extra(hub.connections.replica, "replica", hub.name)
        replica = factory.replica_settings(self.config, extra, where)
        return {"workflows": workflows, "butlers": butlers, "replica": replica}

    @functools.cache  # noqa: B019 - one hook per task execution
    def plan(self):
        """The generation's plan (written by the plan task; what every later task reads)."""
        from multisite_drp.campaign import names
        from multisite_drp.campaign.plan import CampaignPlan

        return CampaignPlan.load(names.plan_dir(self.config, self.generation))

    def get_conn(self):
        """The ``CampaignContext`` the actions take."""
        st = self.settings
        return factory.build_context(self.config, st["workflows"], st["replica"], st["butlers"], self.generation)
