"""The whole campaign through Airflow: three embedded sites, nine steps, the seed's milestones.

One module-scoped run of ``scripts/run_campaign.py`` (``dag.test()``: Airflow's own
scheduling loop, trigger rules, retries, and deferral to the real triggers, run inline)
on freshly built sites in a scratch directory, with its own Airflow home. USDF runs its
workflows with the embedded adapter; FrDF and UKDF submit theirs through BPS and
ctrl_bps_panda's real submission code to the local PanDA relay (``include/localpanda``,
the stand-in for PanDA and iDDS, which cannot run here), whose pilots run the jobs.
While it runs, a watcher SIGKILLs the step1 workflow at usdf in the middle of run-qbb
(the DAG must restart it and finish), and the relay kills UKDF's step1 job mid-run
(PanDA retries the job).

Replication goes through the session's REAL local Rucio (server, judge and conveyor
daemons, the local-copy transfertool in FTS's place, the Replica Monitor ingesting
arrivals) under a scope of this module's own.

Then the milestone tests read real outcomes: raws in each site's butler, graph files,
dataset counts in the butlers, DIDs, metadata, replicas and rules in the Rucio server's
own catalogue, the report.
Finally the same DAG run is cleared and run again (nothing may change), and one site's
step is cleared alone (it must find its earlier work and duplicate nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from multisite_drp.campaign import names
from multisite_drp.campaign.plan import CampaignPlan
from multisite_drp.services.butler import SiteButler

from tests.conftest import RUCIO_TEST_ROOT

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "include" / "campaigns" / "minidrp_embedded.yaml"
GOLDEN = json.loads((ROOT / "include" / "minidrp" / "golden_counts.json").read_text())
STEPS = [f"step{i}" for i in range(1, 10)]
KILL_STEP, KILL_SITE = "step1", "usdf"  # the embedded adapter's restart
PANDA_KILL_SITE = "ukdf"  # a PanDA job killed under the relay's pilot: PanDA retries it
PANDA_SITES = ("frdf", "ukdf")


def _run_dag(data_root: Path, airflow_home: Path, out: Path, *extra: str, campaign: Path | None = None,
             panda_root: Path | None = None) -> dict:
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home)}
    env.pop("AIRFLOW__CORE__DAGS_FOLDER", None)
    log = out.with_suffix(".log")
    if campaign is not None:
        extra = ("--campaign", str(campaign), *extra)
    if panda_root is not None:
        extra = ("--panda-root", str(panda_root), *extra)
    with open(log, "w") as fh:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "run_campaign.py"), "--data-root", str(data_root),
             "--rucio-root", str(RUCIO_TEST_ROOT), "--json-out", str(out), "--poll", "0.5", "--quiet", *extra],
            stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=1500, check=False,
        )
    assert out.exists(), f"run_campaign wrote no summary; see {log}:\n" + log.read_text()[-3000:]
    summary = json.loads(out.read_text())
    summary["returncode"] = proc.returncode
    summary["log"] = str(log)
    return summary


def _kill_mid_run(state_file: Path, stop: threading.Event, killed: dict) -> None:
    """SIGKILL the workflow's process group once it is inside run-qbb (like a lost batch node)."""
    while not stop.is_set():
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("phase") == "run-qbb" and state.get("attempt", 1) == 1 and state.get("pgid"):
            try:
                os.killpg(state["pgid"], signal.SIGKILL)
                killed["pgid"] = state["pgid"]
                killed["at"] = time.time()
            except ProcessLookupError:
                pass
            return
        time.sleep(0.05)


OUTAGE_STEP, OUTAGE_SECONDS = "step2", 60.0


def _kill_panda_job(relay, cfg, stop: threading.Event) -> None:
    """Once UKDF's step1 request exists at the relay, have its pilot SIGKILL that workflow's
    step1 job mid-run (a lost batch node): the relay counts it a failed attempt and retries."""
    name = names.workflow_name(cfg, KILL_STEP, PANDA_KILL_SITE, 0)
    record = names.submit_dir(cfg, KILL_STEP, PANDA_KILL_SITE, 0) / "panda.json"
    while not stop.is_set():
        if record.exists():
            # The step's job task (not pipetaskInit, not finalJob): <name>_NN_step1_<cluster>_NN.
            relay.control(kill_job=f"{name}_*_{KILL_STEP}_*")
            return
        stop.wait(0.2)


def _rucio_outage(lr, trigger: Path, stop: threading.Event, outage: dict) -> None:
    """Stop the Rucio server for OUTAGE_SECONDS once ``trigger`` exists (a step has begun), then
    start it again (daemons, PostgreSQL and the Replica Monitor keep running)."""
    while not stop.is_set():
        if trigger.exists():
            outage["stopped"] = lr.stop_server()
            outage["from"] = time.time()
            stop.wait(OUTAGE_SECONDS)
            lr.up()
            outage["to"] = time.time()
            return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def campaign(rucio_campaign_factory) -> dict:
    rucio = rucio_campaign_factory("e2e")
    base, data_root, cfg = rucio.base, rucio.data_root, rucio.cfg
    _RUCIO[cfg.replication.scope] = rucio
    state_file = names.submit_dir(cfg, KILL_STEP, KILL_SITE, 0) / "state.json"
    stop, killed, outage = threading.Event(), {}, {}
    watcher = threading.Thread(target=_kill_mid_run, args=(state_file, stop, killed), daemon=True)
    watcher.start()
    # The Rucio server goes away for a minute while step 2 begins at the remote sites.
    trigger = names.graph_path(cfg, OUTAGE_STEP, "ukdf", 0)
    outager = threading.Thread(target=_rucio_outage, args=(rucio.lr, trigger, stop, outage), daemon=True)
    outager.start()
    from localpanda import LocalPanDA

    relay = LocalPanDA(base / "panda")
    panda_kill = threading.Thread(target=_kill_panda_job, args=(relay, cfg, stop), daemon=True)
    panda_kill.start()
    t0 = time.monotonic()
    try:
        first = _run_dag(data_root, base / "airflow", base / "run1.json", campaign=rucio.campaign_file,
                         panda_root=base / "panda")
    finally:
        stop.set()
        watcher.join(5)
        outager.join(30)
        panda_kill.join(5)
        rucio.lr.up()  # whatever happened, the server is back for the next tests
    first["wall"] = time.monotonic() - t0
    yield {"base": base, "data_root": data_root, "config": cfg, "first": first, "killed": killed, "rucio": rucio,
           "outage": outage, "relay": relay}
    relay.down()


@pytest.fixture(scope="module")
def cfg(campaign):
    return campaign["config"]


@pytest.fixture(scope="module")
def plan(cfg) -> CampaignPlan:
    return CampaignPlan.load(names.plan_dir(cfg, 0))


def _butler(cfg, site: str) -> SiteButler:
    return SiteButler(site, cfg.repo_of(site), writeable=False)


@pytest.fixture(scope="module")
def rucio(campaign):
    return campaign["rucio"]


def _replica(cfg):
    """The Rucio adapter as the DAG built it (the module's scope, each site's own identity)."""
    return _RUCIO[cfg.replication.scope].service


_RUCIO: dict = {}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _step_runs(b: SiteButler, cfg) -> list[str]:
    from lsst.daf.butler import CollectionType

    return sorted(b.butler.collections.query(f"{cfg.output_prefix}/*/*/g*", collection_types={CollectionType.RUN}))


def snapshot(cfg) -> dict:
    """Everything a rerun must leave alone: rules, Rucio datasets and files, butler datasets,
    workflow submissions and graph files."""
    rep = _replica(cfg)
    butlers = {}
    for s in cfg.sites:
        b = _butler(cfg, s.name)
        runs = _step_runs(b, cfg)
        butlers[s.name] = {run: b.count(b.dataset_types_in(run), run) for run in runs}
        butlers[s.name]["raw"] = len(b.refs("raw", cfg.input_collections))
    workflows = {}
    for state in sorted((cfg.work_path / "submit").glob("*/*/g*/state.json")):
        st = json.loads(state.read_text())
        workflows[st["name"]] = (st["attempt"], st["state"], st["submitted"])
    for record in sorted((cfg.work_path / "submit").glob("*/*/g*/panda.json")):
        rec = json.loads(record.read_text())
        workflows[rec["spec"]["name"]] = [(s["name"], s["request_id"]) for s in rec["submissions"]]
    return {
        "rules": [(r["rule_id"], r["dataset"], r["rse"], r["state"]) for r in rep.list_rules()],
        "datasets": {d: rep.dataset_summary(d)["files"] for d in rep.list_datasets()},
        "butlers": butlers,
        "workflows": workflows,
        "graphs": {p.name: _sha(p) for p in sorted((cfg.work_path / "graphs").glob("*.qg"))},
    }


# -- the run itself ---------------------------------------------------------------------------


def test_campaign_run_succeeds(campaign) -> None:
    first = campaign["first"]
    assert first["state"] == "success", f"DAG run failed; log {first['log']}"
    assert first["returncode"] == 0
    # Every task ran (or was satisfied): nothing skipped or failed in a full campaign.
    assert first["task_states"] == {"success": sum(first["task_states"].values())}


# -- milestone 1: raws distributed ------------------------------------------------------------


def test_raws_distributed_to_every_site_per_plan(cfg, plan, campaign) -> None:
    hub = _butler(cfg, cfg.hub.name)
    all_raw = {(r.dataId["exposure"], r.dataId["detector"]) for r in hub.refs("raw", cfg.input_collections)}
    assigned = []
    for site in plan.sites:
        assigned += site.visits
        b = _butler(cfg, site.name)
        raws = {(r.dataId["exposure"], r.dataId["detector"]) for r in b.refs("raw", cfg.input_collections)}
        expected = {(e, d) for (e, d) in all_raw if e in set(site.visits)}
        if site.name == cfg.hub.name:
            assert raws == all_raw  # the hub keeps every raw
        else:
            assert raws == expected, f"{site.name}: raws differ from the plan's visits"
            assert len(raws) == 4 * len(site.visits) > 0
    assert sorted(assigned) == sorted({e for e, _ in all_raw}), "every visit is assigned to exactly one site"
    rep = _replica(cfg)
    for site in cfg.sites:
        if site.name == cfg.hub.name:
            continue
        rule = rep.find_rule(names.rucio_dataset(cfg, "raws", site.name, "raw", 0), site.name)
        assert rule is not None
        assert rep.rule_status([rule])[rule.rule_id].state.value == "OK"
        check = rep.verify_ingested(rule)
        assert check.complete and check.found == 4 * len(plan.site_visits(site.name))


# -- milestone 2: processing graphs distributed -----------------------------------------------


def test_every_step_has_a_graph_per_site_copied_back_to_usdf(cfg, plan) -> None:
    n_graphs = 0
    for step in STEPS:
        sites = plan.sites_for(step)
        assert sites == ([cfg.hub.name] if cfg.step(step).is_global else [s.name for s in cfg.sites])
        for site in sites:
            hub_copy = names.graph_path(cfg, step, site, 0)
            site_copy = names.site_work_dir(cfg, site) / "graphs" / hub_copy.name
            provenance = cfg.work_path / "provenance" / step / site / hub_copy.name
            assert hub_copy.is_file() and site_copy.is_file() and provenance.is_file()
            assert _sha(hub_copy) == _sha(site_copy) == _sha(provenance)
            n_graphs += 1
    assert n_graphs == 7 * 3 + 2


# -- milestone 3: outputs registered in the butler and in Rucio -------------------------------


def test_outputs_registered_in_site_butlers_and_in_rucio(cfg, plan, rucio) -> None:
    """Asked of the Rucio server's own catalogue: each (step, site) output dataset holds one
    file DID per butler dataset, with lsst-rucio-register's metadata naming exactly those
    datasets, replicas at the site's RSE, and (for returned outputs) at USDF's."""
    client, scope = rucio.root_client, cfg.replication.scope
    rep = _replica(cfg)
    for step in STEPS:
        for site in plan.sites_for(step):
            summary = json.loads(
                (names.graph_path(cfg, step, site, 0).with_suffix(".summary.json")).read_text())
            b = _butler(cfg, site)
            run = names.output_run(cfg, step, site, 0)
            counts = b.count(summary["predicted_outputs"], run)
            assert counts == summary["predicted_outputs"], f"{step}/{site}: butler lacks predicted outputs"
            butler_ids = {str(r.id) for t in b.dataset_types_in(run) for r in b.refs(t, run)}
            dataset = names.rucio_dataset(cfg, step, site, "outputs", 0)
            did = client.get_did(scope, dataset)
            assert did["type"] == "DATASET" and did["open"] is False, f"{dataset} is not a closed dataset"
            files = list(client.list_files(scope, dataset))
            assert len(files) == len(butler_ids), f"{dataset}: files != datasets"
            metas = list(client.get_metadata_bulk([{"scope": scope, "name": f["name"]} for f in files], plugin="JSON"))
            assert {m["rubin_butler"] for m in metas} == {"data_product"}
            assert {json.loads(m["rubin_sidecar"])["id"] for m in metas} == butler_ids
            rses = {cfg.site(site).rse} | {cfg.site(t).rse for t in _targets(cfg, step, site)}
            for r in client.list_replicas([{"scope": scope, "name": f["name"]} for f in files]):
                assert rses <= set(r["rses"]), f"{r['name']}: replicas at {sorted(r['rses'])}, expected {rses}"
            assert len(rep.dataset_refs(dataset)) == len(butler_ids)


def _targets(cfg, step: str, site: str) -> list[str]:
    if cfg.step(step).is_global:
        return [s.name for s in cfg.sites if s.name != cfg.hub.name]
    return [] if site == cfg.hub.name else [cfg.hub.name]


# -- milestone 4: outputs returned to USDF ----------------------------------------------------


def test_outputs_at_usdf_match_single_site_golden_counts(cfg) -> None:
    hub = _butler(cfg, cfg.hub.name)
    for step in STEPS:
        runs = [names.output_run(cfg, step, s.name, 0) for s in cfg.sites]
        runs = [r for r in runs if hub.collection_exists(r)]
        golden = GOLDEN[step]
        # find_first=False: a dataset returned twice would be counted twice.
        got = hub.count(golden, runs)
        assert got == golden, f"{step} at usdf: {got} != golden {golden}"
    # The campaign chain at the hub serves every output.
    chain = names.campaign_chain(cfg)
    assert hub.count(["pvi", "deepCoadd", "surveySummary"], chain) == {
        "pvi": GOLDEN["step1"]["pvi"], "deepCoadd": GOLDEN["step4"]["deepCoadd"], "surveySummary": 1}


def test_global_step_outputs_fanned_out_to_remote_sites(cfg) -> None:
    run = names.output_run(cfg, "step3", cfg.hub.name, 0)
    for site in ("frdf", "ukdf"):
        assert _butler(cfg, site).count(["zeroPoint"], run) == {"zeroPoint": GOLDEN["step3"]["zeroPoint"]}


# -- milestone 5: processing at a sufficient rate ---------------------------------------------


def test_rate_report_exists_and_adds_up(cfg, campaign) -> None:
    out = names.report_dir(cfg, 0)
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    rows = report["rows"]
    assert len(rows) == 7 * 3 + 2
    golden_quanta = sum(sum(v.values()) for v in GOLDEN["_quanta"].values())
    t = report["totals"]
    assert t["quanta_succeeded"] == sum(r["quanta_succeeded"] for r in rows) == golden_quanta
    assert t["quanta"] == sum(r["quanta"] for r in rows) == golden_quanta
    assert t["quanta_failed"] == 0
    assert t["bytes_in"] == sum(r["bytes_in"] for r in rows) > 0  # step4 brings other sites' PVIs
    assert t["bytes_out"] == sum(r["bytes_out"] for r in rows) > 0
    assert set(report["distribution_bytes"]) == {"frdf", "ukdf"}
    for r in rows:
        assert r["state"] == "SUCCEEDED" and r["accepted"] is True
        assert r["wall_seconds"] > 0
        assert r["quanta_per_hour"] == pytest.approx(r["quanta_succeeded"] * 3600 / r["wall_seconds"], rel=0.01)
        # Only the hub's rows can move nothing back; every remote row returns its outputs.
        if r["site"] != cfg.hub.name:
            assert r["bytes_out"] > 0
    rate = report["rate"]
    assert rate["quanta_per_hour"] == pytest.approx(golden_quanta * 3600 / report["wall_seconds"], rel=0.01)
    assert report["wall_seconds"] <= campaign["first"]["wall"]
    assert rate["meets_quanta_target"] is (rate["quanta_per_hour"] >= cfg.rate_target.quanta_per_hour)
    assert rate["meets_quanta_target"], f"campaign below the target rate: {rate}"
    assert "| step4 | frdf | SUCCEEDED |" in md and "quanta/h" in md


# -- robustness --------------------------------------------------------------------------------


def test_killed_workflow_was_restarted_and_finished(cfg, campaign) -> None:
    assert campaign["killed"].get("pgid"), "the watcher never saw the workflow in run-qbb"
    state = json.loads((names.submit_dir(cfg, KILL_STEP, KILL_SITE, 0) / "state.json").read_text())
    assert state["state"] == "SUCCEEDED" and state["attempt"] == 2, state
    assert state["counts"]["succeeded"] == state["counts"]["total"] > 0
    report = json.loads((names.report_dir(cfg, 0) / "report.json").read_text())
    row = next(r for r in report["rows"] if (r["step"], r["site"]) == (KILL_STEP, KILL_SITE))
    assert row["attempts"] == 2 and row["quanta_failed"] == 0


def test_remote_workflows_went_through_ctrl_bps_panda(cfg, plan, campaign) -> None:
    """Every FrDF and UKDF workflow was prepared by BPS (its submit directory, the planner's
    YAML included by the overlay) and submitted by PanDAService to the relay, whose pilots
    ran its jobs and its final merge job."""
    import yaml

    relay = campaign["relay"]
    executed = {}
    for e in relay.executions():
        executed.setdefault(e["request_id"], []).append(e)
    for step in STEPS:
        for site in plan.sites_for(step):
            sdir = names.submit_dir(cfg, step, site, 0)
            if site not in PANDA_SITES:
                assert (sdir / "state.json").exists() and not (sdir / "panda.json").exists()
                continue
            record = json.loads((sdir / "panda.json").read_text())
            [sub] = record["submissions"]
            name = names.workflow_name(cfg, step, site, 0)
            assert sub["name"] == name
            assert (sdir / "bps" / name / "panda_workflow.pickle").exists()  # PanDAService.prepare
            overlay = yaml.safe_load((sdir / "bps_submit.yaml").read_text())
            assert overlay["includeConfigs"][0].endswith(f"bps/{step}/{site}/group000.yaml")
            request = relay.request(sub["request_id"])
            assert request["name"] == name
            labels = {e["label"] for e in executed[sub["request_id"]] if e.get("exit_code") == 0}
            assert {"pipetaskInit", "finalJob"} <= labels, (step, site, labels)


def test_killed_panda_job_was_retried_by_the_relay(cfg, campaign) -> None:
    name = names.workflow_name(cfg, KILL_STEP, PANDA_KILL_SITE, 0)
    runs = [e for e in campaign["relay"].executions()
            if e.get("request_name") == name]
    step_jobs = [e for e in runs if e["label"] not in ("pipetaskInit", "finalJob")]
    assert any(e.get("exit_code") not in (0, None) for e in step_jobs), step_jobs
    assert step_jobs[-1].get("exit_code") == 0, step_jobs


def test_rucio_outage_mid_step_was_ridden_out_without_duplicates(cfg, campaign) -> None:
    """The server was down for a minute during step 2; the run still succeeded (asserted
    above), and Rucio holds exactly one rule per (dataset, RSE) and one file per butler
    dataset in every output dataset (the milestone-3 test)."""
    outage = campaign["outage"]
    assert outage.get("stopped"), f"the server was never stopped: {outage}"
    assert outage["to"] - outage["from"] >= OUTAGE_SECONDS
    assert campaign["first"]["state"] == "success"
    rules = _replica(cfg).list_rules()
    keys = [(r["dataset"], r["rse"]) for r in rules]
    assert len(keys) == len(set(keys)), "a (dataset, RSE) has two rules"
    assert {r["state"] for r in rules} == {"OK"}


def _report_figures(cfg) -> dict:
    report = json.loads((names.report_dir(cfg, 0) / "report.json").read_text())
    return {k: report[k] for k in ("rows", "totals", "wall_seconds", "rate", "distribution_bytes")}


def test_rerunning_the_completed_run_changes_nothing(cfg, campaign) -> None:
    before, figures = snapshot(cfg), _report_figures(cfg)
    again = _run_dag(campaign["data_root"], campaign["base"] / "airflow", campaign["base"] / "run2.json",
                     "--logical-date", campaign["first"]["logical_date"], campaign=campaign["rucio"].campaign_file,
                     panda_root=campaign["relay"].root)
    assert again["state"] == "success", f"rerun failed; log {again['log']}"
    assert snapshot(cfg) == before
    # The report task ran again and, from the services' own records, reports the same campaign.
    assert _report_figures(cfg) == figures
    campaign["rerun_seconds"] = again["seconds"]


def test_clearing_one_sites_step_reruns_it_without_duplicates(cfg, campaign) -> None:
    before = snapshot(cfg)
    decision = names.submit_dir(cfg, "step4", "frdf", 0) / "decision.json"
    stamp = decision.stat().st_mtime_ns
    only = r"step4\.frdf\..*|step4\.barrier"
    again = _run_dag(campaign["data_root"], campaign["base"] / "airflow", campaign["base"] / "run3.json",
                     "--logical-date", campaign["first"]["logical_date"], "--only", only,
                     campaign=campaign["rucio"].campaign_file, panda_root=campaign["relay"].root)
    assert again["state"] == "success", f"cleared tasks failed; log {again['log']}"
    # The cleared tasks really ran (the wait task re-applied the policy) ...
    assert decision.stat().st_mtime_ns > stamp
    # ... and found their earlier work: no new submission, rule, Rucio file or dataset.
    assert snapshot(cfg) == before


def test_dry_run_plans_and_reports_without_any_external_action(rucio_campaign_factory) -> None:
    rucio = rucio_campaign_factory("dryrun", monitor=False)
    data_root, cfg, tmp_path = rucio.data_root, rucio.cfg, rucio.base
    _RUCIO[cfg.replication.scope] = rucio
    from localpanda import LocalPanDA

    try:
        run = _run_dag(data_root, tmp_path / "airflow", tmp_path / "dry.json", "--dry-run",
                       campaign=rucio.campaign_file, panda_root=tmp_path / "panda")
    finally:
        LocalPanDA(tmp_path / "panda").down()  # run_campaign fills the PanDA connections: it started one
    assert run["state"] == "success", f"dry run failed; log {run['log']}"
    states = run["task_states"]
    assert states["success"] == 3 and states["skipped"] == sum(states.values()) - 3  # validate, plan, report
    assert (names.plan_dir(cfg, 0) / "plan.json").is_file() and (names.plan_dir(cfg, 0) / "skymap.png").is_file()
    # Nothing external happened: no rule, no graph, no submission, no new dataset at any site.
    assert _replica(cfg).list_rules() == [] and _replica(cfg).list_datasets() == []
    assert not (cfg.work_path / "graphs").exists() and not (cfg.work_path / "submit").exists()
    for s in cfg.sites:
        b = _butler(cfg, s.name)
        assert _step_runs(b, cfg) == []
        assert len(b.refs("raw", cfg.input_collections)) == (120 if s.name == cfg.hub.name else 0)
    assert "dry run: the plan" in Path(run["log"]).read_text()
