"""Small synthetic layouts shared by the campaign planner tests (imported as ``layouts``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from multisite_drp.campaign import synthetic
from multisite_drp.campaign.spatial import SpatialInputs

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "include" / "campaigns" / "minidrp_embedded.yaml"


def small_visits(n: int, seed: int, ra: tuple[float, float], dec: tuple[float, float]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "visit": np.arange(1000, 1000 + n, dtype=np.int64),
        "ra": rng.uniform(*ra, n), "dec": rng.uniform(*dec, n), "rot": rng.uniform(0, 360, n),
        "band": rng.choice(synthetic.BANDS, n),
    }


SMALL_FP = synthetic.focal_plane(n_side=5, det_size=0.2, pitch=0.21, corner_block=1)  # 21 detectors


def small_inputs(seed: int = 0, n_visits: int = 80, nx: int = 6, ny: int = 5) -> SpatialInputs:
    sky = synthetic.grid_skymap(10.0, -3.0, nx, ny, size=1.0)
    vis = small_visits(n_visits, seed, (10.4, 10.0 + nx - 0.4), (-2.6, -3.0 + ny - 0.4))
    return synthetic.synthetic_survey(n_visits, skymap=sky, fp=SMALL_FP, visits=vis, detectors=True)


