"""Crossing PVIs counted once per (visit, detector, site), not once per (visit, tract).

A detector overlapping two tracts of the same foreign site sends its PVI there once. The
planner knows which detectors overlap several tracts from the inputs' shared-detector
table (``SpatialInputs.multi_*``, built by ``spatial.tract_sets``); here it is checked on a
hand-built sky where the old per-(visit, tract) sum gives another answer, and against a
brute-force recount over the (visit, detector, tract) rows of small synthetic skies.
"""

from __future__ import annotations

import numpy as np
import pytest
from layouts import small_inputs
from multisite_drp.campaign import partition as P
from multisite_drp.campaign.planner import assign_visits, plan_campaign
from multisite_drp.campaign.spatial import (
    SpatialInputError,
    SpatialInputs,
    from_parquet,
    to_parquet,
    tract_sets,
)


def _row_of_three(multi: bool = True) -> SpatialInputs:
    """Tracts A, B, C in a row; one visit of 10 detectors: 6 on A alone, 4 each on both B and C."""
    i64 = lambda *x: np.array(x, dtype=np.int64)
    i32 = lambda *x: np.array(x, dtype=np.int32)
    inputs = SpatialInputs(
        tract_id=i64(10, 11, 12), tract_ra=np.array([0.0, 1.0, 2.0]), tract_dec=np.zeros(3), tract_npatch=i32(1, 1, 1),
        adj_a=i64(0, 1), adj_b=i64(1, 2),
        visit_id=i64(500), visit_band=np.array(["r"]), visit_ra=np.array([1.0]), visit_dec=np.zeros(1),
        visit_ndet=i32(10),
        ov_visit=i64(0, 0, 0), ov_tract=i64(0, 1, 2), ov_ndet=i32(6, 4, 4),
        source="hand-built row of three tracts")
    if multi:
        inputs.multi_visit, inputs.multi_ndet = i64(0), i32(4)
        inputs.multi_set, inputs.multi_tract = i64(0, 0), i64(1, 2)
    return inputs.validate()


def test_a_detector_on_two_tracts_of_one_foreign_site_crosses_once() -> None:
    inputs = _row_of_three()
    owner = np.array([0, 1, 1])  # A at site 0; B and C at site 1
    aff = P.site_affinity(inputs, owner, 2)
    assert aff.tolist() == [[6.0, 4.0]]  # the per-(visit, tract) sum said [6, 8]
    # The visit stays with A's site (6 detectors) and its 4 shared detectors cross once: 4,
    # where the per-(visit, tract) count sent the visit to B and C's site and crossed 6.
    assert P.crossing_work(inputs, owner, 2) == 4
    assert assign_visits(inputs, owner, [0.5, 0.5], 1.0, np.ones(1, bool)).tolist() == [0]
    # Without the shared-detector table the inputs cannot know: the old upper bound.
    old = _row_of_three(multi=False)
    assert old.detector_sets().exact is False
    assert P.site_affinity(old, owner, 2).tolist() == [[6.0, 8.0]]
    assert P.crossing_work(old, owner, 2) == 6


def test_incremental_moves_count_a_shared_detector_once() -> None:
    """The refinement's bookkeeping: a set leaves a site with its last tract there, and arrives once."""
    inputs = _row_of_three()
    active = np.arange(3)
    ov = P._Overlaps(inputs, active, 2)
    owner = np.array([0, 1, 1])
    ov.assign(owner)
    assert ov.cost() == 4
    # Moving B to site 0: the 4 shared detectors now touch both sites (C is still at 1): no change.
    # Moving C to site 0 instead: same. Moving A to site 1: everything at site 1, crossing 0.
    g = ov.gains(np.array([1, 2, 0]), np.array([1, 1, 0]), np.array([0, 0, 1]))
    assert g.tolist() == [0.0, 0.0, 4.0]
    ov.move(1, 1, 0)
    owner[1] = 0
    assert ov.cost() == P.crossing_work(inputs, owner, 2) == 4
    # Now C alone holds the set at site 1: moving it to 0 takes the 4 PVIs off the crossing.
    assert ov.gains(np.array([2]), np.array([1]), np.array([0])).tolist() == [4.0]
    ov.move(2, 1, 0)
    owner[2] = 0
    assert ov.cost() == P.crossing_work(inputs, owner, 2) == 0
    assert ov.aff.tolist() == [[10.0, 0.0]]


def _brute_affinity(inputs: SpatialInputs, owner: np.ndarray, k: int) -> np.ndarray:
    """Detectors of each visit overlapping each site, from the per-detector rows, the slow way."""
    aff = np.zeros((inputs.n_visits, k))
    seen = set()
    for v, d, t in zip(inputs.det_visit.tolist(), inputs.det_detector.tolist(), inputs.det_tract.tolist(),
                       strict=True):
        if (v, d, int(owner[t])) not in seen:
            seen.add((v, d, int(owner[t])))
            aff[v, owner[t]] += 1
    return aff


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_affinity_and_moves_match_a_per_detector_recount(seed: int) -> None:
    inputs = small_inputs(seed=seed, n_visits=60, nx=5, ny=4)
    assert len(inputs.multi_visit) > 0  # the sky has detectors on tract boundaries
    rng = np.random.default_rng(seed)
    k = 3
    owner = rng.integers(0, k, inputs.n_tracts)
    brute = _brute_affinity(inputs, owner, k)
    assert np.array_equal(P.site_affinity(inputs, owner, k), brute)
    assert P.crossing_work(inputs, owner, k) == round((brute.sum(1) - brute.max(1)).sum())
    # Per-(visit, tract) sums count more wherever a detector sits on two tracts of one site.
    per_tract = np.zeros((inputs.n_visits, k))
    np.add.at(per_tract, (inputs.ov_visit, owner[inputs.ov_tract]), inputs.ov_ndet)
    assert (per_tract >= brute).all() and per_tract.sum() > brute.sum()
    # The refinement's incremental gains and moves agree with recounts.
    active = np.arange(inputs.n_tracts)
    ov = P._Overlaps(inputs, active, k)
    ov.assign(owner)
    for _ in range(25):
        u = int(rng.integers(inputs.n_tracts))
        r = int((owner[u] + rng.integers(1, k)) % k)
        gain = ov.gains(np.array([u]), owner[[u]], np.array([r]))[0]
        before = P.crossing_work(inputs, owner, k)
        ov.move(u, int(owner[u]), r)
        owner[u] = r
        after = P.crossing_work(inputs, owner, k)
        assert gain == before - after
        assert ov.cost() == after
        assert np.array_equal(ov.aff, _brute_affinity(inputs, owner, k))


def test_streamed_shared_detector_table_matches_the_detector_rows() -> None:
    """count_overlaps reduces its hit list across chunks; the detector rows say the same."""
    inputs = small_inputs(seed=4, n_visits=50, nx=4, ny=3)
    want = tract_sets(inputs.det_visit, inputs.det_detector, inputs.det_tract)
    got = (inputs.multi_visit, inputs.multi_ndet, inputs.multi_set, inputs.multi_tract)
    for w, g in zip(want, got, strict=True):
        assert np.array_equal(w, g)
    sets = inputs.detector_sets()
    assert sets.exact
    # Every detector overlapping a tract is in exactly one set.
    n_det = len({(v, d) for v, d in zip(inputs.det_visit.tolist(), inputs.det_detector.tolist(), strict=True)})
    assert sets.ndet.sum() == n_det


def test_tract_sets_groups_detectors_by_their_set_of_tracts() -> None:
    # visit 0: detectors 1 and 2 on tracts {3, 4}, detector 5 on {3, 4, 7}, detector 6 on {3} alone;
    # visit 1: detector 1 on {4, 7}.
    v = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    d = [2, 1, 1, 2, 5, 5, 5, 6, 1, 1]
    t = [3, 4, 3, 4, 7, 3, 4, 3, 7, 4]
    mv, mn, ms, mt = tract_sets(np.array(v), np.array(d), np.array(t))
    sets = {(int(mv[i]), tuple(mt[ms == i].tolist())): int(mn[i]) for i in range(len(mv))}
    assert sets == {(0, (3, 4)): 2, (0, (3, 4, 7)): 1, (1, (4, 7)): 1}
    assert (np.diff(ms) >= 0).all()


def test_inconsistent_shared_detector_table_is_refused() -> None:
    inputs = _row_of_three()
    inputs.multi_tract = np.array([0, 2])
    inputs.multi_ndet = np.array([7], dtype=np.int32)  # more than tract 0's 6 detectors of the visit
    with pytest.raises(SpatialInputError, match="more detectors"):
        inputs.validate()
    inputs = _row_of_three()
    inputs.ov_visit, inputs.ov_tract, inputs.ov_ndet = inputs.ov_visit[:2], inputs.ov_tract[:2], inputs.ov_ndet[:2]
    with pytest.raises(SpatialInputError, match="missing from the overlap table"):
        inputs.validate()


def test_plan_counts_each_pvi_once_per_site_and_old_parquet_falls_back(tmp_path, config, flow) -> None:
    """The plan's overlap transfers of PVIs are the per-detector count; a parquet dataset
    without the shared-detector table plans with the per-(visit, tract) upper bound and says so."""
    inputs = small_inputs(seed=0)
    plan = plan_campaign(config, inputs, dataflow=flow)
    v_own = np.full(inputs.n_visits, -1)
    for i, s in enumerate(plan.sites):
        v_own[inputs.visit_index(np.array(s.visits, dtype=np.int64))] = i
    t_own = np.full(inputs.n_tracts, -1)
    for i, s in enumerate(plan.sites):
        t_own[inputs.tract_index(np.array(s.tracts + s.empty_tracts, dtype=np.int64))] = i
    brute = _brute_affinity(inputs, t_own, len(plan.sites))
    pvis = [t for t in plan.transfers if t.kind == "overlap" and t.dataset_type == "pvi"]
    assert pvis
    for t in pvis:
        dst = [s.name for s in plan.sites].index(t.destination)
        vs = inputs.visit_index(np.array(t.visits, dtype=np.int64))
        assert t.count == int(brute[vs, dst].sum())
    to_parquet(inputs, tmp_path / "in.parquet")
    (tmp_path / "in.parquet" / "shared_detectors.parquet").unlink()
    old = from_parquet(tmp_path / "in.parquet")
    assert old.multi_visit is None and "upper bound" in old.notes[0]
    old_plan = plan_campaign(config, old, dataflow=flow)
    assert old_plan.metrics.overlap_bytes > plan.metrics.overlap_bytes


def test_tract_sets_in_chunks_of_whole_visits_is_the_same() -> None:
    """Grouped a few rows at a time (chunks end at visit boundaries), or by the one-lexsort path
    used when the indices are too wide for one int64 key: the same table."""
    rng = np.random.default_rng(1)
    rows = np.unique(np.stack([rng.integers(0, 300, 20000), rng.integers(0, 20, 20000),
                               rng.integers(0, 12, 20000)], axis=1), axis=0)
    v, d, t = rows[rng.permutation(len(rows))].T
    whole = tract_sets(v, d, t)
    assert len(whole[0]) > 1000
    for got in (tract_sets(v, d, t, chunk_rows=97), tract_sets(v, d, t, chunk_rows=1)):
        for a, b in zip(whole, got, strict=True):
            assert np.array_equal(a, b)
    wide = tract_sets(v * 10**15, d, t)
    assert np.array_equal(wide[0], whole[0] * 10**15)
    for a, b in zip(whole[1:], wide[1:], strict=True):
        assert np.array_equal(a, b)
