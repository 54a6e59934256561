"""Tract partition: contiguity, share accuracy, baselines and the too-many-sites error."""

from __future__ import annotations

import numpy as np
import pytest
from layouts import small_inputs
from multisite_drp.campaign import partition as P
from multisite_drp.campaign import synthetic

SHARES = [0.35, 0.40, 0.25]


@pytest.fixture(scope="module")
def survey():
    """A 3,000-visit LSST-like survey on a coarse full-sky rings skymap (~1,900 tracts)."""
    return synthetic.synthetic_survey(3000, skymap=synthetic.rings_skymap(num_rings=38), seed=5)


def _shares(inputs, owner):
    w = inputs.tract_work()
    return np.bincount(owner, weights=w, minlength=3) / w.sum()


@pytest.mark.parametrize("method", ["graph", "ra_stripes"])
def test_regions_are_contiguous_and_sized(survey, method: str) -> None:
    owner = P.partition(survey, SHARES, method)
    assert (owner >= 0).all()
    assert P.components_per_site(survey, owner, 3) == [1, 1, 1]
    assert np.abs(_shares(survey, owner) - SHARES).max() < 0.01


def test_graph_cuts_less_than_stripes(survey) -> None:
    a, b, w = P.co_overlap_weights(survey)

    def cut(owner):
        return int(w[owner[a] != owner[b]].sum())

    graph, stripes = P.partition(survey, SHARES, "graph"), P.partition(survey, SHARES, "ra_stripes")
    assert cut(graph) < 0.8 * cut(stripes)
    # The true objective: detector-visits planned across sites (0.36 of stripes when written).
    assert P.crossing_work(survey, graph, 3) < 0.6 * P.crossing_work(survey, stripes, 3)


def test_more_trials_never_worse(survey) -> None:
    one = P.crossing_work(survey, P.partition(survey, SHARES, "graph", trials=1), 3)
    eight = P.crossing_work(survey, P.partition(survey, SHARES, "graph", trials=8), 3)
    assert eight <= one


def test_improve_lowers_the_true_cost_within_the_constraints(survey) -> None:
    """The refinement pass, started from RA stripes: cheaper, still contiguous, shares kept, bookkeeping exact."""
    work, active = P._check(survey, SHARES)
    xadj, adjncy, _ = P._graph(survey, active)
    owner = P.partition(survey, SHARES, "ra_stripes")
    before_err = np.abs(_shares(survey, owner) - SHARES).max()
    ov = P._Overlaps(survey, active, 3)
    ov.assign(owner)
    before = ov.cost()
    assert before == P.crossing_work(survey, owner, 3)
    owner = P._improve(owner.copy(), ov, work, xadj, adjncy, SHARES, tolerance=0.002)
    assert ov.cost() < 0.95 * before
    assert ov.cost() == P.crossing_work(survey, owner, 3)  # incremental updates match a recount
    assert P.components_per_site(survey, owner, 3) == [1, 1, 1]
    assert np.abs(_shares(survey, owner) - SHARES).max() <= max(before_err, 0.002) + 1e-9


def test_round_robin_is_balanced_but_scattered(survey) -> None:
    owner = P.partition(survey, SHARES, "round_robin")
    assert np.abs(_shares(survey, owner) - SHARES).max() < 0.01
    assert max(P.components_per_site(survey, owner, 3)) > 1


def test_small_layout_contiguous() -> None:
    inputs = small_inputs(seed=3)
    owner = P.partition(inputs, SHARES, "graph")
    assert P.components_per_site(inputs, owner, 3) == [1, 1, 1]


def test_more_sites_than_tracts_is_an_error() -> None:
    inputs = small_inputs(seed=1, n_visits=3, nx=2, ny=1)  # two tracts
    with pytest.raises(P.PartitionError, match="3 sites but only 2 tracts with work"):
        P.partition(inputs, SHARES, "graph")


def test_unknown_method() -> None:
    with pytest.raises(P.PartitionError, match="method: expected one of"):
        P.partition(small_inputs(), SHARES, "spiral")


def test_exchanges_improve_where_single_moves_stall(survey) -> None:
    """Pairs of opposite moves between two sites get past the share window single moves stop at."""
    work, active = P._check(survey, SHARES)
    xadj, adjncy, _ = P._graph(survey, active)
    ov = P._Overlaps(survey, active, 3)
    best_gain = 0.0
    for shares in (SHARES, [0.25, 0.40, 0.35], [0.40, 0.35, 0.25]):
        owner = P.partition(survey, shares, "ra_stripes")
        ov.assign(owner)
        while P._single_moves(P._Mover(owner, ov, work, xadj, adjncy, shares, 0.002)):
            pass
        stalled = ov.cost()
        m = P._Mover(owner, ov, work, xadj, adjncy, shares, 0.002)
        if P._exchanges(m):
            assert ov.cost() == P.crossing_work(survey, owner, 3) < stalled
            assert P.components_per_site(survey, owner, 3) == [1, 1, 1]
            assert (np.abs(m.load - m.target) <= m.tol + 1e-9).all()
            best_gain = max(best_gain, stalled - ov.cost())
    assert best_gain > 0  # at least one of the starts had a profitable exchange


def test_repair_and_refine_makes_any_start_contiguous_balanced_and_cheaper(survey) -> None:
    """The graph method's repair and refinement on another partitioner's start (the benchmark's KaHyPar)."""
    start = P.partition(survey, SHARES, "round_robin")
    assert max(P.components_per_site(survey, start, 3)) > 1
    owner = P.repair_and_refine(survey, SHARES, start, tolerance=0.002)
    assert P.components_per_site(survey, owner, 3) == [1, 1, 1]
    assert np.abs(_shares(survey, owner) - SHARES).max() <= 0.002 + 1e-9
    assert P.crossing_work(survey, owner, 3) < 0.5 * P.crossing_work(survey, start, 3)
