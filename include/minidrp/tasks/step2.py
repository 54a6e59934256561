"""Step 2 (sharded by visit): per-visit source table and visit summary.

Like DRP's consolidateSourceTable + consolidateVisitSummary: the per-detector
catalogues are gathered into one table per visit, and the per-detector
calibration state (fitted WCS, background, noise, match counts) into a
visitSummary that later steps (coadd, forced photometry) use instead of
re-reading every src catalogue.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.table import Table, vstack
from lsst.pipe.base import (
    InputQuantizedConnection,
    OutputQuantizedConnection,
    PipelineTask,
    PipelineTaskConfig,
    PipelineTaskConnections,
    QuantumContext,
    Struct,
)
from lsst.pipe.base import connectionTypes as cT


class ConsolidateVisitConnections(PipelineTaskConnections, dimensions=("instrument", "visit")):
    """src + pviSummary (all detectors) -> sourceTable_visit + visitSummary."""

    src = cT.Input(
        doc="Per-detector source catalogues.",
        name="src",
        storageClass="ArrowAstropy",
        dimensions=("instrument", "visit", "detector"),
        multiple=True,
    )
    pviSummary = cT.Input(
        doc="Per-detector calibration state.",
        name="pviSummary",
        storageClass="StructuredDataDict",
        dimensions=("instrument", "visit", "detector"),
        multiple=True,
    )
    sourceTable_visit = cT.Output(
        doc="All sources of the visit.",
        name="sourceTable_visit",
        storageClass="ArrowAstropy",
        dimensions=("instrument", "visit"),
    )
    visitSummary = cT.Output(
        doc="One row per detector: fitted WCS, background, noise, counts.",
        name="visitSummary",
        storageClass="ArrowAstropy",
        dimensions=("instrument", "visit"),
    )


class ConsolidateVisitConfig(PipelineTaskConfig, pipelineConnections=ConsolidateVisitConnections):
    """No options."""


class ConsolidateVisitTask(PipelineTask):
    """Stack src catalogues and summarise each detector's calibration."""

    ConfigClass = ConsolidateVisitConfig
    _DefaultName = "consolidateVisit"

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        """Read inputs in detector order so outputs never depend on input order."""
        key = lambda ref: int(ref.dataId["detector"])
        src = [butlerQC.get(ref) for ref in sorted(inputRefs.src, key=key)]
        summaries = [butlerQC.get(ref) for ref in sorted(inputRefs.pviSummary, key=key)]
        butlerQC.put(self.run(src, summaries), outputRefs)

    def run(self, src: list[Table], pviSummary: list[dict[str, Any]]) -> Struct:
        """Return ``sourceTable_visit`` and ``visitSummary`` (rows in detector order)."""
        rows = []
        for cat, summ in zip(src, pviSummary):
            wcs = summ["wcs"]
            good = np.isfinite(cat["inst_flux"]) & (cat["inst_flux"] > 0) & (cat["ref_id"] >= 0)
            local_zp = (
                float(np.median(cat["ref_mag"][good] + 2.5 * np.log10(cat["inst_flux"][good])))
                if good.any()
                else np.nan
            )
            rows.append(
                {
                    "visit": int(summ["visit"]),
                    "detector": int(summ["detector"]),
                    "band": str(summ["band"]),
                    "ra0": wcs["ra0"],
                    "dec0": wcs["dec0"],
                    "u0": wcs["u0"],
                    "v0": wcs["v0"],
                    "scale": wcs["scale"],
                    "background": float(summ["background"]),
                    "noise": float(summ["noise"]),
                    "n_src": int(summ["n_src"]),
                    "n_matched": int(summ["n_matched"]),
                    "local_zp": local_zp,
                }
            )
        table = vstack([Table(c, copy=True) for c in src], metadata_conflicts="silent")
        table.meta.clear()
        summary = Table(rows=rows)
        self.log.info(
            "visit %s: %d sources on %d detectors", rows[0]["visit"] if rows else "?", len(table), len(rows)
        )
        return Struct(sourceTable_visit=table, visitSummary=summary)
