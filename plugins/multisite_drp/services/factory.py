"""Build the ports from plain settings: the one place that knows which adapter is which.

Settings are small JSON-able dicts, validated from an Airflow Connection (its host,
login and ``extra``) plus what the campaign file says about each site. They never hold a
secret: passwords and tokens travel separately (``secrets``), straight from the
Connection to the adapter's client. Triggers therefore carry connection ids and rebuild
settings and secrets in the triggerer (``hooks.campaign``).

``adapter`` picks the implementation:

* workflow ``embedded``: detached ``pipetask run-qbb`` at the local sites;
* replica ``rucio``: a Rucio server (rucio-clients + lsst-rucio-register), a Data
  Facility's or the embedded sites' local one (``include/localrucio``);
* workflow ``panda``: BPS with ctrl_bps_panda to a PanDA server (the connection's host;
  its password an OIDC token; the VO, monitor and edge-node settings in the extras);
* commands ``embedded`` (no connection named: the stack commands the DAG runs itself are
  local detached subprocesses) or ``kubernetes`` (one pod per command in the site's cluster;
  settings validated here, the adapter in ``hooks.pods`` since it imports the provider).

No Airflow imports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from multisite_drp.campaign.config import CampaignConfig
from multisite_drp.errors import InputError

if TYPE_CHECKING:  # the adapters pull in the LSST middleware; keep DAG parsing light
    from multisite_drp.services.commands.base import CommandService
    from multisite_drp.services.replica.base import ReplicaService
    from multisite_drp.services.workflow.base import WorkflowService

__all__ = [
    "DEFAULT_POLL_SECONDS",
    "AdapterError",
    "ConnectionInfo",
    "LazyPorts",
    "build_context",
    "command_service",
    "command_settings",
    "replica_service",
    "replica_settings",
    "workflow_service",
    "workflow_settings",
]


@dataclasses.dataclass(frozen=True)
class ConnectionInfo:
    """What the factory reads of an Airflow Connection (the hook and the triggers fill it)."""

    conn_id: str
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    host: str | None = None
    login: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    schema: str | None = None
    port: int | None = None
    where: str = ""  # "<campaign file>: sites (frdf).connections.replica = connection 'drp_frdf_replica'"


T = TypeVar("T")


class LazyPorts(Mapping[str, T], Generic[T]):
    """site -> value, each made by ``make(site)`` on first access and kept (a Mapping).

    A task touches one or two sites' ports; the others' connections are not read, their
    settings not validated and their adapters not built (``build_context``). A port is
    still validated before it is built, so before anything acts through it.
    """

    def __init__(self, sites: Iterator[str] | list[str] | tuple[str, ...], make: Callable[[str], T]) -> None:
        self._sites = tuple(sites)
        self._make = make
        self._made: dict[str, T] = {}

    def __getitem__(self, site: str) -> T:
        if site not in self._made:
            if site not in self._sites:
                raise KeyError(site)
            self._made[site] = self._make(site)
        return self._made[site]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sites)

    def __len__(self) -> int:
        return len(self._sites)

    def __repr__(self) -> str:
        return f"LazyPorts(sites={list(self._sites)}, built={sorted(self._made)})"


WORKFLOW_ADAPTERS = ("embedded", "panda")
REPLICA_ADAPTERS = ("rucio",)
#: Adapters a connection may name that this build does not include yet (refused by name).
NOT_BUILT: tuple[str, ...] = ()
BUTLER_ADAPTERS = ("embedded", "production")
# Seconds between two status calls of a trigger, unless the connection says otherwise.
DEFAULT_POLL_SECONDS = {"embedded": 2.0, "panda": 120.0, "rucio": 60.0}


class AdapterError(InputError, ValueError):
    """A connection asks for an adapter this build cannot provide, or its settings are wrong."""


def _adapter(extra: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> str:
    name = extra.get("adapter")
    if name not in allowed:
        raise AdapterError(f"{where}: extra field 'adapter' is {name!r}; expected one of {list(allowed)}")
    if name in NOT_BUILT:
        raise AdapterError(
            f"{where}: adapter {name!r} is the production adapter, which this build does not include yet; "
            "use adapter 'embedded' for the local sites' workflows"
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


EMBEDDED_WORKFLOW_EXTRAS = ("adapter", "poll_interval", "processes")
PANDA_EXTRAS = ("adapter", "poll_interval", "auth_vo", "config_root", "idds_server", "monitor_url",
                "runner_command", "file_distribution", "request_memory", "number_of_retries", "queue",
                "verify_host")


def workflow_settings(config: CampaignConfig, site: str, conn: ConnectionInfo) -> dict[str, Any]:
    """Validated, JSON-able settings of one site's workflow service (no secret)."""
    extra, where = conn.extra, conn.where
    adapter = _adapter(extra, WORKFLOW_ADAPTERS, where)
    poll = poll_seconds(extra, adapter, where)
    if adapter == "embedded":
        _known(extra, EMBEDDED_WORKFLOW_EXTRAS, where, "an embedded workflow connection")
        processes = extra.get("processes", 1)
        if not isinstance(processes, int) or isinstance(processes, bool) or not 1 <= processes <= 64:
            raise AdapterError(f"{where}: extra field 'processes' is {processes!r}; expected an integer in [1, 64]")
        return {"adapter": adapter, "site": site, "processes": processes, "poll_interval": poll,
                "timeouts": config.timeouts.model_dump()}
    return {"adapter": adapter, "poll_interval": poll, **_panda_site(config, site, conn)}


def _known(extra: Mapping[str, Any], allowed: tuple[str, ...], where: str, what: str) -> None:
    unknown = sorted(set(extra) - set(allowed))
    if unknown:
        raise AdapterError(f"{where}: unknown extra fields {unknown}; {what} takes {list(allowed)}")


def _server_url(conn: ConnectionInfo, what: str, example: str) -> str:
    """The http(s) URL a connection's host (with its schema and port) names."""
    if not conn.host:
        raise AdapterError(f"{conn.where}: 'host' is empty; expected {what} URL, e.g. {example}")
    url = conn.host if "://" in conn.host else f"{conn.schema or 'https'}://{conn.host}"
    if conn.port and "://" not in conn.host:
        url += f":{conn.port}"
    if not url.startswith(("http://", "https://")):
        raise AdapterError(f"{conn.where}: 'host' is {conn.host!r}; expected an http(s) URL of {what}")
    return url


def _panda_site(config: CampaignConfig, site: str, conn: ConnectionInfo) -> dict[str, Any]:
    extra, where = conn.extra, conn.where
    _known(extra, PANDA_EXTRAS, where, "a PanDA connection (the token goes in the password field)")
    s = config.site(site)
    if s.compute_site == "local":
        raise AdapterError(f"{where} asks for adapter 'panda', but the campaign's sites ({site}).compute_site "
                           "is 'local'; expected the site's PanDA computeSite (e.g. SLAC, CC-IN2P3, LANCS)")
    url = _server_url(conn, "the PanDA server", "https://pandaserver-doma.cern.ch:25443/server/panda")
    if "/server/panda" not in url:
        url = url.rstrip("/") + "/server/panda"
    if conn.password and not extra.get("auth_vo"):
        raise AdapterError(f"{where}: the password holds a token but extra field 'auth_vo' is missing; "
                           "expected the OIDC virtual organisation (e.g. 'Rubin')")
    for key in ("auth_vo", "config_root", "idds_server", "monitor_url", "runner_command", "file_distribution",
                "queue"):
        if key in extra and not (isinstance(extra[key], str) and extra[key].strip()):
            raise AdapterError(f"{where}: extra field {key!r} is {extra[key]!r}; expected a non-empty string")
    for key, lo, hi in (("request_memory", 128, 10**7), ("number_of_retries", 0, 100)):
        v = extra.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi):
            raise AdapterError(f"{where}: extra field {key!r} is {v!r}; expected an integer in [{lo}, {hi}]")
    if "verify_host" in extra and not isinstance(extra["verify_host"], bool):
        raise AdapterError(f"{where}: extra field 'verify_host' is {extra['verify_host']!r}; expected true or false")
    out = {"site": site, "url": url.rstrip("/"), "conn_id": conn.conn_id, "vo": extra.get("auth_vo"),
           "queue": extra.get("queue") or s.queue}
    for key, field in (("config_root", "config_root"), ("idds_server", "idds_server"),
                       ("monitor_url", "monitor_url"), ("runner_command", "runner_command"),
                       ("file_distribution", "file_distribution"), ("request_memory", "request_memory"),
                       ("number_of_retries", "number_of_retries"), ("verify_host", "verify_host")):
        if key in extra:
            out[field] = extra[key]
    return out


def workflow_service(settings: Mapping[str, Any], secret: str | None = None) -> WorkflowService:
    """One site's workflow service; ``secret``: the PanDA token (from the connection's password)."""
    if settings["adapter"] == "panda":
        from multisite_drp.services.workflow.panda import PanDASite, PanDAWorkflowService

        return PanDAWorkflowService(PanDASite.from_dict(settings), token=secret)
    from multisite_drp.services.workflow.embedded import EmbeddedWorkflowService

    return EmbeddedWorkflowService(settings["site"], processes=settings["processes"], timeouts=settings.get("timeouts"))


def replica_settings(config: CampaignConfig, conns: Mapping[str, ConnectionInfo]) -> dict[str, Any]:
    """Validated, JSON-able settings of the campaign's replica service, from every site's
    replica connection (``conns``: site -> connection). No secret is kept.

    Every site's connection is read and honoured for that site's RSE: all must name the
    same Rucio server; a site's ``login`` and ``account`` are its identity there.
    """
    hub = config.hub.name
    adapter = {site: _adapter(c.extra, REPLICA_ADAPTERS, c.where) for site, c in conns.items()}[hub]
    poll = poll_seconds(conns[hub].extra, adapter, conns[hub].where)
    sites = {site: _rucio_site(config, site, c) for site, c in conns.items()}
    hosts = {v["rucio_host"] for v in sites.values()}
    if len(hosts) != 1:
        raise AdapterError(f"{conns[hub].where}: the sites' replica connections name different Rucio servers "
                           f"{ {k: v['rucio_host'] for k, v in sites.items()} }; a campaign uses one Rucio")
    return {
        "adapter": adapter, "campaign": config.name, "hub": hub, "scope": config.replication.scope,
        "activity": config.replication.activity, "lifetime": config.replication.lifetime_seconds,
        "sites": sites, "poll_interval": poll,
        # The Rucio WebUI the tasks link to: the hub connection's (one Rucio, one WebUI).
        "webui_url": web_base_url(conns[hub].extra, "webui_url", conns[hub].where),
    }


def web_base_url(extra: Mapping[str, Any], key: str, where: str) -> str | None:
    """An optional base URL of a service's web pages from a connection extra: ``http(s)://host[/path]``,
    without credentials, query or fragment (it ends up in links anyone with the UI sees)."""
    from urllib.parse import urlsplit

    value = extra.get(key)
    if value in (None, ""):
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.username
            or parts.password or parts.query or parts.fragment):
        raise AdapterError(f"{where}: extra field {key!r} is {value!r}; expected a base URL like "
                           "'https://rucio-ui.example.org' (http or https, a host, no credentials, query or fragment)")
    return value.rstrip("/")


RUCIO_EXTRAS = ("adapter", "poll_interval", "account", "auth_host", "auth_type", "rse_root", "dtn_url", "ca_cert",
                "webui_url")


def _rucio_site(config: CampaignConfig, site: str, conn: ConnectionInfo) -> dict[str, Any]:
    extra, where = conn.extra, conn.where
    _known(extra, RUCIO_EXTRAS, where, "a Rucio connection (the password goes in the connection's password field)")
    host = _server_url(conn, "the Rucio server", "https://rucio.example:443")
    auth_type = extra.get("auth_type", "userpass")
    if auth_type not in ("userpass", "token"):
        raise AdapterError(f"{where}: extra field 'auth_type' is {auth_type!r}; expected 'userpass' (login and "
                           "password) or 'token' (a Rucio auth token in the password field)")
    if auth_type == "userpass" and not conn.login:
        raise AdapterError(f"{where}: 'login' is empty; expected the Rucio userpass identity's username")
    if auth_type == "token" and not (conn.login or extra.get("account")):
        raise AdapterError(f"{where}: neither 'login' nor extra field 'account' names the Rucio account of the token")
    if not conn.password:
        what = f"the Rucio password of login {conn.login!r}" if auth_type == "userpass" else "the Rucio auth token"
        raise AdapterError(f"{where}: 'password' is empty; expected {what}")
    for key in ("rse_root", "dtn_url", "auth_host", "ca_cert", "account"):
        if key in extra and not isinstance(extra[key], str):
            raise AdapterError(f"{where}: extra field {key!r} is {extra[key]!r}; expected a string")
    s = config.site(site)
    return {
        "site": site, "rse": s.rse, "repo": config.repo_of(s), "rucio_host": host.rstrip("/"),
        "auth_host": (extra.get("auth_host") or host).rstrip("/"), "account": extra.get("account") or conn.login,
        "username": conn.login or extra.get("account"), "auth_type": auth_type, "rse_root": extra.get("rse_root"),
        "dtn_url": extra.get("dtn_url"), "ca_cert": extra.get("ca_cert"), "conn_id": conn.conn_id,
    }


def connection_secrets(conns: Mapping[str, ConnectionInfo]) -> dict[str, str]:
    """Each site's replica password, kept apart from the settings (never logged or carried)."""
    return {site: c.password for site, c in conns.items() if c.password}


def replica_service(settings: Mapping[str, Any], secrets: Mapping[str, str] | None = None) -> ReplicaService:
    from multisite_drp.services.replica.rucio import RucioCredentials, RucioReplicaService, RucioSite

    secrets = secrets or {}
    service = RucioReplicaService(
        scope=settings["scope"], campaign=settings["campaign"], activity=settings["activity"],
        lifetime=settings["lifetime"], hub=settings["hub"],
        sites={k: RucioSite.from_dict(v) for k, v in settings["sites"].items()},
        credentials={k: RucioCredentials(secrets[k]) for k in settings["sites"] if k in secrets},
    )
    service.webui_url = settings.get("webui_url")
    return service


BUTLER_EXTRAS = ("adapter",)


def butler_settings(config: CampaignConfig, site: str, extra: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A site's butler settings. Its repository is the campaign file's ``sites (<site>).butler_repo``
    (``CampaignConfig.repo_of``), the one place the planner, the workflows, the Replica Monitor's
    RSE and the report read it from; a connection cannot name another one."""
    name = extra.get("adapter", "embedded")
    if name not in BUTLER_ADAPTERS:
        raise AdapterError(f"{where}: extra field 'adapter' is {name!r}; expected one of {list(BUTLER_ADAPTERS)}")
    if "repo" in extra:
        raise AdapterError(f"{where}: extra field 'repo' is {extra['repo']!r}, but a site's butler repository is "
                           f"the campaign file's sites ({site}).butler_repo ({config.repo_of(site)!r}), which every "
                           "task and the Replica Monitor read; remove 'repo' from the connection and set "
                           "butler_repo in the campaign file")
    _known(extra, BUTLER_EXTRAS, where, "a butler connection (the repository is the campaign's butler_repo)")
    return {"adapter": name, "site": site, "repo": config.repo_of(site)}


def butler_service(settings: Mapping[str, Any], lock_timeout: float | None):
    """A site's butler port (``services.butler.SiteButler``: lsst.daf.butler for both the
    ``embedded`` and the ``production`` adapter; only the repository differs)."""
    from multisite_drp.services.butler import SiteButler

    return SiteButler(settings["site"], settings["repo"], lock_timeout=lock_timeout)


def build_context(config: CampaignConfig, workflows: Mapping[str, Mapping[str, Any]],
                  replica: Mapping[str, Any], butlers: Mapping[str, Mapping[str, Any]], generation: int = 0,
                  replica_secrets: Mapping[str, str] | None = None,
                  workflow_secrets: Mapping[str, str] | None = None,
                  commands: Mapping[str, CommandService] | None = None):
    """A ``CampaignContext`` from validated settings (see the ``*_settings`` functions).

    The workflow services and the butlers are :class:`LazyPorts`: a site's is built when an
    action first asks for it (``workflows`` and ``butlers`` may themselves be LazyPorts of
    settings, validated then). The replica service is built at once (cheap: its clients
    log in on first use). ``commands``: site -> command runner (the hook passes LazyPorts of
    ``CampaignHook.command_service``, which can build the Kubernetes one); None: every site's
    embedded runner (:func:`command_service`), built on first use."""
    from multisite_drp.services.actions import CampaignContext

    secrets = workflow_secrets or {}
    return CampaignContext(
        config=config,
        workflows=LazyPorts(list(workflows), lambda site: workflow_service(workflows[site], secrets.get(site))),
        replica=replica_service(replica, replica_secrets),
        butlers=LazyPorts(list(butlers), lambda site: butler_service(butlers[site], config.timeouts.lock_seconds)),
        generation=generation,
        commands=commands,
    )


COMMAND_ADAPTERS = ("embedded", "kubernetes")


def command_settings(config: CampaignConfig, site: str, conn: ConnectionInfo | None) -> dict[str, Any]:
    """A site's command-runner settings (JSON-able, no secret). No connection named in the
    campaign (``sites (<site>).connections.commands`` unset) or adapter ``embedded``: local
    subprocesses recorded under ``names.command_dir``. Adapter ``kubernetes``: the pod
    settings (``services.commands.pod_settings``), the provider's cluster fields left to
    its hook, plus the campaign's part (its name for the pods' labels, the command limit)."""
    from multisite_drp.campaign import names

    base = {"site": site, "campaign": config.name, "command_seconds": config.timeouts.command_seconds,
            "root": str(names.command_dir(config, site))}
    if conn is None:
        return {"adapter": "embedded", "poll_interval": DEFAULT_POLL_SECONDS["embedded"], **base}
    adapter = conn.extra.get("adapter")
    if adapter not in COMMAND_ADAPTERS:
        raise AdapterError(f"{conn.where}: extra field 'adapter' is {adapter!r}; expected one of "
                           f"{list(COMMAND_ADAPTERS)}")
    if adapter == "embedded":
        _known(conn.extra, ("adapter", "poll_interval"), conn.where, "an embedded commands connection")
        return {"adapter": "embedded", "poll_interval": poll_seconds(conn.extra, "embedded", conn.where), **base}
    from multisite_drp.services.commands.pod_settings import pod_settings

    pods = pod_settings(conn.extra, conn.where)
    return {**base, "conn_id": conn.conn_id, "where": conn.where, "poll_interval": pods.poll_interval,
            "adapter": "kubernetes", "pods": pods.model_dump(mode="json")}


def command_service(settings: Mapping[str, Any]) -> CommandService:
    """A site's embedded command runner. The ``kubernetes`` adapter is the glue's
    (``hooks.pods.PodCommandService``, built by ``CampaignHook.command_service``)."""
    if settings["adapter"] != "embedded":
        raise AdapterError(f"command adapter {settings['adapter']!r} is built by the Airflow glue "
                           "(CampaignHook.command_service), not by services.factory")
    from multisite_drp.services.commands.embedded import EmbeddedCommandService

    return EmbeddedCommandService(settings["site"], settings["root"])
