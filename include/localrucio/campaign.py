"""A campaign's embedded sites on the local Rucio: RSEs, identities, connections, monitor.

What ``scripts/run_campaign.py`` (the demo), ``make up`` and the tests do after
``LocalRucio.up()``:

* :func:`prepare`: one RSE per site rooted at the site's butler repository (whose
  datastore lies at ``<repo>/<scope>``, lsst-rucio-register's layout), one account and
  userpass identity per site, the campaign's scope;
* :func:`replica_connections`: the sites' replica Connections in Airflow's JSON form,
  with the local server as host and each site's own login and password (kept under
  the deployment's root, never in the repo);
* :func:`start_monitor`: the Replica Monitor daemon (the project's
  ``multisite_drp.services.replica.monitor``) serving every site's RSE.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from multisite_drp.campaign.config import CampaignConfig

from . import LocalRucio, SiteSpec

__all__ = ["EMBEDDED_CAMPAIGN", "LOCAL_RUCIO_HOST", "campaign_copy", "connection_infos", "fill_local_connections",
           "prepare", "replica_connections", "site_specs", "start_monitor"]

#: A replica connection with this host (airflow_settings.yaml) means the local Rucio.
LOCAL_RUCIO_HOST = "local-rucio"

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_CAMPAIGN = ROOT / "include" / "campaigns" / "minidrp_embedded.yaml"
MONITOR = "replica-monitor"


def site_specs(cfg: CampaignConfig) -> list[SiteSpec]:
    """Each site's RSE, rooted at its butler repository (the datastore is ``<repo>/<scope>``)."""
    return [SiteSpec(site=s.name, rse=s.rse, rse_root=Path(cfg.repo_of(s)), butler_repo=Path(cfg.repo_of(s)))
            for s in cfg.sites]


def prepare(lr: LocalRucio, cfg: CampaignConfig) -> dict[str, dict[str, str]]:
    """RSEs, accounts and the scope for the campaign's sites (idempotent); site -> credentials."""
    return lr.ensure_sites(cfg.replication.scope, site_specs(cfg))


def replica_connections(lr: LocalRucio, cfg: CampaignConfig, creds: dict[str, dict[str, str]],
                        poll_interval: float | None = None) -> dict[str, dict[str, Any]]:
    """conn_id -> the site's replica Connection (Airflow's JSON form) on the local Rucio."""
    ep = lr.endpoint()
    out = {}
    for s in cfg.sites:
        extra: dict[str, Any] = {"adapter": "rucio", "account": creds[s.name]["account"]}
        if poll_interval is not None:
            extra["poll_interval"] = poll_interval
        out[s.connections.replica] = {"conn_type": "generic", "host": ep.url, "login": creds[s.name]["username"],
                                      "password": creds[s.name]["password"], "extra": extra}
    return out


def connection_env(conns: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` values for :func:`replica_connections`."""
    return {f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c, sort_keys=True) for cid, c in conns.items()}


def start_monitor(lr: LocalRucio, cfg: CampaignConfig, interval: float = 0.5) -> None:
    """The Replica Monitor for the campaign's scope, serving every RSE with a butler_repo.

    It runs in this (the project's) interpreter, as root on the local server, and keeps
    its state under the deployment's root. A daemon outlives the task or script that
    starts it: its environment is ``services.procs.child_env`` (no ``AIRFLOW_CONN_*`` or
    other credential of this process) plus its Rucio client settings, whose password
    stays in the 0600 client config ``RUCIO_CONFIG`` names.
    """
    from multisite_drp.services.procs import child_env

    paths = [str(ROOT / "plugins"), str(ROOT / "include"), str(ROOT)]
    pythonpath = os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = child_env({**lr.client_env(), "PYTHONPATH": pythonpath})
    argv = [sys.executable, "-m", "multisite_drp.services.replica.monitor", "--scope", cfg.replication.scope,
            "--discover", "--interval", str(interval), "--state-dir", str(lr.root / "monitor")]
    lr.start_process(MONITOR, argv, env=env, log=lr.root / "logs" / f"{MONITOR}.log", inherit=False)


def fill_local_connections(conns: dict[str, dict[str, Any]], cfg: CampaignConfig, rucio_root: Path,
                           poll_interval: float | None = None) -> dict[str, dict[str, Any]]:
    """The campaign's replica connections whose host is ``local-rucio``, filled in.

    ``conns``: conn_id -> Airflow JSON form (from airflow_settings.yaml). If any of the
    campaign's replica connections names the local Rucio, the deployment under
    ``rucio_root`` is started (or found running), the campaign's RSEs, accounts and scope
    are made, the Replica Monitor is started, and those connections get the server's URL
    and each site's own login and password. Returns conn_id -> filled connection (empty if
    none is local).
    """
    local = {s.connections.replica: conns[s.connections.replica] for s in cfg.sites
             if conns.get(s.connections.replica, {}).get("host") == LOCAL_RUCIO_HOST}
    if not local:
        return {}
    lr = LocalRucio(Path(rucio_root))
    lr.up()
    creds = prepare(lr, cfg)
    start_monitor(lr, cfg)
    out = {}
    for cid, new in replica_connections(lr, cfg, creds).items():
        if cid in local:
            new["extra"] = {**local[cid].get("extra", {}), **new["extra"]}
            if poll_interval is not None:
                new["extra"]["poll_interval"] = poll_interval
            out[cid] = new
    return out


def campaign_copy(dest: Path, scope: str, source: Path = EMBEDDED_CAMPAIGN) -> Path:
    """A copy of a campaign file under its own Rucio scope (pipeline path made absolute).

    Runs that share one local Rucio (the tests, the benchmarks) each build fresh sites
    under their own scope (``minidrp.build.build_sites(..., scope=...)``), so no run sees
    another's file DIDs, datasets or rules.
    """
    import yaml

    doc = yaml.safe_load(Path(source).read_text())
    doc["pipeline"] = str((Path(source).parent / doc["pipeline"]).resolve())
    doc["replication"] = {**doc["replication"], "scope": scope}
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "campaign.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def connection_infos(cfg: CampaignConfig, conns: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """site -> ``factory.ConnectionInfo`` for :func:`replica_connections` (no Airflow needed)."""
    from multisite_drp.services.factory import ConnectionInfo

    out = {}
    for s in cfg.sites:
        c = conns[s.connections.replica]
        out[s.name] = ConnectionInfo(conn_id=s.connections.replica, extra=c["extra"], host=c["host"],
                                     login=c["login"], password=c["password"],
                                     where=f"{cfg.source_path}: sites ({s.name}).connections.replica")
    return out
