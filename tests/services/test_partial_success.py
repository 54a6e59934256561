"""Partial success with a non-zero ``failed_quanta_threshold``, through the real ports.

Step 1 of two visits at the hub (which holds every input: no replication is needed, so
no replica service) through the real actions, the embedded workflow service (a detached
runner: pre-exec-init-qbb, run-qbb, the final merge), real butlers. One quantum fails
for real: the test bed's fault knob (``MINIDRP_FAIL_QUANTA``, ``minidrp.tasks._faults``)
makes ``isr`` raise for one (exposure, detector); its ``calibrate`` is then blocked.
So 1 failed + 1 blocked of 16 quanta: fraction 0.125.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from minidrp.tasks._faults import ENV as FAULT_ENV
from multisite_drp.campaign import names
from multisite_drp.campaign.config import load_campaign
from multisite_drp.services import actions
from multisite_drp.services.butler import SiteButler
from multisite_drp.services.workflow.base import WmsStates, WorkflowRef
from multisite_drp.services.workflow.embedded import EmbeddedWorkflowService

from tests.conftest import CAMPAIGN, wait_until

pytestmark = pytest.mark.e2e

SITE = "usdf"
OUTPUTS = ("postIsr", "pvi", "src", "pviSummary")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One step1 workflow at the hub with one injected isr failure, run to its end."""
    from minidrp.build import build_sites

    root = tmp_path_factory.mktemp("partial")
    build_sites(root)
    cfg = load_campaign(CAMPAIGN, data_root=root)
    ctx = actions.CampaignContext(config=cfg, workflows={SITE: EmbeddedWorkflowService(SITE, processes=1)},
                                  replica=None, butlers={SITE: SiteButler(SITE, cfg.repo_of(SITE))})
    hub = ctx.butlers[SITE].butler
    visits = sorted(r.id for r in hub.query_dimension_records("visit", explain=False))[:2]
    bad = {"exposure": visits[0], "detector": 1}
    with pytest.MonkeyPatch.context() as mp:
        # The planner decides the real restriction; this test pins two visits.
        mp.setattr(actions, "data_query",
                   lambda c, step, site, group: f"instrument = 'MiniCam' AND visit IN ({visits[0]}, {visits[1]})")
        mp.setenv(FAULT_ENV, f"isr:exposure={bad['exposure']},detector={bad['detector']}")
        # Children see an allow-listed environment (services.procs.child_env); a deployment adds
        # names with $MULTISITE_DRP_CHILD_ENV, which must itself reach the runner's own children.
        mp.setenv("MULTISITE_DRP_CHILD_ENV", f"MULTISITE_DRP_CHILD_ENV,{FAULT_ENV}")
        qg = actions.generate_qg(ctx, "step1", SITE, 0)
        ref = WorkflowRef.from_dict(actions.submit(ctx, "step1", SITE, 0, processes=1))  # the runner inherits the knob
    service = ctx.workflows[SITE]
    status = wait_until(lambda: (s := service.status([ref])[ref.run_id]).terminal and s, timeout=300)
    return {"ctx": ctx, "ref": ref, "status": status, "qg": qg, "bad": bad}


def _with_threshold(ctx, threshold: float):
    ctx.config = ctx.config.model_copy(update={"failed_quanta_threshold": threshold})
    return ctx


def test_counts_of_a_workflow_with_a_failed_quantum(finished) -> None:
    status, ref = finished["status"], finished["ref"]
    assert finished["qg"]["quanta"] == 16
    # run-qbb failed, the final job merged what was produced anyway (BPS's finalJob).
    assert status.state is WmsStates.FAILED and status.merged, status
    assert "run-qbb failed" in status.message
    # The blocked calibrate is blocked, not succeeded (lsst.pipe.base reports it 'skipped').
    assert (status.quanta_total, status.quanta_succeeded, status.quanta_failed, status.quanta_blocked) == (16, 14, 1, 1)
    assert status.failed_fraction == 2 / 16
    log = (Path(ref.submit_dir) / "logs" / "run_qbb.1.log").read_text()
    assert "InjectedFault" in log and "failed on purpose" in log


def test_below_the_threshold_is_a_partial_success_with_merged_outputs(finished) -> None:
    ctx, ref, bad = _with_threshold(finished["ctx"], 0.2), finished["ref"], finished["bad"]
    decision = actions.accept(ctx, ref)
    assert decision["accepted"] and decision["outcome"] == "partial_success"
    assert (decision["failed_fraction"], decision["threshold"]) == (0.125, 0.2)
    recorded = json.loads((Path(ref.submit_dir) / "decision.json").read_text())
    assert recorded == json.loads(json.dumps(decision))
    assert "fraction 0.125 <= threshold 0.2" in recorded["reason"]

    merged = actions.merge(ctx, "step1", SITE, 0)
    science = {t: (merged["counts"][t], merged["predicted"][t]) for t in OUTPUTS}
    assert science == dict.fromkeys(OUTPUTS, (7, 8))  # the succeeded quanta's outputs, merged
    assert (merged["counts"]["isr_metadata"], merged["counts"]["calibrate_metadata"]) == (7, 7)
    hub = ctx.butlers[SITE]
    run = merged["output_run"]
    assert hub.count(OUTPUTS, run) == dict.fromkeys(OUTPUTS, 7)
    missing = {(r.dataId["exposure"], r.dataId["detector"]) for r in hub.refs("postIsr", run)}
    assert (bad["exposure"], bad["detector"]) not in missing and len(missing) == 7
    # The step's chain at the site now leads to the run, as for a full success.
    assert hub.butler.collections.get_info(names.output_chain(ctx.config, "step1", SITE)).children == (run,)


def test_above_the_threshold_is_rejected_naming_fraction_and_threshold(finished) -> None:
    ctx, ref = _with_threshold(finished["ctx"], 0.1), finished["ref"]
    decision = actions.accept(ctx, ref)
    assert not decision["accepted"] and decision["outcome"] == "rejected"
    assert decision["reason"] == "1 failed and 1 blocked of 16 quanta (fraction 0.125, threshold 0.1): " \
                                 "fraction 0.125 > threshold 0.1"
    assert json.loads((Path(ref.submit_dir) / "decision.json").read_text())["accepted"] is False


def test_an_accepted_partial_success_is_one_warning(finished, monkeypatch) -> None:
    """The real sensor's ending (``WorkflowSensor._finish``), twice, as a retried wait would:
    the task succeeds both times, and the operator gets one ``partial_success`` warning."""
    from types import SimpleNamespace

    from multisite_drp.sensors.drp import WorkflowSensor

    ctx, ref = _with_threshold(finished["ctx"], 0.2), finished["ref"]
    root = ctx.config.data_root_path
    monkeypatch.setenv("MULTISITE_DRP_ALLOWED_ROOTS", f"{root}:{CAMPAIGN.parents[1]}")
    sensor = WorkflowSensor(task_id="wait_workflow", step="step1", site=SITE, group=0)
    for try_number in (1, 2):
        ti = SimpleNamespace(dag_id="drp_campaign", run_id="manual__ps", task_id="step1.usdf.wait_workflow",
                             map_index=0, try_number=try_number, log_url=None)
        context = {"ti": ti, "params": {"campaign_file": str(CAMPAIGN), "data_root": str(root), "generation": 0}}
        assert sensor._finish(ctx, ref, context)["outcome"] == "partial_success"
    [warning] = [json.loads(ln) for ln in (ctx.config.work_path / "alerts.jsonl").read_text().splitlines()]
    assert (warning["level"], warning["kind"], warning["task_id"], warning["map_index"]) == \
        ("warning", "partial_success", "step1.usdf.wait_workflow", 0)
    assert warning["error"].startswith(f"{ref.name} accepted as a partial success: 1 failed and 1 blocked of 16")
