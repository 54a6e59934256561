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

    assert cut(P.partition(survey, SHARES, "graph")) < 0.8 * cut(P.partition(survey, SHARES, "ra_stripes"))


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
