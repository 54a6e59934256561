"""Step 9 (global, hub only): survey-wide summary of objects and forced sources.

Needs every visit's forced-source table and every tract's object table in one
place, so it runs at the hub after all sites have shipped their outputs back.
One row per band: object and forced-source counts, the median offset between
forced (per-visit) and coadd magnitudes, and the photometric repeatability.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table, vstack
from lsst.pipe.base import PipelineTask, PipelineTaskConfig, PipelineTaskConnections, Struct
from lsst.pipe.base import connectionTypes as cT

from ._algorithms import njy_to_mag


class SurveySummaryConnections(PipelineTaskConnections, dimensions=("instrument", "skymap")):
    """All forcedSourceTable_visit + all objectTable_tract -> surveySummary."""

    forcedSourceTable_visit = cT.Input(
        doc="Every visit's forced sources.",
        name="forcedSourceTable_visit",
        storageClass="ArrowAstropy",
        dimensions=("instrument", "visit"),
        multiple=True,
    )
    objectTable_tract = cT.Input(
        doc="Every tract's objects.",
        name="objectTable_tract",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract"),
        multiple=True,
    )
    surveySummary = cT.Output(
        doc="Per-band survey metrics.",
        name="surveySummary",
        storageClass="ArrowAstropy",
        dimensions=("instrument", "skymap"),
    )


class SurveySummaryConfig(PipelineTaskConfig, pipelineConnections=SurveySummaryConnections):
    """No options."""


class SurveySummaryTask(PipelineTask):
    """Compute per-band metrics over the whole survey."""

    ConfigClass = SurveySummaryConfig
    _DefaultName = "surveySummary"

    def run(self, forcedSourceTable_visit: list[Table], objectTable_tract: list[Table]) -> Struct:
        """Return ``surveySummary``."""
        forced = vstack([Table(t, copy=True) for t in forcedSourceTable_visit], metadata_conflicts="silent")
        objects = vstack([Table(t, copy=True) for t in objectTable_tract], metadata_conflicts="silent")
        objects.sort("id")
        rows = []
        for band in ("g", "r", "i"):
            fb = forced[forced["band"] == band]
            fb = fb[np.isfinite(fb["flux"]) & (fb["flux"] > 5 * fb["flux_err"])]
            idx = np.searchsorted(np.asarray(objects["id"]), np.asarray(fb["objectId"]))
            coadd_mag = (
                np.asarray(objects[f"{band}_mag"])[np.clip(idx, 0, max(len(objects) - 1, 0))]
                if len(objects)
                else np.zeros(0)
            )
            dmag = njy_to_mag(np.asarray(fb["flux"])) - coadd_mag
            good = np.isfinite(dmag)
            ids, inv, counts = np.unique(
                np.asarray(fb["objectId"])[good], return_inverse=True, return_counts=True
            )
            dm = dmag[good]
            mean = (
                np.bincount(inv, weights=dm, minlength=len(ids)) / np.maximum(counts, 1)
                if len(ids)
                else np.zeros(0)
            )
            resid = dm - mean[inv] if len(ids) else np.zeros(0)
            repeated = counts[inv] > 1 if len(ids) else np.zeros(0, dtype=bool)
            rows.append(
                {
                    "band": band,
                    "n_objects": int(np.isfinite(np.asarray(objects[f"{band}_mag"])).sum())
                    if len(objects)
                    else 0,
                    "n_visits": len(np.unique(np.asarray(forced["visit"][forced["band"] == band]))),
                    "n_forced": int((forced["band"] == band).sum()),
                    "n_forced_snr5": len(fb),
                    "median_dmag": float(np.median(dm)) if good.any() else float("nan"),
                    "repeatability_mmag": float(1000 * 1.4826 * np.median(np.abs(resid[repeated])))
                    if repeated.any()
                    else float("nan"),
                }
            )
        summary = Table(rows=rows)
        self.log.info("survey summary:\n%s", summary)
        return Struct(surveySummary=summary)
