"""Vectorised spherical geometry: convex polygons as numpy arrays, exact overlap tests.

Why not sphgeom objects? A DR1-scale survey has ~36M detector regions; building one
``lsst.sphgeom.ConvexPolygon`` per detector costs minutes and gigabytes. Here a set of
convex polygons is a padded ``(N, V, 3)`` array of unit vectors and every test is a numpy
expression over many (polygon, polygon) pairs at once. The answers agree with sphgeom's
``ConvexPolygon.overlaps`` (``tests/campaign/test_geometry.py`` checks them by brute force).

The overlap test is the separating-axis theorem carried to the sphere: two convex
polygons that fit in one open hemisphere are disjoint exactly when one polygon has an
edge whose great circle has every vertex of the other strictly on its outer side (the
gnomonic projection maps great circles to lines and convex spherical polygons to convex
planar ones, where the planar theorem holds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "PolygonSet",
    "candidate_pairs",
    "lonlat_to_xyz",
    "overlapping_pairs",
    "polygons_overlap",
    "xyz_to_lonlat",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def lonlat_to_xyz(ra_deg: NDArray, dec_deg: NDArray) -> FloatArray:
    """Unit vectors for RA/Dec in degrees; shape ``ra.shape + (3,)``."""
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def xyz_to_lonlat(xyz: FloatArray) -> tuple[FloatArray, FloatArray]:
    """RA in [0, 360) and Dec in degrees for (not necessarily unit) vectors."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    ra = np.degrees(np.arctan2(y, x)) % 360.0
    dec = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return ra, dec


@dataclass
class PolygonSet:
    """N convex spherical polygons, padded to V vertices by repeating the last vertex.

    ``normals[i, k]`` is the unit normal of edge k (interior on its positive side);
    padded edges have a zero normal so they never separate anything, and
    ``edge_valid`` masks them where a margin test needs it.
    """

    vertices: FloatArray  # (N, V, 3)
    nvert: IntArray  # (N,)
    normals: FloatArray  # (N, V, 3)
    edge_valid: NDArray[np.bool_]  # (N, V)
    centres: FloatArray  # (N, 3) unit
    radii: FloatArray  # (N,) radians: bounding circle about centres

    def __len__(self) -> int:
        return int(self.vertices.shape[0])

    @classmethod
    def from_vertex_lists(cls, polys: list[FloatArray] | list[list[tuple[float, float, float]]]) -> PolygonSet:
        """Build from per-polygon vertex lists (any winding; made counter-clockwise)."""
        n = len(polys)
        nv = np.array([len(p) for p in polys], dtype=np.int64)
        vmax = int(nv.max()) if n else 3
        verts = np.zeros((n, vmax, 3))
        for i, p in enumerate(polys):
            a = np.asarray(p, dtype=np.float64)
            verts[i, : len(a)] = a
            verts[i, len(a):] = a[-1]
        return cls.from_padded(verts, nv)

    @classmethod
    def from_padded(cls, verts: FloatArray, nvert: IntArray) -> PolygonSet:
        """Build from an already padded ``(N, V, 3)`` array and vertex counts."""
        verts = verts / np.linalg.norm(verts, axis=-1, keepdims=True)
        vmax = verts.shape[1]
        k = np.arange(vmax)
        nxt = (k[None, :] + 1) % np.maximum(nvert[:, None], 1)
        nxt = np.where(k[None, :] < nvert[:, None], nxt, k[None, :])
        v2 = np.take_along_axis(verts, nxt[..., None], axis=1)
        normals = np.cross(verts, v2)
        valid = k[None, :] < nvert[:, None]
        normals[~valid] = 0.0
        norm = np.linalg.norm(normals, axis=-1, keepdims=True)
        normals = np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 0)
        centres = verts.sum(axis=1) / np.maximum(nvert, 1)[:, None]
        # Padded vertices repeat the last one; remove their contribution to the mean.
        pad = vmax - nvert
        centres = centres - (pad[:, None] * verts[:, -1, :]) / np.maximum(nvert, 1)[:, None]
        centres /= np.linalg.norm(centres, axis=-1, keepdims=True)
        # Make winding counter-clockwise: the centre must be on every edge's positive side.
        side = np.einsum("nvk,nk->nv", normals, centres)
        flip = np.where(valid, side, 0.0).sum(axis=1) < 0
        if flip.any():
            rev = verts[flip].copy()
            for j, i in enumerate(np.flatnonzero(flip)):
                m = int(nvert[i])
                rev[j, :m] = verts[i, :m][::-1]
                rev[j, m:] = rev[j, m - 1]
            verts = verts.copy()
            verts[flip] = rev
            return cls.from_padded(verts, nvert)
        cosr = np.einsum("nvk,nk->nv", verts, centres).min(axis=1)
        radii = np.arccos(np.clip(cosr, -1.0, 1.0)) + 1e-9
        return cls(verts, nvert.astype(np.int64), normals, valid, centres, radii)

    @classmethod
    def from_sphgeom(cls, regions: list) -> PolygonSet:
        """Build from ``lsst.sphgeom.ConvexPolygon`` objects (small inputs: butler records)."""
        polys = []
        for r in regions:
            if not hasattr(r, "getVertices"):
                raise TypeError(f"expected a ConvexPolygon region, got {type(r).__name__}")
            polys.append([(v.x(), v.y(), v.z()) for v in r.getVertices()])
        return cls.from_vertex_lists(polys)

    def subset(self, idx: IntArray) -> PolygonSet:
        return PolygonSet(self.vertices[idx], self.nvert[idx], self.normals[idx], self.edge_valid[idx],
                          self.centres[idx], self.radii[idx])


def _separated(normals: FloatArray, others: FloatArray, tol: float) -> NDArray[np.bool_]:
    """(P,) True where some edge of the first polygon has all of the other's vertices outside."""
    # (P, Ve, 3) x (P, Vo, 3) -> (P, Ve, Vo)
    d = np.einsum("pek,pok->peo", normals, others)
    outside = (d < -tol).all(axis=2)
    return outside.any(axis=1)


def polygons_overlap(a: PolygonSet, ia: IntArray, b: PolygonSet, ib: IntArray, tol: float = 0.0,
                     chunk: int = 200_000) -> NDArray[np.bool_]:
    """Exact overlap for pairs ``(a[ia[p]], b[ib[p]])``.

    ``tol`` (radians) widens both polygons slightly: polygons closer than ``tol`` count as
    overlapping (used for tract adjacency, where neighbours may only touch).
    """
    out = np.empty(len(ia), dtype=bool)
    for s in range(0, len(ia), chunk):
        pa, pb = ia[s:s + chunk], ib[s:s + chunk]
        sep = _separated(a.normals[pa], b.vertices[pb], tol) | _separated(b.normals[pb], a.vertices[pa], tol)
        out[s:s + chunk] = ~sep
    return out


def candidate_pairs(centres_a: FloatArray, radii_a: FloatArray, centres_b: FloatArray, radii_b: FloatArray,
                    pad: float = 0.0) -> tuple[IntArray, IntArray]:
    """All (i, j) whose bounding circles intersect (angular distance < r_a + r_b + pad).

    A declination-band grid of B's circles keeps this near-linear: every B circle is
    registered in each band/RA cell it can touch, enlarged by the largest A radius, and
    each A centre looks up its own cell only.
    """
    if len(centres_a) == 0 or len(centres_b) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ra_b, dec_b = xyz_to_lonlat(centres_b)
    ra_a, dec_a = xyz_to_lonlat(centres_a)
    reach = np.degrees(radii_b + radii_a.max() + pad) + 1e-6  # degrees a B circle can reach
    band = max(float(np.median(reach)) * 2.0, 0.5)
    nband = int(np.ceil(180.0 / band))
    band = 180.0 / nband
    # RA cells per band: about `band` degrees wide at the band's widest point.
    lo = -90.0 + band * np.arange(nband)
    widest = np.minimum(np.abs(lo), np.abs(lo + band))
    widest[(lo < 0) & (lo + band > 0)] = 0.0
    ncell = np.maximum(1, np.floor(360.0 * np.cos(np.radians(widest)) / band)).astype(np.int64)
    offset = np.concatenate([[0], np.cumsum(ncell)])
    cells_of_b: list[IntArray] = []
    owners: list[IntArray] = []
    b0 = np.clip(((dec_b - reach + 90.0) // band).astype(np.int64), 0, nband - 1)
    b1 = np.clip(((dec_b + reach + 90.0) // band).astype(np.int64), 0, nband - 1)
    for j in range(len(dec_b)):
        polar = dec_b[j] + reach[j] >= 89.999 or dec_b[j] - reach[j] <= -89.999
        if not polar:
            # Exact largest RA offset of a circle of radius `reach` centred at dec_b[j].
            s_half = np.sin(np.radians(reach[j])) / np.cos(np.radians(dec_b[j]))
            half = 180.0 if s_half >= 1.0 else float(np.degrees(np.arcsin(s_half))) * 1.001 + 1e-6
        for bi in range(b0[j], b1[j] + 1):
            nc = ncell[bi]
            if polar or half >= 180.0 or nc == 1:
                cells = np.arange(nc)
            else:
                c0 = int(np.floor((ra_b[j] - half) / 360.0 * nc))
                c1 = int(np.floor((ra_b[j] + half) / 360.0 * nc))
                cells = np.unique(np.arange(c0, c1 + 1) % nc)
            cells_of_b.append(offset[bi] + cells)
            owners.append(np.full(len(cells), j, dtype=np.int64))
    cell_ids = np.concatenate(cells_of_b)
    owner = np.concatenate(owners)
    order = np.argsort(cell_ids, kind="stable")
    cell_ids, owner = cell_ids[order], owner[order]
    starts = np.searchsorted(cell_ids, np.arange(offset[-1] + 1))
    ab = np.clip(((dec_a + 90.0) // band).astype(np.int64), 0, nband - 1)
    ac = np.minimum((ra_a / 360.0 * ncell[ab]).astype(np.int64), ncell[ab] - 1)
    cell_a = offset[ab] + ac
    cnt = starts[cell_a + 1] - starts[cell_a]
    ia = np.repeat(np.arange(len(centres_a), dtype=np.int64), cnt)
    first = np.repeat(starts[cell_a], cnt)
    within = np.arange(len(ia)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    jb = owner[first + within]
    cosd = np.einsum("pk,pk->p", centres_a[ia], centres_b[jb])
    keep = np.arccos(np.clip(cosd, -1.0, 1.0)) < radii_a[ia] + radii_b[jb] + pad
    return ia[keep], jb[keep]


def overlapping_pairs(a: PolygonSet, b: PolygonSet, tol: float = 0.0) -> tuple[IntArray, IntArray]:
    """All (i, j) with polygon a[i] overlapping b[j], sorted by (i, j)."""
    ia, jb = candidate_pairs(a.centres, a.radii, b.centres, b.radii, pad=tol)
    ok = polygons_overlap(a, ia, b, jb, tol=tol)
    ia, jb = ia[ok], jb[ok]
    order = np.lexsort((jb, ia))
    return ia[order], jb[order]
