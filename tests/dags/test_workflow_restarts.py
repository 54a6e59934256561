"""A workflow that keeps failing: the wait restarts it ``auto_restarts`` times, then fails and alerts.

Through Airflow: a two-task DAG (the real ``SubmitWorkflowOperator`` and ``WorkflowSensor``
in their ``step1.usdf`` groups, ``CampaignAlertNotifier`` as ``on_failure_callback``, no
Airflow retries) run by ``dag.test()`` in a subprocess (Airflow's scheduling loop, the
sensor's deferral to the real ``WorkflowTrigger`` run inline, the task's failure callback).
Step 1 of one visit at the hub, with the embedded workflow service; one ``isr`` quantum
fails on every attempt (the test bed's ``MINIDRP_FAIL_QUANTA``), so 1 failed + 1 blocked of
8 quanta: fraction 0.25, above the campaign's non-zero threshold 0.1.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest
import yaml
from minidrp.tasks._faults import ENV as FAULT_ENV
from multisite_drp.campaign import names
from multisite_drp.campaign.config import load_campaign
from multisite_drp.services import actions
from multisite_drp.services.butler import SiteButler

from scripts.load_airflow_settings import connection_env
from tests.conftest import CAMPAIGN, ROOT
from tests.dags._dagtest import run_dag_test
from tests.notifiers.test_alert_slack import SlackReceiver

pytestmark = pytest.mark.e2e

SITE, STEP = "usdf", "step1"
AUTO_RESTARTS = 1  # the DAG's default (operators/groups.py): one restart, then the task fails
THRESHOLD = 0.1

DAG_FILE = textwrap.dedent('''
    from datetime import timedelta

    from airflow.sdk import DAG, TaskGroup
    from multisite_drp.notifiers.alert import CampaignAlertNotifier
    from multisite_drp.operators.drp import SubmitWorkflowOperator
    from multisite_drp.sensors.drp import WorkflowSensor

    with DAG("drp_restarts_test", schedule=None, catchup=False,
             default_args={"retries": 0, "on_failure_callback": CampaignAlertNotifier()},
             params={"campaign_file": "", "data_root": None, "steps": [], "sites": [], "generation": 0,
                     "dry_run": False, "rescue": False}):
        with TaskGroup("step1"), TaskGroup("usdf"):
            submit = SubmitWorkflowOperator(task_id="submit", step="step1", site="usdf", group=0)
            wait = WorkflowSensor(task_id="wait_workflow", step="step1", site="usdf", group=0,
                                  auto_restarts=__AUTO_RESTARTS__, timeout=timedelta(minutes=10))
            submit >> wait
''').replace("__AUTO_RESTARTS__", str(AUTO_RESTARTS))



@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    from minidrp.build import build_sites

    base = tmp_path_factory.mktemp("restarts")
    data_root = base / "sites"
    build_sites(data_root)
    doc = yaml.safe_load(CAMPAIGN.read_text())
    doc["pipeline"] = str((CAMPAIGN.parent / doc["pipeline"]).resolve())
    doc["failed_quanta_threshold"] = THRESHOLD
    doc["alerts"] = {"slack_webhook_conn_id": "drp_alerts_slack"}
    campaign = base / "campaign.yaml"
    campaign.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_campaign(campaign, data_root=data_root, sites=[SITE])
    actions.make_plan(cfg, 0)
    ctx = actions.CampaignContext(config=cfg, workflows={}, replica=None,
                                  butlers={SITE: SiteButler(SITE, cfg.repo_of(SITE))})
    visit = min(r.id for r in ctx.butlers[SITE].butler.query_dimension_records("visit", explain=False))
    with pytest.MonkeyPatch.context() as mp:
        # The planner gives the hub every visit (in groups); this test pins one visit as its
        # group 0 (8 quanta), before the DAG runs.
        mp.setattr(actions, "data_query", lambda c, step, site, group: f"instrument = 'MiniCam' AND visit = {visit}")
        assert actions.generate_qg(ctx, STEP, SITE, 0)["quanta"] == 8

    dags = base / "dags"
    dags.mkdir()
    (dags / "restarts_dag.py").write_text(DAG_FILE)
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    env.update(connection_env(yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())))
    # Neither task calls the replica port: a production-shaped Rucio connection no one contacts.
    env["AIRFLOW_CONN_DRP_USDF_REPLICA"] = json.dumps(
        {"conn_type": "generic", "host": "https://rucio.example.org:443", "login": "drp_usdf",
         "password": "never-sent", "extra": {"adapter": "rucio", "account": "drp_usdf"}})
    env["AIRFLOW_CONN_DRP_USDF_WORKFLOW"] = json.dumps(
        {"conn_type": "generic", "extra": {"adapter": "embedded", "processes": 1, "poll_interval": 0.2}})
    # Every attempt fails the same isr quantum. Children see an allow-listed environment
    # (services.procs.child_env): the knob is added by name, for the runner and its children.
    env[FAULT_ENV] = f"isr:exposure={visit},detector=2"
    env["MULTISITE_DRP_CHILD_ENV"] = f"MULTISITE_DRP_CHILD_ENV,{FAULT_ENV}"
    # Alerts go to Slack through the provider's notifier: here a loopback receiver (no Slack).
    slack = SlackReceiver()
    env["AIRFLOW_CONN_DRP_ALERTS_SLACK"] = json.dumps(
        {"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{slack.port}/services", "password": "T0/B0/tok"})
    conf = {"campaign_file": str(campaign), "data_root": str(data_root), "sites": [SITE], "generation": 0}
    try:
        result, text = run_dag_test(dags, "drp_restarts_test", conf, env, base / "dag_test.log")
    finally:
        slack.stop()
    return {"cfg": cfg, "visit": visit, "log": text, "slack": slack.posts, **result}


def test_the_wait_restarts_exactly_n_times_then_fails(run) -> None:
    cfg = run["cfg"]
    assert run["state"] == "failed", run["tasks"]
    assert run["tasks"]["step1.usdf.submit"] == ["success", 1]
    assert run["tasks"]["step1.usdf.wait_workflow"] == ["failed", 1]  # one try: the restarts are the sensor's
    # Each restart the sensor asked for happened (none lost to a runner still exiting).
    asked = {ln for ln in run["log"].splitlines() if "; restarting it (attempt " in ln}  # a line logged twice is one
    assert len(asked) == AUTO_RESTARTS, asked
    submit_dir = names.submit_dir(cfg, STEP, SITE, 0, 0)
    state = json.loads((submit_dir / "state.json").read_text())
    assert state["attempt"] == AUTO_RESTARTS + 1 and state["state"] == "FAILED", state
    logs = sorted(p.name for p in (submit_dir / "logs").glob("run_qbb.*.log"))
    assert logs == [f"run_qbb.{i}.log" for i in range(1, AUTO_RESTARTS + 2)]
    for i in range(1, AUTO_RESTARTS + 2):
        assert "failed on purpose" in (submit_dir / "logs" / f"run_qbb.{i}.log").read_text()
    decision = json.loads((submit_dir / "decision.json").read_text())
    assert decision["outcome"] == "rejected" and decision["attempt"] == AUTO_RESTARTS + 1
    assert (decision["quanta_failed"], decision["quanta_blocked"], decision["quanta_total"]) == (1, 1, 8)
    # The final job merged what succeeded on every attempt; nothing was lost or duplicated.
    hub = SiteButler(SITE, cfg.repo_of(SITE))
    assert hub.count(["postIsr", "pvi"], names.output_run(cfg, STEP, SITE, 0, 0)) == {"postIsr": 3, "pvi": 3}


def test_the_failure_is_an_alert_naming_the_task_fraction_and_threshold(run) -> None:
    alerts = [json.loads(ln) for ln in (run["cfg"].work_path / "alerts.jsonl").read_text().splitlines()]
    alerts = [a for a in alerts if a["level"] == "failure"]
    assert [a["task_id"] for a in alerts] == ["step1.usdf.wait_workflow"]
    error = alerts[0]["error"]
    assert (f"minidrp_step1_usdf_g0_group000 rejected by the partial-success policy after {AUTO_RESTARTS + 1} "
            "attempt(s)") \
        in error
    assert "1 failed and 1 blocked of 8 quanta" in error and "fraction 0.25 > threshold 0.1" in error
    assert alerts[0]["try_number"] == 1 and alerts[0]["dag_id"] == "drp_restarts_test"


def test_each_restart_is_a_warning_and_all_reach_slack(run) -> None:
    """The policy's restarts are warnings (one per attempt, however often the sensor
    resumed), separate from the failure; each warning and the failure reached Slack."""
    alerts = [json.loads(ln) for ln in (run["cfg"].work_path / "alerts.jsonl").read_text().splitlines()]
    warnings = [a for a in alerts if a["level"] == "warning"]
    assert [(w["kind"], w["task_id"]) for w in warnings] == \
        [("workflow_restarted", "step1.usdf.wait_workflow")] * AUTO_RESTARTS
    assert "restarted by policy, attempt 2 of 2" in warnings[0]["error"]
    texts = [p["json"]["text"] for p in run["slack"]]
    assert len(texts) == AUTO_RESTARTS + 1, texts
    assert texts[0].startswith("*DRP warning (workflow_restarted): step1.usdf.wait_workflow*")
    assert texts[-1].startswith("*DRP alert: step1.usdf.wait_workflow failed (try 1)*")
    assert all(p["path"] == "/services/T0/B0/tok" for p in run["slack"])
