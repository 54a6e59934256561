"""The Airflow glue on its own: validation before any external action, skip decisions,
adapter selection from Connections, site selection, the plan's stability guard, and how
the project's errors end a task (a bad input fails at once; a transient error is retried).

Most call the operators' ``execute`` with a minimal context (no DAG run), against real
campaign files and, where a butler is needed, freshly built embedded sites; the retry
test runs a small DAG through ``dag.test()`` (Airflow's own scheduling and retry logic).
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException
from multisite_drp.campaign.config import CampaignConfigError, load_campaign
from multisite_drp.errors import InputError, TransientError
from multisite_drp.hooks.campaign import CampaignHook, ConnectionMissingError
from multisite_drp.hooks.mixin import RETRY_DEFAULTS, CampaignTaskMixin, skip_reason
from multisite_drp.operators.drp import BarrierOperator, ValidateCampaignOperator
from multisite_drp.sensors.drp import ReplicationSensor
from multisite_drp.services.factory import AdapterError
from multisite_drp.services.workflow.panda import PanDAUnavailableError

from scripts.load_airflow_settings import connection_env
from tests.dags._dagtest import run_dag_test

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "include" / "campaigns" / "minidrp_embedded.yaml"
SITES = ["usdf", "frdf", "ukdf"]
STEPS = [f"step{i}" for i in range(1, 10)]


def _replica_conn(site: str, **kw) -> dict:
    """A Rucio replica connection in production form (no server is contacted by these tests)."""
    return {"conn_type": "generic", "host": "https://rucio.example.org:443", "login": f"drp_{site}",
            "password": f"secret-{site}-pw", "extra": {"adapter": "rucio", "account": f"drp_{site}"}, **kw}


@pytest.fixture()
def connections(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = connection_env(yaml.safe_load((ROOT / "airflow_settings.yaml").read_text()))
    for site in SITES:  # airflow_settings.yaml names the local Rucio; here: a production-shaped one
        env[f"AIRFLOW_CONN_DRP_{site.upper()}_REPLICA"] = json.dumps(_replica_conn(site))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="module")
def sites_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from minidrp.build import build_sites

    root = tmp_path_factory.mktemp("glue_sites")
    build_sites(root)
    return root


def _params(**kw):
    return {"campaign_file": str(CAMPAIGN), "data_root": None, "steps": [], "sites": [], "generation": 0,
            "dry_run": False, **kw}


def _validate(params):
    op = ValidateCampaignOperator(task_id="validate_campaign", dag_sites=SITES, dag_steps=STEPS)
    return op.execute({"params": params})


def test_validate_accepts_the_embedded_campaign(connections, sites_root) -> None:
    # A dry run: validation then logs in to no service (the Rucio here is not reachable);
    # the login check itself runs against the real local Rucio in tests/services.
    summary = _validate(_params(data_root=str(sites_root), dry_run=True))
    assert summary["replica_identities"] == {}
    assert summary["adapters"] == {"usdf": "embedded", "frdf": "panda", "ukdf": "panda"}
    assert summary["sites"] == {"usdf": 0.35, "frdf": 0.4, "ukdf": 0.25}


def test_validate_names_the_missing_butler_repo(connections, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"sites \(usdf\)\.butler_repo: .* run `make sites`"):
        _validate(_params(data_root=str(tmp_path)))


def test_validate_names_file_and_field_of_a_bad_campaign(connections, tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(CAMPAIGN.read_text())
    data["pipeline"] = str(CAMPAIGN.parent / data["pipeline"])
    data["sites"][1]["share"] = 0.9
    bad.write_text(yaml.safe_dump(data))
    # A bad campaign file is an InputError: the task fails at once, the message kept.
    with pytest.raises(AirflowFailException, match=rf"{bad}: sites: shares must sum to 1.0") as err:
        _validate(_params(campaign_file=str(bad)))
    assert isinstance(err.value.__cause__, CampaignConfigError)


def test_sites_param_must_keep_the_hub_and_rescales_shares(tmp_path) -> None:
    with pytest.raises(CampaignConfigError, match="leaves out the hub 'usdf'"):
        load_campaign(CAMPAIGN, sites=["frdf", "ukdf"])
    with pytest.raises(CampaignConfigError, match=r"names \['nodf'\]"):
        load_campaign(CAMPAIGN, sites=["usdf", "nodf"])
    cfg = load_campaign(CAMPAIGN, sites=["usdf", "frdf"])
    assert [s.name for s in cfg.sites] == ["usdf", "frdf"]
    assert [round(s.share, 4) for s in cfg.sites] == [round(0.35 / 0.75, 4), round(0.40 / 0.75, 4)]


def test_missing_connection_is_named_with_the_campaign_field(monkeypatch, connections) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_DRP_UKDF_WORKFLOW")
    hook = CampaignHook(str(CAMPAIGN))
    with pytest.raises(ConnectionMissingError, match=r"sites \(ukdf\)\.connections\.workflow = connection "
                                                     r"'drp_ukdf_workflow' is not defined"):
        _ = hook.settings


@pytest.mark.parametrize(("extra", "message"), [
    ({"adapter": "panda"}, r"'host' is empty; expected the PanDA server URL"),
    ({"adapter": "panda", "monitor": "x"}, r"unknown extra fields \['monitor'\]"),
    ({"adapter": "slurm"}, r"extra field 'adapter' is 'slurm'; expected one of \['embedded', 'panda'\]"),
    ({"adapter": "embedded", "processes": 0}, r"extra field 'processes' is 0; expected an integer in \[1, 64\]"),
    ({"adapter": "embedded", "poll_interval": "soon"}, "extra field 'poll_interval' is 'soon'"),
])
def test_bad_workflow_connection_is_refused_before_anything_runs(monkeypatch, connections, extra, message) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DRP_FRDF_WORKFLOW", json.dumps({"conn_type": "generic", "extra": extra}))
    with pytest.raises(AdapterError, match=r"connection 'drp_frdf_workflow'.*" + message):
        _ = CampaignHook(str(CAMPAIGN)).settings


def test_panda_connection_needs_a_panda_compute_site_and_keeps_the_token_apart(monkeypatch, connections) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DRP_USDF_WORKFLOW", json.dumps(
        {"conn_type": "generic", "host": "https://panda.example.org", "extra": {"adapter": "panda"}}))
    with pytest.raises(AdapterError, match=r"asks for adapter 'panda', but the campaign's sites \(usdf\)"
                                           r"\.compute_site is 'local'"):
        _ = CampaignHook(str(CAMPAIGN)).settings
    monkeypatch.setenv("AIRFLOW_CONN_DRP_FRDF_WORKFLOW", json.dumps(
        {"conn_type": "generic", "host": "https://panda.example.org", "password": "secret-token",
         "extra": {"adapter": "panda", "auth_vo": "Rubin", "monitor_url": "https://mon.example.org"}}))
    hook = CampaignHook(str(CAMPAIGN))
    settings = hook.workflow_settings("frdf")
    assert settings["url"] == "https://panda.example.org/server/panda" and settings["vo"] == "Rubin"
    assert "secret-" not in json.dumps(settings)
    service = hook.workflow_service("frdf")
    assert service._token == "secret-token" and "secret-" not in repr(service)
    with pytest.raises(AdapterError, match=r"the password holds a token but extra field 'auth_vo' is missing"):
        monkeypatch.setenv("AIRFLOW_CONN_DRP_FRDF_WORKFLOW", json.dumps(
            {"conn_type": "generic", "host": "https://panda.example.org", "password": "secret-token",
             "extra": {"adapter": "panda"}}))
        _ = CampaignHook(str(CAMPAIGN)).workflow_settings("frdf")


def test_rucio_settings_hold_each_sites_identity_and_no_secret(connections) -> None:
    hook = CampaignHook(str(CAMPAIGN))
    settings = hook.settings["replica"]
    assert settings["adapter"] == "rucio" and settings["scope"] == "minidrp"
    assert {s: (v["account"], v["rse"], v["conn_id"]) for s, v in settings["sites"].items()} == {
        site: (f"drp_{site}", f"{site.upper()}_LOCAL_DISK", f"drp_{site}_replica") for site in SITES}
    assert "secret-" not in json.dumps(hook.settings)


@pytest.mark.parametrize(("site", "conn", "message"), [
    ("frdf", {"conn_type": "generic", "extra": {"adapter": "embedded"}}, r"'adapter' is 'embedded'; expected one of \['rucio'\]"),
    ("frdf", _replica_conn("frdf", password=None), r"'password' is empty; expected the Rucio password of login"),
    ("ukdf", _replica_conn("ukdf", host="https://other-rucio.example.org"), "different Rucio servers"),
    ("ukdf", _replica_conn("ukdf", extra={"adapter": "rucio", "token": "abc"}), r"unknown extra fields \['token'\]"),
    ("usdf", _replica_conn("usdf", host=None), "'host' is empty"),
    ("usdf", _replica_conn("usdf", login=None), "'login' is empty"),
])
def test_bad_replica_connection_is_refused_naming_it(monkeypatch, connections, site, conn, message) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_DRP_{site.upper()}_REPLICA", json.dumps(conn))
    with pytest.raises(AdapterError, match=message) as err:
        _ = CampaignHook(str(CAMPAIGN)).settings
    assert "secret-" not in str(err.value)


def test_skip_reasons(connections, sites_root) -> None:
    from multisite_drp.services import actions

    assert "dry_run" in skip_reason(_params(dry_run=True), None, "step1", "frdf")
    assert "not among the selected steps" in skip_reason(_params(steps=["step2"]), None, "step1", "frdf")
    hook = CampaignHook(str(CAMPAIGN), data_root=str(sites_root), sites=["usdf", "frdf"])
    assert "not among the selected sites" in skip_reason(_params(sites=["usdf", "frdf"]), hook, "step1", "ukdf")
    actions.make_plan(hook.config, hook.generation)
    assert skip_reason(_params(), hook, "step1", "frdf") is None
    assert "runs at ['usdf']" in skip_reason(_params(), hook, "step3", "frdf")


def test_plan_is_kept_per_generation_and_guarded_against_change(connections, sites_root) -> None:
    from multisite_drp.campaign import names
    from multisite_drp.services import actions

    full = CampaignHook(str(CAMPAIGN), data_root=str(sites_root), generation=5)
    shutil.rmtree(names.plan_dir(full.config, 5), ignore_errors=True)
    first = actions.make_plan(full.config, full.generation)
    assert set(first["sites"]) == {"usdf", "frdf", "ukdf"}
    plan_file = names.plan_dir(full.config, 5) / "plan.json"
    text = plan_file.read_text()
    assert actions.make_plan(full.config, full.generation) == first  # a rerun plans the same and keeps the file
    assert plan_file.read_text() == text
    # Dropping a site under an existing generation would move visits under finished work.
    fewer = CampaignHook(str(CAMPAIGN), data_root=str(sites_root), generation=5, sites=["usdf", "frdf"])
    with pytest.raises(actions.PlanChangedError, match="trigger with a new 'generation'"):
        actions.make_plan(fewer.config, fewer.generation)
    assert plan_file.read_text() == text
    # A new generation plans afresh.
    fewer6 = CampaignHook(str(CAMPAIGN), data_root=str(sites_root), generation=6, sites=["usdf", "frdf"])
    assert set(actions.make_plan(fewer6.config, fewer6.generation)["sites"]) == {"usdf", "frdf"}


# --- how the project's errors end a task (hooks.mixin.CampaignTaskMixin) ------------------

_SLURM = {"conn_type": "generic", "extra": {"adapter": "slurm"}}


@pytest.mark.parametrize("make", [
    lambda: BarrierOperator(task_id="barrier", step="step1"),
    lambda: ReplicationSensor(task_id="wait_ingested", site="frdf", kind="distribution"),
], ids=["operator", "sensor"])
def test_a_bad_connection_extra_fails_the_task_without_retry(monkeypatch, connections, make) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DRP_FRDF_REPLICA", json.dumps(_SLURM))  # both tasks go through Rucio
    task = make()
    with pytest.raises(AirflowFailException, match=r"connection 'drp_frdf_replica'.*extra field 'adapter' is "
                                                   r"'slurm'; expected one of") as err:
        task.execute({"params": _params()})
    assert isinstance(err.value.__cause__, AdapterError) and isinstance(err.value.__cause__, InputError)


def test_a_task_validates_the_ports_it_touches_before_building_them(monkeypatch, connections) -> None:
    """get_conn reads every replica connection at once, a site's workflow and butler
    connections when an action first asks for that site's port (validate_campaign reads all)."""
    monkeypatch.setenv("AIRFLOW_CONN_DRP_UKDF_WORKFLOW", json.dumps(_SLURM))
    monkeypatch.delenv("AIRFLOW_CONN_DRP_UKDF_BUTLER")
    hook = CampaignHook(str(CAMPAIGN))
    read: list[str] = []
    real_get = CampaignHook.get_connection
    monkeypatch.setattr(CampaignHook, "get_connection", classmethod(
        lambda cls, conn_id: (read.append(conn_id), real_get(conn_id))[1]))
    ctx = hook.get_conn()
    assert sorted(read) == ["drp_frdf_replica", "drp_ukdf_replica", "drp_usdf_replica"]
    assert type(ctx.workflows["frdf"]).__name__ == "PanDAWorkflowService"
    assert ctx.butlers["usdf"].repo == hook.config.repo_of("usdf")
    assert sorted(read) == ["drp_frdf_replica", "drp_frdf_workflow", "drp_ukdf_replica", "drp_usdf_butler",
                            "drp_usdf_replica"]  # not the other sites' workflow and butler connections
    with pytest.raises(AdapterError, match=r"connection 'drp_ukdf_workflow'.*extra field 'adapter' is 'slurm'"):
        ctx.workflows["ukdf"]  # validated before it is built
    with pytest.raises(ConnectionMissingError, match=r"connection 'drp_ukdf_butler' is not defined"):
        ctx.butlers["ukdf"]
    with pytest.raises(AirflowFailException, match=r"connection 'drp_ukdf_workflow'.*'slurm'"):
        _validate(_params(dry_run=True))  # validate_campaign still checks every connection up front


def test_a_missing_connection_fails_the_task_without_retry(monkeypatch, connections) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_DRP_UKDF_REPLICA")
    with pytest.raises(AirflowFailException, match=r"sites \(ukdf\)\.connections\.replica = connection "
                                                   r"'drp_ukdf_replica' is not defined") as err:
        BarrierOperator(task_id="barrier", step="step1").execute({"params": _params()})
    assert isinstance(err.value.__cause__, ConnectionMissingError)


def test_a_transient_error_is_left_to_airflow_with_backoff(connections) -> None:
    from airflow.sdk import BaseOperator

    class RelayDownOperator(CampaignTaskMixin, BaseOperator):
        """Test double: a campaign task whose PanDA relay never answers."""

        def __init__(self, **kwargs) -> None:
            super().__init__(**self.with_retry_defaults(kwargs))

        def execute(self, context):
            raise PanDAUnavailableError("the PanDA relay at http://127.0.0.1:9 did not answer (test double)")

    task = RelayDownOperator(task_id="relay_down")
    with pytest.raises(PanDAUnavailableError) as err:  # raised as is, not turned into a failure
        task.execute({"params": _params()})
    assert isinstance(err.value, TransientError)
    assert (task.retry_exponential_backoff, task.max_retry_delay) == (
        RETRY_DEFAULTS["retry_exponential_backoff"], RETRY_DEFAULTS["max_retry_delay"])
    # The task's own settings and the DAG's default_args win over the mixin's defaults.
    assert RelayDownOperator(task_id="own", retry_exponential_backoff=0).retry_exponential_backoff == 0
    assert BarrierOperator(task_id="dag_default", step="step1",
                           default_args={"retry_exponential_backoff": 3.0}).retry_exponential_backoff == 3.0


ERRORS_DAG = textwrap.dedent('''
    from datetime import timedelta

    from airflow.sdk import DAG, BaseOperator
    from multisite_drp.hooks.mixin import CampaignTaskMixin
    from multisite_drp.operators.drp import BarrierOperator
    from multisite_drp.services.workflow.panda import PanDAUnavailableError


    class RelayDownOperator(CampaignTaskMixin, BaseOperator):
        """Test double: a campaign task whose PanDA relay never answers (a TransientError)."""

        def __init__(self, **kwargs):
            super().__init__(**self.with_retry_defaults(kwargs))

        def execute(self, context):
            raise PanDAUnavailableError("the PanDA relay at http://127.0.0.1:9 did not answer (test double)")


    with DAG("drp_errors_test", schedule=None, catchup=False,
             default_args={"retries": 2, "retry_delay": timedelta(seconds=0)},
             params={"campaign_file": "", "data_root": None, "steps": [], "sites": [], "generation": 0,
                     "dry_run": False}):
        BarrierOperator(task_id="bad_extra", step="step1")
        RelayDownOperator(task_id="relay_down")
''')



def test_through_airflow_a_bad_extra_is_tried_once_a_transient_error_is_retried(connections, tmp_path) -> None:
    """Both tasks allow 2 retries: the bad extra fails on its first try, the relay that is
    down is tried 3 times (Airflow's retries, with the mixin's exponential backoff)."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "errors_dag.py").write_text(ERRORS_DAG)
    env = {**os.environ, **connections, "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW_CONN_DRP_FRDF_REPLICA": json.dumps(_SLURM)}  # get_conn reads every replica connection
    result, text = run_dag_test(dags, "drp_errors_test", _params(), env, tmp_path / "dag_test.log")
    assert result["state"] == "failed"
    assert result["tasks"]["bad_extra"] == ["failed", 1]
    assert result["tasks"]["relay_down"] == ["failed", 3]
    assert "extra field 'adapter' is 'slurm'" in text and "AirflowFailException" in text


# --- a graph build defers while its command runs (operators.commands.CommandOperatorMixin) ----


def test_graph_build_defers_while_its_command_runs_and_a_retry_finds_it(connections, sites_root) -> None:
    """GenerateGraphOperator starts the group's ``pipetask qgraph`` through the hub's command
    runner (here the embedded one: a local subprocess; in production a pod, no cluster here)
    and defers on a CommandTrigger that carries Params, connection ids and the command's ref,
    no secret. A second try while it runs finds the same command (attempt 1), the trigger's
    event ends the task with the graph kept, summarised and copied to the site; once built,
    the task returns without deferring."""
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred
    from multisite_drp.campaign import names
    from multisite_drp.operators.drp import GenerateGraphOperator
    from multisite_drp.services import actions
    from multisite_drp.services.fileio import read_json

    hook = CampaignHook(str(CAMPAIGN), data_root=str(sites_root), generation=8)
    shutil.rmtree(names.plan_dir(hook.config, 8), ignore_errors=True)
    actions.make_plan(hook.config, 8)
    context = {"params": _params(data_root=str(sites_root), generation=8)}
    op = GenerateGraphOperator(task_id="step1.frdf.generate_qg", step="step1", site="frdf",
                               group={"group": 0, "label": "visits"}, settle_seconds=0)  # defer at once
    with pytest.raises(TaskDeferred) as first:
        op.execute(context)
    with pytest.raises(TaskDeferred) as again:  # a retry while the build runs: found, not started twice
        op.execute(context)
    trigger = first.value.trigger
    classpath, kwargs = trigger.serialize()
    assert classpath == "multisite_drp.triggers.commands.CommandTrigger"
    assert kwargs["site"] == "usdf"  # every group's graph is built at the hub
    assert {k: kwargs["params"][k] for k in ("campaign_file", "data_root", "generation")} == \
        {k: context["params"][k] for k in ("campaign_file", "data_root", "generation")}
    text = json.dumps(kwargs)
    assert not any(v in text for k, v in connections.items() if "secret" in v)
    ref = first.value.kwargs["ref"]
    assert again.value.kwargs["ref"]["name"] == ref["name"] and again.value.kwargs["ref"]["attempt"] == ref["attempt"] == 1
    record = names.command_dir(hook.config, "usdf") / ref["name"]
    graph = names.graph_path(hook.config, "step1", "frdf", 8, 0)
    assert not graph.exists()

    async def first_event():
        async for event in trigger.run():
            return event

    event = asyncio.run(asyncio.wait_for(first_event(), 300))
    assert event.payload["status"] == "done"
    result = op.execute_complete(context, event.payload, **first.value.kwargs)
    assert graph.exists() and result["quanta"] > 0 and result["qgraph"] == str(graph)
    assert Path(result["site_qgraph"]).read_bytes() == graph.read_bytes()
    assert read_json(actions.graph_summary_path(graph))["quanta"] == result["quanta"]
    # A build that ends within the task's settle time needs no deferral: the task waits for it
    # in the worker and returns the graph (group 1, its own command).
    quick = GenerateGraphOperator(task_id="step1.frdf.generate_qg", step="step1", site="frdf",
                                  group={"group": 1, "label": "visits"}, settle_seconds=300)
    built = quick.execute(context)
    assert Path(built["qgraph"]) == names.graph_path(hook.config, "step1", "frdf", 8, 1) and built["quanta"] > 0
    assert read_json(record / "spec.json")["attempt"] == 1
    assert op.execute(context)["sha256"] == result["sha256"]  # built: no command, no deferral
    assert read_json(record / "spec.json")["attempt"] == 1
