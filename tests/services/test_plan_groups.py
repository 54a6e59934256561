"""The submission groups are part of a generation's plan (``actions.make_plan``).

A generation's graphs, output RUNs, Rucio datasets and workflows are named by group
(``campaign.names``), so a rerun of the plan task that would cut the same assignment into
other groups (another ``planner.max_group_size``, or a step's own ``max_group_size``) is
refused naming the setting and the steps it changes; a new generation plans with the new
bounds. Real butler inputs: the embedded sites built once per session (``minidrp_root``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from multisite_drp.campaign import names
from multisite_drp.campaign.config import CampaignConfig, load_campaign
from multisite_drp.campaign.plan import CampaignPlan
from multisite_drp.services import actions

from tests.conftest import CAMPAIGN


def _with(config: CampaignConfig, *, planner_size: int | None = None, **step_sizes: int | None) -> CampaignConfig:
    """``config`` with another ``planner.max_group_size`` and/or steps' own bounds."""
    data = config.model_dump()
    if planner_size is not None:
        data["planner"]["max_group_size"] = planner_size
    for st in data["steps"]:
        if st["name"] in step_sizes:
            st["max_group_size"] = step_sizes[st["name"]]
    return CampaignConfig.model_validate({**data, "source_path": config.source_path})


@pytest.fixture()
def config(minidrp_root: Path, request: pytest.FixtureRequest) -> CampaignConfig:
    cfg = load_campaign(CAMPAIGN, data_root=minidrp_root)
    # Its own work area under the session's sites (others plan there too), one per test.
    data = cfg.model_dump()
    data["work_dir"] = f"work_{request.node.name}"
    return CampaignConfig.model_validate({**data, "source_path": cfg.source_path})


def _groups(plan_dir: str) -> list[tuple[str, str, int, list[int]]]:
    return [(g.step, g.site, g.group, g.ids) for g in CampaignPlan.load(plan_dir).groups]


def _key(group: tuple[str, str, int, list[int]]) -> tuple:
    return (*group[:3], tuple(group[3]))


def test_another_max_group_size_needs_a_new_generation(config: CampaignConfig) -> None:
    size = config.planner.max_group_size
    first = actions.make_plan(config, 0)
    plan_file = names.plan_dir(config, 0) / "plan.json"
    text = plan_file.read_text()
    assert actions.make_plan(config, 0) == first  # the same sizes: the plan is kept
    one_each = [s.name for s in config.steps if s.max_group_size is None and not s.is_global]
    assert one_each, "needs a non-global step bounded by planner.max_group_size alone"
    assert {g[0] for g in _groups(first["plan_dir"]) if g[2] > 0}.isdisjoint(one_each)  # one group per site

    smaller = _with(config, planner_size=10)
    with pytest.raises(actions.PlanChangedError, match=rf"planner\.max_group_size was {size}, is 10") as err:
        actions.make_plan(smaller, 0)
    assert plan_file.read_text() == text  # the refused generation's plan is untouched

    # A new generation plans with the new bound: more groups, the same assignment.
    new = actions.make_plan(smaller, 1)
    assert new["groups"] > first["groups"] and new["sites"] == first["sites"]
    old_groups, new_groups = _groups(first["plan_dir"]), _groups(new["plan_dir"])
    changed = sorted({g[0] for g in set(map(_key, old_groups)) ^ set(map(_key, new_groups))})
    assert changed and set(changed) <= set(one_each), changed  # step1/step4 keep their own bounds
    message = str(err.value)
    assert f"steps {changed}" in message, message  # the refusal names the steps it would re-split
    assert str(plan_file) in message and "generation 0" in message and "new 'generation'" in message
    plan = CampaignPlan.load(new["plan_dir"])
    assert plan.max_group_size == 10
    assert actions.make_plan(config, 0) == first  # generation 0 with its own size is still accepted


def test_a_steps_own_bound_changed_names_the_step(config: CampaignConfig) -> None:
    bounded = [s.name for s in config.steps if s.max_group_size is not None]
    assert "step1" in bounded, bounded
    actions.make_plan(config, 0)
    with pytest.raises(actions.PlanChangedError, match=r"steps \['step1'\]"):
        actions.make_plan(_with(config, step1=None), 0)  # step1 back to the planner's bound: one group
    assert actions.make_plan(_with(config, step1=None), 1)["groups"] < actions.make_plan(config, 0)["groups"]
