"""The PanDA workflow adapter against the local PanDA relay.

PanDA and iDDS cannot run on this machine. ``include/localpanda`` stands in for them: a
loopback HTTP server that speaks ``/relay_idds_command`` exactly as ctrl_bps_panda 30.0.0
calls it, and runs the submitted jobs the way PanDA's pilots would (real ``pipetask`` and ``butler``
commands; ctrl_bps_panda's own edge-node command decoder in the first test, the tests'
quick stand-in for it, ``tests/localpanda/quick_decoder.py``, in the others). Everything on our
side is the production code: ctrl_bps's transform and prepare, ``PanDAService.submit``,
panda-client's HTTP client with an OIDC token, the adapter's records.

The site's butler here is the hub's repository, which holds every input, so no Rucio is
needed: these tests are about submission, status, policy, cancel, restart and rescue.
"""

from __future__ import annotations

import asyncio
import json
import types
from pathlib import Path

import pytest
import yaml
from multisite_drp.campaign.config import load_campaign
from multisite_drp.services import actions, factory
from multisite_drp.services.butler import SiteButler
from multisite_drp.services.workflow.base import WmsStates
from multisite_drp.services.workflow.panda import PanDAAuthError, PanDAUnavailableError, PanDAWorkflowService

from tests.conftest import ROOT, wait_until
from tests.localpanda._bps import QUICK_RUNNER

pytestmark = pytest.mark.e2e

TOKEN = "tkn-never-logged-8f3a"
SITE = "usdf"  # the hub's repository holds every input: no replication needed here


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    from localpanda import LocalPanDA
    from localpanda.campaign import job_env

    lp = LocalPanDA(tmp_path_factory.mktemp("relay"))
    lp.up(slots=2, job_env=job_env())
    yield lp
    lp.down()


@pytest.fixture(scope="module")
def bed(tmp_path_factory, relay):
    """Fresh sites; a campaign where usdf submits through PanDA (computeSite SLAC), default
    (per-visit) clustering, and two step1 visits so a workflow has several jobs."""
    from minidrp.build import build_sites

    base = tmp_path_factory.mktemp("panda")
    build_sites(base / "sites", scope="minidrp")
    doc = yaml.safe_load((ROOT / "include" / "campaigns" / "minidrp_embedded.yaml").read_text())
    doc["pipeline"] = str((ROOT / "include" / "pipelines" / "minidrp.yaml").resolve())
    doc["planner"].pop("cluster_by")
    for s in doc["sites"]:
        if s["name"] == SITE:
            s["compute_site"] = "SLAC"
    (base / "campaign.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_campaign(base / "campaign.yaml", data_root=base / "sites")
    actions.make_plan(cfg, 0)
    return {"base": base, "cfg": cfg}


def _service(relay, bed, real_decoder: bool = False, **extra) -> PanDAWorkflowService:
    """The adapter from a Connection-shaped setting. Its jobs decode their command lines with
    ctrl_bps_panda's own ``cmd_line_decoder`` (``real_decoder``) or with the tests' quick
    stand-in, which takes the same arguments without importing the stack (~1.6 s of CPU a
    job here): the decoder is the same for every test, and the first test and the end-to-end
    campaign run it."""
    if not real_decoder:
        extra.setdefault("runner_command", QUICK_RUNNER)
    conn = factory.ConnectionInfo(
        "drp_usdf_workflow", host=relay.url(), password=TOKEN,
        extra={"adapter": "panda", "auth_vo": "Rubin", "poll_interval": 0.5, "number_of_retries": 1,
               "monitor_url": "https://panda-doma.example.org", **extra}, where="test")
    settings = factory.workflow_settings(bed["cfg"], SITE, conn)
    assert TOKEN not in json.dumps(settings)
    return factory.workflow_service(settings, TOKEN)


def _ctx(bed, service, generation: int, visits: int = 2, monkeypatch=None) -> actions.CampaignContext:
    cfg = bed["cfg"]
    ctx = actions.CampaignContext(config=cfg, workflows={SITE: service}, replica=None,
                                  butlers={SITE: SiteButler(SITE, cfg.repo_of(SITE))}, generation=generation)
    if generation:
        actions.make_plan(cfg, generation)
    hub = ctx.butlers[SITE].butler
    ids = sorted(r.id for r in hub.query_dimension_records("visit", explain=False))[:visits]
    monkeypatch.setattr(actions, "data_query",
                        lambda c, step, site, group: f"instrument = 'MiniCam' AND visit IN ({', '.join(map(str, ids))})")
    actions.generate_qg(ctx, "step1", SITE, 0)
    ctx.visit_ids = ids  # type: ignore[attr-defined]
    return ctx


def _terminal(service, ref):
    return wait_until(lambda: (s := service.status([ref])[ref.run_id]).terminal and s, timeout=300)


def test_submit_goes_through_bps_runs_and_is_idempotent(relay, bed, monkeypatch) -> None:
    service = _service(relay, bed, real_decoder=True)
    ctx = _ctx(bed, service, generation=1, monkeypatch=monkeypatch)
    spec = actions.workflow_spec(ctx, "step1", SITE, 0)
    submits_before = relay.stats()["commands"].get("submit", 0)
    ref = service.submit(spec)
    again = service.submit(spec)
    assert again == ref
    assert relay.stats()["commands"].get("submit", 0) == submits_before + 1  # one request, never two
    status = _terminal(service, ref)
    assert status.state is WmsStates.SUCCEEDED, status
    assert (status.quanta_total, status.quanta_succeeded, status.quanta_failed) == (16, 16, 0)
    assert status.merged
    # The planner's YAML is what was submitted (included by the overlay), with the hub's graph.
    overlay = yaml.safe_load((Path(spec.submit_dir) / "bps_submit.yaml").read_text())
    assert overlay["includeConfigs"] == [str(Path(spec.bps_config).resolve())]
    assert overlay["qgraphFile"] == str(Path(spec.qgraph).resolve())
    # The jobs really ran: the outputs are in the site butler, merged by the final job.
    counts = ctx.butlers[SITE].count(["pvi", "src"], spec.output_run)
    assert counts == {"pvi": 8, "src": 8}
    labels = {e["label"] for e in relay.executions() if str(e["request_id"]) == ref.run_id}
    assert {"pipetaskInit", "finalJob"} <= labels
    assert service.monitor_url(ref) == f"https://panda-doma.example.org/idds/wfprogress/?requestid={ref.run_id}"
    # Nothing of ours holds the token.
    for p in Path(spec.submit_dir).rglob("*"):
        if p.is_file() and p.stat().st_size < 5_000_000:
            assert TOKEN.encode() not in p.read_bytes(), p


def test_find_by_name_when_the_record_was_lost(relay, bed, monkeypatch) -> None:
    """A worker died after PanDA accepted the request, before writing panda.json: the retry
    asks iDDS by the deterministic name and submits nothing."""
    service = _service(relay, bed)
    ctx = _ctx(bed, service, generation=1, monkeypatch=monkeypatch)
    spec = actions.workflow_spec(ctx, "step1", SITE, 0)
    ref = service.submit(spec)  # found, or made (generation 1)
    (Path(spec.submit_dir) / "panda.json").unlink()
    submits = relay.stats()["commands"].get("submit", 0)
    found = actions.submit(ctx, "step1", SITE, 0)
    assert found["run_id"] == ref.run_id and found["submission"] == "found"
    assert relay.stats()["commands"].get("submit", 0) == submits
    assert json.loads((Path(spec.submit_dir) / "panda.json").read_text())["submissions"][0]["recovered"]


def test_status_is_one_call_per_workflow_per_poll(relay, bed, monkeypatch) -> None:
    service = _service(relay, bed)
    ctx = _ctx(bed, service, generation=1, monkeypatch=monkeypatch)
    ref = service.submit(actions.workflow_spec(ctx, "step1", SITE, 0))  # found, or made (generation 1)
    before = relay.stats()["commands"].get("get_requests", 0)
    service.calls.clear()
    for _ in range(3):
        service.status([ref])
    assert service.calls == {"get_requests": 3}
    assert relay.stats()["commands"]["get_requests"] - before == 3


def test_subfinished_policy_restart_and_rescue(relay, bed, monkeypatch) -> None:
    """One visit's calibrate job fails every attempt: iDDS SubFinished, the final job merges
    the rest. The campaign's threshold decides; a restart reruns only the failed job."""
    service = _service(relay, bed)
    ctx = _ctx(bed, service, generation=2, monkeypatch=monkeypatch)
    bad_visit = ctx.visit_ids[0]
    relay.control(fail_jobs=[f"_{bad_visit}"])
    try:
        ref = service.submit(actions.workflow_spec(ctx, "step1", SITE, 0))
        status = _terminal(service, ref)
    finally:
        relay.clear_faults()
    assert status.state is WmsStates.FAILED and status.merged, status
    assert status.quanta_failed + status.quanta_blocked > 0 and status.quanta_succeeded > 0
    fraction = status.failed_fraction
    assert 0 < fraction < 1
    # The policy on both sides of the threshold.
    for threshold, accepted in ((fraction + 0.01, True), (fraction - 0.01, False)):
        ctx.config = ctx.config.model_copy(update={"failed_quanta_threshold": threshold})
        assert actions.accept(ctx, ref)["accepted"] is accepted
    # Restart: only the failed job (and the final job) run again.
    ran_before = [e for e in relay.executions() if str(e["request_id"]) == ref.run_id]
    ref2 = service.restart(ref)
    assert ref2 == ref
    status = _terminal(service, ref)
    assert status.state is WmsStates.SUCCEEDED, status
    ran_after = [e for e in relay.executions() if str(e["request_id"]) == ref.run_id][len(ran_before):]
    rerun = {e["job"] for e in ran_after if e["label"] != "finalJob"}
    assert rerun and all(str(bad_visit) in j for j in rerun), rerun
    assert status.attempt == 2
    assert ctx.butlers[SITE].count(["pvi"], actions.workflow_spec(ctx, "step1", SITE, 0).output_run) == {"pvi": 8}


def test_rescue_is_a_new_request_that_runs_only_what_is_missing(relay, bed, monkeypatch) -> None:
    service = _service(relay, bed)
    ctx = _ctx(bed, service, generation=3, monkeypatch=monkeypatch)
    relay.control(fail_jobs=[f"_{ctx.visit_ids[1]}"])
    try:
        first = service.submit(actions.workflow_spec(ctx, "step1", SITE, 0))
        assert _terminal(service, first).state is WmsStates.FAILED
    finally:
        relay.clear_faults()
    rescued = actions.submit(ctx, "step1", SITE, 0, rescue=True)
    assert rescued["run_id"] != first.run_id and rescued["name"].endswith("_rescue1")
    assert (rescued["submission"], rescued["previous_run_id"], rescued["previous_state"]) == \
        ("rescued", first.run_id, "FAILED")
    from multisite_drp.services.workflow.base import WorkflowRef

    ref = WorkflowRef.from_dict(rescued)
    assert _terminal(service, ref).state is WmsStates.SUCCEEDED
    spec = actions.workflow_spec(ctx, "step1", SITE, 0)
    assert service.find(spec) == ref  # the newest submission is the step's workflow now
    assert ctx.butlers[SITE].count(["pvi", "src"], spec.output_run) == {"pvi": 8, "src": 8}


def test_auth_refusal_inside_a_success_reply_is_an_error(relay, bed, monkeypatch) -> None:
    service = _service(relay, bed)
    ctx = _ctx(bed, service, generation=1, monkeypatch=monkeypatch)
    ref = service.submit(actions.workflow_spec(ctx, "step1", SITE, 0))  # found, or made (generation 1)
    relay.control(auth_error=True)
    try:
        with pytest.raises(PanDAAuthError, match="refused the credentials") as err:
            service.status([ref])
    finally:
        relay.clear_faults()
    assert TOKEN not in str(err.value) and "drp_usdf_workflow" in str(err.value)


def test_cancel_from_the_triggers_on_kill(relay, bed, monkeypatch) -> None:
    """Marking the deferred wait failed in the UI calls the trigger's on_kill: iDDS abort."""
    from multisite_drp.triggers.site import WorkflowTrigger

    service = _service(relay, bed)
    ctx = _ctx(bed, service, generation=4, monkeypatch=monkeypatch)
    ref = service.submit(actions.workflow_spec(ctx, "step1", SITE, 0))
    trigger = WorkflowTrigger(params={}, conn_ids=[], site=SITE, refs=[ref.to_dict()], poll_interval=0.5)

    async def _service_of_trigger():
        return service, [ref]

    async def _hook_of_trigger():  # the campaign's on_kill policy: workflows cancel (the default)
        return types.SimpleNamespace(config=ctx.config)

    assert ctx.config.on_kill.workflows == "cancel"
    monkeypatch.setattr(trigger, "_service", _service_of_trigger)
    monkeypatch.setattr(trigger, "_hook", _hook_of_trigger)
    asyncio.run(trigger.on_kill())
    status = _terminal(service, ref)
    assert status.state is WmsStates.DELETED, status
    assert not status.merged


def test_relay_down_for_a_while_is_waited_out(relay, bed, monkeypatch) -> None:
    """The relay refuses connections for 20 s while a workflow runs; status calls fail with
    PanDAUnavailableError, the trigger keeps polling and fires when the workflow is done."""
    from multisite_drp.triggers.site import WorkflowTrigger

    service = _service(relay, bed)
    ctx = _ctx(bed, service, generation=5, monkeypatch=monkeypatch)
    ref = service.submit(actions.workflow_spec(ctx, "step1", SITE, 0))
    relay.control(unavailable_for=20)
    with pytest.raises(PanDAUnavailableError):
        service.status([ref])
    trigger = WorkflowTrigger(params={}, conn_ids=[], site=SITE, refs=[ref.to_dict()], poll_interval=2)

    async def _service_of_trigger():
        return service, [ref]

    monkeypatch.setattr(trigger, "_service", _service_of_trigger)

    async def first_event():
        async for event in trigger.run():
            return event

    import time

    t0 = time.monotonic()
    event = asyncio.run(asyncio.wait_for(first_event(), timeout=400))
    assert time.monotonic() - t0 >= 18  # it polled through the outage, not past it
    assert event.payload["status"] == "done"
    assert event.payload["workflows"][ref.run_id]["state"] == "SUCCEEDED"
