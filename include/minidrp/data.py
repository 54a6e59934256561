"""Seeded synthetic inputs: reference catalogue, bias and flat calibrations, raws.

The raws are rendered from the reference catalogue's stars (Gaussian PSF) at
each visit's true pointing, dimmed by the visit's extinction, multiplied by the
flat, plus sky, bias and noise. So the pipeline has something real to recover:
ISR removes bias and flat, calibrate finds the stars and the pointing error,
global calibration recovers the per-visit extinction. Every array is a pure
function of the seed and the data ID.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from .instrument import (
    BIAS_LEVEL,
    DETECTOR_IDS,
    DETECTOR_SIZE,
    INSTRUMENT_ZEROPOINT,
    PHYSICAL_FILTERS,
    PSF_SIGMA_PIX,
    READ_NOISE,
    SKY_LEVEL,
    LinearWcs,
)
from .survey import Visit

#: Sky area the reference catalogue covers (a margin around every visit).
REFCAT_RA_RANGE: tuple[float, float] = (9.0, 17.0)
REFCAT_DEC_RANGE: tuple[float, float] = (-2.0, 2.0)
REFCAT_DENSITY_PER_DEG2: float = 120.0
MAG_RANGE: tuple[float, float] = (16.5, 22.0)
STAMP_HALF: int = 4


def _rng(seed: int, *key: int) -> np.random.Generator:
    """Independent generator for one data ID (order of generation never matters)."""
    return np.random.default_rng([seed, *key])


def make_refcat(seed: int) -> Table:
    """Reference catalogue: id, ra, dec and g/r/i magnitudes of point sources."""
    rng = _rng(seed, 1)
    area = (REFCAT_RA_RANGE[1] - REFCAT_RA_RANGE[0]) * (REFCAT_DEC_RANGE[1] - REFCAT_DEC_RANGE[0])
    n = int(area * REFCAT_DENSITY_PER_DEG2)
    ra = rng.uniform(*REFCAT_RA_RANGE, n)
    sin_dec = rng.uniform(np.sin(np.radians(REFCAT_DEC_RANGE[0])), np.sin(np.radians(REFCAT_DEC_RANGE[1])), n)
    dec = np.degrees(np.arcsin(sin_dec))
    # Number counts rising as 10**(0.3 m): invert the cumulative distribution.
    lo, hi = 10 ** (0.3 * MAG_RANGE[0]), 10 ** (0.3 * MAG_RANGE[1])
    r_mag = np.log10(rng.uniform(lo, hi, n)) / 0.3
    g_mag = r_mag + rng.normal(0.6, 0.3, n)
    i_mag = r_mag - rng.normal(0.25, 0.15, n)
    order = np.lexsort((dec, ra))
    table = Table(
        {
            "id": np.arange(1, n + 1, dtype=np.int64),
            "ra": ra[order],
            "dec": dec[order],
            "g_mag": g_mag[order].astype(np.float32),
            "r_mag": r_mag[order].astype(np.float32),
            "i_mag": i_mag[order].astype(np.float32),
        }
    )
    table.meta["seed"] = seed
    return table


def make_bias(seed: int, detector: int) -> np.ndarray:
    """Bias frame: a level, a column gradient and fixed-pattern noise."""
    rng = _rng(seed, 2, detector)
    x = np.arange(DETECTOR_SIZE, dtype=np.float32)
    bias = (
        BIAS_LEVEL
        + 5.0 * detector
        + 0.05 * x[np.newaxis, :]
        + rng.normal(0.0, 2.0, (DETECTOR_SIZE, DETECTOR_SIZE))
    )
    return bias.astype(np.float32)


def make_flat(seed: int, detector: int, physical_filter: str) -> np.ndarray:
    """Flat field normalised to 1: a vignetting ramp and 1% pixel response."""
    band_index = list(PHYSICAL_FILTERS).index(physical_filter)
    rng = _rng(seed, 3, detector, band_index)
    yy, xx = np.mgrid[0:DETECTOR_SIZE, 0:DETECTOR_SIZE].astype(np.float32) / DETECTOR_SIZE
    flat = (
        1.0 - 0.04 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * (1 + band_index) + rng.normal(0.0, 0.01, xx.shape)
    )
    return (flat / flat.mean()).astype(np.float32)


def star_counts(mag: np.ndarray, band: str, extinction: float) -> np.ndarray:
    """Total counts recorded for stars of magnitude ``mag``."""
    return 10.0 ** (0.4 * (INSTRUMENT_ZEROPOINT[band] - extinction - np.asarray(mag, dtype=np.float64)))


def render_stars(image: np.ndarray, x: np.ndarray, y: np.ndarray, counts: np.ndarray, sigma: float) -> None:
    """Add Gaussian stars (normalised over their stamp) to ``image`` in place."""
    ny, nx = image.shape
    offs = np.arange(-STAMP_HALF, STAMP_HALF + 1)
    for xc, yc, c in zip(x, y, counts):
        ix, iy = round(xc), round(yc)
        xs, ys = ix + offs, iy + offs
        gx = np.exp(-0.5 * ((xs - xc) / sigma) ** 2)
        gy = np.exp(-0.5 * ((ys - yc) / sigma) ** 2)
        stamp = np.outer(gy, gx)
        stamp *= c / stamp.sum()
        okx, oky = (xs >= 0) & (xs < nx), (ys >= 0) & (ys < ny)
        if okx.any() and oky.any():
            image[np.ix_(ys[oky], xs[okx])] += stamp[np.ix_(oky, okx)]


def make_raw(seed: int, visit: Visit, detector: int, refcat: Table) -> np.ndarray:
    """Raw image of one detector for one visit."""
    wcs = LinearWcs.for_detector(visit.true_ra, visit.true_dec, detector)
    x, y = wcs.sky_to_pixel(np.asarray(refcat["ra"]), np.asarray(refcat["dec"]))
    margin = STAMP_HALF
    sel = (x > -margin) & (x < DETECTOR_SIZE + margin) & (y > -margin) & (y < DETECTOR_SIZE + margin)
    counts = star_counts(np.asarray(refcat[f"{visit.band}_mag"])[sel], visit.band, visit.extinction)
    signal = np.full((DETECTOR_SIZE, DETECTOR_SIZE), SKY_LEVEL, dtype=np.float64)
    render_stars(signal, x[sel], y[sel], counts, PSF_SIGMA_PIX)
    rng = _rng(seed, 4, visit.id, detector)
    signal = signal + rng.normal(0.0, 1.0, signal.shape) * np.sqrt(signal + READ_NOISE**2)
    raw = signal * make_flat(seed, detector, visit.physical_filter) + make_bias(seed, detector)
    return raw.astype(np.float32)


__all__ = ["DETECTOR_IDS", "make_bias", "make_flat", "make_raw", "make_refcat", "render_stars", "star_counts"]
