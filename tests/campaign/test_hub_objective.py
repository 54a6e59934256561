"""``planner.objective: hub_free`` (DESIGN 55): crossings into the hub are free.

Every output returns to the hub, so the plan's byte metric (``cross_site_bytes``) never
charges a PVI sent there; the default objective charges every crossing alike. On a row of
four tracts (the hub takes two, each remote one) the default puts the hub at one end and
the two remote regions side by side; ``hub_free`` puts the hub between them, and its plan
moves fewer bytes.
"""

from __future__ import annotations

import numpy as np
from layouts import small_inputs
from multisite_drp.campaign import partition as P
from multisite_drp.campaign.config import CampaignConfig
from multisite_drp.campaign.planner import assign_visits, plan_campaign
from multisite_drp.campaign.spatial import SpatialInputs

HUB = 0
SHARES = [0.5, 0.25, 0.25]  # hub, two remote sites
MB = 1_000_000
TOL = 0.1


def _row_of_four() -> SpatialInputs:
    """Tracts A B C D in a row. A|B is dense: two visits of 100 detectors, 60 on A and 40 on
    B; B|C and C|D are sparse: one visit each (60 on B and 40 on C; 40 on C and 60 on D). No
    detector is on two tracts; the rest of each tract's work is one visit on it alone, sized
    so that both splits below are within a share tolerance of 0.1."""
    i64 = lambda *x: np.array(x, dtype=np.int64)
    i32 = lambda *x: np.array(x, dtype=np.int32)
    # visits: 0-1 on A|B, 2 on B|C, 3 on C|D, 4-7 interior to A, B, C, D.
    ov = [(0, 0, 60), (0, 1, 40), (1, 0, 60), (1, 1, 40), (2, 1, 60), (2, 2, 40), (3, 2, 40), (3, 3, 60)]
    interior = [230, 330, 370, 340]
    ov += [(4 + t, t, n) for t, n in enumerate(interior)]
    v, t, n = (np.array(c) for c in zip(*ov, strict=True))
    ndet = np.bincount(v, weights=n).astype(np.int32)
    nv = len(ndet)
    return SpatialInputs(
        tract_id=i64(10, 11, 12, 13), tract_ra=np.array([0.0, 1.0, 2.0, 3.0]), tract_dec=np.zeros(4),
        tract_npatch=i32(1, 1, 1, 1), adj_a=i64(0, 1, 2), adj_b=i64(1, 2, 3),
        visit_id=np.arange(500, 500 + nv, dtype=np.int64), visit_band=np.array(["r"] * nv),
        visit_ra=np.zeros(nv), visit_dec=np.zeros(nv), visit_ndet=ndet,
        ov_visit=v.astype(np.int64), ov_tract=t.astype(np.int64), ov_ndet=n.astype(np.int32),
        multi_visit=i64(), multi_ndet=i32(), multi_set=i64(), multi_tract=i64(),
        source="hand-built row of four tracts").validate()


def test_hub_free_counts_only_crossings_not_into_the_hub() -> None:
    inputs = _row_of_four()
    hub_at_end = np.array([0, 0, 1, 2])     # A B hub, C and D remote: C|D is remote to remote
    hub_between = np.array([1, 0, 0, 2])    # A remote, B C hub, D remote
    # Every crossing: the dense A|B boundary costs 2 x 40, the sparse ones 40 each.
    assert P.crossing_work(inputs, hub_at_end, 3) == 80
    assert P.crossing_work(inputs, hub_between, 3) == 120
    # Into the hub free: the hub's B|C visit sends 40 PVIs to C's remote site, C|D's visit 40 to D's;
    # with the hub between, every boundary visit's majority is remote and its PVIs go to the hub.
    assert P.crossing_work(inputs, hub_at_end, 3, hub=HUB) == 80
    assert P.crossing_work(inputs, hub_between, 3, hub=HUB) == 0
    # The refinement's incremental gains and costs count the same way.
    ov = P._Overlaps(inputs, np.arange(4), 3, HUB)
    ov.assign(hub_at_end.copy())
    assert ov.cost() == 80
    g = ov.gains(np.array([3]), np.array([2]), np.array([0]))  # D to the hub: C|D becomes remote -> hub
    after = hub_at_end.copy()
    after[3] = 0
    assert g[0] == 80 - P.crossing_work(inputs, after, 3, hub=HUB)


def test_the_two_objectives_choose_different_splits() -> None:
    inputs = _row_of_four()
    default = P.partition(inputs, SHARES, "graph", tolerance=TOL)
    hub_free = P.partition(inputs, SHARES, "graph", tolerance=TOL, hub=HUB)
    assert (default == HUB).tolist() == [True, True, False, False]
    assert (hub_free == HUB).tolist() == [False, True, True, False]
    assert P.crossing_work(inputs, hub_free, 3, hub=HUB) < P.crossing_work(inputs, default, 3, hub=HUB)


def _with(config: CampaignConfig, objective: str) -> CampaignConfig:
    sites = [s.model_copy(update={"share": share}) for s, share in zip(config.sites, SHARES, strict=True)]
    planner = config.planner.model_copy(update={
        "objective": objective, "share_tolerance": TOL,
        "dataset_bytes": {**config.planner.dataset_bytes, "pvi": 110 * MB, "objectTable_tract": 3000 * MB}})
    return config.model_copy(update={"sites": sites, "planner": planner})


def test_hub_free_plan_moves_fewer_bytes(config, flow) -> None:
    assert config.planner.objective == "all_crossings" and config.sites[HUB].role.value == "hub"
    inputs = _row_of_four()
    default = plan_campaign(_with(config, "all_crossings"), inputs, dataflow=flow)
    hub_free = plan_campaign(_with(config, "hub_free"), inputs, dataflow=flow)
    hub = config.sites[HUB].name
    assert sorted(default.site(hub).tracts) == [10, 11]
    assert sorted(hub_free.site(hub).tracts) == [11, 12]
    pvi = lambda p: sum(t.count for t in p.transfers if t.kind == "overlap" and t.dataset_type == "pvi")
    assert pvi(default) == 80 and pvi(hub_free) == 0
    assert hub_free.metrics.cross_site_bytes < default.metrics.cross_site_bytes
    assert max(default.metrics.share_error, hub_free.metrics.share_error) <= TOL


def test_hub_free_visit_balancing_sends_the_cheapest_visits_to_the_hub() -> None:
    """Moving a visit to the hub makes the detectors it has on its own remote region cross
    (to it); those on the hub's region cost nothing either way. Three mutually adjacent
    tracts, one per site; the first remote site holds one visit too many: V1 (60 detectors
    on its region, 40 on the hub's) or V2 (50 on its region, 30 on the other remote's, 20
    on the hub's) must go to the hub. Counting every crossing, V1 adds 20 and V2 30; with
    crossings into the hub free, V1 adds 60 and V2 50."""
    i64 = lambda *x: np.array(x, dtype=np.int64)
    i32 = lambda *x: np.array(x, dtype=np.int32)
    # visits: V1, V2, then one interior visit per tract.
    ov = [(0, 1, 60), (0, 0, 40), (1, 1, 50), (1, 2, 30), (1, 0, 20), (2, 0, 300), (3, 1, 300), (4, 2, 400)]
    v, t, n = (np.array(c) for c in zip(*ov, strict=True))
    ndet = np.bincount(v, weights=n).astype(np.int32)
    inputs = SpatialInputs(
        tract_id=i64(10, 11, 12), tract_ra=np.zeros(3), tract_dec=np.zeros(3), tract_npatch=i32(1, 1, 1),
        adj_a=i64(0, 0, 1), adj_b=i64(1, 2, 2), visit_id=np.arange(500, 505, dtype=np.int64),
        visit_band=np.array(["r"] * 5), visit_ra=np.zeros(5), visit_dec=np.zeros(5), visit_ndet=ndet,
        ov_visit=v.astype(np.int64), ov_tract=t.astype(np.int64), ov_ndet=n.astype(np.int32),
        multi_visit=i64(), multi_ndet=i32(), multi_set=i64(), multi_tract=i64(), source="three sites").validate()
    owner = np.array([0, 1, 2])
    active = np.ones(inputs.n_visits, dtype=bool)
    third = [1 / 3] * 3
    plain = assign_visits(inputs, owner, third, 0.02, active)
    free = assign_visits(inputs, owner, third, 0.02, active, hub=HUB)
    assert plain[:2].tolist() == [0, 1]  # V1 to the hub
    assert free[:2].tolist() == [1, 0]  # V2 to the hub
    assert plain[2:].tolist() == free[2:].tolist() == [0, 1, 2]


def test_default_objective_is_unchanged_on_a_synthetic_sky(config, flow) -> None:
    """``all_crossings`` (the default) and no ``hub`` are the same code path: identical plans."""
    inputs = small_inputs(seed=3)
    explicit = config.model_copy(update={"planner": config.planner.model_copy(update={"objective": "all_crossings"})})
    assert plan_campaign(config, inputs, dataflow=flow) == plan_campaign(explicit, inputs, dataflow=flow)


def test_hub_free_incremental_gains_match_recounts() -> None:
    inputs = small_inputs(seed=1, n_visits=60, nx=5, ny=4)
    rng = np.random.default_rng(1)
    k = 3
    owner = rng.integers(0, k, inputs.n_tracts)
    ov = P._Overlaps(inputs, np.arange(inputs.n_tracts), k, HUB)
    ov.assign(owner)
    assert ov.cost() == P.crossing_work(inputs, owner, k, hub=HUB) < P.crossing_work(inputs, owner, k)
    for _ in range(25):
        u = int(rng.integers(inputs.n_tracts))
        r = int((owner[u] + rng.integers(1, k)) % k)
        gain = ov.gains(np.array([u]), owner[[u]], np.array([r]))[0]
        before = P.crossing_work(inputs, owner, k, hub=HUB)
        ov.move(u, int(owner[u]), r)
        owner[u] = r
        assert gain == before - P.crossing_work(inputs, owner, k, hub=HUB)
        assert ov.cost() == P.crossing_work(inputs, owner, k, hub=HUB)
