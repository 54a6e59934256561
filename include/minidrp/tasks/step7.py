"""Step 7 (sharded by visit): forced photometry of objects on PVIs.

A (visit, detector) quantum needs ``objectTable_tract`` for every tract its
detector overlaps (the registry's spatial join of visit_detector_region with
tract), so a site processing a visit needs object tables produced by the sites
owning the neighbouring tracts. Fluxes are measured in a fixed box at each
object's position (fitted WCS from the visitSummary) and calibrated with the
visit's global zero point.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from astropy.table import Table, vstack
from lsst.pex.config import Field
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

from ..instrument import LinearWcs
from ._algorithms import box_flux, counts_to_njy


class ForcedPhotConnections(PipelineTaskConnections, dimensions=("instrument", "visit", "detector")):
    """pvi + visitSummary + zeroPoint + objectTable_tract (overlapping tracts) -> forcedSource."""

    pvi = cT.Input(
        doc="Processed visit image.",
        name="pvi",
        storageClass="NumpyArray",
        dimensions=("instrument", "visit", "detector"),
    )
    visitSummary = cT.Input(
        doc="Fitted WCS and noise.",
        name="visitSummary",
        storageClass="ArrowAstropy",
        dimensions=("instrument", "visit"),
    )
    zeroPoint = cT.Input(
        doc="Global zero point of the visit.",
        name="zeroPoint",
        storageClass="StructuredDataDict",
        dimensions=("instrument", "visit"),
    )
    objectTable_tract = cT.Input(
        doc="Object tables of every tract the detector overlaps.",
        name="objectTable_tract",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract"),
        multiple=True,
    )
    forcedSource = cT.Output(
        doc="Forced fluxes (nJy) of objects on this detector.",
        name="forcedSource",
        storageClass="ArrowAstropy",
        dimensions=("instrument", "visit", "detector"),
    )


class ForcedPhotConfig(PipelineTaskConfig, pipelineConnections=ForcedPhotConnections):
    """Aperture size."""

    aperture_half = Field[int](doc="Half-size of the photometry box, pixels.", default=2)


class ForcedPhotTask(PipelineTask):
    """Box photometry at known object positions."""

    ConfigClass = ForcedPhotConfig
    _DefaultName = "forcedPhot"
    config: ForcedPhotConfig

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        """Order object tables by tract so results never depend on input order."""
        data_id = butlerQC.quantum.dataId
        assert data_id is not None
        objects = [
            butlerQC.get(ref)
            for ref in sorted(inputRefs.objectTable_tract, key=lambda r: int(r.dataId["tract"]))
        ]
        result = self.run(
            butlerQC.get(inputRefs.pvi),
            butlerQC.get(inputRefs.visitSummary),
            butlerQC.get(inputRefs.zeroPoint),
            objects,
            int(data_id["visit"]),
            int(data_id["detector"]),
            str(data_id["band"]),
        )
        butlerQC.put(result, outputRefs)

    def run(
        self,
        pvi: np.ndarray,
        visitSummary: Table,
        zeroPoint: dict[str, Any],
        objectTables: list[Table],
        visit: int,
        detector: int,
        band: str,
    ) -> Struct:
        """Return ``forcedSource``."""
        row = visitSummary[visitSummary["detector"] == detector]
        wcs = LinearWcs(
            float(row["ra0"][0]),
            float(row["dec0"][0]),
            float(row["u0"][0]),
            float(row["v0"][0]),
            float(row["scale"][0]),
        )
        objects = (
            vstack([Table(t, copy=True) for t in objectTables], metadata_conflicts="silent")
            if objectTables
            else Table()
        )
        if len(objects) == 0:
            objects = Table(
                {
                    "id": np.zeros(0, np.int64),
                    "tract": np.zeros(0, np.int32),
                    "ra": np.zeros(0),
                    "dec": np.zeros(0),
                }
            )
        x, y = wcs.sky_to_pixel(np.asarray(objects["ra"]), np.asarray(objects["dec"]))
        half = self.config.aperture_half
        inside = (
            (x >= half - 0.5)
            & (x < pvi.shape[1] - half - 0.5)
            & (y >= half - 0.5)
            & (y < pvi.shape[0] - half - 0.5)
        )
        objects, x, y = objects[inside], x[inside], y[inside]
        flux, err = box_flux(pvi, x, y, half, float(row["noise"][0]))
        zp = float(zeroPoint["zero_point"])
        scale = counts_to_njy(zp) if math.isfinite(zp) else float("nan")
        table = Table(
            {
                "objectId": np.asarray(objects["id"], dtype=np.int64),
                "tract": np.asarray(objects["tract"], dtype=np.int32),
                "visit": np.full(len(objects), visit, dtype=np.int64),
                "detector": np.full(len(objects), detector, dtype=np.int32),
                "band": np.full(len(objects), band, dtype="U1"),
                "x": x,
                "y": y,
                "flux": flux * scale,
                "flux_err": err * scale,
            }
        )
        self.log.info(
            "visit %d detector %d: %d forced sources from %d tracts",
            visit,
            detector,
            len(table),
            len(objectTables),
        )
        return Struct(forcedSource=table)
