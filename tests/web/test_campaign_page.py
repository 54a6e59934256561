"""The campaign page's content from a real plan of the embedded sites and given task states.

The page's routes and Airflow's auth in front of them are tested on the real API server at
the end of the end-to-end run (``tests/dags/test_campaign_e2e.py``); here, what it shows:
group and tract progress, open alerts, the escaped HTML, and the map.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from multisite_drp.campaign import names
from multisite_drp.campaign.config import CampaignConfig, load_campaign
from multisite_drp.campaign.plan import CampaignPlan
from multisite_drp.campaign.plan_report import read_tract_centres
from multisite_drp.services import actions
from multisite_drp.web.page import render_map_png, render_run
from multisite_drp.web.progress import group_progress, open_alerts, step_site_table, tract_progress

from tests.conftest import CAMPAIGN

CHAIN = ("generate_qg", "replicate_inputs", "wait_inputs", "submit", "wait_workflow", "merge", "register",
         "replicate_outputs", "wait_outputs")


@pytest.fixture(scope="module")
def planned(minidrp_root: Path) -> tuple[CampaignConfig, CampaignPlan, Path]:
    cfg = load_campaign(CAMPAIGN, data_root=minidrp_root)
    data = cfg.model_dump()
    data["work_dir"] = "work_campaign_page"
    cfg = CampaignConfig.model_validate({**data, "source_path": cfg.source_path})
    actions.make_plan(cfg, 0)
    plan_dir = names.plan_dir(cfg, 0)
    return cfg, CampaignPlan.load(plan_dir), plan_dir


def _tract_step_groups(plan: CampaignPlan, site: str) -> list:
    step = next(s.name for s in plan.steps if s.sharding == "tract")
    return [g for g in plan.groups if g.step == step and g.site == site]


def _states(plan: CampaignPlan) -> tuple[list[tuple[str, int, str | None]], list, list]:
    """FrDF's first tract-step group done, its second failed at the wait, USDF's step-1
    groups running; everything else not started."""
    done, failed = _tract_step_groups(plan, "frdf")[:2]
    tis = [(f"{done.step}.frdf.{t}", done.group, "success") for t in CHAIN]
    tis += [(f"{failed.step}.frdf.{t}", failed.group, "success") for t in CHAIN[:4]]
    tis += [(f"{failed.step}.frdf.wait_workflow", failed.group, "failed")]
    tis += [(f"{failed.step}.frdf.{t}", failed.group, "upstream_failed") for t in CHAIN[5:]]
    usdf1 = [g for g in plan.groups if g.step == "step1" and g.site == "usdf"]
    tis += [(f"step1.usdf.{t}", g.group, s) for g in usdf1 for t, s in (("generate_qg", "success"),
                                                                         ("replicate_inputs", "deferred"))]
    tis += [("plan", -1, "success"), ("step1.split", -1, "success")]
    return tis, [done, failed], usdf1


def test_groups_steps_and_tracts_progress(planned) -> None:
    _, plan, _ = planned
    tis, (done, failed), usdf1 = _states(plan)
    groups = group_progress(plan, tis)
    state = {(g.step, g.site, g.group): g.state for g in groups}
    assert state[(done.step, "frdf", done.group)] == "done"
    assert state[(failed.step, "frdf", failed.group)] == "failed"
    assert all(state[("step1", "usdf", g.group)] == "running" for g in usdf1)
    assert sum(s == "waiting" for s in state.values()) == len(plan.groups) - 2 - len(usdf1)

    row = next(r for r in step_site_table(groups) if (r["step"], r["site"]) == (done.step, "frdf"))
    assert (row["done"], row["failed"], row["waiting"]) == (1, 1, row["groups"] - 2)

    tracts = tract_progress(plan, groups)
    assert set(tracts) == {t for s in plan.sites for t in [*s.tracts, *s.empty_tracts]}
    assert {tracts[t] for t in failed.ids} == {("frdf", "failed")}
    # Done in this step, still to run in the later tract steps that cover it: running.
    later = {t for g in plan.groups if g.dimension == "tract" and g.step != done.step and g.site == "frdf"
             for t in g.ids}
    only_done = set(done.ids) - set(failed.ids)
    assert only_done and {tracts[t][1] for t in only_done} == {"running" if only_done & later else "done"}
    untouched = {t for t, (site, _) in tracts.items() if site == "usdf"}
    assert {tracts[t][1] for t in untouched} == {"waiting"}


def test_open_alerts_close_when_the_task_succeeds() -> None:
    records = [
        {"at": 1, "level": "failure", "run_id": "r", "task_id": "step2.frdf.submit", "map_index": 0},
        {"at": 2, "level": "failure", "run_id": "r", "task_id": "step4.frdf.wait_workflow", "map_index": 1},
        {"at": 3, "level": "warning", "kind": "replication_stuck", "run_id": "r", "task_id": "step2.frdf.wait_inputs",
         "map_index": 0},
        {"at": 4, "level": "failure", "run_id": "other", "task_id": "step4.frdf.wait_workflow", "map_index": 1},
        {"at": 5, "level": "deadline", "run_id": "r", "task_id": None},
    ]
    states = {("step2.frdf.submit", 0): "success", ("step4.frdf.wait_workflow", 1): "failed",
              ("step2.frdf.wait_inputs", 0): "success"}
    assert [r["at"] for r in open_alerts(records, "r", states, run_finished=False)] == [5, 3, 2]
    assert [r["at"] for r in open_alerts(records, "r", states, run_finished=True)] == [3, 2]


def test_the_page_is_escaped_and_shows_the_figures(planned) -> None:
    cfg, plan, _ = planned
    tis, _, _ = _states(plan)
    groups = group_progress(plan, tis)
    alert = {"at": 10, "level": "failure", "run_id": "manual__<x>", "task_id": "step4.frdf.wait_workflow",
             "map_index": 1, "error": "RuntimeError: <script>alert(1)</script>", "log_url": "javascript:alert(1)"}
    html = render_run(dag_id="drp_campaign", run={"run_id": "manual__<x>", "state": "running", "generation": 0},
                      config=cfg, plan=plan, groups=groups, table=step_site_table(groups),
                      tracts=tract_progress(plan, groups), report=None, alerts=[alert], has_map=True)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "javascript:" not in html  # a link that is not http(s) is not made a link
    assert "Run <b>manual__&lt;x&gt;</b>" in html and 'content="30"' in html  # unfinished: it refreshes
    assert "Open alerts (1)" in html and "1 failed" in html
    for s in plan.sites:
        assert f"<td class=l>{s.name}</td><td class=l>{s.role}</td><td>{s.share_target:.3f}</td>" in html
    assert "Moved: known once the run's report task has run." in html
    assert "Not written yet" in html


def test_the_map_draws_progress(planned) -> None:
    _, plan, plan_dir = planned
    centres = read_tract_centres(plan_dir)
    assert centres is not None and set(centres) >= {t for s in plan.sites for t in s.tracts}
    tis, _, _ = _states(plan)
    groups = group_progress(plan, tis)
    progress = tract_progress(plan, groups)
    png = render_map_png(plan, centres, progress)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    all_done = render_map_png(plan, centres, {t: (site, "done") for t, (site, _) in progress.items()})
    assert all_done != png  # the shading follows the states
