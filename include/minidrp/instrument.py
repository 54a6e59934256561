"""MiniCam: a synthetic 2x2-detector camera small enough to process in milliseconds.

The camera exists so the embedded sites exercise the same dimension records a
real instrument needs (instrument, physical_filter, detector) without obs_base
or afw. Its focal plane is ~1.6 deg across, wider than a 1-deg ``minisky``
tract, so visits straddle tract boundaries exactly as LSSTCam visits do.

The astrometric model is a deliberately simple "linear WCS" in (RA, Dec) near
the equator, shared by the data simulator and the PipelineTasks so that both
sides agree on where a pixel lands on the sky.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from lsst.sphgeom import ConvexPolygon, LonLat, UnitVector3d

from .constants import INSTRUMENT_NAME

#: Pixels per detector side (square detectors).
DETECTOR_SIZE: int = 100
#: Pixel scale of the detectors.
PIXEL_SCALE_ARCSEC: float = 28.8
PIXEL_SCALE_DEG: float = PIXEL_SCALE_ARCSEC / 3600.0
#: Detectors laid out on a 2x2 grid without gaps: detector id = iy * 2 + ix.
N_DET_X: int = 2
N_DET_Y: int = 2
N_DETECTORS: int = N_DET_X * N_DET_Y
DETECTOR_IDS: tuple[int, ...] = tuple(range(N_DETECTORS))
#: Field of view side, degrees (1.6 deg: about 1.6 tracts).
FOV_DEG: float = N_DET_X * DETECTOR_SIZE * PIXEL_SCALE_DEG

#: physical_filter -> band.
PHYSICAL_FILTERS: dict[str, str] = {"MiniCam-g": "g", "MiniCam-r": "r", "MiniCam-i": "i"}
BANDS: tuple[str, ...] = tuple(PHYSICAL_FILTERS.values())

#: Instrumental zero point (mag giving one count per exposure) per band.
INSTRUMENT_ZEROPOINT: dict[str, float] = {"g": 28.0, "r": 28.2, "i": 27.9}
EXPOSURE_TIME: float = 30.0
#: Gaussian PSF sigma in pixels, read noise and sky level in counts.
PSF_SIGMA_PIX: float = 1.0
SKY_LEVEL: float = 200.0
READ_NOISE: float = 5.0
BIAS_LEVEL: float = 1000.0

VISIT_MAX: int = 10**6
EXPOSURE_MAX: int = 10**6


def detector_origin(detector: int) -> tuple[int, int]:
    """Return the focal-plane pixel offset of a detector's (0, 0) pixel from the boresight."""
    ix, iy = detector % N_DET_X, detector // N_DET_X
    return ix * DETECTOR_SIZE - (N_DET_X * DETECTOR_SIZE) // 2, iy * DETECTOR_SIZE - (
        N_DET_Y * DETECTOR_SIZE
    ) // 2


@dataclass(frozen=True)
class LinearWcs:
    """Pixel <-> sky mapping of one detector: ``ra = ra0 + (x + u0) * s / cos(dec0)``.

    ``ra0``/``dec0`` is the boresight, ``(u0, v0)`` the detector's focal-plane
    pixel offset, ``scale`` degrees per pixel. Good to well under a pixel for
    the small fields and low declinations used here.
    """

    ra0: float
    dec0: float
    u0: float
    v0: float
    scale: float = PIXEL_SCALE_DEG

    @classmethod
    def for_detector(cls, ra0: float, dec0: float, detector: int) -> LinearWcs:
        """Build the WCS of ``detector`` for a visit pointed at (ra0, dec0)."""
        u0, v0 = detector_origin(detector)
        return cls(ra0=ra0, dec0=dec0, u0=float(u0), v0=float(v0))

    @property
    def cosdec(self) -> float:
        """Cosine of the boresight declination."""
        return math.cos(math.radians(self.dec0))

    def pixel_to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map pixel centres (x, y) to (ra, dec) in degrees."""
        ra = self.ra0 + (np.asarray(x) + 0.5 + self.u0) * self.scale / self.cosdec
        dec = self.dec0 + (np.asarray(y) + 0.5 + self.v0) * self.scale
        return ra, dec

    def sky_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map (ra, dec) in degrees to pixel coordinates (x, y)."""
        x = (np.asarray(ra) - self.ra0) * self.cosdec / self.scale - self.u0 - 0.5
        y = (np.asarray(dec) - self.dec0) / self.scale - self.v0 - 0.5
        return x, y

    def to_dict(self) -> dict[str, float]:
        """Plain-dict form for catalogues and StructuredDataDict datasets."""
        return {k: float(getattr(self, k)) for k in ("ra0", "dec0", "u0", "v0", "scale")}


def box_polygon(ra_min: float, ra_max: float, dec_min: float, dec_max: float) -> ConvexPolygon:
    """A ConvexPolygon with great-circle edges through the four (ra, dec) corners."""
    corners = [(ra_min, dec_min), (ra_max, dec_min), (ra_max, dec_max), (ra_min, dec_max)]
    return ConvexPolygon([UnitVector3d(LonLat.fromDegrees(ra, dec)) for ra, dec in corners])


def detector_polygon(ra0: float, dec0: float, detector: int) -> ConvexPolygon:
    """Sky region of one detector for a visit pointed at (ra0, dec0)."""
    wcs = LinearWcs.for_detector(ra0, dec0, detector)
    ras, decs = wcs.pixel_to_sky(np.array([-0.5, DETECTOR_SIZE - 0.5]), np.array([-0.5, DETECTOR_SIZE - 0.5]))
    return box_polygon(float(ras[0]), float(ras[1]), float(decs[0]), float(decs[1]))


def visit_polygon(ra0: float, dec0: float) -> ConvexPolygon:
    """Sky region of the whole focal plane for a visit pointed at (ra0, dec0)."""
    half = FOV_DEG / 2.0
    cosdec = math.cos(math.radians(dec0))
    return box_polygon(ra0 - half / cosdec, ra0 + half / cosdec, dec0 - half, dec0 + half)


def instrument_records() -> dict[str, list[dict[str, Any]]]:
    """Dimension records (element -> list of record dicts) that define MiniCam in a registry.

    ``band`` is implied by ``physical_filter`` and cannot be inserted directly.
    """
    return {
        "instrument": [
            {
                "name": INSTRUMENT_NAME,
                "visit_max": VISIT_MAX,
                "exposure_max": EXPOSURE_MAX,
                "detector_max": N_DETECTORS,
                "visit_system": 0,
                "class_name": "minidrp.instrument.MiniCam",
            }
        ],
        "physical_filter": [
            {"instrument": INSTRUMENT_NAME, "name": pf, "band": band} for pf, band in PHYSICAL_FILTERS.items()
        ],
        "detector": [
            {
                "instrument": INSTRUMENT_NAME,
                "id": det,
                "full_name": f"R00_S{det // N_DET_X}{det % N_DET_X}",
                "name_in_raft": f"S{det // N_DET_X}{det % N_DET_X}",
                "raft": "R00",
                "purpose": "SCIENCE",
            }
            for det in DETECTOR_IDS
        ],
    }


class MiniCam:
    """Marker class named by the instrument record's ``class_name``.

    There is no obs_base here, so this is not an ``lsst.pipe.base.Instrument``;
    it only gathers the camera constants under the name the registry records.
    """

    name = INSTRUMENT_NAME
    detectors = DETECTOR_IDS
    physical_filters = PHYSICAL_FILTERS
    pixel_scale_arcsec = PIXEL_SCALE_ARCSEC
    detector_size = DETECTOR_SIZE
