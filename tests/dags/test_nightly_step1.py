"""``drp_nightly`` with ``run_step1``: one night's raws, then step 1 for that night's visits
at their sites, through the campaign's own step TaskGroup, in the night's own collections.

Run by ``dag.test()`` in a subprocess (Airflow's loop, deferrals to the real triggers run
inline) on fresh embedded sites wired to the local Rucio (its daemons and the Replica
Monitor running); every site's workflows are the embedded ones (``pipetask run-qbb``), the
graphs real ``pipetask qgraph`` builds at the hub. FrDF holds every raw and starts with none.

Asserted from the outside: every output of the night's graphs is in its site's butler under
``<prefix>/nightly/<day_obs>/step1/<site>/g0/group<NNN>``, the remote sites' outputs are
registered in Rucio and back at USDF; nothing lands in the campaign's own step-1
collections. A second run of the same night submits nothing, adds no rule, and leaves every
count as it was.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter

import pytest
import yaml
from multisite_drp.campaign import names
from multisite_drp.campaign.config import load_campaign
from multisite_drp.campaign.plan import CampaignPlan
from multisite_drp.services import actions
from multisite_drp.services.butler import SiteButler

from scripts.load_airflow_settings import connection_env
from tests.conftest import ROOT
from tests.dags._dagtest import run_dag_test

pytestmark = [pytest.mark.e2e, pytest.mark.server]

NIGHT = 20240601
DAG = "drp_nightly"


def _outputs(cfg, night_cfg) -> dict:
    """Per site: the night's step-1 datasets by type (any collection under the night's prefix),
    and the campaign's own step-1 RUNs (which must stay empty)."""
    out = {}
    for s in cfg.sites:
        b = SiteButler(s.name, cfg.repo_of(s))
        runs = sorted(b.butler.collections.query(f"{night_cfg.output_prefix}/step1/*/g0/group*"))
        refs = b.butler.query_all_datasets(runs, find_first=False) if runs else []
        out[s.name] = {"runs": runs, "types": dict(Counter(r.datasetType.name for r in refs)),
                       "campaign_runs": sorted(b.butler.collections.query(
                           names.output_run_pattern(cfg, "step1")))}
    return out


def _rucio(env, night_cfg) -> dict:
    client = env.root_client
    scope = night_cfg.replication.scope
    datasets = sorted(client.list_dids(scope, {"name": f"Dataset/{night_cfg.name}/*"}, did_type="dataset"))
    rules = sorted((r["name"], r["rse_expression"], r["state"]) for r in client.list_replication_rules(
        {"scope": scope}) if r["name"].startswith(f"Dataset/{night_cfg.name}/"))
    return {"datasets": datasets, "files": {d: len(list(client.list_files(scope, d))) for d in datasets},
            "rules": rules}


def _submissions(night_cfg) -> dict:
    """Each group's submit directory and what the embedded workflow service recorded there."""
    root = night_cfg.work_path / "submit"
    return {str(p.relative_to(root)): sorted(f.name for f in p.iterdir())
            for p in sorted(root.glob("step1/*/g0/group*"))}


@pytest.fixture(scope="module")
def night(rucio_campaign_factory, tmp_path_factory):
    env = rucio_campaign_factory("nightstep1")
    env.say_holds_all_raws("frdf")
    cfg = load_campaign(env.campaign_file, data_root=env.data_root)
    actions.make_plan(cfg, 0)  # the generation's tract regions (drp_campaign's plan task in production)
    night_cfg = names.night_config(cfg, NIGHT)
    dags = tmp_path_factory.mktemp("nightly_step1_dags")
    shutil.copy(ROOT / "dags" / "drp_nightly.py", dags / "drp_nightly.py")
    run_env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               **connection_env(yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())),
               **env.connection_env(), "MULTISITE_DRP_CAMPAIGN": str(env.campaign_file),
               "MULTISITE_DRP_ALLOWED_ROOTS": f"{env.base}:{ROOT / 'include' / 'pipelines'}"}
    # Every site runs its workflows with the embedded adapter here: the PanDA path (BPS and
    # ctrl_bps_panda to the local relay) is the campaign module's; this module is about the night.
    for site in ("frdf", "ukdf"):
        run_env[f"AIRFLOW_CONN_DRP_{site.upper()}_WORKFLOW"] = json.dumps(
            {"conn_type": "generic", "extra": {"adapter": "embedded", "processes": 1, "poll_interval": 0.5}})
    conf = {"campaign_file": str(env.campaign_file), "data_root": str(env.data_root), "generation": 0,
            "day_obs": NIGHT, "run_step1": True}
    first, first_log = run_dag_test(dags, DAG, conf, run_env, env.base / "first.log")
    snap = {"outputs": _outputs(cfg, night_cfg), "rucio": _rucio(env, night_cfg),
            "submissions": _submissions(night_cfg)}
    again, again_log = run_dag_test(dags, DAG, conf, run_env, env.base / "again.log")
    snap_again = {"outputs": _outputs(cfg, night_cfg), "rucio": _rucio(env, night_cfg),
                  "submissions": _submissions(night_cfg)}
    return {"cfg": cfg, "night_cfg": night_cfg, "first": first, "again": again, "snap": snap,
            "snap_again": snap_again, "logs": (first_log, again_log),
            "plan": CampaignPlan.load(names.plan_dir(night_cfg, 0)),
            "assignment": json.loads(names.night_assignment_path(cfg, 0, NIGHT).read_text())}


def test_the_night_ran_step1_at_its_visits_sites(night) -> None:
    first = night["first"]
    assert first["state"] == "success", (first, night["logs"][0][-3000:])
    tasks = first["tasks"]
    assert tasks["plan_step1"][0] == "success" and tasks["step1.barrier"][0] == "success", tasks
    plan, assignment = night["plan"], night["assignment"]
    by_site = Counter(a["site"] for a in assignment["visits"].values())
    assert sum(by_site.values()) == 6 and len(by_site) >= 2, by_site
    # The night's plan holds exactly its visits, each at its assigned site, in step 1's groups.
    assert {s.name: sorted(s.visits) for s in plan.sites if s.visits} == {
        site: sorted(int(v) for v, a in assignment["visits"].items() if a["site"] == site) for site in by_site}
    assert {g.step for g in plan.groups} == {"step1"} and not plan.transfers
    assert sorted(v for g in plan.groups for v in g.ids) == sorted(int(v) for v in assignment["visits"])
    assert plan.campaign == f"{night['cfg'].name}-n{NIGHT}"


def test_every_output_is_at_its_site_and_back_at_usdf_in_the_nights_collections(night) -> None:
    out, plan, hub = night["snap"]["outputs"], night["plan"], night["cfg"].hub.name
    sites = sorted({g.site for g in plan.groups})
    per_site = {}
    for site in sites:
        groups = plan.groups_for("step1", site)
        assert out[site]["runs"] == sorted(names.output_run(night["night_cfg"], "step1", site, 0, g.group)
                                           for g in groups)
        # The graphs' predicted outputs, all of them, in the site's butler.
        predicted = Counter()
        for g in groups:
            summary = json.loads(actions.graph_summary_path(
                names.graph_path(night["night_cfg"], "step1", site, 0, g.group)).read_text())
            predicted.update(summary["predicted_outputs"])
        held = {t: out[site]["types"].get(t, 0) for t in predicted}
        assert predicted and held == dict(predicted), (site, out[site]["types"], predicted)
        per_site[site] = predicted
    # USDF holds its own and every remote site's night outputs (replicated back, ingested).
    remote_back = sum((per_site[s] for s in sites if s != hub), Counter())
    hub_types = Counter()
    for site in sites:
        hub_types.update(per_site[site])
    usdf_runs = out[hub]["runs"]
    assert sorted(usdf_runs) == sorted(names.output_run(night["night_cfg"], "step1", s, 0, g.group)
                                       for s in sites for g in plan.groups_for("step1", s))
    assert {t: out[hub]["types"].get(t, 0) for t in hub_types} == dict(hub_types) and remote_back, out[hub]["types"]
    # Nothing reached the campaign's own step-1 collections.
    assert all(not o["campaign_runs"] for o in out.values()), {s: o["campaign_runs"] for s, o in out.items()}


def test_remote_outputs_are_registered_in_rucio_and_ruled_to_usdf(night) -> None:
    rucio, plan, cfg = night["snap"]["rucio"], night["plan"], night["night_cfg"]
    remote = [(g.site, g.group) for g in plan.groups if g.site != cfg.hub.name]
    assert remote
    for site, group in remote:
        dataset = names.rucio_dataset(cfg, "step1", site, "outputs", 0, group)
        assert rucio["files"].get(dataset), (dataset, rucio["datasets"])
        assert (dataset, cfg.site(cfg.hub.name).rse, "OK") in rucio["rules"], rucio["rules"]


def test_the_same_night_again_submits_nothing_and_moves_nothing(night) -> None:
    again = night["again"]
    assert again["state"] == "success", (again, night["logs"][1][-3000:])
    assert night["snap_again"] == night["snap"]
    assert night["snap"]["submissions"], "no submit directory was written"
    assert "found" in night["logs"][1] and '"submission": "new"' not in night["logs"][1]
