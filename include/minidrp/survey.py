"""The MiniCam survey: 30 seeded visits over ``minisky`` in three bands.

Each band is a 4x2 grid of pointings spaced 1.4 degrees in RA (the field of
view is 1.6 degrees) plus two random pointings, all jittered from the seed.
Visits are therefore wider than a tract and straddle tract boundaries, so once
tracts are split among three sites by RA, PVIs and object tables must cross
sites -- the data movement the orchestrator has to plan.

The survey is the single source of truth for exposure/visit dimension records
and for the simulator's "true" pointing and transparency of each visit.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.time import Time, TimeDelta
from lsst.daf.butler import Timespan

from .constants import DEFAULT_SEED, INSTRUMENT_NAME
from .instrument import (
    DETECTOR_IDS,
    EXPOSURE_TIME,
    PHYSICAL_FILTERS,
    detector_polygon,
    visit_polygon,
)

N_GRID_RA: int = 4
N_GRID_DEC: int = 2
GRID_RA: tuple[float, ...] = (11.0, 12.4, 13.8, 15.2)
GRID_DEC: tuple[float, ...] = (-0.45, 0.45)
EXTRA_PER_BAND: int = 2
JITTER_DEG: float = 0.12
#: Pointing error (truth minus nominal), arcsec: what calibrate's astrometric fit recovers.
POINTING_ERROR_ARCSEC: float = 4.0
FIRST_NIGHT = datetime.date(2024, 6, 1)
VISITS_PER_NIGHT: int = 6


@dataclass(frozen=True)
class Visit:
    """One visit (= one exposure) of the survey."""

    id: int
    day_obs: int
    seq_num: int
    physical_filter: str
    band: str
    ra: float
    dec: float
    true_ra: float
    true_dec: float
    #: Extinction in magnitudes (>= 0): what global calibration solves for.
    extinction: float
    start: Time

    @property
    def obs_id(self) -> str:
        """The observation id recorded on the exposure."""
        return f"MC_O_{self.day_obs}_{self.seq_num:06d}"

    @property
    def group(self) -> str:
        """The acquisition group name (one exposure per group here)."""
        return f"{self.day_obs}-{self.seq_num:04d}"

    @property
    def timespan(self) -> Timespan:
        """Shutter-open interval."""
        return Timespan(self.start, self.start + TimeDelta(EXPOSURE_TIME, format="sec"))


def make_survey(seed: int = DEFAULT_SEED) -> list[Visit]:
    """Return the deterministic list of visits for ``seed`` (sorted by id)."""
    rng = np.random.default_rng(seed)
    pointings: list[tuple[str, float, float]] = []
    for pf in PHYSICAL_FILTERS:
        for dec in GRID_DEC:
            for ra in GRID_RA:
                pointings.append(
                    (
                        pf,
                        ra + rng.uniform(-JITTER_DEG, JITTER_DEG),
                        dec + rng.uniform(-JITTER_DEG, JITTER_DEG),
                    )
                )
        for _ in range(EXTRA_PER_BAND):
            pointings.append(
                (pf, rng.uniform(GRID_RA[0], GRID_RA[-1]), rng.uniform(GRID_DEC[0], GRID_DEC[-1]))
            )
    order = rng.permutation(len(pointings))
    visits = []
    for n, idx in enumerate(order):
        pf, ra, dec = pointings[idx]
        night = FIRST_NIGHT + datetime.timedelta(days=n // VISITS_PER_NIGHT)
        day_obs = int(night.strftime("%Y%m%d"))
        seq = n % VISITS_PER_NIGHT + 1
        err = rng.normal(0.0, POINTING_ERROR_ARCSEC / 3600.0, size=2)
        start = Time(f"{night.isoformat()}T03:00:00", scale="tai") + TimeDelta(seq * 120.0, format="sec")
        visits.append(
            Visit(
                id=(day_obs % 1000000) * 1000 + seq,
                day_obs=day_obs,
                seq_num=seq,
                physical_filter=pf,
                band=PHYSICAL_FILTERS[pf],
                ra=round(float(ra), 6),
                dec=round(float(dec), 6),
                true_ra=round(float(ra + err[0] / math.cos(math.radians(dec))), 8),
                true_dec=round(float(dec + err[1]), 8),
                extinction=round(float(rng.uniform(0.0, 0.2)), 4),
                start=start,
            )
        )
    return sorted(visits, key=lambda v: v.id)


def visit_records(visits: list[Visit]) -> dict[str, list[dict[str, Any]]]:
    """Dimension records for the observations: day_obs, group, exposure, visit, visit_definition, visit_detector_region.

    Inserted in this order (dependencies first). One exposure per visit with
    the same id, as for single-snap LSSTCam visits.
    """
    days = sorted({v.day_obs for v in visits})
    recs: dict[str, list[dict[str, Any]]] = {
        "day_obs": [{"instrument": INSTRUMENT_NAME, "id": d, "timespan": None} for d in days],
        "group": [{"instrument": INSTRUMENT_NAME, "name": v.group} for v in visits],
        "exposure": [],
        "visit": [],
        "visit_definition": [],
        "visit_detector_region": [],
    }
    for v in visits:
        recs["exposure"].append(
            {
                "instrument": INSTRUMENT_NAME,
                "id": v.id,
                "day_obs": v.day_obs,
                "group": v.group,
                "physical_filter": v.physical_filter,
                "obs_id": v.obs_id,
                "exposure_time": EXPOSURE_TIME,
                "dark_time": EXPOSURE_TIME,
                "observation_type": "science",
                "observation_reason": "science",
                "seq_num": v.seq_num,
                "seq_start": v.seq_num,
                "seq_end": v.seq_num,
                "target_name": "minisky",
                "science_program": "minidrp",
                "tracking_ra": v.ra,
                "tracking_dec": v.dec,
                "sky_angle": 0.0,
                "azimuth": 0.0,
                "zenith_angle": 30.0,
                "has_simulated": True,
                "can_see_sky": True,
                "timespan": v.timespan,
            }
        )
        recs["visit"].append(
            {
                "instrument": INSTRUMENT_NAME,
                "id": v.id,
                "name": v.obs_id,
                "day_obs": v.day_obs,
                "physical_filter": v.physical_filter,
                "seq_num": v.seq_num,
                "exposure_time": EXPOSURE_TIME,
                "target_name": "minisky",
                "observation_reason": "science",
                "science_program": "minidrp",
                "azimuth": 0.0,
                "zenith_angle": 30.0,
                "region": visit_polygon(v.ra, v.dec),
                "timespan": v.timespan,
            }
        )
        recs["visit_definition"].append({"instrument": INSTRUMENT_NAME, "exposure": v.id, "visit": v.id})
        for det in DETECTOR_IDS:
            recs["visit_detector_region"].append(
                {
                    "instrument": INSTRUMENT_NAME,
                    "visit": v.id,
                    "detector": det,
                    "region": detector_polygon(v.ra, v.dec, det),
                }
            )
    return recs
