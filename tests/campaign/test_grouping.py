"""Submission groups: each (step, site) of a plan split into groups bounded in
quanta-equivalents (detector-visits for visit steps, patches for tract steps), every visit
or tract in exactly one group, ids stable, and a new size refused for a planned generation."""

from __future__ import annotations

import itertools

import pytest
from layouts import small_inputs
from multisite_drp.campaign.config import CampaignConfig
from multisite_drp.campaign.grouping import split_weighted
from multisite_drp.campaign.planner import plan_campaign


def _sized(config: CampaignConfig, size: int, **per_step: int) -> CampaignConfig:
    data = config.model_dump()
    data["planner"]["max_group_size"] = size
    for st in data["steps"]:
        st["max_group_size"] = per_step.get(st["name"])
    return CampaignConfig.model_validate({**data, "source_path": config.source_path})


@pytest.mark.parametrize("weights,size", [([1] * 10, 4), ([3, 1, 4, 1, 5, 9, 2, 6, 5, 3], 10),
                                          ([21] * 7, 50), ([100, 1, 1, 1], 10), ([5], 5), ([2, 2, 2, 2], 100)])
def test_split_weighted_bounds_covers_and_keeps_order(weights, size) -> None:
    ids = list(range(100, 100 + len(weights)))
    groups = split_weighted(ids, weights, size)
    assert list(itertools.chain(*groups)) == ids  # every id once, order kept
    w = dict(zip(ids, weights, strict=True))
    for g in groups:
        assert g and (sum(w[i] for i in g) <= size or len(g) == 1)  # bounded; one heavy id alone
    # fewest groups the bound allows for equal weights; never more groups than ids
    assert len(groups) >= -(-sum(weights) // size) or any(x > size for x in weights)
    assert split_weighted(ids, weights, size) == groups  # stable


def test_split_weighted_balances_and_refuses_bad_input() -> None:
    assert [len(g) for g in split_weighted(list(range(10)), [1] * 10, 4)] == [3, 4, 3]
    assert split_weighted([], [], 4) == []
    with pytest.raises(ValueError, match="max_group_size: expected > 0"):
        split_weighted([1], [1], 0)
    with pytest.raises(ValueError, match="weights must be > 0"):
        split_weighted([1, 2], [1, 0], 4)


def test_plan_groups_cover_each_sites_work_once_within_the_bound(config, flow) -> None:
    inputs = small_inputs(seed=2, n_visits=120)
    cfg = _sized(config, 60)
    plan = plan_campaign(cfg, inputs, dataflow=flow)
    ndet = dict(zip(inputs.visit_id.tolist(), inputs.visit_ndet.tolist(), strict=True))
    npatch = dict(zip(inputs.tract_id.tolist(), inputs.tract_npatch.tolist(), strict=True))
    several = 0
    for st in cfg.steps:
        for site in plan.sites_for(st.name):
            groups = plan.groups_for(st.name, site)
            assert [g.group for g in groups] == list(range(len(groups)))  # ids are positions: the map index
            several += len(groups) > 1
            if st.sharding.value == "global":
                assert len(groups) == 1 and groups[0].ids == [] and groups[0].label == "all"
                continue
            dim, ids = plan.ids_for(st.name, site)
            covered = sorted(i for g in groups for i in g.ids)
            assert covered == sorted(ids)  # every visit or tract of the site in exactly one group
            weight = ndet if dim == "visit" else npatch
            for g in groups:
                assert g.dimension == dim and g.weight == sum(weight[i] for i in g.ids)
                assert g.weight <= 60 or len(g.ids) == 1
                assert plan.group_query(st.name, site, g.group).endswith(
                    f"{dim} IN ({', '.join(map(str, g.ids))})")
    assert several  # the bound really split something
    for st in cfg.steps:  # global steps run at the hub only
        if st.sharding.value == "global":
            assert [g.site for g in plan.groups if g.step == st.name] == [plan.hub]
    again = plan_campaign(cfg, inputs, dataflow=flow)
    assert again.groups == plan.groups  # stable ids and contents


def test_a_larger_bound_gives_fewer_groups(config, flow) -> None:
    inputs = small_inputs(seed=2, n_visits=120)
    small = plan_campaign(_sized(config, 60), inputs, dataflow=flow)
    large = plan_campaign(_sized(config, 10_000), inputs, dataflow=flow)
    assert len(large.groups) < len(small.groups)
    assert all(g.group == 0 for g in large.groups)  # the whole site's work fits one group
    assert large.max_group_size == 10_000 and small.max_group_size == 60


def test_a_steps_own_bound_overrides_the_planners(config, flow) -> None:
    inputs = small_inputs(seed=2, n_visits=120)
    plan = plan_campaign(_sized(config, 10_000, step1=60, step4=20), inputs, dataflow=flow)
    split = {g.step for g in plan.groups if g.group > 0}
    assert split == {"step1", "step4"}  # only the steps with a small bound of their own
    assert all(g.weight <= 60 or len(g.ids) == 1 for g in plan.groups if g.step == "step1")
    assert all(g.weight <= 20 or len(g.ids) == 1 for g in plan.groups if g.step == "step4")


def _night(plan, visits_by_site: dict[str, list[int]], tracts: dict[int, int]) -> dict:
    return {"day_obs": 20240601, "generation": 0, "visits": {
        str(v): {"site": site, "tract": tracts[v], "new": False} for site, vs in visits_by_site.items() for v in vs}}


def test_a_nights_plan_holds_its_visits_at_their_sites_in_step1_groups(config, flow) -> None:
    from multisite_drp.campaign import names
    from multisite_drp.campaign.planner import night_plan

    inputs = small_inputs(seed=2, n_visits=120)
    cfg = _sized(config, 60)
    plan = plan_campaign(cfg, inputs, dataflow=flow)
    night_cfg = names.night_config(cfg, 20240601)
    # Nine of the plan's visits, three per site, each with its own detector count and home tract.
    picked = {s.name: s.visits[:3] for s in plan.sites}
    visits = [v for vs in picked.values() for v in vs]
    detectors = {v: 10 + 7 * i for i, v in enumerate(visits)}
    tracts = {v: 100 - i for i, v in enumerate(visits)}
    night = night_plan(night_cfg, plan, _night(plan, picked, tracts), detectors)
    assert night.campaign == f"{cfg.name}-n20240601" and [s.name for s in night.steps] == [cfg.steps[0].name]
    assert {s.name: sorted(s.visits) for s in night.sites} == {k: sorted(v) for k, v in picked.items()}
    assert [s.tracts for s in night.sites] == [s.tracts for s in plan.sites]  # the regions stay
    assert not night.transfers and {g.step for g in night.groups} == {cfg.steps[0].name}
    for site, vs in picked.items():
        groups = night.groups_for(cfg.steps[0].name, site)
        assert sorted(v for g in groups for v in g.ids) == sorted(vs)  # every visit once
        assert all(g.weight == sum(detectors[v] for v in g.ids) for g in groups)
        assert all(g.weight <= 60 or len(g.ids) == 1 for g in groups)  # the step's bound
        assert [g.group for g in groups] == list(range(len(groups)))
    # Deterministic: the same assignment gives the same groups.
    again = night_plan(night_cfg, plan, _night(plan, picked, tracts), detectors)
    assert again.groups == night.groups
    with pytest.raises(ValueError, match="no detector count"):
        night_plan(night_cfg, plan, _night(plan, picked, tracts), {v: 1 for v in visits[1:]})


def test_the_night_scope_names_everything_apart_from_the_campaign(config) -> None:
    from multisite_drp.campaign import names

    night = names.night_config(config, 20240601)
    step = config.steps[0].name
    assert night.name == f"{config.name}-n20240601"
    assert night.work_path == config.work_path / "nights" / "20240601"
    assert [s.name for s in night.steps] == [step]
    pairs = [(names.output_run(c, step, "frdf", 0, 0), names.workflow_name(c, step, "frdf", 0, 0),
              names.rucio_dataset(c, step, "frdf", "outputs", 0, 0), names.plan_dir(c, 0),
              names.submit_dir(c, step, "frdf", 0, 0), names.graph_path(c, step, "frdf", 0, 0))
             for c in (config, night)]
    assert all(a != b for a, b in zip(*pairs, strict=True)), pairs
    assert names.output_run(night, step, "frdf", 0, 3) == f"{config.output_prefix}/nightly/20240601/{step}/frdf/g0/group003"
    with pytest.raises(names.NameError_, match="day_obs"):
        names.night_config(config, 2024061)
