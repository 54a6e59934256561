"""Divide the tracts among sites: one contiguous region per site, sized by its share.

What is optimised (method ``graph``)
-----------------------------------
The tract graph has a vertex per tract with work (weight = detector-visits overlapping
it) and an edge between geometric neighbours (regions that overlap or touch). An edge's
weight is the number of detector-visits shared by its two tracts: summed over the
visits overlapping both, ``min(ndet(visit, a), ndet(visit, b))``. If the two tracts go
to different sites, roughly that many PVIs must cross sites for the coadds (the visit
is processed at one of them and the other needs its overlapping detectors). METIS
(``pymetis``, k-way, ``contiguous=True``, target part weights = the shares) minimises
the total weight of cut edges subject to every part's work being its share (within
METIS's imbalance tolerance). A refinement pass then moves boundary tracts from
over-full to under-full neighbouring sites, cheapest cut increase first, never
disconnecting a region, until every site is within ``tolerance`` of its share.

Baselines with the same signature: ``ra_stripes`` (contiguous RA ranges sized by the
shares) and ``round_robin`` (tracts dealt in id order to the site furthest below its
share; not contiguous).

Every tract of the skymap is given to a site, including tracts that no visit overlaps:
they carry zero weight but keep each site's region contiguous on the sky across gaps in
the survey (the planner runs nothing on them; the plan lists them as ``empty_tracts``).
If the skymap's own tract graph is disconnected (a partial skymap with islands), each
smaller island is bridged to its nearest tract elsewhere by a weight-1 edge, and
contiguity is judged on that bridged graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from .spatial import SpatialInputError, SpatialInputs

__all__ = ["METHODS", "PartitionError", "co_overlap_weights", "components_per_site", "partition"]

I64 = NDArray[np.int64]


class PartitionError(ValueError):
    """The tracts cannot be divided as asked (e.g. more sites than tracts with work)."""


def co_overlap_weights(inputs: SpatialInputs) -> tuple[I64, I64, I64]:
    """(a, b, shared detector-visits) for every tract pair some visit overlaps, a < b."""
    order = np.lexsort((inputs.ov_tract, inputs.ov_visit))
    v, t, n = inputs.ov_visit[order], inputs.ov_tract[order], inputs.ov_ndet[order].astype(np.int64)
    a_l, b_l, w_l = [], [], []
    for k in range(1, 64):
        if k >= len(v):
            break
        same = v[k:] == v[:-k]
        if not same.any():
            break
        i = np.flatnonzero(same)
        a_l.append(t[i])
        b_l.append(t[i + k])
        w_l.append(np.minimum(n[i], n[i + k]))
    if not a_l:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, b, w = np.concatenate(a_l), np.concatenate(b_l), np.concatenate(w_l)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * inputs.n_tracts + hi
    ukey, inv = np.unique(key, return_inverse=True)
    wsum = np.bincount(inv, weights=w).astype(np.int64)
    return ukey // inputs.n_tracts, ukey % inputs.n_tracts, wsum


def _bridges(inputs: SpatialInputs) -> tuple[I64, I64]:
    """Extra edges joining each island of the tract graph to its nearest tract elsewhere."""
    n = inputs.n_tracts
    a, b = inputs.adj_a, inputs.adj_b
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    order = np.argsort(src, kind="stable")
    xadj = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))])
    adjncy = dst[order]
    label = np.full(n, -1, dtype=np.int64)
    comp = 0
    for s0 in range(n):
        if label[s0] >= 0:
            continue
        stack = [s0]
        label[s0] = comp
        while stack:
            u = stack.pop()
            for v in adjncy[xadj[u]:xadj[u + 1]]:
                if label[v] < 0:
                    label[v] = comp
                    stack.append(int(v))
        comp += 1
    if comp <= 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    from .geometry import lonlat_to_xyz

    xyz = lonlat_to_xyz(inputs.tract_ra, inputs.tract_dec)
    ea, eb = [], []
    sizes = np.bincount(label)
    main = int(np.argmax(sizes))
    for c in range(comp):
        if c == main:
            continue
        inside = np.flatnonzero(label == c)
        outside = np.flatnonzero(label != c)
        dots = xyz[inside] @ xyz[outside].T
        i, j = np.unravel_index(int(np.argmax(dots)), dots.shape)
        ea.append(int(inside[i]))
        eb.append(int(outside[j]))
    return np.asarray(ea, np.int64), np.asarray(eb, np.int64)


def _graph(inputs: SpatialInputs, active: I64) -> tuple[I64, I64, I64]:
    """CSR (xadj, adjncy, eweights) over the active tracts (local indices)."""
    local = np.full(inputs.n_tracts, -1, dtype=np.int64)
    local[active] = np.arange(len(active))
    ba, bb = _bridges(inputs)
    a, b = local[np.concatenate([inputs.adj_a, ba])], local[np.concatenate([inputs.adj_b, bb])]
    keep = (a >= 0) & (b >= 0)
    a, b = a[keep], b[keep]
    ca, cb, cw = co_overlap_weights(inputs)
    wmap_key = local[ca] * len(active) + local[cb]
    ok = (local[ca] >= 0) & (local[cb] >= 0)
    wkey, wval = wmap_key[ok], cw[ok]
    ekey = np.minimum(a, b) * len(active) + np.maximum(a, b)
    w = np.zeros(len(ekey), dtype=np.int64)
    if len(wkey):
        pos = np.clip(np.searchsorted(wkey, ekey), 0, len(wkey) - 1)
        found = wkey[pos] == ekey
        w[found] = wval[pos[found]]
    w = np.asarray(w, dtype=np.int64) + 1  # METIS needs positive edge weights
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    ww = np.concatenate([w, w])
    order = np.lexsort((dst, src))
    src, dst, ww = src[order], dst[order], ww[order]
    xadj = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=len(active)))])
    return xadj.astype(np.int64), dst.astype(np.int64), ww.astype(np.int64)


def _components(members: NDArray[np.bool_], xadj: I64, adjncy: I64) -> int:
    """Number of connected components among the vertices flagged in ``members``."""
    seen = np.zeros(len(members), dtype=bool)
    count = 0
    for s in np.flatnonzero(members):
        if seen[s]:
            continue
        count += 1
        stack = [int(s)]
        seen[s] = True
        while stack:
            u = stack.pop()
            for v in adjncy[xadj[u]:xadj[u + 1]]:
                if members[v] and not seen[v]:
                    seen[v] = True
                    stack.append(int(v))
    return count


def components_per_site(inputs: SpatialInputs, owner: I64, n_sites: int) -> list[int]:
    """Connected components of each site's region (1 = contiguous) over the (bridged) tract graph."""
    active = np.flatnonzero(owner >= 0)
    xadj, adjncy, _ = _graph(inputs, active)
    own = owner[active]
    return [_components(own == s, xadj, adjncy) for s in range(n_sites)]


def _check(inputs: SpatialInputs, shares: Sequence[float]) -> tuple[I64, I64]:
    work = inputs.tract_work()
    n_work = int((work > 0).sum())
    active = np.arange(inputs.n_tracts, dtype=np.int64)
    if len(shares) > n_work:
        raise PartitionError(
            f"{inputs.source}: {len(shares)} sites but only {n_work} tracts with work; "
            "expected at least one tract per site (use fewer sites or a finer skymap)")
    if any(s <= 0 for s in shares):
        raise PartitionError(f"shares: expected every share > 0, got {list(shares)}")
    return work, active


def _make_contiguous(owner: I64, work: I64, xadj: I64, adjncy: I64, ew: I64, k: int) -> I64:
    """Keep each site's largest piece (by work); give stray pieces to the neighbour they touch most.

    METIS's contiguity option is best effort; this makes it a guarantee before balancing.
    """
    for _ in range(4 * k):
        changed = False
        for s in range(k):
            members = owner == s
            label = np.full(len(owner), -1, dtype=np.int64)
            pieces: list[list[int]] = []
            for start in np.flatnonzero(members):
                if label[start] >= 0:
                    continue
                piece = [int(start)]
                label[start] = len(pieces)
                i = 0
                while i < len(piece):
                    u = piece[i]
                    i += 1
                    for v in adjncy[xadj[u]:xadj[u + 1]]:
                        if members[v] and label[v] < 0:
                            label[v] = len(pieces)
                            piece.append(int(v))
                pieces.append(piece)
            if len(pieces) <= 1:
                continue
            keep = max(range(len(pieces)), key=lambda i: (work[pieces[i]].sum(), len(pieces[i])))
            for i, piece in enumerate(pieces):
                if i == keep:
                    continue
                idx = np.asarray(piece)
                nb_w = np.zeros(k)
                for u in piece:
                    nb = adjncy[xadj[u]:xadj[u + 1]]
                    np.add.at(nb_w, owner[nb], ew[xadj[u]:xadj[u + 1]])
                nb_w[s] = -1
                owner[idx] = int(np.argmax(nb_w))
                changed = True
        if not changed:
            break
    return owner


def _site_weights(owner: I64, xadj: I64, adjncy: I64, ew: I64, k: int) -> NDArray[np.float64]:
    """(n, k) total edge weight from each vertex to each site."""
    n = len(owner)
    src = np.repeat(np.arange(n), np.diff(xadj))
    return np.bincount(src * k + owner[adjncy], weights=ew, minlength=n * k).reshape(n, k)


def _refine(owner: I64, work: I64, xadj: I64, adjncy: I64, ew: I64, shares: Sequence[float],
            tolerance: float, max_rounds: int = 50) -> I64:
    """Move boundary tracts between neighbouring sites until every share is within ``tolerance``.

    Greedy, cheapest first: moving tract u from site s to a neighbouring site r costs
    (edge weight from u to s) - (edge weight from u to r) per unit of work moved. A move
    must lower the larger of the two sites' excess over target (so chains of moves
    through a middle site are possible), and must leave s connected (a search over
    s's region, done only for moves that are otherwise accepted).
    """
    k = len(shares)
    total = float(work.sum())
    target = np.asarray(shares, dtype=float) * total
    load = np.bincount(owner, weights=work, minlength=k).astype(float)
    tol = tolerance * total
    for _ in range(max_rounds):
        excess = load - target
        if (np.abs(excess) <= tol).all():
            break
        sw = _site_weights(owner, xadj, adjncy, ew, k)
        u_idx, r_idx = np.nonzero(sw > 0)
        so = owner[u_idx]
        ok = (r_idx != so) & (work[u_idx] > 0) & (excess[so] > tol) & (excess[r_idx] + work[u_idx] < excess[so])
        u_idx, r_idx = u_idx[ok], r_idx[ok]
        cost = (sw[u_idx, owner[u_idx]] - sw[u_idx, r_idx]) / np.maximum(work[u_idx], 1)
        order = np.lexsort((r_idx, u_idx, cost))
        moved = 0
        for j in order:
            u, r = int(u_idx[j]), int(r_idx[j])
            s = int(owner[u])
            ex_s, ex_r = load[s] - target[s], load[r] - target[r]
            if ex_s <= tol or ex_r + work[u] >= ex_s:
                continue
            nb = adjncy[xadj[u]:xadj[u + 1]]
            if not (owner[nb] == r).any():
                continue
            members = owner == s
            members[u] = False
            if not members.any() or _components(members, xadj, adjncy) != 1:
                continue
            owner[u] = r
            load[s] -= work[u]
            load[r] += work[u]
            moved += 1
            if (np.abs(load - target) <= tol).all():
                break
        if moved == 0:
            break
    return owner


def partition_graph(inputs: SpatialInputs, shares: Sequence[float], seed: int = 0,
                    tolerance: float = 0.002) -> I64:
    """METIS k-way partition of the tract graph (see module docstring), then balance refinement."""
    import pymetis

    work, active = _check(inputs, shares)
    owner = np.full(inputs.n_tracts, -1, dtype=np.int64)
    k = len(shares)
    if k == 1:
        owner[active] = 0
        return owner
    xadj, adjncy, ew = _graph(inputs, active)
    # ncuts=8: METIS keeps the best of 8 attempts (about 3 s on 19k tracts); ufactor=30
    # (3% imbalance) gives it room, the refinement below restores the exact shares.
    opts = pymetis.Options(seed=seed, ufactor=30, contig=1, ncuts=8)
    tp = np.asarray(shares, dtype=float)
    tp = tp / tp.sum()
    _, parts = pymetis.part_graph(k, pymetis.CSRAdjacency(xadj, adjncy), vweights=work[active], eweights=ew,
                                  tpwgts=tp.tolist(), options=opts)
    local = np.asarray(parts, dtype=np.int64)
    if len(np.unique(local[work[active] > 0])) < k:  # METIS left a site without work: use stripes
        local = _ra_stripes_local(inputs, active, work, shares)
    local = _make_contiguous(local, work[active], xadj, adjncy, ew, k)
    local = _refine(local, work[active], xadj, adjncy, ew, shares, tolerance)
    owner[active] = local
    return owner


def _ra_stripes_local(inputs: SpatialInputs, active: I64, work: I64, shares: Sequence[float]) -> I64:
    order = np.lexsort((inputs.tract_id[active], inputs.tract_ra[active]))
    cum = np.cumsum(work[active][order]) - work[active][order] / 2.0
    bounds = np.cumsum(shares)[:-1] * work[active].sum()
    local = np.empty(len(active), dtype=np.int64)
    local[order] = np.searchsorted(bounds, cum)
    return local


def partition_ra_stripes(inputs: SpatialInputs, shares: Sequence[float], seed: int = 0) -> I64:
    """Baseline: contiguous RA ranges (sorted by tract centre RA) sized by the shares."""
    work, active = _check(inputs, shares)
    owner = np.full(inputs.n_tracts, -1, dtype=np.int64)
    owner[active] = _ra_stripes_local(inputs, active, work, shares)
    return owner


def partition_round_robin(inputs: SpatialInputs, shares: Sequence[float], seed: int = 0) -> I64:
    """Baseline: tracts in id order, each to the site furthest below its share so far."""
    work, active = _check(inputs, shares)
    owner = np.full(inputs.n_tracts, -1, dtype=np.int64)
    sh = np.asarray(shares, dtype=float)
    load = np.zeros(len(sh))
    done = 0.0
    for t in active[np.argsort(inputs.tract_id[active], kind="stable")]:
        done += work[t]
        s = int(np.argmax(sh * done - load))
        owner[t] = s
        load[s] += work[t]
    return owner


METHODS: dict[str, Callable[..., I64]] = {
    "graph": partition_graph,
    "ra_stripes": partition_ra_stripes,
    "round_robin": partition_round_robin,
}


def partition(inputs: SpatialInputs, shares: Sequence[float], method: str = "graph", seed: int = 0) -> I64:
    """Owner site index per tract (-1 for tracts without work) by the named method."""
    try:
        fn = METHODS[method]
    except KeyError:
        raise PartitionError(f"method: expected one of {sorted(METHODS)}, got {method!r}") from None
    if inputs.n_tracts == 0:
        raise SpatialInputError(f"{inputs.source}: no tracts")
    return fn(inputs, shares, seed=seed)
