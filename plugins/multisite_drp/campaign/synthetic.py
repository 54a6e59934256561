"""Synthetic LSST-like skymaps and surveys for tests and the planner benchmark.

Nothing here is used in production; it exists because the planner must be shown to
work at Data Release 1 scale (~190k visits x 189 detectors, ~19k tracts) on a laptop,
and on small random layouts where a brute-force sphgeom check is cheap.

* :func:`rings_skymap` follows ``lsst.skymap.RingsSkyMap``: ``num_rings`` declination
  rings between two polar caps, each ring cut into equal RA ranges. Each tract region is
  its RA/Dec cell grown by an overlap border, as a convex polygon whose
  equator-side edge is subdivided so the great-circle chords stay outside the cell.
* :func:`lsst_like_visits` draws visit centres from a southern footprint: the
  wide-fast-deep band (-62 < Dec < +2) at full density, sparser coverage within 10 deg
  of the Galactic plane (denser toward the bulge), the south celestial pole and the
  northern ecliptic spur.
* :func:`count_overlaps` streams the detectors of every visit through the exact
  polygon test of :mod:`.geometry`, chunk by chunk, and keeps only the per
  (visit, tract) detector counts and a compact (detector-visit, tract) hit list, so the
  36M detector polygons never exist at once; the hit list is reduced at the end to the
  shared-detector table (detectors overlapping two or more tracts, grouped by that set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .geometry import PolygonSet, candidate_pairs, lonlat_to_xyz, xyz_to_lonlat
from .spatial import SpatialInputs, sets_from_keys, tract_adjacency

__all__ = ["SkyMapGeometry", "count_overlaps", "focal_plane", "grid_skymap", "lsst_like_visits",
           "rings_skymap", "synthetic_survey"]

BANDS = np.array(["u", "g", "r", "i", "z", "y"])
BAND_P = np.array([0.07, 0.09, 0.22, 0.22, 0.20, 0.20])


@dataclass
class SkyMapGeometry:
    tract_id: NDArray[np.int64]
    polygons: PolygonSet
    npatch: NDArray[np.int32]

    def centres(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return xyz_to_lonlat(self.polygons.centres)


def _cell_polygon(ra0: float, ra1: float, dec0: float, dec1: float, border: float, max_sub: int = 6) -> np.ndarray:
    """Convex polygon covering the RA/Dec cell [ra0, ra1] x [dec0, dec1] grown by ``border`` (deg)."""
    pole_dec = max(abs(dec0), abs(dec1)) + border
    bra = border / max(math.cos(math.radians(min(pole_dec, 89.9))), 1e-6)
    a0, a1 = ra0 - bra, ra1 + bra
    lo, hi = dec0 - border, dec1 + border
    dra = math.radians(a1 - a0)

    def subdivisions(dec: float) -> int:
        rho = math.radians(90.0 - abs(dec))  # radius of the small circle
        allowed = math.radians(border / 2.0)
        if allowed >= rho:
            return max_sub
        half = math.acos(max(-1.0, 1.0 - allowed / rho))
        return min(max_sub, max(1, math.ceil(dra / 2.0 / half)))

    def along(dec: float, n: int, forward: bool) -> list[tuple[float, float]]:
        ras = np.linspace(a0, a1, n + 1)
        if not forward:
            ras = ras[::-1]
        return [(float(r), dec) for r in ras]

    if lo >= 0.0:  # northern: the equator-side edge is the south edge (dec=lo)
        pts = along(lo, subdivisions(lo), True) + along(hi, 1, False)
    elif hi <= 0.0:  # southern: the equator-side edge is the north edge (dec=hi)
        pts = along(lo, 1, True) + along(hi, subdivisions(hi), False)
    else:
        pts = along(lo, 1, True) + along(hi, 1, False)
    ra = np.array([p[0] for p in pts])
    dec = np.array([p[1] for p in pts])
    return lonlat_to_xyz(ra, dec)


def _cap_polygon(dec_edge: float, border: float, north: bool, n: int = 8) -> np.ndarray:
    """Polar-cap tract: a regular n-gon whose chords lie outside the cap grown by ``border``."""
    rho = math.radians(90.0 - abs(dec_edge) + border)
    rho_v = math.atan(math.tan(rho) / math.cos(math.pi / n))
    dec = 90.0 - math.degrees(rho_v)
    ras = np.arange(n) * 360.0 / n
    if not north:
        dec, ras = -dec, ras[::-1]
    return lonlat_to_xyz(ras, np.full(n, dec))


def rings_skymap(num_rings: int = 120, border_deg: float = 1.0 / 60.0, npatch: int = 100) -> SkyMapGeometry:
    """A full-sky rings skymap like LSST's (``num_rings=120`` gives ~18,900 tracts)."""
    ring = 180.0 / (num_rings + 1)
    polys: list[np.ndarray] = [_cap_polygon(-90.0 + ring / 2, border_deg, north=False)]
    for i in range(num_rings):
        d0 = -90.0 + ring * (i + 0.5)
        d1 = d0 + ring
        widest = 0.0 if d0 < 0.0 < d1 else min(abs(d0), abs(d1))
        n = math.ceil(360.0 * math.cos(math.radians(widest)) / ring)
        width = 360.0 / n
        for j in range(n):
            c = j * width
            polys.append(_cell_polygon(c - width / 2, c + width / 2, d0, d1, border_deg))
    polys.append(_cap_polygon(90.0 - ring / 2, border_deg, north=True))
    ps = PolygonSet.from_vertex_lists(polys)
    return SkyMapGeometry(np.arange(len(polys), dtype=np.int64), ps, np.full(len(polys), npatch, np.int32))


def grid_skymap(ra0: float, dec0: float, nx: int, ny: int, size: float = 1.0, border_deg: float = 1.0 / 60.0,
                npatch: int = 4, first_id: int = 0) -> SkyMapGeometry:
    """A small nx x ny grid of square-ish tracts starting at (ra0, dec0): for tests."""
    polys = []
    for iy in range(ny):
        for ix in range(nx):
            polys.append(_cell_polygon(ra0 + ix * size, ra0 + (ix + 1) * size, dec0 + iy * size,
                                       dec0 + (iy + 1) * size, border_deg))
    ps = PolygonSet.from_vertex_lists(polys)
    return SkyMapGeometry(np.arange(first_id, first_id + len(polys), dtype=np.int64), ps,
                          np.full(len(polys), npatch, np.int32))


def focal_plane(n_side: int = 15, det_size: float = 0.227, pitch: float = 0.233,
                corner_block: int = 3) -> np.ndarray:
    """Detector corners (D, 4, 2) in tangent-plane degrees: LSSTCam-like 189 detectors.

    A 15x15 grid of CCDs minus the four 3x3 corner rafts gives 189 science detectors.
    ``n_side`` and ``corner_block`` shrink it for tests.
    """
    half = det_size / 2
    out = []
    for iy in range(n_side):
        for ix in range(n_side):
            cx = (ix - (n_side - 1) / 2) * pitch
            cy = (iy - (n_side - 1) / 2) * pitch
            edge_x = ix < corner_block or ix >= n_side - corner_block
            edge_y = iy < corner_block or iy >= n_side - corner_block
            if edge_x and edge_y:
                continue
            out.append([(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)])
    return np.array(out, dtype=np.float64)


def _galactic_and_ecliptic_lat(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Galactic latitude/longitude and ecliptic latitude (deg) of equatorial unit vectors."""
    to_gal = np.array([[-0.0548755604, -0.8734370902, -0.4838350155],
                       [0.4941094279, -0.4448296300, 0.7469822445],
                       [-0.8676661490, -0.1980763734, 0.4559837762]])
    g = xyz @ to_gal.T
    b = np.degrees(np.arcsin(np.clip(g[:, 2], -1, 1)))
    lon = np.degrees(np.arctan2(g[:, 1], g[:, 0])) % 360.0
    eps = math.radians(23.439)
    ecl_z = -xyz[:, 1] * math.sin(eps) + xyz[:, 2] * math.cos(eps)
    beta = np.degrees(np.arcsin(np.clip(ecl_z, -1, 1)))
    return b, lon, beta


def footprint_density(xyz: np.ndarray) -> np.ndarray:
    """Relative visit density of the synthetic southern survey at unit vectors ``xyz``."""
    _, dec = xyz_to_lonlat(xyz)
    b, lon, beta = _galactic_and_ecliptic_lat(xyz)
    dens = np.zeros(len(xyz))
    wfd = (dec > -62.0) & (dec < 2.0)
    dens[wfd] = 1.0
    plane = np.abs(b) < 10.0
    bulge = plane & ((lon < 20.0) | (lon > 340.0))
    dens[wfd & plane] = 0.25
    dens[wfd & bulge] = 0.6
    dens[(dec <= -62.0)] = 0.25
    dens[(dec >= 2.0) & (dec < 30.0) & (np.abs(beta) < 10.0)] = 0.3
    return dens


def lsst_like_visits(n_visits: int, seed: int = 0, first_id: int = 2_025_000_000) -> dict[str, np.ndarray]:
    """Visit centres, rotations and bands drawn from :func:`footprint_density`."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    have = 0
    while have < n_visits:
        m = max(4 * (n_visits - have), 1000)
        z = rng.uniform(-1, 1, m)
        phi = rng.uniform(0, 2 * np.pi, m)
        r = np.sqrt(1 - z * z)
        xyz = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
        keep = rng.uniform(0, 1, m) < footprint_density(xyz)
        out.append(xyz[keep])
        have += int(keep.sum())
    xyz = np.concatenate(out)[:n_visits]
    ra, dec = xyz_to_lonlat(xyz)
    return {
        "visit": np.arange(first_id, first_id + n_visits, dtype=np.int64),
        "ra": ra, "dec": dec,
        "rot": rng.uniform(0, 360.0, n_visits),
        "band": rng.choice(BANDS, size=n_visits, p=BAND_P),
    }


def detector_vertices(ra: np.ndarray, dec: np.ndarray, rot: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Unit-vector corners (C, D, 4, 3) of every detector of C visits (gnomonic projection)."""
    c = lonlat_to_xyz(ra, dec)
    ra_r, dec_r, th = np.radians(ra), np.radians(dec), np.radians(rot)
    east = np.stack([-np.sin(ra_r), np.cos(ra_r), np.zeros_like(ra_r)], axis=1)
    north = np.stack([-np.sin(dec_r) * np.cos(ra_r), -np.sin(dec_r) * np.sin(ra_r), np.cos(dec_r)], axis=1)
    e2 = np.cos(th)[:, None] * east + np.sin(th)[:, None] * north
    n2 = -np.sin(th)[:, None] * east + np.cos(th)[:, None] * north
    basis = np.stack([c, e2, n2], axis=1)  # (C, 3, 3)
    t = np.tan(np.radians(fp.reshape(-1, 2)))
    tmpl = np.concatenate([np.ones((len(t), 1)), t], axis=1)  # (D*4, 3)
    pts = np.matmul(tmpl[None, :, :], basis)
    pts /= np.linalg.norm(pts, axis=-1, keepdims=True)
    return pts.reshape(len(ra), fp.shape[0], 4, 3)


def count_overlaps(visits: dict[str, np.ndarray], skymap: SkyMapGeometry, fp: np.ndarray,
                   chunk_pairs: int = 4000, detectors: bool = False) -> dict[str, np.ndarray]:
    """(visit index, tract index, detectors overlapping) for every overlapping pair, and the
    shared-detector table (``multi_*``, :func:`.spatial.tract_sets`).

    Per candidate (visit, tract) pair the detector centres are first compared with the
    tract's edges: a detector whose circumscribed circle is inside every edge overlaps,
    one whose circle is wholly outside any edge does not, and only the rest (detectors on
    the tract boundary) go through the exact polygon test. With ``detectors=True`` the
    (visit, detector, tract) rows are returned too (small inputs only).
    """
    tracts = skymap.polygons
    fov = float(np.radians(np.hypot(np.abs(fp[..., 0]).max(), np.abs(fp[..., 1]).max()))) * 1.01
    # Each detector's own circumscribed radius (a focal plane's detectors need not be equal).
    det_centre = fp.mean(axis=1, keepdims=True)
    det_r = np.radians(np.hypot(*np.moveaxis(fp - det_centre, -1, 0)).max(axis=1)) * 1.01 + 1e-9  # (D,)
    vc = lonlat_to_xyz(visits["ra"], visits["dec"])
    vi, tj = candidate_pairs(vc, np.full(len(vc), fov), tracts.centres, tracts.radii)
    # Visit circle wholly outside some tract edge -> disjoint.
    dist = np.einsum("pk,pek->pe", vc[vi], tracts.normals[tj])
    dist = np.where(tracts.edge_valid[tj], dist, np.inf)
    keep = ~(dist < -np.sin(fov)).any(axis=1)
    vi, tj = vi[keep], tj[keep]
    # Group pairs by the tract's vertex count so each chunk tests only real edges.
    nv = tracts.nvert[tj]
    order = np.lexsort((tj, vi, nv))
    vi, tj, nv = vi[order], tj[order], nv[order]
    slack = 1e-6  # float32 margin tests: anything this close to a threshold goes to the exact test
    sin_r = np.sin(det_r).astype(np.float32)[None, :, None]  # against (P, D, E) distances
    normals32 = tracts.normals.astype(np.float32)
    out_v, out_t, out_n = [], [], []
    det_rows: list[np.ndarray] = []
    n_det = fp.shape[0]
    # (visit * detectors + detector, tract) of every hit: 8 bytes a hit while V * D < 2**31.
    kdt = np.int32 if len(vc) * n_det < 2**31 else np.int64
    hit_key: list[np.ndarray] = []
    hit_tract: list[np.ndarray] = []
    bounds = np.flatnonzero(np.diff(nv)) + 1
    for g0, g1 in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(vi)]])):
        if g1 <= g0:
            continue
        n_edges = int(nv[g0])
        for s in range(g0, g1, chunk_pairs):
            e = min(s + chunk_pairs, g1)
            pv, pt = vi[s:e], tj[s:e]
            uv, inv = np.unique(pv, return_inverse=True)
            corners = detector_vertices(visits["ra"][uv], visits["dec"][uv], visits["rot"][uv], fp)
            centres = corners.sum(axis=2)
            centres /= np.linalg.norm(centres, axis=-1, keepdims=True)
            nrm = normals32[pt, :n_edges]  # (P, E, 3)
            d = np.matmul(centres.astype(np.float32)[inv], nrm.transpose(0, 2, 1))  # (P, D, E)
            inside = (d >= sin_r + slack).all(axis=2)
            outside = (d < -sin_r - slack).any(axis=2)
            hit = inside
            amb_p, amb_d = np.nonzero(~inside & ~outside)
            if len(amb_p):
                dverts = corners[inv[amb_p], amb_d]  # (A, 4, 3)
                tn = tracts.normals[pt[amb_p], :n_edges]
                dc = np.matmul(tn, dverts.transpose(0, 2, 1))  # (A, E, 4) corner vs tract edge
                corner_in = (dc >= 0).all(axis=1).any(axis=1)  # a corner inside the tract
                sep1 = (dc < 0).all(axis=2).any(axis=1)  # a tract edge with every corner outside
                res_amb = corner_in
                rest = np.flatnonzero(~corner_in & ~sep1)
                if len(rest):  # near a tract vertex: try the detector's edges as separators
                    dv = dverts[rest]
                    dn = np.cross(dv, np.roll(dv, -1, axis=1))
                    tv = tracts.vertices[pt[amb_p[rest]]]
                    sep2 = (np.matmul(dn, tv.transpose(0, 2, 1)) < 0).all(axis=2).any(axis=1)
                    res_amb[rest] = ~sep2
                hit[amb_p, amb_d] = res_amb
            cnt = hit.sum(axis=1)
            hp, hd = np.nonzero(hit)
            hit_key.append((pv[hp] * n_det + hd).astype(kdt))
            hit_tract.append(pt[hp].astype(np.int32))
            nz = cnt > 0
            out_v.append(pv[nz])
            out_t.append(pt[nz])
            out_n.append(cnt[nz].astype(np.int32))
            if detectors:
                det_rows.append(np.stack([pv[hp], hd, pt[hp]], axis=1))
    if out_v:
        v_all, t_all, n_all = np.concatenate(out_v), np.concatenate(out_t), np.concatenate(out_n)
        o = np.lexsort((t_all, v_all))
        out_v, out_t, out_n = [v_all[o]], [t_all[o]], [n_all[o]]
    res = {
        "visit": np.concatenate(out_v) if out_v else np.zeros(0, np.int64),
        "tract": np.concatenate(out_t) if out_t else np.zeros(0, np.int64),
        "ndet": np.concatenate(out_n) if out_n else np.zeros(0, np.int32),
    }
    # Detectors hitting two or more tracts (across all chunks) -> the shared-detector table.
    keys = np.concatenate(hit_key) if hit_key else np.zeros(0, kdt)
    del hit_key
    tracts_hit = np.concatenate(hit_tract) if hit_tract else np.zeros(0, np.int32)
    del hit_tract
    shared = np.bincount(keys, minlength=len(vc) * n_det)[keys] >= 2 if len(keys) else np.zeros(0, bool)
    n_tr = len(tracts)
    key = keys[shared].astype(np.int64) * n_tr + tracts_hit[shared]  # (visit * D + detector) * T + tract
    del keys, tracts_hit, shared
    key.sort()
    res["multi_visit"], res["multi_ndet"], res["multi_set"], res["multi_tract"] = sets_from_keys(key, n_det, n_tr)
    if detectors:
        res["detectors"] = np.concatenate(det_rows) if det_rows else np.zeros((0, 3), np.int64)
    if detectors and len(res["detectors"]):
        r = res["detectors"]
        res["detectors"] = r[np.lexsort((r[:, 2], r[:, 1], r[:, 0]))]
    return res


def _fov_radius(fp: np.ndarray) -> float:
    """Angular distance (deg) from the boresight to the farthest detector corner (gnomonic)."""
    t = np.tan(np.radians(fp.reshape(-1, 2)))
    return float(np.degrees(np.arctan(np.hypot(t[:, 0], t[:, 1]).max())))


def synthetic_survey(n_visits: int, *, skymap: SkyMapGeometry | None = None, seed: int = 0,
                     fp: np.ndarray | None = None, visits: dict[str, np.ndarray] | None = None,
                     detectors: bool = False) -> SpatialInputs:
    """A complete :class:`SpatialInputs` for an LSST-like survey on ``skymap`` (default: rings)."""
    skymap = skymap or rings_skymap()
    fp = focal_plane() if fp is None else fp
    visits = visits or lsst_like_visits(n_visits, seed=seed)
    ov = count_overlaps(visits, skymap, fp, detectors=detectors)
    adj_a, adj_b = tract_adjacency(skymap.polygons)
    tra, tdec = skymap.centres()
    inputs = SpatialInputs(
        tract_id=skymap.tract_id, tract_ra=tra, tract_dec=tdec, tract_npatch=skymap.npatch,
        adj_a=adj_a, adj_b=adj_b,
        visit_id=visits["visit"], visit_band=visits["band"].astype(np.str_), visit_ra=visits["ra"],
        visit_dec=visits["dec"], visit_ndet=np.full(len(visits["visit"]), fp.shape[0], np.int32),
        visit_radius=np.full(len(visits["visit"]), _fov_radius(fp)),
        ov_visit=ov["visit"].astype(np.int64), ov_tract=ov["tract"].astype(np.int64), ov_ndet=ov["ndet"],
        multi_visit=ov["multi_visit"], multi_ndet=ov["multi_ndet"].astype(np.int32), multi_set=ov["multi_set"],
        multi_tract=ov["multi_tract"],
        source=f"synthetic LSST-like survey ({len(visits['visit'])} visits, {len(skymap.tract_id)} tracts, "
               f"seed {seed})",
    )
    if detectors:
        rows = ov["detectors"]
        inputs.det_visit, inputs.det_detector, inputs.det_tract = rows[:, 0], rows[:, 1], rows[:, 2]
        inputs.det_patch = np.zeros(len(rows), np.int64)
    return inputs.validate()


# A DRP-shaped dataflow matching include/campaigns/minidrp_embedded.yaml's nine steps, for tests
# and the benchmark when the real pipeline is not needed (see dataflow.dataflow_from_mapping).
_VD = ["instrument", "visit", "detector"]
_V = ["instrument", "visit"]
_TPB = ["skymap", "tract", "patch", "band"]
DRP_LIKE_DATAFLOW: dict[str, dict[str, dict[str, list[str]]]] = {
    # Names follow both the production pipelines (photoCalib) and the embedded MiniCam
    # pipeline (zeroPoint), so the benchmark's and the embedded campaign's requires resolve.
    "step1": {"consumes": {"raw": ["instrument", "exposure", "detector"], "bias": ["instrument", "detector"],
                           "flat": ["instrument", "detector", "physical_filter"], "refcat": ["htm7"]},
              "produces": {"src": _VD, "pvi": _VD}},
    "step2": {"consumes": {"src": _VD}, "produces": {"sourceTable_visit": _V, "visitSummary": _V}},
    "step3": {"consumes": {"sourceTable_visit": _V}, "produces": {"photoCalib": _V, "zeroPoint": _V}},
    "step4": {"consumes": {"pvi": _VD, "visitSummary": _V, "zeroPoint": _V, "skyMap": ["skymap"]},
              "produces": {"deepCoadd": _TPB}},
    "step5": {"consumes": {"deepCoadd": _TPB}, "produces": {"deepCoadd_meas": _TPB}},
    "step6": {"consumes": {"deepCoadd_meas": _TPB}, "produces": {"objectTable_tract": ["skymap", "tract"]}},
    "step7": {"consumes": {"objectTable_tract": ["skymap", "tract"], "pvi": _VD, "visitSummary": _V,
                           "zeroPoint": _V},
              "produces": {"forcedSource": _VD}},
    "step8": {"consumes": {"forcedSource": _VD}, "produces": {"forcedSourceTable_visit": _V}},
    "step9": {"consumes": {"forcedSourceTable_visit": _V, "objectTable_tract": ["skymap", "tract"]},
              "produces": {"surveySummary": ["instrument"]}},
}
