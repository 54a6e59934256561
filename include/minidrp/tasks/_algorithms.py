"""Small deterministic numpy kernels shared by the MiniCam tasks.

Nothing here is clever: robust statistics, peak finding, box-aperture
photometry, nearest-neighbour matching and bilinear sampling, each a few lines,
so every quantum runs in milliseconds and gives bit-identical results on rerun.
"""

from __future__ import annotations

import numpy as np

#: Magnitude of a 1 nJy source (AB).
NJY_ZEROPOINT: float = 31.4


def robust_stats(values: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based sigma of the finite values (3-sigma clipped once)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 0.0
    med = float(np.median(v))
    sig = 1.4826 * float(np.median(np.abs(v - med)))
    if sig > 0:
        v = v[np.abs(v - med) < 3 * sig]
        med = float(np.median(v))
        sig = 1.4826 * float(np.median(np.abs(v - med)))
    return med, sig


def find_peaks(
    image: np.ndarray, threshold: np.ndarray | float, border: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) integer indices of 3x3 local maxima above ``threshold``, away from the border."""
    img = np.where(np.isfinite(image), image, -np.inf)
    ny, nx = img.shape
    core = img[1:-1, 1:-1]
    is_max = np.ones_like(core, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            neighbour = img[1 + dy : ny - 1 + dy, 1 + dx : nx - 1 + dx]
            # Strict on one side, non-strict on the other: flat-topped peaks yield one maximum.
            is_max &= core > neighbour if (dy, dx) < (0, 0) else core >= neighbour
    thr = threshold[1:-1, 1:-1] if isinstance(threshold, np.ndarray) else threshold
    is_max &= core > thr
    y, x = np.nonzero(is_max)
    y, x = y + 1, x + 1
    keep = (y >= border) & (y < ny - border) & (x >= border) & (x < nx - border)
    return y[keep], x[keep]


def centroid(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 first-moment centroids around integer peaks (falls back to the peak)."""
    cy = np.asarray(y, dtype=np.float64).copy()
    cx = np.asarray(x, dtype=np.float64).copy()
    offs = np.array([-1, 0, 1])
    for i, (yi, xi) in enumerate(zip(y, x)):
        stamp = np.clip(image[yi - 1 : yi + 2, xi - 1 : xi + 2].astype(np.float64), 0.0, None)
        total = stamp.sum()
        if total > 0:
            cy[i] = yi + (stamp.sum(axis=1) * offs).sum() / total
            cx[i] = xi + (stamp.sum(axis=0) * offs).sum() / total
    return cy, cx


def box_flux(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, half: int, noise: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sum in a (2*half+1)^2 box centred on the nearest pixel; error from per-pixel ``noise``.

    Boxes that leave the image or touch non-finite pixels give NaN.
    """
    ny, nx = image.shape
    flux = np.full(len(x), np.nan)
    err = np.full(len(x), np.nan)
    for i, (xi, yi) in enumerate(zip(np.rint(x).astype(int), np.rint(y).astype(int))):
        y0, y1, x0, x1 = yi - half, yi + half + 1, xi - half, xi + half + 1
        if y0 < 0 or x0 < 0 or y1 > ny or x1 > nx:
            continue
        stamp = image[y0:y1, x0:x1]
        if not np.all(np.isfinite(stamp)):
            continue
        flux[i] = float(stamp.sum(dtype=np.float64))
        n2 = (
            noise[y0:y1, x0:x1] ** 2
            if isinstance(noise, np.ndarray)
            else np.full(stamp.shape, float(noise) ** 2)
        )
        err[i] = float(np.sqrt(n2.sum()))
    return flux, err


def match_nearest(
    x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray, radius: float
) -> np.ndarray:
    """For each point of set 1 the index of the nearest point of set 2 within ``radius``, else -1."""
    out = np.full(len(x1), -1, dtype=np.int64)
    if len(x1) == 0 or len(x2) == 0:
        return out
    d2 = (np.asarray(x1)[:, None] - np.asarray(x2)[None, :]) ** 2 + (
        np.asarray(y1)[:, None] - np.asarray(y2)[None, :]
    ) ** 2
    best = np.argmin(d2, axis=1)
    ok = d2[np.arange(len(x1)), best] <= radius**2
    out[ok] = best[ok]
    return out


def bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear interpolation at (x, y); NaN outside the image."""
    ny, nx = image.shape
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    inside = (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
    x0 = np.clip(np.floor(x).astype(int), 0, nx - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, ny - 2)
    fx, fy = x - x0, y - y0
    img = image.astype(np.float64)
    val = (
        img[y0, x0] * (1 - fx) * (1 - fy)
        + img[y0, x0 + 1] * fx * (1 - fy)
        + img[y0 + 1, x0] * (1 - fx) * fy
        + img[y0 + 1, x0 + 1] * fx * fy
    )
    return np.where(inside, val, np.nan)


def counts_to_njy(zero_point: float) -> float:
    """Multiplier from instrumental counts to nJy for a visit with AB zero point ``zero_point``."""
    return float(10.0 ** (0.4 * (NJY_ZEROPOINT - zero_point)))


def njy_to_mag(flux: np.ndarray) -> np.ndarray:
    """AB magnitude of fluxes in nJy (NaN for non-positive flux)."""
    f = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, NJY_ZEROPOINT - 2.5 * np.log10(f), np.nan)
