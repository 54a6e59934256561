"""Split each (step, site) of a plan into submission groups of bounded size.

As lsst-dm/cm-service's splitters do, a step's work at a site becomes several
QuantumGraphs and submissions, each bounded in size, so that no graph build or workflow
grows with the survey:

* a visit-sharded step splits its visits, ordered by the tract that holds most of their
  detectors and then by id (a group covers a compact piece of sky), weighing each visit
  by its detectors (detector-visits: step 1's quanta);
* a tract-sharded step splits its tracts in id order (rings are sky order), weighing each
  tract by its patches (the coadd steps' quanta);
* a global step is one group.

``planner.max_group_size`` bounds a group's weight in these quanta-equivalents, never the
number of groups. A single visit or tract heavier than the bound is a group of its own.
Groups are consecutive in that order and as even as the bound allows. Group ids are the
positions ``0..n-1``: the same plan inputs always give the same groups, and the DAG's map
index of a group is its id.
"""

from __future__ import annotations

import math

import numpy as np

from .spatial import SpatialInputs

__all__ = ["group_label_text", "main_tracts", "split_weighted", "tract_weights", "visit_order", "visit_weights"]


def split_weighted(ids: list[int], weights: list[int], max_size: int) -> list[list[int]]:
    """Split ``ids`` (in the wanted order) into consecutive groups of total weight at most
    ``max_size`` (an id heavier than that alone), as even as possible, fewest groups first."""
    if max_size <= 0:
        raise ValueError(f"max_group_size: expected > 0, got {max_size}")
    if len(ids) != len(weights):
        raise ValueError(f"{len(ids)} ids but {len(weights)} weights")
    if not ids:
        return []
    w = np.asarray(weights, dtype=np.int64)
    if (w <= 0).any():
        raise ValueError(f"weights must be > 0; id {ids[int(np.flatnonzero(w <= 0)[0])]} has {int(w.min())}")
    total = int(w.sum())
    mid = np.cumsum(w) - w / 2.0  # each item's centre on the cumulative axis
    for n in range(max(1, math.ceil(total / max_size)), len(ids) + 1):
        index = np.minimum((mid * n / total).astype(np.int64), n - 1)
        groups = [ids[lo:hi] for lo, hi in _runs(index)]
        sums = [int(s) for s in np.add.reduceat(w, [lo for lo, _ in _runs(index)])]
        if all(s <= max_size or len(g) == 1 for g, s in zip(groups, sums, strict=True)):
            return groups
    return [[i] for i in ids]  # pragma: no cover - n = len(ids) always satisfies the bound


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal values in a non-decreasing array."""
    cuts = np.flatnonzero(np.diff(index)) + 1
    starts = np.concatenate(([0], cuts))
    stops = np.concatenate((cuts, [len(index)]))
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def main_tracts(inputs: SpatialInputs) -> np.ndarray:
    """Per visit (by index), the tract id holding most of its detectors (int64 max: none).
    One sort of the overlap table; compute it once per plan and pass it to :func:`visit_order`."""
    main = np.full(inputs.n_visits, np.iinfo(np.int64).max, dtype=np.int64)
    order = np.lexsort((-inputs.ov_ndet, inputs.ov_visit))
    first = np.ones(len(order), dtype=bool)
    first[1:] = inputs.ov_visit[order][1:] != inputs.ov_visit[order][:-1]
    main[inputs.ov_visit[order][first]] = inputs.tract_id[inputs.ov_tract[order][first]]
    return main


def visit_order(visits: list[int], inputs: SpatialInputs | None, main: np.ndarray | None = None) -> list[int]:
    """Visits sorted by their main tract (the one holding most of their detectors), then id.
    ``main``: :func:`main_tracts` of ``inputs``, if already computed."""
    if inputs is None or not visits:
        return sorted(visits)
    vidx = inputs.visit_index(np.asarray(visits, dtype=np.int64))
    main = main_tracts(inputs) if main is None else main
    keys = np.lexsort((inputs.visit_id[vidx], main[vidx]))
    return inputs.visit_id[vidx][keys].tolist()


def visit_weights(visits: list[int], inputs: SpatialInputs | None) -> list[int]:
    """Detectors of each visit (1 each without inputs)."""
    if inputs is None or not visits:
        return [1] * len(visits)
    vidx = inputs.visit_index(np.asarray(visits, dtype=np.int64))
    return np.maximum(inputs.visit_ndet[vidx], 1).astype(int).tolist()


def tract_weights(tracts: list[int], inputs: SpatialInputs | None) -> list[int]:
    """Patches of each tract (1 each without inputs)."""
    if inputs is None or not tracts:
        return [1] * len(tracts)
    tidx = inputs.tract_index(np.asarray(tracts, dtype=np.int64))
    return np.maximum(inputs.tract_npatch[tidx], 1).astype(int).tolist()


def group_label_text(dimension: str, ids: list[int]) -> str:
    """What the UI shows as a group's map index: ``visits 1203..1288 (6)``, ``tracts 8..9 (2)``,
    ``tract 8``, or ``all`` for a global step."""
    if not dimension:
        return "all"
    if len(ids) == 1:
        return f"{dimension} {ids[0]}"
    return f"{dimension}s {min(ids)}..{max(ids)} ({len(ids)})"
