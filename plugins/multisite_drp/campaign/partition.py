"""Divide the tracts among sites: one contiguous region per site, sized by its share.

What is optimised (method ``graph``)
-----------------------------------
The objective is :func:`crossing_work`: the PVIs planned across sites when each visit
goes to the site whose region most of its detectors overlap (each of its detectors
overlapping another site's tracts is a PVI that site's coadds need, counted once per
(visit, detector, site) however many of the site's tracts the detector overlaps:
:meth:`.spatial.SpatialInputs.detector_sets`). Subject to: every site's
coadd work (the detector-visits overlapping its tracts) within ``tolerance`` of its
share, and every site's region connected.

With ``hub`` given (``planner.objective: hub_free``, DESIGN 55), a PVI whose destination is
the hub is not counted: every output returns to the hub, so the plan's byte metric never
charges one. Each visit still goes to its majority site; it then crosses the detectors it
has on the regions of sites other than its own and the hub. Steps 3-4 and the exact split
use that count; METIS (step 1) and the balancing pass (step 2) keep the symmetric proxy.

1. The tract graph has a vertex per tract with work (weight = detector-visits
   overlapping it) and an edge between geometric neighbours (regions that overlap or
   touch). An edge's weight is the number of detector-visits shared by its two tracts:
   summed over the visits overlapping both, ``min(ndet(visit, a), ndet(visit, b))``.
   METIS (``pymetis``, k-way, ``contiguous=True``, target part weights = the shares)
   minimises the weight of cut edges, a pairwise proxy of the objective.
2. Stray pieces are merged into a neighbour and a balancing pass moves boundary tracts
   from over-full to under-full neighbouring sites, cheapest cut first, never
   disconnecting a region, until every site is within ``tolerance`` of its share.
3. A refinement pass (:func:`_improve`) then works on the objective itself: it moves
   boundary tracts to a neighbouring site while that lowers :func:`crossing_work`,
   keeping the shares and contiguity.
4. METIS's result depends strongly on its seed (on the DR1-sized benchmark, 48 balanced
   runs end at 0.83-1.31 of the RA-stripes objective, 0.81-1.28 after refinement), so
   steps 1-3 run ``trials``
   times with seeds ``seed .. seed + trials - 1`` and the cheapest result is kept; the
   same inputs and seed always give the same partition.

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

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from multisite_drp.errors import InputError

from .spatial import SpatialInputError, SpatialInputs

#: Skies of at most this many tracts (two or three sites) are split by enumeration (3**12 = 531,441
#: assignments, about 0.2-0.4 s); larger ones by the METIS trials.
EXACT_TRACTS = 12

__all__ = ["METHODS", "PartitionError", "co_overlap_weights", "components_per_site", "crossing_work", "partition",
           "repair_and_refine", "site_affinity"]

I64 = NDArray[np.int64]


class PartitionError(InputError, ValueError):
    """The tracts cannot be divided as asked (e.g. more sites than tracts with work)."""


def _pair_weights(inputs: SpatialInputs) -> tuple[I64, I64]:
    """(key, shared detectors) for every (visit, tract pair) with key = a * n_tracts + b, a < b."""
    order = np.lexsort((inputs.ov_tract, inputs.ov_visit))
    v, t, n = inputs.ov_visit[order], inputs.ov_tract[order], inputs.ov_ndet[order].astype(np.int64)
    keys, weights = [], []
    for k in range(1, 64):
        if k >= len(v):
            break
        same = v[k:] == v[:-k]
        if not same.any():
            break
        i = np.flatnonzero(same)
        a, b = t[i], t[i + k]
        keys.append(np.minimum(a, b) * inputs.n_tracts + np.maximum(a, b))
        weights.append(np.minimum(n[i], n[i + k]))
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(keys), np.concatenate(weights)


def co_overlap_weights(inputs: SpatialInputs) -> tuple[I64, I64, I64]:
    """(a, b, shared detector-visits) for every tract pair some visit overlaps, a < b."""
    key, w = _pair_weights(inputs)
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


def _edges(inputs: SpatialInputs, active: I64) -> tuple[I64, I64, I64]:
    """(a, b, local index of every tract) for the neighbour pairs (plus bridges) among the active tracts."""
    local = np.full(inputs.n_tracts, -1, dtype=np.int64)
    local[active] = np.arange(len(active))
    ba, bb = _bridges(inputs)
    a, b = local[np.concatenate([inputs.adj_a, ba])], local[np.concatenate([inputs.adj_b, bb])]
    keep = (a >= 0) & (b >= 0)
    return a[keep], b[keep], local


def _csr(a: I64, b: I64, w: I64, n: int) -> tuple[I64, I64, I64]:
    """Symmetric CSR (xadj, adjncy, weights) of the undirected edges (a, b, w) over n vertices."""
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    ww = np.concatenate([w, w])
    order = np.lexsort((dst, src))
    src, dst, ww = src[order], dst[order], ww[order]
    xadj = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))])
    return xadj.astype(np.int64), dst.astype(np.int64), ww.astype(np.int64)


def _graph(inputs: SpatialInputs, active: I64) -> tuple[I64, I64, I64]:
    """CSR (xadj, adjncy, eweights) over the active tracts (local indices)."""
    a, b, local = _edges(inputs, active)
    # Edge weight: co-overlap summed over visits (pairs that are not neighbours are dropped).
    # The pair keys are looked up in the sorted edge keys rather than aggregated on their own.
    n = len(active)
    ekey = np.minimum(a, b) * n + np.maximum(a, b)
    uek, e_inv = np.unique(ekey, return_inverse=True)
    pkey, pw = _pair_weights(inputs)
    pa, pb = local[pkey // inputs.n_tracts], local[pkey % inputs.n_tracts]
    ok = (pa >= 0) & (pb >= 0)
    lk = np.minimum(pa[ok], pb[ok]) * n + np.maximum(pa[ok], pb[ok])
    w_u = np.zeros(len(uek), dtype=np.int64)
    if len(lk) and len(uek):
        pos = np.clip(np.searchsorted(uek, lk), 0, len(uek) - 1)
        hit = uek[pos] == lk
        w_u = np.bincount(pos[hit], weights=pw[ok][hit], minlength=len(uek)).astype(np.int64)
    return _csr(a, b, w_u[e_inv] + 1, n)  # + 1: METIS needs positive edge weights


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
    a, b, _ = _edges(inputs, active)  # contiguity needs no edge weights
    xadj, adjncy, _ = _csr(a, b, np.ones(len(a), np.int64), len(active))
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


def site_affinity(inputs: SpatialInputs, tract_owner: I64, k: int) -> NDArray[np.float64]:
    """(V, k): detectors of each visit overlapping each site's region, each detector counted
    once per site however many of the site's tracts it overlaps (:meth:`SpatialInputs.detector_sets`;
    inputs without the shared-detector table count it once per tract). Tracts with a negative
    owner belong to no site."""
    ds = inputs.detector_sets()
    return ds.affinity(ds.site_counts(np.asarray(tract_owner, dtype=np.int64), k), inputs.n_visits)


def crossing_work(inputs: SpatialInputs, tract_owner: I64, k: int, hub: int | None = None) -> int:
    """The partition's true objective: PVIs planned across sites.

    Each visit goes to the site whose region most of its detectors overlap; every one of
    its detectors overlapping a tract of another site is a PVI that site's coadds need,
    counted once per (visit, detector, site) (:func:`site_affinity`). With ``hub`` (the
    ``hub_free`` objective, DESIGN 55) a PVI whose destination is site ``hub`` is not
    counted: every output returns to the hub, so the plan's byte metric never charges it.
    """
    return round(_crossing(site_affinity(inputs, tract_owner, k), hub))


def _visit_crossing(aff: NDArray[np.float64], hub: int | None) -> NDArray[np.float64]:
    """Per visit (row of ``aff``), the detector-site pairs outside its majority site (the
    first of equal maxima, as :func:`.planner.assign_visits` takes), less those at ``hub``."""
    if hub is None:
        return aff.sum(axis=1) - aff.max(axis=1)
    home = aff.argmax(axis=1)
    kept = aff[np.arange(len(aff)), home]
    return aff.sum(axis=1) - aff[:, hub] - np.where(home != hub, kept, 0.0)


def _crossing(aff: NDArray[np.float64], hub: int | None = None) -> float:
    """Per visit, the detector-site pairs outside its majority site (and, with ``hub``, not at
    the hub), summed."""
    return float(_visit_crossing(aff, hub).sum())


class _Overlaps:
    """Each visit's detector sets (:meth:`SpatialInputs.detector_sets`) grouped by (local) tract,
    every set's count of member tracts per site, and each visit's affinity to each site.

    A set counts toward a site's affinity while one or more of its tracts are the site's:
    moving tract u from s to r takes the set's detectors off s when u was its last tract
    there, and adds them to r when it had none there. With ``hub``, crossings into the hub
    are free (:func:`crossing_work`).
    """

    def __init__(self, inputs: SpatialInputs, active: I64, k: int, hub: int | None = None) -> None:
        ds = inputs.detector_sets()
        self.ds = ds
        local = np.full(inputs.n_tracts, -1, dtype=np.int64)
        local[active] = np.arange(len(active))
        self.local = local
        member_set, member_tract = ds.members()
        lt = local[member_tract]
        keep = lt >= 0
        m_set, lt = member_set[keep], lt[keep]
        order = np.lexsort((ds.visit[m_set], lt))  # by tract, then visit: a tract's rows of a visit adjacent
        self.set = m_set[order]  # member row -> set
        self.tract = lt[order]
        self.visit = ds.visit[self.set]
        self.ndet = ds.ndet[self.set].astype(np.float64)
        self.ptr = np.concatenate([[0], np.cumsum(np.bincount(lt, minlength=len(active)))])
        self.k = k
        self.hub = hub
        self.n_visits = inputs.n_visits
        self.aff = np.zeros((self.n_visits, k))
        self.count = np.zeros((k, len(ds.visit)), dtype=np.int32)  # member tracts per (site, set)

    def assign(self, owner: I64) -> None:
        """Set every set's site counts and every visit's affinity for the (local) tract owners ``owner``."""
        lo = self.local
        full = np.where(lo >= 0, owner[np.maximum(lo, 0)], -1)  # owner per skymap tract
        self.count = self.ds.site_counts(full, self.k)
        self.aff = self.ds.affinity(self.count, self.n_visits)

    def rows(self, tracts: I64) -> tuple[I64, I64]:
        """(candidate index, member row) for every member row of each tract in ``tracts``."""
        cnt = self.ptr[tracts + 1] - self.ptr[tracts]
        cand = np.repeat(np.arange(len(tracts)), cnt)
        start = np.repeat(self.ptr[tracts] - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt)
        return cand, start + np.arange(int(cnt.sum()))

    def gains(self, tracts: I64, src: I64, dst: I64) -> NDArray[np.float64]:
        """Fall in crossing work if each tract moves from ``src`` to ``dst`` (alone)."""
        cand, rows = self.rows(tracts)
        if not len(rows):
            return np.zeros(len(tracts))
        sets, s, r = self.set[rows], src[cand], dst[cand]
        lose = np.where(self.count[s, sets] == 1, self.ndet[rows], 0.0)  # u was the set's last tract at s
        gain = np.where(self.count[r, sets] == 0, self.ndet[rows], 0.0)  # the set had no tract at r
        # One group per (candidate, visit): rows are ordered by tract, then visit.
        v = self.visit[rows]
        first = np.flatnonzero(np.concatenate([[True], (cand[1:] != cand[:-1]) | (v[1:] != v[:-1])]))
        g_lose, g_gain = np.add.reduceat(lose, first), np.add.reduceat(gain, first)
        gc = cand[first]
        a = self.aff[v[first]]
        i = np.arange(len(first))
        before = _visit_crossing(a, self.hub)
        a[i, s[first]] -= g_lose
        a[i, r[first]] += g_gain
        delta = before - _visit_crossing(a, self.hub)  # integer counts: exact in float64
        return np.bincount(gc, weights=delta, minlength=len(tracts))

    def move(self, u: int, s: int, r: int) -> I64:
        sl = slice(self.ptr[u], self.ptr[u + 1])
        sets, v, n = self.set[sl], self.visit[sl], self.ndet[sl]
        off = self.count[s, sets] == 1
        on = self.count[r, sets] == 0
        self.count[s, sets] -= 1  # a tract is in a set once: the sets of u's rows are distinct
        self.count[r, sets] += 1
        np.subtract.at(self.aff[:, s], v[off], n[off])
        np.add.at(self.aff[:, r], v[on], n[on])
        return v

    def cost(self) -> float:
        return _crossing(self.aff, self.hub)


def _stays_connected(owner: I64, u: int, xadj: I64, adjncy: I64) -> bool:
    """Would ``owner[u]``'s region stay connected without ``u``? (local test first, then a full search)"""
    s = owner[u]
    nb = adjncy[xadj[u]:xadj[u + 1]]
    same = nb[owner[nb] == s]
    if len(same) <= 1:
        return len(same) == 1  # a leaf of its region; with no same-site neighbour, refuse
    # Are u's same-site neighbours joined to each other around u (within its 2-hop ring)?
    ring = {int(x) for x in same}
    for x in list(ring):
        ring.update(int(y) for y in adjncy[xadj[x]:xadj[x + 1]] if owner[y] == s and y != u)
    seen = {int(same[0])}
    stack = [int(same[0])]
    while stack:
        x = stack.pop()
        for y in adjncy[xadj[x]:xadj[x + 1]]:
            y = int(y)
            if y in ring and y not in seen:
                seen.add(y)
                stack.append(y)
    if all(int(x) in seen for x in same):
        return True
    members = owner == s
    members[u] = False
    return _components(members, xadj, adjncy) == 1


class _Mover:
    """Boundary-tract moves under the share window and contiguity, with the affinity kept current."""

    def __init__(self, owner: I64, ov: _Overlaps, work: I64, xadj: I64, adjncy: I64, shares: Sequence[float],
                 tolerance: float) -> None:
        self.owner, self.ov, self.work, self.xadj, self.adjncy = owner, ov, work, xadj, adjncy
        self.k = len(shares)
        total = float(work.sum())
        self.target = np.asarray(shares, dtype=float) * total
        self.tol = tolerance * total
        self.load = np.bincount(owner, weights=work, minlength=self.k).astype(float)
        self.touched = np.zeros(len(ov.aff), dtype=bool)

    def candidates(self) -> tuple[I64, I64, NDArray[np.float64]]:
        """Every (boundary tract with work, neighbouring site) and the move's gain alone."""
        sw = _site_weights(self.owner, self.xadj, self.adjncy, np.ones(len(self.adjncy)), self.k)
        u_idx, r_idx = np.nonzero(sw > 0)
        ok = (r_idx != self.owner[u_idx]) & (self.work[u_idx] > 0)
        u_idx, r_idx = u_idx[ok], r_idx[ok]
        return u_idx, r_idx, self.ov.gains(u_idx, self.owner[u_idx], r_idx)

    def visits(self, u: int) -> I64:
        return self.ov.visit[self.ov.ptr[u]:self.ov.ptr[u + 1]]

    def in_window(self, s: int, r: int, dw: float) -> bool:
        """Would moving work ``dw`` from s to r keep s above its lower and r below its upper bound?"""
        lo_s, hi_r = self.target[s] - self.tol, self.target[r] + self.tol
        return self.load[s] - dw >= lo_s and self.load[r] + dw <= hi_r

    def movable(self, u: int, r: int) -> bool:
        nb = self.adjncy[self.xadj[u]:self.xadj[u + 1]]
        return bool((self.owner[nb] == r).any()) and _stays_connected(self.owner, u, self.xadj, self.adjncy)

    def apply(self, u: int, r: int) -> None:
        s = int(self.owner[u])
        self.ov.move(u, s, r)
        self.owner[u] = r
        self.load[s] -= self.work[u]
        self.load[r] += self.work[u]
        self.touched[self.visits(u)] = True


def _single_moves(m: _Mover) -> int:
    """Apply, best first, every improving move that is independent of those already made."""
    u_idx, r_idx, g = m.candidates()
    moved = 0
    for j in np.lexsort((r_idx, u_idx, -g)):
        if g[j] <= 0:
            break
        u, r = int(u_idx[j]), int(r_idx[j])
        if m.touched[m.visits(u)].any() or not m.in_window(int(m.owner[u]), r, m.work[u]):
            continue
        if m.movable(u, r):
            m.apply(u, r)
            moved += 1
    return moved


def _exchanges(m: _Mover, limit: int = 300) -> int:
    """Pairs of moves between two sites (u: s->r, v: r->s) whose gains sum to more than zero.

    Single moves stall where the shares bind: a cheap move at one stretch of a boundary
    needs a compensating move elsewhere (typically where two regions meet at a dense edge
    on one side of the sky and at a sparse one on the other).
    """
    u_idx, r_idx, g = m.candidates()
    src = m.owner[u_idx]
    moved = 0
    for s, r in itertools.combinations(range(m.k), 2):
        a = np.flatnonzero((src == s) & (r_idx == r))
        b = np.flatnonzero((src == r) & (r_idx == s))
        a = a[np.lexsort((u_idx[a], -g[a]))][:limit]
        b = b[np.lexsort((u_idx[b], -g[b]))][:limit]
        used = np.zeros(len(b), dtype=bool)
        for ia in a:
            if not len(b) or g[ia] + g[b[~used]].max(initial=-np.inf) <= 0:
                break
            u = int(u_idx[ia])
            if m.touched[m.visits(u)].any():
                continue
            for jb, ib in enumerate(b):
                if used[jb]:
                    continue
                if g[ia] + g[ib] <= 0:
                    break
                v = int(u_idx[ib])
                vu, vv = m.visits(u), m.visits(v)
                if m.touched[vv].any() or np.intersect1d(vu, vv).size:
                    continue
                dw = float(m.work[u] - m.work[v])  # net work from s to r
                if not (m.in_window(s, r, dw) if dw >= 0 else m.in_window(r, s, -dw)):
                    continue
                if not m.movable(u, r):
                    break
                m.apply(u, r)
                if m.movable(v, s):
                    m.apply(v, s)
                    used[jb] = True
                    moved += 2
                    break
                m.apply(u, s)  # undo: v cannot leave r
                m.touched[vu] = False
                break
    return moved


def _improve(owner: I64, ov: _Overlaps, work: I64, xadj: I64, adjncy: I64, shares: Sequence[float],
             tolerance: float, max_rounds: int = 60) -> I64:
    """Move boundary tracts between neighbouring sites while that lowers :func:`crossing_work`.

    The METIS edge weights are pairwise proxies of the true cost (a visit on a tract
    corner is counted on several edges); this pass works on the objective itself. Each
    round evaluates every (boundary tract, neighbouring site) move at once and applies
    the best improving ones that touch no visit already affected this round, keep every
    site's work within ``tolerance`` of target and keep the losing site's region
    connected. When no single move improves, pairs of opposite moves between two sites
    whose gains sum to more than zero (:func:`_exchanges`) are tried.
    """
    for _ in range(max_rounds):
        m = _Mover(owner, ov, work, xadj, adjncy, shares, tolerance)
        if _single_moves(m) == 0 and _exchanges(m) == 0:
            break
    return owner


def partition_graph(inputs: SpatialInputs, shares: Sequence[float], seed: int = 0,
                    tolerance: float = 0.002, trials: int = 48, exact_tracts: int = EXACT_TRACTS,
                    hub: int | None = None) -> I64:
    """Best of ``trials`` METIS partitions, each balanced and refined on the true objective.

    See the module docstring. Trial ``t`` runs METIS with seed ``seed + t``; the result
    is the trial that meets the share ``tolerance`` (or, if none does, the one closest to it:
    shares are a constraint, not a wish) with the least :func:`crossing_work` (the first on
    ties), so the same inputs and seed always give the same partition. A sky of at most
    ``exact_tracts`` tracts split between two or three sites is split exactly instead
    (:func:`exact_split`: every contiguous split is tried). With ``hub`` (the ``hub_free``
    objective) the refinement, the ranking and the exact split count no crossing into site
    ``hub`` (:func:`crossing_work`); METIS's edge weights stay the symmetric proxy.
    """
    import pymetis

    work, active = _check(inputs, shares)
    owner = np.full(inputs.n_tracts, -1, dtype=np.int64)
    k = len(shares)
    if k == 1:
        owner[active] = 0
        return owner
    exact = exact_split(inputs, shares, tolerance, max_tracts=exact_tracts, hub=hub)
    if exact is not None and exact.owner is not None:  # a small sky: every split was tried
        return exact.owner
    xadj, adjncy, ew = _graph(inputs, active)
    tp = np.asarray(shares, dtype=float)
    tp = tp / tp.sum()
    aw = work[active]
    ov = _Overlaps(inputs, active, k, hub)
    best: tuple[float, I64] | None = None
    for t in range(max(1, trials)):
        # ufactor=30 (3% imbalance) gives METIS room; the balancing pass restores the shares.
        opts = pymetis.Options(seed=seed + t, ufactor=30, contig=1, ncuts=1)
        _, parts = pymetis.part_graph(k, pymetis.CSRAdjacency(xadj, adjncy), vweights=aw, eweights=ew,
                                      tpwgts=tp.tolist(), options=opts)
        local = np.asarray(parts, dtype=np.int64)
        if len(np.unique(local[aw > 0])) < k:  # METIS left a site without work: start from stripes
            local = _ra_stripes_local(inputs, active, work, shares)
        local = _polish(local, aw, xadj, adjncy, ew, ov, shares, tolerance)
        # Shares are a constraint: a trial within the tolerance beats any outside it, one
        # closer to it beats one further away, and only then the lower crossing cost wins.
        err = share_error(local, aw, tp)
        key = (0.0, 0.0, ov.cost()) if err <= tolerance + 1e-12 else (1.0, err, ov.cost())
        if best is None or key < best[0]:
            best = (key, local)
    assert best is not None
    owner[active] = best[1]
    return owner


def _polish(local: I64, aw: I64, xadj: I64, adjncy: I64, ew: I64, ov: _Overlaps, shares: Sequence[float],
            tolerance: float) -> I64:
    """Steps 2-3 of the module docstring on a starting assignment: contiguity, labels, balance,
    then refinement on the true objective (``ov`` is left assigned to the result)."""
    k = len(shares)
    tp = np.asarray(shares, dtype=float)
    tp = tp / tp.sum()
    local = _make_contiguous(local, aw, xadj, adjncy, ew, k)
    local = _best_labels(local, aw, tp)
    local = _refine(local, aw, xadj, adjncy, ew, shares, tolerance)
    ov.assign(local)
    return _improve(local, ov, aw, xadj, adjncy, shares, tolerance)


def repair_and_refine(inputs: SpatialInputs, shares: Sequence[float], owner: I64, tolerance: float = 0.002,
                      hub: int | None = None) -> I64:
    """Any starting tract -> site assignment (every tract given a site) made contiguous,
    balanced and refined on :func:`crossing_work` (with ``hub``, as that counts it) as the
    ``graph`` method does its METIS trials: for comparing other partitioners' starts on the
    same footing (the benchmark)."""
    work, active = _check(inputs, shares)
    xadj, adjncy, ew = _graph(inputs, active)
    ov = _Overlaps(inputs, active, len(shares), hub)
    out = np.full(inputs.n_tracts, -1, dtype=np.int64)
    out[active] = _polish(np.asarray(owner, dtype=np.int64)[active].copy(), work[active], xadj, adjncy, ew, ov,
                          shares, tolerance)
    return out


def share_error(owner: I64, work: I64, shares: Sequence[float] | NDArray[np.float64]) -> float:
    """Largest |achieved - target| share of the work over the sites (targets normalised)."""
    tp = np.asarray(shares, dtype=float)
    tp = tp / tp.sum()
    load = np.bincount(owner, weights=work, minlength=len(tp)).astype(float)
    return float(np.abs(load / max(load.sum(), 1.0) - tp).max())


def _best_labels(owner: I64, work: I64, shares: NDArray[np.float64]) -> I64:
    """Relabel the regions (a permutation of the sites) to bring the shares closest to target.

    The crossing cost does not depend on which site holds which region, but the balance
    does: METIS may size a region for one site's share and number it as another's. With two
    or three sites every permutation is tried (the identity wins ties); with more, none.
    """
    k = len(shares)
    if k > 3:
        return owner
    best, best_err = None, share_error(owner, work, shares)
    for perm in itertools.permutations(range(k)):
        relabelled = np.asarray(perm, dtype=np.int64)[owner]
        err = share_error(relabelled, work, shares)
        if err < best_err - 1e-12:
            best, best_err = relabelled, err
    return owner if best is None else best


def _ra_stripes_local(inputs: SpatialInputs, active: I64, work: I64, shares: Sequence[float]) -> I64:
    order = np.lexsort((inputs.tract_id[active], inputs.tract_ra[active]))
    cum = np.cumsum(work[active][order]) - work[active][order] / 2.0
    bounds = np.cumsum(shares)[:-1] * work[active].sum()
    local = np.empty(len(active), dtype=np.int64)
    local[order] = np.searchsorted(bounds, cum)
    return local


def partition_ra_stripes(inputs: SpatialInputs, shares: Sequence[float], seed: int = 0, **_: float) -> I64:
    """Baseline: contiguous RA ranges (sorted by tract centre RA) sized by the shares."""
    work, active = _check(inputs, shares)
    owner = np.full(inputs.n_tracts, -1, dtype=np.int64)
    owner[active] = _ra_stripes_local(inputs, active, work, shares)
    return owner


def partition_round_robin(inputs: SpatialInputs, shares: Sequence[float], seed: int = 0, **_: float) -> I64:
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


def partition(inputs: SpatialInputs, shares: Sequence[float], method: str = "graph", seed: int = 0,
              **options: float) -> I64:
    """Owner site index per tract by the named method.

    ``options`` go to the method: ``tolerance``, ``trials`` and ``hub`` (the ``hub_free``
    objective: the hub's index, or None to count every crossing) for ``graph``; the
    baselines ignore them.
    """
    try:
        fn = METHODS[method]
    except KeyError:
        raise PartitionError(f"method: expected one of {sorted(METHODS)}, got {method!r}") from None
    if inputs.n_tracts == 0:
        raise SpatialInputError(f"{inputs.source}: no tracts")
    return fn(inputs, shares, seed=seed, **options)


@dataclasses.dataclass(frozen=True)
class ExactSplit:
    """What every contiguous split of a small sky can do (see :func:`exact_split`)."""

    tracts: int            # tracts split (all of the sky's, as the planner splits them)
    splits: int            # contiguous splits (every site a non-empty connected region)
    best_error: float      # the smallest share error any of them reaches
    feasible: int          # how many are within the tolerance
    optimum: int | None    # least crossing work among those (None: none is)
    owner: I64 | None      # the optimal split (tract -> site); if none is within the tolerance,
                           # the cheapest of those with the best error


def exact_split(inputs: SpatialInputs, shares: Sequence[float], tolerance: float,
                max_tracts: int = 12, hub: int | None = None) -> ExactSplit | None:
    """Every assignment of the sky's tracts to the sites, by enumeration (``k ** n``; None
    above ``max_tracts`` tracts or 3 sites): those whose regions are all non-empty and
    connected (the planner's own tract adjacency, bridges included), their best share error
    and, among those within ``tolerance``, the least :func:`crossing_work` (counted with
    ``hub`` as that function counts it). Independent of
    the heuristics: the planner's answer to "is there a balanced split?" on a small sky,
    and the tests' oracle."""
    work = inputs.tract_work()
    k = len(shares)
    idx = np.arange(inputs.n_tracts, dtype=np.int64)  # as partition_graph: every tract, with work or not
    n = len(idx)
    if n > max_tracts or k > 3 or k < 2 or n < k:
        return None
    a, b, _ = _edges(inputs, idx)  # the graph the planner partitions (local ids)
    nbr = np.zeros(n, dtype=np.int64)
    np.bitwise_or.at(nbr, a, np.left_shift(1, b))
    np.bitwise_or.at(nbr, b, np.left_shift(1, a))
    connected = np.zeros(1 << n, dtype=bool)
    for m in range(1, 1 << n):
        seen = frontier = m & -m
        while frontier:
            reach = 0
            f = frontier
            while f:
                bit = f & -f
                reach |= int(nbr[bit.bit_length() - 1])
                f ^= bit
            frontier = reach & m & ~seen
            seen |= frontier
        connected[m] = seen == m
    codes = np.arange(k ** n, dtype=np.int64)
    assign = (codes[:, None] // (k ** np.arange(n, dtype=np.int64))) % k  # (N, n) site of each tract
    bits = np.left_shift(1, np.arange(n, dtype=np.int64))
    ok = np.ones(len(codes), dtype=bool)
    for s in range(k):
        ok &= connected[((assign == s) * bits).sum(axis=1)]
    assign = assign[ok]
    tp = np.asarray(shares, dtype=float) / float(sum(shares))
    w = work[idx].astype(float)
    load = np.stack([((assign == s) * w).sum(axis=1) for s in range(k)], axis=1) / w.sum()
    err = np.abs(load - tp).max(axis=1)
    if not len(err):
        return ExactSplit(n, 0, math.inf, 0, None, None)
    best_error = float(err.min())
    good = np.flatnonzero(err <= tolerance + 1e-12)
    # Within the tolerance: the cheapest; none is: the cheapest of the most balanced.
    pick = good if len(good) else np.flatnonzero(err <= best_error + 1e-12)
    owners = np.full((len(pick), inputs.n_tracts), -1, dtype=np.int64)
    owners[:, idx] = assign[pick]
    costs = [crossing_work(inputs, o, k, hub) for o in owners]
    j = int(np.argmin(costs))  # the first on ties: enumeration order, deterministic
    return ExactSplit(n, len(assign), best_error, len(good), int(costs[j]) if len(good) else None, owners[j])
