"""A site that holds every raw (``sites[].holds_all_raws``, DMTN-213's FrDF), end to end.

Fresh sites where the test bed's build gave frdf every raw (``build_sites(holds_all_raws=...)``:
the hub's raws, dataset IDs and exposure records), a campaign copy that says so, the
session's REAL local Rucio with the Replica Monitor. The plan moves no raw to frdf; the
distribution makes no raw dataset or rule for it but checks its butler holds the raws of
its visits; step 1 then runs there on those raws (only the calibrations came by Rucio).
ukdf, which holds none, is the control: its raws get a rule. A raw holder that lost raws
is an error naming the site and how many are missing.
"""

from __future__ import annotations

import pytest
from multisite_drp.campaign import names
from multisite_drp.services import actions
from multisite_drp.services.butler import SiteButler
from multisite_drp.services.replica.base import RuleRef, replication_progress
from multisite_drp.services.workflow.base import WmsStates, WorkflowRef
from multisite_drp.services.workflow.embedded import EmbeddedWorkflowService

from tests.conftest import wait_until

pytestmark = pytest.mark.e2e

HOLDER, OTHER = "frdf", "ukdf"
RAW_RUN = "MiniCam/raw/all"


@pytest.fixture(scope="module")
def bed(rucio_campaign_factory):
    env = rucio_campaign_factory("rawholder", holds_all_raws=(HOLDER,))
    cfg = env.cfg
    assert [s.name for s in cfg.sites if s.holds_all_raws] == [HOLDER]
    ctx = actions.CampaignContext(
        config=cfg,
        workflows={s.name: EmbeddedWorkflowService(s.name, processes=1) for s in cfg.sites},
        replica=env.service,
        butlers={s.name: SiteButler(s.name, cfg.repo_of(s)) for s in cfg.sites},
    )
    actions.make_plan(cfg, 0)
    return {"env": env, "ctx": ctx, "plan": ctx.plan()}


def _raws_dataset(ctx, site: str) -> str:
    return names.rucio_dataset(ctx.config, "raws", site, "raw", ctx.generation)


def test_the_plan_moves_no_raw_to_the_holder(bed) -> None:
    plan = bed["plan"]
    assert plan.site_visits(HOLDER) and plan.site_visits(OTHER)
    raw_destinations = {t.destination for t in plan.transfers if t.kind == "raw"}
    assert HOLDER not in raw_destinations and OTHER in raw_destinations


def test_distribution_checks_the_holder_and_replicates_to_the_others(bed) -> None:
    ctx, plan, env = bed["ctx"], bed["plan"], bed["env"]
    n = len(plan.site_visits(HOLDER))
    assert actions.distribute_raws(ctx, HOLDER) == {"site": HOLDER, "holds_all_raws": True, "visits": n,
                                                    "raws": 4 * n}
    assert ctx.replica.find_rule(_raws_dataset(ctx, HOLDER), HOLDER) is None
    scope = ctx.config.replication.scope
    assert not [d for d in env.root_client.list_dids(scope, {"name": _raws_dataset(ctx, HOLDER)}, did_type="all")]
    # The control: a site without the raws gets them by a rule.
    other = actions.distribute_raws(ctx, OTHER)
    assert other["site"] == OTHER and other["dataset"] == _raws_dataset(ctx, OTHER)
    # What the distribution waits on at the holder: the bootstrap rule only.
    boot = actions.distribute_bootstrap(ctx, HOLDER)
    assert actions.distribution_rules(ctx, HOLDER) == [boot]


def _rules_ok(ctx, rules) -> bool:
    progress = replication_progress(ctx.replica, [RuleRef.from_dict(r) for r in rules])
    assert progress.state != "stuck", progress
    return progress.state == "ok"


def test_step1_runs_at_the_holder_on_its_own_raws(bed, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, plan = bed["ctx"], bed["plan"]
    rules = actions.distribution_rules(ctx, HOLDER)
    wait_until(lambda: _rules_ok(ctx, rules))
    actions.verify_ingest(ctx, rules)
    actions.ensure_input_chain(ctx, HOLDER)
    visit = plan.group("step1", HOLDER, 0).ids[0]
    # The plan gives frdf's step1 groups several visits; this test runs one of group 0's (8 quanta).
    monkeypatch.setattr(actions, "data_query",
                        lambda c, step, site, group: f"instrument = 'MiniCam' AND visit = {visit}")
    qg = actions.generate_qg(ctx, "step1", HOLDER, 0)
    assert qg["quanta"] == 8 and qg["inputs"]["raw"] == 4
    # Nothing is missing there: the raws were held, the calibrations came with the bootstrap.
    assert actions.replicate_inputs(ctx, "step1", HOLDER, 0) is None
    ref = WorkflowRef.from_dict(actions.submit(ctx, "step1", HOLDER, 0, processes=1))
    service = ctx.workflows[HOLDER]
    status = wait_until(lambda: (s := service.status([ref])[ref.run_id]).terminal and s)
    assert status.state is WmsStates.SUCCEEDED, status
    merged = actions.merge(ctx, "step1", HOLDER, 0)
    assert merged["counts"] == merged["predicted"] and merged["counts"]["pvi"] == 4


def test_a_holder_missing_raws_is_an_error_naming_site_and_count(bed) -> None:
    ctx, plan, env = bed["ctx"], bed["plan"], bed["env"]
    visits = plan.site_visits(HOLDER)
    holder, hub = ctx.butlers[HOLDER], ctx.butlers[ctx.hub]
    lost = holder.refs("raw", RAW_RUN, where=f"instrument = 'MiniCam' AND exposure = {visits[-1]}")
    assert len(lost) == 4
    with holder.write_lock():
        holder.butler.pruneDatasets(lost, disassociate=True, unstore=True, purge=True)
        # One comes back under a new dataset ID (ingested anew, not as the hub's replica).
        back = lost[0]
        holder.butler.put(hub.butler.get(hub.butler.get_dataset(back.id)), back.datasetType, back.dataId,
                          run=back.run)
    with pytest.raises(actions.SiteRawsMissingError) as err:
        actions.distribute_raws(ctx, HOLDER)
    message = str(err.value)
    assert message.startswith(f"{env.campaign_file}: sites ({HOLDER}).holds_all_raws is true, but {HOLDER}'s "
                              f"butler ({ctx.config.repo_of(HOLDER)}) lacks 4 of the {4 * len(visits)} raws of "
                              f"the {len(visits)} visits the plan assigns it")
    assert "1 of them are there under other dataset IDs" in message
    assert ctx.replica.find_rule(_raws_dataset(ctx, HOLDER), HOLDER) is None  # nothing was replicated instead
