"""``drp_nightly`` under the real scheduler and triggerer (include/airflowstack): three nights
of the embedded survey, then a backfill over them with ``reprocess_behavior: completed``
through the REST API (what ``airflow backfill create`` and the UI's dialog call).

The sites are fresh embedded ones on the local Rucio (its daemons and the Replica Monitor
running). The campaign copy says FrDF holds every raw, and FrDF's butler starts with none:
the nightly DAG must bring it all of them, and UKDF the raws of its own visits. Counted
before and after the backfill: rules and datasets in Rucio, files in each dataset, raws in
each site's butler, the assignment files. The backfill re-runs every task of every night
(new start times) and changes none of them. No workflow is submitted by this DAG.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from airflowstack import AirflowStack
from airflowstack.stack import STATIC_DAGS
from multisite_drp.campaign import names
from multisite_drp.campaign.config import load_campaign
from multisite_drp.services import actions
from multisite_drp.services.butler import SiteButler

from scripts.load_airflow_settings import connection_env
from tests.conftest import ROOT

pytestmark = pytest.mark.server

DAG = "drp_nightly"
NIGHTS = [datetime(2024, 6, d, 12, tzinfo=UTC) for d in (1, 2, 3)]
TASKS = {"assign_visits", "register_raws", "frdf.raws", "frdf.wait_ingested", "ukdf.raws",
         "ukdf.wait_ingested"}


def _raw_tasks(tis: dict) -> dict:
    """The raw tasks' states; the step-1 tasks (Param run_step1 off, the default) must have
    done nothing: the splits list no group, everything else is skipped."""
    step1 = {t: ti["state"] for t, ti in tis.items() if t not in TASKS}
    assert step1 and all(s == ("success" if t.startswith("step1.split.") else "skipped")
                         for t, s in step1.items()), step1
    return {t: ti["state"] for t, ti in tis.items() if t in TASKS}


@pytest.fixture(scope="module")
def nightly(rucio_campaign_factory, tmp_path_factory):
    env = rucio_campaign_factory("nightbf")
    env.say_holds_all_raws("frdf", pin_data_root=True)
    cfg = load_campaign(env.campaign_file)
    actions.make_plan(cfg, 0)  # the generation's tract regions (drp_campaign's plan task in production)
    dags = tmp_path_factory.mktemp("nightly_dags")
    shutil.copy(ROOT / "dags" / "drp_nightly.py", dags / "drp_nightly.py")
    stack_env = {**os.environ, **connection_env(yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())),
                 **env.connection_env(), "MULTISITE_DRP_CAMPAIGN": str(env.campaign_file),
                 "MULTISITE_DRP_ALLOWED_ROOTS": f"{env.base}:{ROOT / 'include' / 'pipelines'}"}
    root = Path(os.environ["AIRFLOW_HOME"]) / "stack-nightly"
    st = AirflowStack(root, dags_folder=dags, env=stack_env, settings=STATIC_DAGS)
    st.down()
    shutil.rmtree(root, ignore_errors=True)
    try:
        st.up()
        client = st.endpoint().client()
        client.ensure_pool("drp_replication", 8, "Rucio registrations and rules")
        client.wait_dag(DAG, timeout=180)
        client.unpause(DAG)
        runs = [client.trigger(DAG, {}, logical_date=night)["dag_run_id"] for night in NIGHTS]
        first = {r: client.wait_run(DAG, r, timeout=600) for r in runs}
        before = _counts(env, cfg)
        tis_before = {r: {t["task_id"]: t for t in client.task_instances(DAG, r)} for r in runs}
        created = time.time()
        backfill = client.request("POST", "/api/v2/backfills", json={
            "dag_id": DAG, "from_date": NIGHTS[0].isoformat(), "to_date": NIGHTS[-1].isoformat(),
            "reprocess_behavior": "completed", "max_active_runs": 2, "dag_run_conf": {}}).json()
        again = {r: client.wait_run(DAG, r, timeout=600) for r in runs}
        after = _counts(env, cfg)
        tis_after = {r: {t["task_id"]: t for t in client.task_instances(DAG, r)} for r in runs}
        registered = {r: client.xcom(DAG, r, "register_raws") for r in runs}
        yield {"cfg": cfg, "env": env, "runs": runs, "first": first, "again": again, "before": before,
               "after": after, "tis_before": tis_before, "tis_after": tis_after, "created": created,
               "backfill": backfill, "registered": registered, "logs": st.logs}
    finally:
        st.down()


def _counts(env, cfg) -> dict:
    scope = cfg.replication.scope
    client = env.root_client
    datasets = sorted(d for d in client.list_dids(scope, {"name": "Dataset/MiniCam/raw/*"}, did_type="dataset"))
    files = {d: len(list(client.list_files(scope, d))) for d in datasets}
    rules = sorted((r["name"], r["rse_expression"]) for r in client.list_replication_rules({"scope": scope}))
    raws = {}
    for s in cfg.sites:
        b = SiteButler(s.name, cfg.repo_of(s))
        refs = b.butler.query_datasets("raw", collections="*", find_first=False, explain=False,
                                       where="instrument = 'MiniCam' AND day_obs IN (20240601, 20240602, 20240603)")
        raws[s.name] = Counter((int(r.dataId["day_obs"]), int(r.dataId["exposure"])) for r in refs)
    assignments = {p.name: p.read_text() for p in (cfg.work_path / "nights" / "g0").glob("*.json")}
    return {"datasets": datasets, "files": files, "rules": rules, "raws": raws, "assignments": assignments}


def test_three_nights_reach_every_site_that_needs_them(nightly) -> None:
    assert {r["state"] for r in nightly["first"].values()} == {"success"}, nightly["first"]
    for run, tis in nightly["tis_before"].items():
        assert _raw_tasks(tis) == dict.fromkeys(TASKS, "success"), run
    cfg, before = nightly["cfg"], nightly["before"]
    assert sorted(before["assignments"]) == [f"{n:%Y%m%d}.json" for n in NIGHTS]
    plan = load_plan(cfg)
    site_of = {v: s.name for s in plan.sites for v in s.visits}
    night_visits = {(d, v) for (d, v) in before["raws"]["usdf"]}
    assert len(night_visits) == 18 and set(before["raws"]["usdf"].values()) == {4}
    # FrDF holds every raw of the three nights; UKDF exactly those of its visits.
    assert before["raws"]["frdf"] == before["raws"]["usdf"]
    assert set(before["raws"]["ukdf"]) == {(d, v) for (d, v) in night_visits if site_of[v] == "ukdf"}
    assert set(before["raws"]["ukdf"].values()) == {4}
    # One dataset per (home tract, night) of the assignments, 72 raw files in all; a rule to
    # FrDF for each, and to UKDF for each of its own.
    homes = {}
    for text in before["assignments"].values():
        a = json.loads(text)
        for v in a["visits"].values():
            homes[names.night_raw_dataset(cfg, v["tract"], a["day_obs"])] = v["site"]
    assert before["datasets"] == sorted(homes) and sum(before["files"].values()) == 72
    assert Counter(name for name, _ in before["rules"]) == Counter(
        {d: 1 + (site == "ukdf") for d, site in homes.items()})
    assert len(before["rules"]) == len(homes) + sum(site == "ukdf" for site in homes.values())


def load_plan(cfg):
    from multisite_drp.campaign.plan import CampaignPlan

    return CampaignPlan.load(names.plan_dir(cfg, 0))


def test_the_backfill_reran_every_night_and_changed_nothing(nightly) -> None:
    assert nightly["backfill"]["reprocess_behavior"] == "completed"
    assert {r["state"] for r in nightly["again"].values()} == {"success"}, nightly["again"]
    for run in nightly["runs"]:
        after = nightly["tis_after"][run]
        assert _raw_tasks(after) == dict.fromkeys(TASKS, "success"), run
        for task in TASKS:  # every task really ran again
            ti = after[task]
            started = datetime.fromisoformat(ti["start_date"]).timestamp()
            assert started >= nightly["created"] - 1, (run, task, ti["start_date"])
        assert sum(d["new_files"] for d in nightly["registered"][run]) == 0, nightly["registered"][run]
    assert nightly["after"] == nightly["before"]
