"""CampaignHook: the campaign's ports, built from the Airflow Connections the campaign names.

Each site names three connections in the campaign file (``connections: {butler,
replica, workflow}``), and optionally a fourth, ``commands`` (the stack commands the DAG
runs itself: unset, local subprocesses; a cncf-kubernetes connection of adapter
``kubernetes``, one pod per command, see ``hooks.pods``). Their ``extra`` says which adapter sits behind each port
(``adapter: embedded``, ``panda`` or ``rucio``) and how it is tuned (``processes``,
``poll_interval``, a Rucio ``account``, a PanDA ``auth_vo`` and ``monitor_url``...); a
Rucio connection's host is the server and its login and password the site's identity
there; a PanDA connection's host is the PanDA server and its password the OIDC token. The hook
validates a connection before anything acts through it (``validate_campaign`` validates them
all, :attr:`CampaignHook.settings`; a task's :meth:`CampaignHook.get_conn` the replica
connections at once and each site's workflow and butler connections when an action first
asks for that site's port), then hands ``services.factory`` plain settings (no secret) and,
apart from them, the passwords.

Triggers never carry settings or secrets: they carry the DAG run's Params and the
connection ids, and rebuild the hook in the triggerer with :meth:`CampaignHook.afrom_params`,
which reads the connections with ``aget_connection`` (as the provider triggers do).

Whoever triggers the DAG chooses ``campaign_file`` and ``data_root``, so every load here
passes the deployment's **allowed roots** (:func:`deployment_roots`) to ``load_campaign``:
the campaign file, its pipeline (and what the pipeline imports), ``data_root`` and
absolute butler repos must lie inside them, ``work_dir`` inside ``data_root``. They come
from ``$MULTISITE_DRP_ALLOWED_ROOTS`` (absolute directories separated by ``os.pathsep``);
unset or empty, they are the repository's ``include/campaigns``, ``include/pipelines`` and
``var`` (the DAG's default campaign, its pipeline and the demo's data). When it is set, it
replaces that default entirely.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from multisite_drp.campaign.config import CampaignConfig, load_campaign
from multisite_drp.campaign.paths import ALLOWED_ROOTS_ENV, AllowedRoots
from multisite_drp.errors import InputError
from multisite_drp.services import factory
from multisite_drp.services.factory import ConnectionInfo

__all__ = ["DEFAULT_ROOTS", "PARAM_KEYS", "CampaignHook", "ConnectionMissingError", "deployment_roots"]

_REPO = Path(__file__).resolve().parents[3]  # plugins/multisite_drp/hooks/campaign.py -> the repository
#: Allowed roots when $MULTISITE_DRP_ALLOWED_ROOTS is unset: the DAG's default campaign, its pipeline, the demo's data.
DEFAULT_ROOTS = (_REPO / "include" / "campaigns", _REPO / "include" / "pipelines", _REPO / "var")


def deployment_roots() -> AllowedRoots:
    """The allowed roots this deployment declares (``$MULTISITE_DRP_ALLOWED_ROOTS``, else :data:`DEFAULT_ROOTS`)."""
    value = os.environ.get(ALLOWED_ROOTS_ENV, "")
    if not value.strip():
        return AllowedRoots.of(DEFAULT_ROOTS, source=f"default allowed roots ({ALLOWED_ROOTS_ENV} unset)")
    return AllowedRoots.parse(value, source=ALLOWED_ROOTS_ENV)

#: The DAG run Params a hook is built from (what a trigger carries; none is a secret). ``night``
#: is not a Param: a night-scoped task (``drp_nightly``'s step 1) adds its run's night.
PARAM_KEYS = ("campaign_file", "data_root", "sites", "generation", "night")


class ConnectionMissingError(InputError, LookupError):
    """A connection the campaign names is not defined in Airflow."""


class CampaignHook(BaseHook):
    """Loads the campaign (restricted to the selected sites) and builds its services."""

    conn_type = "generic"
    hook_name = "Multisite DRP campaign"

    def __init__(self, campaign_file: str, *, data_root: str | None = None, sites: list[str] | None = None,
                 generation: int = 0, check_pipeline: bool = False, config: CampaignConfig | None = None,
                 connections: Mapping[str, Any] | None = None, night: int | None = None) -> None:
        super().__init__()
        self.campaign_file = campaign_file
        self.data_root = data_root
        self.sites = list(sites or [])
        self.generation = int(generation)
        self.night = int(night) if night else None
        config = config or load_campaign(campaign_file, data_root=data_root, sites=self.sites,
                                         check_pipeline=check_pipeline, allowed_roots=deployment_roots())
        if self.night is not None:  # the night's own scope: names, RUNs, plan (names.night_config)
            from multisite_drp.campaign import names

            config = names.night_config(config, self.night)
        self.config: CampaignConfig = config
        self._connections = dict(connections) if connections is not None else None

    @classmethod
    def from_params(cls, params: dict[str, Any], **kwargs: Any) -> CampaignHook:
        return cls(params["campaign_file"], data_root=params.get("data_root"), sites=params.get("sites") or [],
                   generation=int(params.get("generation") or 0), night=params.get("night"), **kwargs)

    @staticmethod
    def carried_params(params: Mapping[str, Any]) -> dict[str, Any]:
        """The Params a trigger carries to rebuild this hook (paths, names, numbers)."""
        return {k: params.get(k) for k in PARAM_KEYS}

    @classmethod
    async def afrom_params(cls, params: Mapping[str, Any], conn_ids: list[str]) -> CampaignHook:
        """The hook in the triggerer: the campaign loaded off the event loop, each named
        connection read with ``aget_connection``. ``conn_ids`` must be among the campaign's."""
        config = await asyncio.to_thread(load_campaign, params["campaign_file"], data_root=params.get("data_root"),
                                         sites=params.get("sites") or [], check_pipeline=False,
                                         allowed_roots=deployment_roots())
        named = {getattr(s.connections, what) for s in config.sites
                 for what in ("butler", "replica", "workflow", "commands")} - {None}
        stray = sorted(set(conn_ids) - named)
        if stray:
            raise ConnectionMissingError(f"{params['campaign_file']}: the trigger asks for connections {stray}, "
                                         f"which the campaign does not name")
        conns = {}
        for conn_id in conn_ids:
            try:
                conns[conn_id] = await BaseHook.aget_connection(conn_id)
            except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException or the API's error
                raise ConnectionMissingError(f"connection {conn_id!r} is not defined in Airflow ({exc})") from None
        return cls(params["campaign_file"], data_root=params.get("data_root"), sites=params.get("sites") or [],
                   generation=int(params.get("generation") or 0), config=config, connections=conns,
                   night=params.get("night"))

    def conn_ids(self, what: str, sites: list[str] | None = None) -> list[str]:
        """The connection ids of one kind (``butler``, ``replica``, ``workflow``, ``commands``) for
        ``sites`` (a site naming no ``commands`` connection has none: its commands are embedded)."""
        ids = [getattr(s.connections, what) for s in self.config.sites if sites is None or s.name in sites]
        return [i for i in ids if i is not None]

    @functools.cache  # noqa: B019 - one hook per task execution; each connection is read once
    def _info(self, conn_id: str, what: str, site: str) -> ConnectionInfo:
        where = f"{self.campaign_file}: sites ({site}).connections.{what} = connection {conn_id!r}"
        try:
            conn = self._connections[conn_id] if self._connections is not None else self.get_connection(conn_id)
        except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException, or the execution API's error
            raise ConnectionMissingError(
                f"{where} is not defined in Airflow ({exc}); load airflow_settings.yaml "
                "(`make airflow-settings`) or set AIRFLOW_CONN_" + conn_id.upper()
            ) from None
        return ConnectionInfo(conn_id=conn_id, extra=dict(conn.extra_dejson or {}), host=conn.host, login=conn.login,
                              password=conn.password, schema=conn.schema, port=conn.port, where=where)

    def _replica_infos(self) -> dict[str, ConnectionInfo]:
        return {s.name: self._info(s.connections.replica, "replica", s.name) for s in self.config.sites}

    @functools.cached_property
    def settings(self) -> dict[str, Any]:
        """Every site's validated adapter settings (JSON-able, no secret): every connection
        the campaign names is read and checked (what ``validate_campaign`` does up front)."""
        return {"workflows": {s.name: self.workflow_settings(s.name) for s in self.config.sites},
                "butlers": {s.name: self.butler_settings(s.name) for s in self.config.sites},
                "replica": self.replica_settings}

    @functools.cache  # noqa: B019 - one hook per task execution
    def butler_settings(self, site: str) -> dict[str, Any]:
        """One site's validated butler settings (reads that site's butler connection only)."""
        s = self.config.site(site)
        info = self._info(s.connections.butler, "butler", s.name)
        return factory.butler_settings(self.config, s.name, info.extra, info.where)

    def workflow_settings(self, site: str) -> dict[str, Any]:
        """One site's validated workflow settings (reads that site's workflow connection only)."""
        return factory.workflow_settings(self.config, site, self._workflow_info(site))

    def _workflow_info(self, site: str) -> ConnectionInfo:
        s = self.config.site(site)
        return self._info(s.connections.workflow, "workflow", s.name)

    def _workflow_secret(self, site: str) -> str | None:
        """A PanDA site's token (the workflow connection's password); embedded sites have none."""
        info = self._workflow_info(site)
        return info.password if info.extra.get("adapter") == "panda" else None

    @functools.cached_property
    def replica_settings(self) -> dict[str, Any]:
        """The replica service's settings, from every site's replica connection."""
        return factory.replica_settings(self.config, self._replica_infos())

    def _secrets(self) -> dict[str, str]:
        return factory.connection_secrets(self._replica_infos())

    @functools.cache  # noqa: B019 - one hook per task execution
    def plan(self):
        """The generation's plan (written by the plan task; what every later task reads)."""
        from multisite_drp.campaign import names
        from multisite_drp.campaign.plan import CampaignPlan

        return CampaignPlan.load_current(names.plan_dir(self.config, self.generation))

    def replica_service(self):
        """The campaign's replica service alone (what the replication trigger polls)."""
        return factory.replica_service(self.replica_settings, self._secrets())

    def workflow_service(self, site: str):
        """One site's workflow service alone (what the workflow trigger polls)."""
        return factory.workflow_service(self.workflow_settings(site), self._workflow_secret(site))

    def command_settings(self, site: str) -> dict[str, Any]:
        """One site's validated command-runner settings (JSON-able, no secret): embedded when
        the campaign names no ``commands`` connection for it, else that connection's."""
        conn_id = self.config.site(site).connections.commands
        info = None if conn_id is None else self._info(conn_id, "commands", site)
        return factory.command_settings(self.config, site, info)

    def command_service(self, site: str):
        """One site's command runner (the port ``services.commands.base.CommandService``):
        embedded (local subprocesses) or ``hooks.pods.PodCommandService`` (a pod per command;
        the provider's KubernetesHook reads the cluster credentials from the same connection)."""
        settings = self.command_settings(site)
        if settings["adapter"] == "kubernetes":
            from multisite_drp.hooks.pods import PodCommandService

            return PodCommandService(settings)
        return factory.command_service(settings)

    def get_conn(self):
        """The ``CampaignContext`` the actions take.

        The replica service, which every site's rules go through, is validated at once
        (every site's replica connection). A site's workflow and butler connections are
        read and validated when an action first asks for that site's port, before the port
        is built, so before anything acts through it (``factory.LazyPorts``): a task reads
        the connections of the sites it touches, not all nine. ``validate_campaign`` checks
        every connection before the run's first external action (:attr:`settings`). A site's
        command runner (graph builds at the hub, merges) likewise: its ``commands`` connection,
        if the campaign names one, is read when an action first runs a command there.
        """
        sites = [s.name for s in self.config.sites]
        return factory.build_context(self.config, factory.LazyPorts(sites, self.workflow_settings),
                                     self.replica_settings, factory.LazyPorts(sites, self.butler_settings),
                                     self.generation, replica_secrets=self._secrets(),
                                     workflow_secrets=factory.LazyPorts(sites, self._workflow_secret),
                                     commands=factory.LazyPorts(sites, self.command_service))
