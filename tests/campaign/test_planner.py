"""The planner: whole visits, transfers, determinism, and the bad inputs of the issue."""

from __future__ import annotations

import numpy as np
import pytest
from layouts import CAMPAIGN, small_inputs
from multisite_drp.campaign.config import CampaignConfigError, load_campaign
from multisite_drp.campaign.plan import CampaignPlan
from multisite_drp.campaign.planner import PlanError, plan_campaign, plan_to_directory
from multisite_drp.campaign.spatial import (
    SpatialInputError,
    SpatialInputs,
    from_parquet,
    to_parquet,
    tract_sets,
)


def test_every_visit_to_exactly_one_site(config, flow, inputs) -> None:
    plan = plan_campaign(config, inputs, dataflow=flow)
    all_visits = [v for s in plan.sites for v in s.visits]
    assert sorted(all_visits) == sorted(inputs.visit_id.tolist())
    assert len(set(all_visits)) == len(all_visits)
    all_tracts = [t for s in plan.sites for t in s.tracts + s.empty_tracts]
    assert sorted(all_tracts) == sorted(inputs.tract_id.tolist())
    assert plan.metrics.connected


def test_share_accuracy(config, flow) -> None:
    inputs = small_inputs(seed=2, n_visits=300, nx=8, ny=6)
    plan = plan_campaign(config, inputs, dataflow=flow)
    # Granularity: one visit is 1/300 of the work; balancing gets within a couple of visits.
    assert plan.metrics.visit_share_error <= 0.02
    assert plan.metrics.tract_share_error <= 0.03


def test_transfers_follow_the_dataflow(config, flow, inputs) -> None:
    plan = plan_campaign(config, inputs, dataflow=flow)
    kinds = {(t.step, t.kind, t.dataset_type) for t in plan.transfers}
    assert ("step1", "bootstrap", "refcat") in kinds
    assert ("step4", "overlap", "pvi") in kinds
    assert ("step7", "overlap", "objectTable_tract") in kinds
    # The embedded campaign returns everything to the hub (empty `returns`), so the global
    # steps' inputs are there already: returned, never gathered a second time.
    assert ("step2", "return", "sourceTable_visit") in kinds and ("step8", "return", "forcedSourceTable_visit") in kinds
    assert not [t for t in plan.transfers if t.kind == "gather"]
    assert not [t for t in plan.transfers if t.destination == "usdf" and t.kind not in ("return",)]
    # Overlap PVIs come from the visit's owner and go to a site owning a tract it overlaps.
    owner = {v: s.name for s in plan.sites for v in s.visits}
    region = {t: s.name for s in plan.sites for t in s.tracts}
    vt = {}
    for v, t in zip(inputs.visit_id[inputs.ov_visit], inputs.tract_id[inputs.ov_tract]):
        vt.setdefault(int(v), set()).add(region[int(t)])
    for t in plan.transfers:
        if t.kind == "overlap" and t.dataset_type == "pvi":
            for v in t.visits:
                assert owner[v] == t.source and t.destination in vt[v]
    # No raws to usdf (hub) or frdf (holds all raws? not in the embedded file: only the hub).
    assert not [t for t in plan.transfers if t.kind == "raw" and t.destination == "usdf"]
    # Global steps run at the hub only; visit steps everywhere.
    assert plan.sites_for("step3") == ["usdf"]
    assert plan.sites_for("step1") == ["usdf", "frdf", "ukdf"]


def test_fanout_after_global_step(config, inputs) -> None:
    from multisite_drp.campaign import synthetic
    from multisite_drp.campaign.dataflow import dataflow_from_mapping

    data = config.model_dump()
    data["steps"][3]["requires"] = ["pvi", "photoCalib"]
    cfg = type(config).model_validate({**data, "source_path": config.source_path})
    plan = plan_campaign(cfg, inputs, dataflow=dataflow_from_mapping(cfg, synthetic.DRP_LIKE_DATAFLOW))
    fan = [t for t in plan.transfers if t.kind == "fanout" and t.step == "step4"]
    assert fan and all(t.source == "usdf" and t.dataset_type == "photoCalib" for t in fan)
    assert {t.destination for t in fan} == {"frdf", "ukdf"}
    ret = [t for t in plan.transfers if t.kind == "return"]
    assert {t.source for t in ret} == {"frdf", "ukdf"} and all(t.destination == "usdf" for t in ret)


def test_deterministic_byte_identical_json(config, flow, tmp_path) -> None:
    a = plan_to_directory(config, tmp_path / "a", inputs=small_inputs(seed=4), dataflow=flow)
    b = plan_to_directory(config, tmp_path / "b", inputs=small_inputs(seed=4), dataflow=flow)
    assert (tmp_path / "a" / "plan.json").read_bytes() == (tmp_path / "b" / "plan.json").read_bytes()
    assert CampaignPlan.load(tmp_path / "a") == a == b
    for f in (tmp_path / "a" / "bps").rglob("*.yaml"):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
    assert (tmp_path / "a" / "skymap.png").stat().st_size > 10_000


def test_data_query_and_transfers_for(config, flow, inputs) -> None:
    plan = plan_campaign(config, inputs, dataflow=flow)
    q = plan.data_query("step1", "frdf")
    assert q.startswith("(instrument = 'MiniCam' AND skymap = 'minisky') AND visit IN (")
    assert plan.data_query("step4", "ukdf").split(" AND tract IN ")[1].startswith("(")
    assert plan.data_query("step3", "usdf") == "instrument = 'MiniCam' AND skymap = 'minisky'" or \
        plan.data_query("step3", "usdf") == "(instrument = 'MiniCam' AND skymap = 'minisky')"
    assert all(t.destination == "ukdf" for t in plan.transfers_for("step4", "ukdf"))


def test_parquet_round_trip(tmp_path, inputs) -> None:
    to_parquet(inputs, tmp_path / "in.parquet")
    back = from_parquet(tmp_path / "in.parquet")
    for name in ("tract_id", "adj_a", "adj_b", "visit_id", "ov_visit", "ov_tract", "ov_ndet", "multi_visit",
                 "multi_ndet", "multi_set", "multi_tract", "det_tract",
                 "visit_radius"):
        assert np.array_equal(getattr(back, name), getattr(inputs, name)), name


def test_footprint_outlines_are_circles_of_the_visit_radius() -> None:
    from multisite_drp.campaign.plan_report import footprint_outlines
    from multisite_drp.campaign.spatial import centres_xyz

    ra, dec, r = np.array([0.5, 359.0, 120.0, 10.0]), np.array([0.0, -89.0, 45.0, -60.0]), np.array([2.0, 1.5, 0.3, 3.5])
    out = footprint_outlines(ra, dec, r, n=16)
    assert out.shape == (4, 16, 2)
    c = centres_xyz(ra, dec)
    pts = centres_xyz(out[..., 0].ravel(), out[..., 1].ravel()).reshape(4, 16, 3)
    dist = np.degrees(np.arccos(np.clip(np.einsum("vk,vnk->vn", c, pts), -1, 1)))
    assert np.allclose(dist, r[:, None], atol=1e-9)


# -- bad inputs ------------------------------------------------------------------------------


def _edit_sites(tmp_path, edit):
    import yaml

    data = yaml.safe_load(CAMPAIGN.read_text())
    edit(data)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_share_zero_rejected(tmp_path) -> None:
    def zero(d):
        d["sites"][2]["share"] = 0.0
        d["sites"][1]["share"] = 0.65

    with pytest.raises(CampaignConfigError, match=r"sites\[2\] \(ukdf\)\.share"):
        load_campaign(_edit_sites(tmp_path, zero), check_pipeline=False)


def test_shares_not_summing_to_one_rejected(tmp_path) -> None:
    def bad(d):
        d["sites"][0]["share"] = 0.5

    with pytest.raises(CampaignConfigError, match="shares must sum to 1.0"):
        load_campaign(_edit_sites(tmp_path, bad), check_pipeline=False)


def _with_orphan(inputs: SpatialInputs) -> SpatialInputs:
    inputs.visit_id = np.append(inputs.visit_id, 999_999)
    inputs.visit_band = np.append(inputs.visit_band, "r")
    inputs.visit_ra = np.append(inputs.visit_ra, 200.0)
    inputs.visit_dec = np.append(inputs.visit_dec, 40.0)
    inputs.visit_ndet = np.append(inputs.visit_ndet, 21).astype(np.int32)
    inputs.visit_radius = np.append(inputs.visit_radius, 0.5)
    return inputs


def test_visit_overlapping_no_tract(config, flow, inputs) -> None:
    with pytest.raises(PlanError, match=r"1 visits overlap no tract .*\[999999\].*expected every visit"):
        plan_campaign(config, _with_orphan(inputs), dataflow=flow)


@pytest.mark.parametrize("mode", ["nearest", "drop"])
def test_visit_overlapping_no_tract_handled(config, flow, inputs, mode: str) -> None:
    cfg = config.model_copy(update={"planner": config.planner.model_copy(update={"orphan_visits": mode})})
    plan = plan_campaign(cfg, _with_orphan(inputs), dataflow=flow)
    placed = [v for s in plan.sites for v in s.visits]
    assert plan.orphan_visits == [999_999]
    assert (999_999 in placed) == (mode == "nearest")
    assert plan.warnings and "999999" in plan.warnings[0]


def test_tract_without_visits_is_empty_not_planned(config, flow) -> None:
    inputs = small_inputs(seed=0, n_visits=60, nx=8, ny=5)
    inputs.ov_ndet[inputs.ov_tract == 0] = 0  # pretend nothing overlaps tract 0
    keep = inputs.ov_ndet > 0
    inputs.ov_visit, inputs.ov_tract, inputs.ov_ndet = inputs.ov_visit[keep], inputs.ov_tract[keep], inputs.ov_ndet[keep]
    rows = inputs.det_tract != 0  # and in the shared-detector table
    inputs.multi_visit, ndet, inputs.multi_set, inputs.multi_tract = tract_sets(
        inputs.det_visit[rows], inputs.det_detector[rows], inputs.det_tract[rows])
    inputs.multi_ndet = ndet.astype(np.int32)
    plan = plan_campaign(config, inputs, dataflow=flow)
    empty = [t for s in plan.sites for t in s.empty_tracts]
    assert int(inputs.tract_id[0]) in empty
    assert int(inputs.tract_id[0]) not in [t for s in plan.sites for t in s.tracts]


def test_empty_selection(config, flow, inputs) -> None:
    inputs.visit_id = inputs.visit_id[:0]
    with pytest.raises(SpatialInputError, match="empty selection: no visits"):
        plan_campaign(config, inputs, dataflow=flow)


def test_more_sites_than_tracts(config, flow) -> None:
    from multisite_drp.campaign.partition import PartitionError

    with pytest.raises(PartitionError, match="3 sites but only 2 tracts with work; expected at least one"):
        plan_campaign(config, small_inputs(seed=1, n_visits=3, nx=2, ny=1), dataflow=flow)


def test_returns_field_is_gone(config, tmp_path) -> None:
    """Every output returns to the hub (the hub builds every later graph); a step's ``returns``
    list, which the DAG could not honour, is an unknown field, and a plan written before its
    removal (``"returns": []``) still loads."""
    import yaml

    data = yaml.safe_load(CAMPAIGN.read_text())
    data["steps"][1]["returns"] = ["visitSummary"]
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(CampaignConfigError, match=r"steps\[1\] \(step2\)\.returns: unknown field"):
        load_campaign(p, check_pipeline=False)
    from multisite_drp.campaign.plan import StepPlan

    assert StepPlan.model_validate({"name": "s", "sharding": "visit", "requires": [], "returns": []}).name == "s"
    with pytest.raises(ValueError, match="returns"):
        StepPlan.model_validate({"name": "s", "sharding": "visit", "requires": [], "returns": ["x"]})
