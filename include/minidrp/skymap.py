"""``minisky``: a tiny equatorial skymap of 1x1-degree tracts, each cut into 2x2 patches.

Real DRP shards coadd work by tract; a dozen tracts are enough to split the sky
among three sites by RA and still have visits crossing the split lines. The
geometry is plate carree (RA/Dec on a regular grid) so tasks can map coadd
pixels to the sky without a WCS library; the same parameters are stored as the
``skyMap`` dataset (StructuredDataDict) so PipelineTasks read them as an input,
like real tasks read the SkyMap object.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from lsst.sphgeom import ConvexPolygon

from .constants import SKYMAP_NAME
from .instrument import box_polygon

RA_MIN: float = 10.0
DEC_MIN: float = -1.0
TRACT_SIZE_DEG: float = 1.0
N_TRACT_RA: int = 6
N_TRACT_DEC: int = 2
PATCH_NX: int = 2
PATCH_NY: int = 2
#: Coadd pixels per patch side (36 arcsec pixels on 0.5-degree patches).
PATCH_PIXELS: int = 50


@dataclass(frozen=True)
class PatchGeometry:
    """Sky box and pixel grid of one patch (plate carree, RA/Dec degrees)."""

    tract: int
    patch: int
    cell_x: int
    cell_y: int
    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float
    pixels: int

    @property
    def scale_ra(self) -> float:
        """Degrees of RA per coadd pixel."""
        return (self.ra_max - self.ra_min) / self.pixels

    @property
    def scale_dec(self) -> float:
        """Degrees of Dec per coadd pixel."""
        return (self.dec_max - self.dec_min) / self.pixels

    def pixel_to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coadd pixel centres to (ra, dec)."""
        return self.ra_min + (np.asarray(x) + 0.5) * self.scale_ra, self.dec_min + (
            np.asarray(y) + 0.5
        ) * self.scale_dec

    def sky_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) to coadd pixel coordinates."""
        return (np.asarray(ra) - self.ra_min) / self.scale_ra - 0.5, (
            np.asarray(dec) - self.dec_min
        ) / self.scale_dec - 0.5

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Inner-region test (half-open boxes, so every sky position has one owning patch)."""
        ra, dec = np.asarray(ra), np.asarray(dec)
        return (ra >= self.ra_min) & (ra < self.ra_max) & (dec >= self.dec_min) & (dec < self.dec_max)

    def polygon(self) -> ConvexPolygon:
        """sphgeom region for the registry."""
        return box_polygon(self.ra_min, self.ra_max, self.dec_min, self.dec_max)


def tract_ids() -> list[int]:
    """All tract ids: ``iy * N_TRACT_RA + ix``."""
    return list(range(N_TRACT_RA * N_TRACT_DEC))


def tract_cell(tract: int) -> tuple[int, int]:
    """(ix, iy) of a tract in the RA/Dec grid."""
    return tract % N_TRACT_RA, tract // N_TRACT_RA


def tract_box(tract: int) -> tuple[float, float, float, float]:
    """(ra_min, ra_max, dec_min, dec_max) of a tract."""
    ix, iy = tract_cell(tract)
    ra_min = RA_MIN + ix * TRACT_SIZE_DEG
    dec_min = DEC_MIN + iy * TRACT_SIZE_DEG
    return ra_min, ra_min + TRACT_SIZE_DEG, dec_min, dec_min + TRACT_SIZE_DEG


def tract_ra_third(tract: int) -> int:
    """Which third of the RA range (0, 1, 2) a tract lies in: the natural three-site split."""
    ix, _ = tract_cell(tract)
    return ix * 3 // N_TRACT_RA


def patch_geometry(tract: int, patch: int, params: dict[str, Any] | None = None) -> PatchGeometry:
    """Geometry of one patch, from the module constants or from a ``skyMap`` dataset dict."""
    p = params or skymap_parameters()
    ntx = p["n_tract_ra"]
    ix, iy = tract % ntx, tract // ntx
    size = p["tract_size_deg"]
    cx, cy = patch % p["patch_nx"], patch // p["patch_nx"]
    pw, ph = size / p["patch_nx"], size / p["patch_ny"]
    ra_min = p["ra_min"] + ix * size + cx * pw
    dec_min = p["dec_min"] + iy * size + cy * ph
    return PatchGeometry(tract, patch, cx, cy, ra_min, ra_min + pw, dec_min, dec_min + ph, p["patch_pixels"])


def find_tract(ra: np.ndarray, dec: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
    """Tract id owning each position, or -1 outside the skymap."""
    p = params or skymap_parameters()
    ix = np.floor((np.asarray(ra) - p["ra_min"]) / p["tract_size_deg"]).astype(int)
    iy = np.floor((np.asarray(dec) - p["dec_min"]) / p["tract_size_deg"]).astype(int)
    ok = (ix >= 0) & (ix < p["n_tract_ra"]) & (iy >= 0) & (iy < p["n_tract_dec"])
    return np.where(ok, iy * p["n_tract_ra"] + ix, -1)


def skymap_parameters() -> dict[str, Any]:
    """The skymap definition: the content of the ``skyMap`` dataset."""
    return {
        "name": SKYMAP_NAME,
        "ra_min": RA_MIN,
        "dec_min": DEC_MIN,
        "tract_size_deg": TRACT_SIZE_DEG,
        "n_tract_ra": N_TRACT_RA,
        "n_tract_dec": N_TRACT_DEC,
        "patch_nx": PATCH_NX,
        "patch_ny": PATCH_NY,
        "patch_pixels": PATCH_PIXELS,
    }


def skymap_hash() -> bytes:
    """Stable hash of the skymap parameters (the registry's ``skymap.hash``)."""
    return hashlib.sha1(json.dumps(skymap_parameters(), sort_keys=True).encode()).digest()


def skymap_records() -> dict[str, list[dict[str, Any]]]:
    """Dimension records (skymap, tract, patch) with real sphgeom regions."""
    tracts = tract_ids()
    records: dict[str, list[dict[str, Any]]] = {
        "skymap": [
            {
                "name": SKYMAP_NAME,
                "hash": skymap_hash(),
                "tract_max": len(tracts),
                "patch_nx_max": PATCH_NX,
                "patch_ny_max": PATCH_NY,
            }
        ],
        "tract": [],
        "patch": [],
    }
    for tract in tracts:
        records["tract"].append(
            {"skymap": SKYMAP_NAME, "id": tract, "region": box_polygon(*tract_box(tract))}
        )
        for patch in range(PATCH_NX * PATCH_NY):
            geom = patch_geometry(tract, patch)
            records["patch"].append(
                {
                    "skymap": SKYMAP_NAME,
                    "tract": tract,
                    "id": patch,
                    "cell_x": geom.cell_x,
                    "cell_y": geom.cell_y,
                    "region": geom.polygon(),
                }
            )
    return records
