"""Shares as a constraint, checked against the exact optimum of small skies.

``partition.exact_split`` enumerates every assignment of a small sky's tracts (at most 12,
two or three sites), keeps those whose regions are non-empty and connected over the
planner's own tract adjacency, and finds the best share error and, within the tolerance,
the least crossing work. Here it is checked against a naive recount (itertools and a set
search), then used as the oracle: the planner splits small skies by it, meets the tolerance
wherever a split can, and says so in ``plan.warnings`` (with the exact best) wherever none can.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from layouts import small_inputs
from multisite_drp.campaign.partition import _edges, crossing_work, exact_split, partition_graph, share_error
from multisite_drp.campaign.planner import plan_campaign


def _naive(inputs, shares, tolerance):
    """(contiguous splits, best error, within tolerance, least crossing among them): the slow way."""
    n, k = inputs.n_tracts, len(shares)
    a, b, _ = _edges(inputs, np.arange(n))
    nbrs = {u: set() for u in range(n)}
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        nbrs[x].add(y)
        nbrs[y].add(x)
    work = inputs.tract_work().astype(float)
    tp = np.asarray(shares) / sum(shares)
    splits, best, feasible, optimum = 0, np.inf, 0, None
    for assign in itertools.product(range(k), repeat=n):
        regions = [{u for u in range(n) if assign[u] == s} for s in range(k)]
        if any(not r for r in regions):
            continue
        ok = True
        for r in regions:
            seen, todo = set(), [next(iter(r))]
            while todo:
                u = todo.pop()
                if u not in seen:
                    seen.add(u)
                    todo.extend(nbrs[u] & r)
            ok &= seen == r
        if not ok:
            continue
        splits += 1
        err = max(abs(sum(work[list(r)]) / work.sum() - tp[s]) for s, r in enumerate(regions))
        best = min(best, err)
        if err <= tolerance + 1e-12:
            feasible += 1
            cost = crossing_work(inputs, np.asarray(assign), k)
            optimum = cost if optimum is None else min(optimum, cost)
    return splits, best, feasible, optimum


@pytest.mark.parametrize("seed, nx, ny, shares, tolerance", [
    (1, 3, 2, [0.6, 0.4], 0.05), (2, 4, 2, [0.35, 0.4, 0.25], 0.05), (3, 3, 3, [0.35, 0.4, 0.25], 0.02),
])
def test_enumeration_matches_a_naive_recount(seed, nx, ny, shares, tolerance) -> None:
    inputs = small_inputs(seed=seed, n_visits=60, nx=nx, ny=ny)
    ex = exact_split(inputs, shares, tolerance)
    splits, best, feasible, optimum = _naive(inputs, shares, tolerance)
    assert (ex.tracts, ex.splits, ex.feasible, ex.optimum) == (nx * ny, splits, feasible, optimum)
    assert ex.best_error == pytest.approx(best)
    assert ex.splits < len(shares) ** (nx * ny)  # contiguity did rule splits out


def test_a_sky_too_big_or_too_many_sites_is_not_enumerated() -> None:
    assert exact_split(small_inputs(seed=0, n_visits=40, nx=5, ny=3), [0.5, 0.5], 0.05) is None  # 15 tracts
    assert exact_split(small_inputs(seed=0, n_visits=40, nx=3, ny=2), [0.25] * 4, 0.05) is None


def test_small_skies_meet_the_tolerance_wherever_a_split_can() -> None:
    """Over 300 seeded random small skies (6 to 12 tracts, 2 or 3 sites): where the oracle has
    a split within the tolerance the planner's is within it and costs the optimum; where it has
    none, the planner's is the most balanced there is."""
    met = missed = 0
    for seed in range(300):
        nx, ny = [(3, 2), (4, 2), (3, 3), (4, 3), (6, 2)][seed % 5]
        shares = [0.6, 0.4] if seed % 2 else [0.35, 0.4, 0.25]
        tolerance = [0.01, 0.03, 0.05][seed % 3]
        inputs = small_inputs(seed=seed, n_visits=int(np.random.default_rng(seed).integers(30, 120)), nx=nx, ny=ny)
        ex = exact_split(inputs, shares, tolerance)
        owner = partition_graph(inputs, shares, tolerance=tolerance, trials=4)
        err = share_error(owner, inputs.tract_work(), shares)
        if ex.feasible:
            assert err <= tolerance + 1e-12, (seed, err)
            assert crossing_work(inputs, owner, len(shares)) == ex.optimum, seed
            met += 1
        else:
            assert err == pytest.approx(ex.best_error), seed
            missed += 1
    assert met > 20 and missed > 5  # both cases were exercised


def test_a_plan_that_cannot_meet_its_shares_says_so(config, flow) -> None:
    inputs = small_inputs(seed=7, n_visits=60, nx=4, ny=3)
    plan = plan_campaign(config, inputs, dataflow=flow)  # the embedded campaign's 0.002 tolerance
    ex = exact_split(inputs, [s.share for s in config.sites], config.planner.share_tolerance)
    assert ex.feasible == 0 and plan.metrics.tract_share_error == pytest.approx(ex.best_error, abs=1e-6)
    [warning] = [w for w in plan.warnings if w.startswith("shares outside planner.share_tolerance 0.002")]
    assert f"the best of all {ex.splits} reaches {ex.best_error:.4f}" in warning
    for s in plan.sites:
        assert f"{s.name} {s.share_achieved:.3f} of detector-visits" in warning
