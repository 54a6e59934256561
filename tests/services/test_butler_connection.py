"""A site's butler repository has one source: the campaign file's ``sites (<site>).butler_repo``.

The butler connection used to take a ``repo`` extra that only ``SiteButler`` honoured,
while the planner, the graphs, the BPS configs, the Replica Monitor's RSE and the report
read the campaign file: two repositories for one site. The extra is gone; a connection
naming one is refused with the place to set it instead.
"""

from __future__ import annotations

import json

import pytest
import yaml
from multisite_drp.campaign.config import load_campaign
from multisite_drp.hooks.campaign import CampaignHook
from multisite_drp.services.factory import AdapterError

from scripts.load_airflow_settings import connection_env
from tests.conftest import CAMPAIGN, ROOT


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> None:
    env = connection_env(yaml.safe_load((ROOT / "airflow_settings.yaml").read_text()))
    for site in ("usdf", "frdf", "ukdf"):  # production-shaped replica connections: nothing is contacted
        env[f"AIRFLOW_CONN_DRP_{site.upper()}_REPLICA"] = json.dumps(
            {"conn_type": "generic", "host": "https://rucio.example.org:443", "login": f"drp_{site}",
             "password": f"secret-{site}-pw", "extra": {"adapter": "rucio", "account": f"drp_{site}"}})
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_every_reader_of_a_sites_repository_gets_the_campaign_files(connections) -> None:
    cfg = load_campaign(CAMPAIGN, check_pipeline=False)
    hook = CampaignHook(str(CAMPAIGN))
    ctx = hook.get_conn()
    for s in cfg.sites:
        repo = cfg.repo_of(s)
        assert hook.settings["butlers"][s.name]["repo"] == repo
        assert ctx.butlers[s.name].repo == repo  # what the actions and the merge use
        assert hook.replica_settings["sites"][s.name]["repo"] == repo  # what ingest checks use


def test_a_butler_connection_naming_a_repository_is_refused(connections, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DRP_FRDF_BUTLER", json.dumps(
        {"conn_type": "generic", "extra": {"adapter": "embedded", "repo": "/elsewhere/frdf"}}))
    with pytest.raises(AdapterError, match=r"connection 'drp_frdf_butler': extra field 'repo' is '/elsewhere/frdf', "
                                           r"but a site's butler repository is the campaign file's "
                                           r"sites \(frdf\)\.butler_repo"):
        CampaignHook(str(CAMPAIGN)).settings  # noqa: B018 - validates every connection


def test_a_butler_connection_with_an_unknown_extra_is_refused(connections, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DRP_UKDF_BUTLER", json.dumps(
        {"conn_type": "generic", "extra": {"adapter": "embedded", "root": "/x"}}))
    with pytest.raises(AdapterError, match=r"connection 'drp_ukdf_butler': unknown extra fields \['root'\]"):
        CampaignHook(str(CAMPAIGN)).settings  # noqa: B018


def test_the_ports_queries_answer_from_the_registry(minidrp_root) -> None:
    """What the actions ask of the hub's collections and the nightly DAG of its observations
    goes through the port (``flatten``, ``chain_children``, ``runs_matching``, ``data_ids``,
    ``dimension_ids``), answered by the registry of a built repository;
    ``factory.butler_service`` builds that port with the campaign's lock limit."""
    from lsst.daf.butler import CollectionType
    from multisite_drp.services import factory

    cfg = load_campaign(CAMPAIGN, check_pipeline=False)
    hub = factory.butler_service({"site": "usdf", "repo": str(minidrp_root / "usdf")}, cfg.timeouts.lock_seconds)
    assert (hub.site, hub.lock_timeout) == ("usdf", cfg.timeouts.lock_seconds)
    members = ["MiniCam/raw/all", "MiniCam/calib", "refcats/mini", "skymaps"]
    assert hub.chain_children("MiniCam/defaults") == members
    assert hub.chain_children("MiniCam/calib") is None  # a RUN is no chain
    assert hub.flatten(["MiniCam/defaults"]) == members
    # (a prefix of this test's own: the session's repositories serve other tests)
    for step in ("step1", "step2"):
        hub.butler.collections.register(f"porttest/{step}/usdf/g0/group000", CollectionType.RUN)
    hub.ensure_chain("porttest/step1/usdf", ["porttest/step1/usdf/g0/group000"])
    assert hub.runs_matching("porttest/step1/*") == ["porttest/step1/usdf/g0/group000"]  # not the chain
    assert hub.runs_matching("porttest/step9/*") == []
    where = "instrument = 'MiniCam'"
    visits = sorted(hub.dimension_ids("visit", where))
    assert visits == sorted(r.id for r in hub.butler.query_dimension_records("visit", where=where, explain=False))
    assert len(visits) > 10
    rows = hub.data_ids(["visit", "detector"], f"{where} AND visit IN (v)", bind={"v": visits[:2]})
    assert {r["visit"] for r in rows} == set(visits[:2]) and all(r["instrument"] == "MiniCam" for r in rows)
    assert len(rows) == len(list(hub.butler.query_dimension_records(
        "visit_detector_region", where=f"{where} AND visit IN (v)", bind={"v": visits[:2]}, explain=False)))



def test_site_butlers_of_a_process_share_one_opened_repository(tmp_path) -> None:
    """``SiteButler`` opens each repository once per process and hands out clones: each has
    caches of its own, so one sees what another wrote after it opened; a repository built
    again at the same path is opened afresh, not read through the old one's connections."""
    import shutil

    from minidrp.build import build_sites
    from multisite_drp.services import butler as port

    repo = build_sites(tmp_path / "sites")["usdf"]
    first, second = port.SiteButler("usdf", str(repo)), port.SiteButler("usdf", str(repo))
    assert first.butler is not second.butler
    mine = [k for k in port._TEMPLATES if k[1] == str(repo)]
    assert len(mine) == 1, mine
    assert not second.collection_exists("porttest/clone/run")  # second opened, then first writes
    first.butler.collections.register("porttest/clone/run")
    assert second.collection_exists("porttest/clone/run")
    shutil.rmtree(tmp_path / "sites")
    build_sites(tmp_path / "sites")
    again = port.SiteButler("usdf", str(repo))
    assert not again.collection_exists("porttest/clone/run")  # the new repository, not the old one's pool
    assert len([k for k in port._TEMPLATES if k[1] == str(repo)]) == 2
