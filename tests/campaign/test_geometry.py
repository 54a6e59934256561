"""The vectorised overlap test against lsst.sphgeom's own ConvexPolygon.overlaps, by brute force."""

from __future__ import annotations

import numpy as np
import pytest
from layouts import SMALL_FP, small_visits
from lsst.sphgeom import ConvexPolygon, UnitVector3d
from multisite_drp.campaign import geometry, synthetic


def _poly(verts: np.ndarray) -> ConvexPolygon:
    return ConvexPolygon([UnitVector3d(*v) for v in verts])


def _unequal_fp() -> np.ndarray:
    """SMALL_FP with its first detector shrunk to a fifth of its size (about its centre): the
    overlap test once sized every detector from the first one, and lost the others' corners."""
    fp = SMALL_FP.copy()
    centre = fp[0].mean(axis=0)
    fp[0] = centre + (fp[0] - centre) * 0.2
    return fp


@pytest.mark.parametrize("seed, unequal", [(0, False), (1, False), (2, False), (3, False), (0, True), (1, True)])
def test_detector_tract_overlaps_match_sphgeom(seed: int, unequal: bool) -> None:
    fp = _unequal_fp() if unequal else SMALL_FP
    sky = synthetic.grid_skymap(20.0, -40.0 + 10 * seed, 5, 4, size=1.0)
    vis = small_visits(25, seed, (20.2, 24.8), (-39.8 + 10 * seed, -36.2 + 10 * seed))
    got = synthetic.count_overlaps(vis, sky, fp, detectors=True)["detectors"]
    corners = synthetic.detector_vertices(vis["ra"], vis["dec"], vis["rot"], fp)
    tracts = [_poly(sky.polygons.vertices[i, : sky.polygons.nvert[i]]) for i in range(len(sky.tract_id))]
    brute = set()
    for v in range(len(vis["visit"])):
        for d in range(fp.shape[0]):
            dp = _poly(corners[v, d])
            for t, tp in enumerate(tracts):
                if dp.overlaps(tp):
                    brute.add((v, d, t))
    assert set(map(tuple, got.tolist())) == brute
    assert len(brute) > 100


def test_polygon_pairs_match_sphgeom_on_random_quads() -> None:
    rng = np.random.default_rng(7)
    polys = []
    for _ in range(120):
        ra, dec, r = rng.uniform(0, 8), rng.uniform(-4, 4), rng.uniform(0.2, 1.5)
        ang = np.sort(rng.uniform(0, 2 * np.pi, 5))
        polys.append(geometry.lonlat_to_xyz(ra + r * np.cos(ang) / np.cos(np.radians(dec)), dec + r * np.sin(ang)))
    ps = geometry.PolygonSet.from_vertex_lists(polys)
    ia, jb = geometry.overlapping_pairs(ps, ps)
    got = {(int(i), int(j)) for i, j in zip(ia, jb)}
    sph = [_poly(p) for p in polys]
    brute = {(i, j) for i in range(len(sph)) for j in range(len(sph)) if sph[i].overlaps(sph[j])}
    assert got == brute


def test_rings_skymap_is_lsst_sized_and_valid() -> None:
    sky = synthetic.rings_skymap()
    assert 18_500 < len(sky.tract_id) < 19_500
    for i in range(0, len(sky.tract_id), 500):
        _poly(sky.polygons.vertices[i, : sky.polygons.nvert[i]])  # raises if not convex
