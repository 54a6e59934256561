"""The planner's spatial inputs: tracts, visits and which visits touch which tracts.

Everything is a flat numpy array so that a DR1-scale survey (~190k visits, ~36M
detector-visits, ~19k tracts) fits in memory and plans in seconds. Two sources:

* a butler registry (``from_butler``): tract/patch and visit/visit_detector_region
  records with their real sphgeom regions; overlaps are computed with the exact
  vectorised polygon test of :mod:`.geometry` (or, with ``overlaps="registry"``, taken
  from the registry's own spatial join, which is slower but is the butler's answer);
* a columnar parquet dataset (``from_parquet``) for survey-scale inputs that were
  computed once and stored (``bench/planner_scale.py`` writes one).

The overlap table holds, for every (visit, tract) pair that overlaps, the number of
the visit's detectors whose regions overlap the tract: the work the tract's coadd needs
from the visit. A detector on a tract boundary is in several rows, so summing rows over a
site's tracts counts it once per tract. The shared-detector table (``multi_*``) holds
what an exact count needs: for each visit, the detectors overlapping two or more tracts,
grouped by that set of tracts with a count per set (on the DR1-sized benchmark 4.6M sets
holding 14M of the 36M detector-visits, against ~50M rows for a per-detector table). With
it, :meth:`SpatialInputs.detector_sets` gives every visit's detectors grouped by the exact set of tracts they
overlap, so a detector-visit's PVI is counted once per site that needs it, however many
of that site's tracts it overlaps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from multisite_drp.errors import InputError

from .geometry import PolygonSet, lonlat_to_xyz, overlapping_pairs, xyz_to_lonlat

__all__ = [
    "DetectorSets",
    "SpatialInputError",
    "SpatialInputs",
    "from_butler",
    "from_parquet",
    "sets_from_keys",
    "to_parquet",
    "tract_adjacency",
    "tract_sets",
]

I64 = NDArray[np.int64]
I32 = NDArray[np.int32]
F64 = NDArray[np.float64]

# Tracts whose regions come closer than this (radians, ~0.02 arcsec) are neighbours even if
# they only touch: skymaps without overlap borders still give a connected tract graph.
ADJACENCY_TOLERANCE = 1e-7


class SpatialInputError(InputError, ValueError):
    """The spatial inputs are empty or inconsistent; the message names the input and the expectation."""


@dataclass(frozen=True)
class DetectorSets:
    """Every visit's detectors grouped by the exact set of tracts they overlap.

    Set ``i`` holds ``ndet[i]`` detectors of visit ``visit[i]``, each overlapping exactly
    the tracts ``tracts[:, i][tracts[:, i] >= 0]`` (one or more; a column is padded with -1
    to the largest set, 4 tracts on the DR1-sized benchmark). Sets are ordered largest
    first, so row ``j`` (every set's ``j``-th tract) is real in its first ``row_len[j]``
    columns only and a pass over the sets reads those. A detector is in one set.
    """

    visit: I64  # (S,) visit index per set
    ndet: I64  # (S,) detectors of the visit overlapping exactly the set's tracts
    tracts: I32  # (W, S) the sets' tract indices, padded with -1
    row_len: I64  # (W,) sets with a j-th tract (non-increasing)
    exact: bool  # False: built from the (visit, tract) table alone (each row a set of one tract)

    def members(self) -> tuple[I64, I64]:
        """(set, tract) of every member: sets ascending."""
        s_idx, col = np.nonzero(self.tracts.T >= 0)  # sets ascending
        return s_idx.astype(np.int64), self.tracts[col, s_idx].astype(np.int64)

    def site_counts(self, tract_owner: I64, k: int) -> NDArray[np.int32]:
        """(k, S): each set's member tracts at each site (tracts with a negative owner at none)."""
        owner = np.asarray(tract_owner, dtype=np.int32)
        out = np.zeros((k, len(self.visit)), dtype=np.int32)
        for j, n in enumerate(self.row_len.tolist()):
            own = owner[self.tracts[j, :n]]
            for s in range(k):
                out[s, :n] += own == s
        return out

    def affinity(self, counts: NDArray[np.int32], n_visits: int) -> NDArray[np.float64]:
        """(V, k): each visit's detectors in sets with a tract at each site (``counts`` from
        :meth:`site_counts`): a detector once per site, however many of its tracts are there."""
        k = counts.shape[0]
        aff = np.empty((n_visits, k))
        w = self.ndet.astype(np.float64)
        buf = np.empty_like(w)
        for s in range(k):
            aff[:, s] = np.bincount(self.visit, weights=np.multiply(w, counts[s] > 0, out=buf), minlength=n_visits)
        return aff


def tract_sets(visit: I64, detector: I64, tract: I64, chunk_rows: int = 1 << 21) -> tuple[I64, I64, I64, I64]:
    """The shared-detector table from (visit, detector, tract) overlap rows (any order, unique).

    Returns ``(multi_visit, multi_ndet, multi_set, multi_tract)``: one set per (visit, set of
    two or more tracts) that some detector of the visit overlaps exactly, the number of such
    detectors, and the set's member rows (set index ascending, tract ascending within a set).
    Rows of detectors overlapping one tract may be left out of the input. The rows are sorted
    as one int64 key each and grouped ``chunk_rows`` at a time (whole visits), so the memory
    beyond the input is about 8 bytes a row plus one chunk's work.
    """
    visit, detector, tract = (np.asarray(x, dtype=np.int64) for x in (visit, detector, tract))
    empty = np.zeros(0, np.int64)
    if not len(visit):
        return empty, empty, empty, empty
    nd, nt = int(detector.max()) + 1, int(tract.max()) + 1
    per_visit = nd * nt
    if (int(visit.max()) + 1) * per_visit >= 2**62:  # indices too wide for one key: one lexsort, one chunk
        order = np.lexsort((tract, detector, visit))
        return _group_sorted(visit[order], detector[order], tract[order])
    key = (visit * nd + detector) * nt + tract
    del visit, detector, tract
    key.sort()
    return sets_from_keys(key, nd, nt, chunk_rows)


def sets_from_keys(key: I64, nd: int, nt: int, chunk_rows: int = 1 << 21) -> tuple[I64, I64, I64, I64]:
    """:func:`tract_sets` of rows given as sorted keys ``(visit * nd + detector) * nt + tract``."""
    per_visit = nd * nt
    parts: list[tuple[I64, I64, I64, I64]] = [(np.zeros(0, np.int64),) * 4]
    i, n_sets = 0, 0
    while i < len(key):
        j = min(i + chunk_rows, len(key))
        if j < len(key):  # end the chunk at a visit boundary (after the one visit if it is longer)
            v_j = int(key[j] // per_visit)
            j = int(np.searchsorted(key, v_j * per_visit))
            if j <= i:
                j = int(np.searchsorted(key, (v_j + 1) * per_visit))
        k = key[i:j]
        mv, mn, ms, mt = _group_sorted(k // per_visit, k % per_visit // nt, k % nt)
        parts.append((mv, mn, ms + n_sets, mt))
        n_sets += len(mv)
        i = j
    mv, mn, ms, mt = (np.concatenate([p[c] for p in parts]) for c in range(4))
    return mv, mn, ms, mt


def _group_sorted(v: I64, d: I64, t: I64) -> tuple[I64, I64, I64, I64]:
    """:func:`tract_sets` of rows sorted by (visit, detector, tract)."""
    empty = np.zeros(0, np.int64)
    start = np.concatenate([[True], (v[1:] != v[:-1]) | (d[1:] != d[:-1])])
    det = np.cumsum(start) - 1
    size = np.bincount(det)
    keep = size[det] >= 2
    if not keep.any():
        return empty, empty, empty, empty
    v, t, det = v[keep], t[keep], det[keep]
    first = np.flatnonzero(np.concatenate([[True], det[1:] != det[:-1]]))
    n = np.diff(np.concatenate([first, [len(det)]]))
    width = int(n.max())
    # One row per shared detector: visit, then its tracts (ascending, padded with -1).
    rows = np.full((len(first), width + 1), -1, dtype=np.int64)
    rows[:, 0] = v[first]
    pos = np.arange(len(det)) - np.repeat(first, n)
    rows[np.repeat(np.arange(len(first)), n), pos + 1] = t
    o = np.lexsort(rows.T[::-1])
    rows = rows[o]
    new = np.concatenate([[True], (rows[1:] != rows[:-1]).any(axis=1)])
    gstart = np.flatnonzero(new)
    uniq = rows[gstart]
    ndet = np.diff(np.concatenate([gstart, [len(rows)]]))
    s_idx, col = np.nonzero(uniq[:, 1:] >= 0)
    return uniq[:, 0].copy(), ndet.astype(np.int64), s_idx.astype(np.int64), uniq[s_idx, col + 1]


@dataclass
class SpatialInputs:
    """Tracts, visits and their overlaps as numpy arrays (indices, not ids, in the tables)."""

    tract_id: I64
    tract_ra: F64
    tract_dec: F64
    tract_npatch: I32
    adj_a: I64  # tract index pairs (a < b), geometric neighbours
    adj_b: I64
    visit_id: I64
    visit_band: NDArray[np.str_]
    visit_ra: F64
    visit_dec: F64
    visit_ndet: I32  # detectors in the visit (its step-1 work)
    ov_visit: I64  # index into visits
    ov_tract: I64  # index into tracts
    ov_ndet: I32  # detectors of the visit overlapping the tract
    # Optional shared-detector table (see the module docstring and tract_sets): per set, the
    # visit and the number of its detectors overlapping exactly that set of >= 2 tracts; the
    # member rows give each set's tracts. None: unknown (an input written without it), and
    # crossings are then counted per (visit, tract), an upper bound.
    multi_visit: I64 | None = None
    multi_ndet: I32 | None = None
    multi_set: I64 | None = None
    multi_tract: I64 | None = None
    # Optional detector-level table (small inputs only): visit index, detector, tract index, patch.
    det_visit: I64 | None = None
    det_detector: I64 | None = None
    det_tract: I64 | None = None
    det_patch: I64 | None = None
    # Optional: each visit's footprint radius (deg, centre to the farthest detector corner),
    # for drawing footprints on the plan's sky map.
    visit_radius: F64 | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    _sets: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_tracts(self) -> int:
        return len(self.tract_id)

    @property
    def n_visits(self) -> int:
        return len(self.visit_id)

    def validate(self) -> SpatialInputs:
        """Check shapes and ranges; raise :class:`SpatialInputError` naming the bad array."""
        src = self.source or "spatial inputs"
        if self.n_visits == 0:
            raise SpatialInputError(f"{src}: empty selection: no visits; expected at least one visit")
        if self.n_tracts == 0:
            raise SpatialInputError(f"{src}: no tracts; expected the skymap's tracts")
        for name in ("tract_ra", "tract_dec", "tract_npatch"):
            if len(getattr(self, name)) != self.n_tracts:
                raise SpatialInputError(f"{src}: {name} has {len(getattr(self, name))} rows, "
                                        f"expected one per tract ({self.n_tracts})")
        for name in ("visit_band", "visit_ra", "visit_dec", "visit_ndet", "visit_radius"):
            if getattr(self, name) is not None and len(getattr(self, name)) != self.n_visits:
                raise SpatialInputError(f"{src}: {name} has {len(getattr(self, name))} rows, "
                                        f"expected one per visit ({self.n_visits})")
        if len(np.unique(self.visit_id)) != self.n_visits:
            raise SpatialInputError(f"{src}: visit ids must be unique")
        if len(np.unique(self.tract_id)) != self.n_tracts:
            raise SpatialInputError(f"{src}: tract ids must be unique")
        if not (len(self.ov_visit) == len(self.ov_tract) == len(self.ov_ndet)):
            raise SpatialInputError(f"{src}: overlap columns differ in length")
        if len(self.ov_visit):
            if self.ov_visit.min() < 0 or self.ov_visit.max() >= self.n_visits:
                raise SpatialInputError(f"{src}: ov_visit out of range 0..{self.n_visits - 1}")
            if self.ov_tract.min() < 0 or self.ov_tract.max() >= self.n_tracts:
                raise SpatialInputError(f"{src}: ov_tract out of range 0..{self.n_tracts - 1}")
            if self.ov_ndet.min() <= 0:
                raise SpatialInputError(f"{src}: ov_ndet must be > 0 (pairs that do not overlap are omitted)")
        self._validate_multi(src)
        return self

    def _validate_multi(self, src: str) -> None:
        cols = (self.multi_visit, self.multi_ndet, self.multi_set, self.multi_tract)
        if all(c is None for c in cols):
            return
        if any(c is None for c in cols):
            raise SpatialInputError(f"{src}: multi_visit, multi_ndet, multi_set and multi_tract must be given together")
        if len(self.multi_visit) != len(self.multi_ndet) or len(self.multi_set) != len(self.multi_tract):
            raise SpatialInputError(f"{src}: shared-detector columns differ in length")
        if not len(self.multi_visit):
            return
        if self.multi_ndet.min() <= 0:
            raise SpatialInputError(f"{src}: multi_ndet must be > 0")
        if self.multi_set.min() < 0 or self.multi_set.max() >= len(self.multi_visit) \
                or (np.diff(self.multi_set) < 0).any():
            raise SpatialInputError(f"{src}: multi_set must index the sets in ascending order")
        if (np.bincount(self.multi_set, minlength=len(self.multi_visit)) < 2).any():
            raise SpatialInputError(f"{src}: every shared-detector set must hold two or more tracts")
        if self.multi_visit.min() < 0 or self.multi_visit.max() >= self.n_visits \
                or self.multi_tract.min() < 0 or self.multi_tract.max() >= self.n_tracts:
            raise SpatialInputError(f"{src}: multi_visit or multi_tract out of range")
        # Each member (visit, tract) is an overlap row, and its sets' detectors are among its ndet.
        pos, hit = self._ov_rows(self.multi_visit[self.multi_set], self.multi_tract)
        if not hit.all():
            raise SpatialInputError(f"{src}: a shared-detector set names a (visit, tract) pair missing from "
                                    "the overlap table; expected every member to overlap")
        shared = np.bincount(pos, weights=self.multi_ndet[self.multi_set], minlength=len(self.ov_visit))
        if (shared > self.ov_ndet).any():
            raise SpatialInputError(f"{src}: shared-detector sets hold more detectors of a (visit, tract) pair "
                                    "than ov_ndet; expected at most ov_ndet")

    def _ov_rows(self, visit: I64, tract: I64) -> tuple[I64, NDArray[np.bool_]]:
        """(overlap row, found) of each (visit index, tract index) pair."""
        key = self.ov_visit * self.n_tracts + self.ov_tract
        order = np.argsort(key, kind="stable")
        want = visit * self.n_tracts + tract
        pos = np.clip(np.searchsorted(key, want, sorter=order), 0, max(len(key) - 1, 0))
        rows = order[pos] if len(key) else np.zeros(len(want), np.int64)
        return rows, (key[rows] == want) if len(key) else np.zeros(len(want), bool)

    # -- derived -----------------------------------------------------------------------------

    def tract_work(self) -> I64:
        """Detector-visits overlapping each tract: the tract's coadd work."""
        return np.bincount(self.ov_tract, weights=self.ov_ndet, minlength=self.n_tracts).astype(np.int64)

    def detector_sets(self) -> DetectorSets:
        """Every visit's detectors grouped by the exact set of tracts they overlap (cached).

        Sets of one tract come from the overlap table less the shared detectors; sets of
        several from the shared-detector table. Without that table each (visit, tract) row is
        taken as a set of its own (``exact=False``): a detector on a boundary is then counted
        once per tract.
        """
        # Keyed by the arrays themselves (held, so never mistaken for new ones at a reused id):
        # replacing a table attribute builds the sets again.
        key = (self.ov_visit, self.ov_tract, self.ov_ndet, self.multi_visit, self.multi_ndet, self.multi_set,
               self.multi_tract)
        if self._sets is not None and all(a is b for a, b in zip(self._sets[0], key, strict=True)):
            return self._sets[1]
        ov_v, ov_t = self.ov_visit.astype(np.int64), self.ov_tract.astype(np.int64)
        single = self.ov_ndet.astype(np.int64)
        exact = self.multi_visit is not None
        if exact and len(self.multi_visit):
            pos, _ = self._ov_rows(self.multi_visit[self.multi_set], self.multi_tract)
            single = single - np.bincount(pos, weights=self.multi_ndet[self.multi_set],
                                          minlength=len(single)).astype(np.int64)
        keep = np.flatnonzero(single > 0)
        n1 = len(keep)
        if exact and len(self.multi_visit):
            m_set = self.multi_set.astype(np.int64)
            size = np.bincount(m_set, minlength=len(self.multi_visit))
            start = np.concatenate([[0], np.cumsum(size)])
            pos = np.arange(len(m_set)) - start[m_set]  # place within its set
            rank = np.empty(len(size), dtype=np.int64)  # largest sets first, then the single-tract ones
            rank[np.argsort(-size, kind="stable")] = np.arange(len(size))
            n_m = len(size)
            tracts = np.full((int(pos.max()) + 1, n_m + n1), -1, dtype=np.int32)
            tracts[pos, rank[m_set]] = self.multi_tract
            visit = np.empty(n_m, dtype=np.int64)
            visit[rank] = self.multi_visit
            ndet = np.empty(n_m, dtype=np.int64)
            ndet[rank] = self.multi_ndet
            visit, ndet = np.concatenate([visit, ov_v[keep]]), np.concatenate([ndet, single[keep]])
            row_len = np.array([(size > j).sum() for j in range(tracts.shape[0])], dtype=np.int64)
            row_len[0] = n_m + n1
        else:
            n_m, tracts = 0, np.full((1, n1), -1, dtype=np.int32)
            visit, ndet = ov_v[keep], single[keep]
            row_len = np.array([n1], dtype=np.int64)
        tracts[0, n_m:] = ov_t[keep]
        sets = DetectorSets(visit, ndet, tracts, row_len, exact)
        self._sets = (key, sets)
        return sets

    def tract_index(self, ids: I64) -> I64:
        return _index_of(self.tract_id, ids, f"{self.source}: unknown tract ids")

    def visit_index(self, ids: I64) -> I64:
        return _index_of(self.visit_id, ids, f"{self.source}: unknown visit ids")


def _index_of(known: I64, ids: I64, what: str) -> I64:
    """Index into ``known`` (unique) of each of ``ids``; raise naming the first unknown ones."""
    if len(known) > 1 and (np.diff(known) > 0).all():  # sorted (the usual case): no sorter needed
        idx = np.clip(np.searchsorted(known, ids), 0, len(known) - 1)
    else:
        order = np.argsort(known)
        idx = order[np.clip(np.searchsorted(known, ids, sorter=order), 0, len(order) - 1)]
    bad = known[idx] != ids
    if bad.any():
        raise SpatialInputError(f"{what} {ids[bad][:10].tolist()}")
    return idx


def tract_adjacency(tracts: PolygonSet) -> tuple[I64, I64]:
    """Neighbouring tract index pairs (a < b): regions that overlap or touch."""
    ia, jb = overlapping_pairs(tracts, tracts, tol=ADJACENCY_TOLERANCE)
    keep = ia < jb
    return ia[keep], jb[keep]


# -- butler --------------------------------------------------------------------------------


def from_butler(repo: str | os.PathLike[str], instrument: str, skymap: str, where: str = "", *,
                overlaps: str = "geometry", bind: dict | None = None) -> SpatialInputs:
    """Read tracts, patches, visits and detector regions from a butler registry.

    ``where`` restricts the visits (a butler expression over visit columns, e.g.
    ``"visit.day_obs < 20250701"``). ``overlaps="geometry"`` computes (visit, detector,
    tract, patch) overlaps from the regions with :mod:`.geometry`; ``"registry"`` asks the
    registry's own spatial join (``query_data_ids(["visit", "detector", "patch"])``).
    """
    from lsst.daf.butler import Butler

    if overlaps not in ("geometry", "registry"):
        raise ValueError(f"overlaps: expected 'geometry' or 'registry', got {overlaps!r}")
    src = f"butler {repo} (instrument={instrument!r}, skymap={skymap!r}, where={where!r})"
    butler = Butler.from_config(str(repo))
    try:
        tract_recs = butler.query_dimension_records("tract", skymap=skymap, limit=None, explain=False)
        if not tract_recs:
            raise SpatialInputError(f"{src}: no tract records for skymap {skymap!r}; expected a registered skymap")
        tract_recs.sort(key=lambda r: r.id)
        patch_recs = butler.query_dimension_records("patch", skymap=skymap, limit=None, explain=False)
        visit_recs = butler.query_dimension_records("visit", instrument=instrument, where=where, bind=bind,
                                                    limit=None, explain=False)
        if not visit_recs:
            raise SpatialInputError(f"{src}: empty selection: no visits match; expected at least one visit")
        visit_recs.sort(key=lambda r: r.id)
        filters = {r.name: r.band for r in butler.query_dimension_records(
            "physical_filter", instrument=instrument, limit=None, explain=False)}
        vdr = butler.query_dimension_records("visit_detector_region", instrument=instrument, where=where,
                                             bind=bind, limit=None, explain=False)
        reg_rows: list[tuple[int, int, int, int]] = []
        if overlaps == "registry":
            ids = butler.query_data_ids(["visit", "detector", "patch"], instrument=instrument, skymap=skymap,
                                        where=where, bind=bind, limit=None, explain=False)
            reg_rows = [(d["visit"], d["detector"], d["tract"], d["patch"]) for d in ids]
    finally:
        butler.close()

    tract_id = np.array([r.id for r in tract_recs], dtype=np.int64)
    tract_polys = PolygonSet.from_sphgeom([r.region for r in tract_recs])
    tract_ra, tract_dec = xyz_to_lonlat(tract_polys.centres)
    patch_tract = np.array([r.tract for r in patch_recs], dtype=np.int64)
    npatch = np.zeros(len(tract_id), dtype=np.int32)
    tpos = {int(t): i for i, t in enumerate(tract_id)}
    for t in patch_tract:
        npatch[tpos[int(t)]] += 1
    adj_a, adj_b = tract_adjacency(tract_polys)

    visit_id = np.array([r.id for r in visit_recs], dtype=np.int64)
    vpos = {int(v): i for i, v in enumerate(visit_id)}
    band = np.array([filters.get(r.physical_filter, r.physical_filter) for r in visit_recs], dtype=np.str_)
    vdr = [r for r in vdr if int(r.visit) in vpos]
    vdr.sort(key=lambda r: (r.visit, r.detector))
    dv = np.array([vpos[int(r.visit)] for r in vdr], dtype=np.int64)
    dd = np.array([r.detector for r in vdr], dtype=np.int64)
    ndet = np.bincount(dv, minlength=len(visit_id)).astype(np.int32)
    if len(vdr):
        det_polys = PolygonSet.from_sphgeom([r.region for r in vdr])
        vxyz = np.zeros((len(visit_id), 3))
        np.add.at(vxyz, dv, det_polys.centres)
        has = ndet > 0
        vxyz[has] /= np.linalg.norm(vxyz[has], axis=1, keepdims=True)
    else:
        det_polys = None
        vxyz = np.zeros((len(visit_id), 3))
    # Visits without detector regions fall back to the visit region's centre.
    for i, r in enumerate(visit_recs):
        if ndet[i] == 0 and r.region is not None:
            vxyz[i] = PolygonSet.from_sphgeom([r.region]).centres[0]
    visit_ra, visit_dec = xyz_to_lonlat(vxyz)
    radius = np.zeros(len(visit_id))
    if det_polys is not None:
        # Farthest detector corner from the visit centre: the footprint's radius (padding
        # repeats a real vertex, so it cannot change the minimum).
        cosd = np.einsum("dvk,dk->dv", det_polys.vertices, vxyz[dv])
        far = np.degrees(np.arccos(np.clip(cosd.min(axis=1), -1.0, 1.0)))
        np.maximum.at(radius, dv, far)

    if overlaps == "geometry":
        if det_polys is not None:
            patch_keys = [(int(r.tract), int(r.id)) for r in patch_recs]
            patch_polys = PolygonSet.from_sphgeom([r.region for r in patch_recs])
            di, pj = overlapping_pairs(det_polys, patch_polys)
            rows = np.array([(dv[i], dd[i], tpos[patch_keys[j][0]], patch_keys[j][1])
                             for i, j in zip(di.tolist(), pj.tolist())], dtype=np.int64).reshape(-1, 4)
            # Patches cover their tract's outer region only approximately: the tract test decides.
            dti, tj = overlapping_pairs(det_polys, tract_polys)
            tract_pairs = np.stack([dv[dti], dd[dti], tj], axis=1)
        else:
            rows = np.zeros((0, 4), dtype=np.int64)
            tract_pairs = np.zeros((0, 3), dtype=np.int64)
    else:
        rows = np.array([(vpos[v], d, tpos[t], p) for v, d, t, p in reg_rows if v in vpos],
                        dtype=np.int64).reshape(-1, 4)
        tract_pairs = np.unique(rows[:, :3], axis=0)
    order = np.lexsort((rows[:, 3], rows[:, 2], rows[:, 1], rows[:, 0]))
    rows = rows[order]
    tp = np.unique(tract_pairs, axis=0)  # one row per (visit, detector, tract)
    key = tp[:, 0] * len(tract_id) + tp[:, 2]
    ukey, counts = np.unique(key, return_counts=True)
    m_visit, m_ndet, m_set, m_tract = tract_sets(tp[:, 0], tp[:, 1], tp[:, 2])
    inputs = SpatialInputs(
        tract_id=tract_id, tract_ra=tract_ra, tract_dec=tract_dec, tract_npatch=npatch,
        adj_a=adj_a, adj_b=adj_b,
        visit_id=visit_id, visit_band=band, visit_ra=visit_ra, visit_dec=visit_dec, visit_ndet=ndet,
        visit_radius=radius,
        ov_visit=(ukey // len(tract_id)).astype(np.int64), ov_tract=(ukey % len(tract_id)).astype(np.int64),
        ov_ndet=counts.astype(np.int32),
        multi_visit=m_visit, multi_ndet=m_ndet.astype(np.int32), multi_set=m_set, multi_tract=m_tract,
        det_visit=rows[:, 0], det_detector=rows[:, 1], det_tract=rows[:, 2], det_patch=rows[:, 3],
        source=src,
    )
    return inputs.validate()


# -- parquet -------------------------------------------------------------------------------

_TABLES = ("tracts", "adjacency", "visits", "overlaps", "shared_detectors", "detectors")


def to_parquet(inputs: SpatialInputs, path: str | os.PathLike[str]) -> Path:
    """Write ``path/`` as a parquet dataset: one file per table, ids (not indices) in every table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    t = inputs.tract_id
    v = inputs.visit_id
    pq.write_table(pa.table({"tract": t, "ra": inputs.tract_ra, "dec": inputs.tract_dec,
                             "npatch": inputs.tract_npatch}), out / "tracts.parquet")
    pq.write_table(pa.table({"tract_a": t[inputs.adj_a], "tract_b": t[inputs.adj_b]}), out / "adjacency.parquet")
    visits = {"visit": v, "band": inputs.visit_band.astype(str), "ra": inputs.visit_ra, "dec": inputs.visit_dec,
              "ndet": inputs.visit_ndet}
    if inputs.visit_radius is not None:
        visits["radius"] = inputs.visit_radius
    pq.write_table(pa.table(visits), out / "visits.parquet")
    pq.write_table(pa.table({"visit": v[inputs.ov_visit], "tract": t[inputs.ov_tract], "ndet": inputs.ov_ndet}),
                   out / "overlaps.parquet")
    if inputs.multi_visit is not None:  # one row per set: visit, detectors, its tracts (a list)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(inputs.multi_set, minlength=len(inputs.multi_visit)))])
        tracts = pa.ListArray.from_arrays(pa.array(offsets, pa.int64()).cast(pa.int32()), pa.array(t[inputs.multi_tract]))
        pq.write_table(pa.table({"visit": v[inputs.multi_visit], "ndet": inputs.multi_ndet, "tracts": tracts}),
                       out / "shared_detectors.parquet")
    if inputs.det_visit is not None:
        pq.write_table(pa.table({"visit": v[inputs.det_visit], "detector": inputs.det_detector,
                                 "tract": t[inputs.det_tract], "patch": inputs.det_patch}),
                       out / "detectors.parquet")
    return out


def from_parquet(path: str | os.PathLike[str]) -> SpatialInputs:
    """Read a parquet dataset written by :func:`to_parquet` (tables named in ``_TABLES``; the first
    four are required). Without ``shared_detectors.parquet`` (a dataset written before it
    existed) crossings are counted per (visit, tract), an upper bound, and ``notes`` says so."""
    import pyarrow.parquet as pq

    src = Path(path)
    for name in _TABLES[:4]:
        if not (src / f"{name}.parquet").is_file():
            raise SpatialInputError(f"{src}: missing {name}.parquet; expected a directory written by "
                                    "multisite_drp.campaign.spatial.to_parquet")

    def col(table, name, dtype):
        return table.column(name).to_numpy().astype(dtype, copy=False)

    tr = pq.read_table(src / "tracts.parquet")
    ad = pq.read_table(src / "adjacency.parquet")
    vi = pq.read_table(src / "visits.parquet")
    ov = pq.read_table(src / "overlaps.parquet")
    tract_id = col(tr, "tract", np.int64)
    visit_id = col(vi, "visit", np.int64)
    partial = SpatialInputs(
        tract_id=tract_id, tract_ra=col(tr, "ra", np.float64), tract_dec=col(tr, "dec", np.float64),
        tract_npatch=col(tr, "npatch", np.int32), adj_a=np.zeros(0, np.int64), adj_b=np.zeros(0, np.int64),
        visit_id=visit_id, visit_band=np.asarray(vi.column("band").to_pylist(), dtype=np.str_),
        visit_ra=col(vi, "ra", np.float64), visit_dec=col(vi, "dec", np.float64),
        visit_ndet=col(vi, "ndet", np.int32), ov_visit=np.zeros(0, np.int64), ov_tract=np.zeros(0, np.int64),
        ov_ndet=np.zeros(0, np.int32), source=str(src))
    if "radius" in vi.column_names:
        partial.visit_radius = col(vi, "radius", np.float64)
    partial.validate()
    partial.adj_a = partial.tract_index(col(ad, "tract_a", np.int64))
    partial.adj_b = partial.tract_index(col(ad, "tract_b", np.int64))
    partial.ov_visit = partial.visit_index(col(ov, "visit", np.int64))
    partial.ov_tract = partial.tract_index(col(ov, "tract", np.int64))
    partial.ov_ndet = col(ov, "ndet", np.int32)
    if (src / "shared_detectors.parquet").is_file():
        sd = pq.read_table(src / "shared_detectors.parquet")
        lists = sd.column("tracts").combine_chunks()
        sizes = np.diff(lists.offsets.to_numpy().astype(np.int64))
        partial.multi_visit = partial.visit_index(col(sd, "visit", np.int64))
        partial.multi_ndet = col(sd, "ndet", np.int32)
        partial.multi_set = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        partial.multi_tract = partial.tract_index(lists.flatten().to_numpy().astype(np.int64, copy=False))
    else:
        partial.notes.append(f"{src}: no shared_detectors.parquet: crossings are counted per (visit, tract), "
                             "an upper bound (a detector on a boundary counts once per tract)")
    if (src / "detectors.parquet").is_file():
        de = pq.read_table(src / "detectors.parquet")
        partial.det_visit = partial.visit_index(col(de, "visit", np.int64))
        partial.det_detector = col(de, "detector", np.int64)
        partial.det_tract = partial.tract_index(col(de, "tract", np.int64))
        partial.det_patch = col(de, "patch", np.int64)
    return partial.validate()


def centres_xyz(ra: F64, dec: F64) -> F64:
    """Unit vectors of RA/Dec centres (kept here so planner modules need not import geometry)."""
    return lonlat_to_xyz(ra, dec)
