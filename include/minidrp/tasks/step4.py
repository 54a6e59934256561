"""Step 4 (sharded by tract): warp and coadd PVIs per (tract, patch, band).

The graph builder finds the inputs by the registry's spatial join of
visit_detector_region with patch -- so a patch near a tract edge pulls PVIs of
visits that other sites processed. That cross-site dependency is the point of
this step. Each PVI is resampled (bilinear) onto the patch's plate-carree grid
with its detector's fitted WCS from the visitSummary, scaled to nJy with the
visit's global zero point, and averaged with inverse-variance weights.

``deepCoadd`` is a NumpyArray of shape (2, N, N): plane 0 the image (nJy per
coadd pixel), plane 1 the inverse variance (0 where no PVI covers the pixel).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from astropy.table import Table
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
from ..skymap import patch_geometry
from ._algorithms import bilinear, counts_to_njy


class MakeCoaddConnections(PipelineTaskConnections, dimensions=("skymap", "tract", "patch", "band")):
    """pvi (overlapping visits) + visitSummary + zeroPoint -> deepCoadd."""

    pvi = cT.Input(
        doc="Processed visit images overlapping the patch.",
        name="pvi",
        storageClass="NumpyArray",
        dimensions=("instrument", "visit", "detector"),
        multiple=True,
    )
    visitSummary = cT.Input(
        doc="Per-detector WCS and noise of each overlapping visit.",
        name="visitSummary",
        storageClass="ArrowAstropy",
        dimensions=("instrument", "visit"),
        multiple=True,
    )
    zeroPoint = cT.Input(
        doc="Global photometric zero point of each overlapping visit.",
        name="zeroPoint",
        storageClass="StructuredDataDict",
        dimensions=("instrument", "visit"),
        multiple=True,
    )
    skyMap = cT.PrerequisiteInput(
        doc="Skymap definition.", name="skyMap", storageClass="StructuredDataDict", dimensions=("skymap",)
    )
    deepCoadd = cT.Output(
        doc="Coadd: (image nJy, inverse variance).",
        name="deepCoadd",
        storageClass="NumpyArray",
        dimensions=("skymap", "tract", "patch", "band"),
    )


class MakeCoaddConfig(PipelineTaskConfig, pipelineConnections=MakeCoaddConnections):
    """No options."""


class MakeCoaddTask(PipelineTask):
    """Inverse-variance weighted mean of resampled, photometrically scaled PVIs."""

    ConfigClass = MakeCoaddConfig
    _DefaultName = "makeCoadd"

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        """Key inputs by visit/detector so their order never matters."""
        data_id = butlerQC.quantum.dataId
        assert data_id is not None
        pvis = {
            (int(ref.dataId["visit"]), int(ref.dataId["detector"])): butlerQC.get(ref)
            for ref in sorted(
                inputRefs.pvi, key=lambda r: (int(r.dataId["visit"]), int(r.dataId["detector"]))
            )
        }
        summaries = {int(ref.dataId["visit"]): butlerQC.get(ref) for ref in inputRefs.visitSummary}
        zps = {int(ref.dataId["visit"]): butlerQC.get(ref) for ref in inputRefs.zeroPoint}
        sky_map = butlerQC.get(inputRefs.skyMap)
        result = self.run(pvis, summaries, zps, sky_map, int(data_id["tract"]), int(data_id["patch"]))
        butlerQC.put(result, outputRefs)

    def run(
        self,
        pvis: dict[tuple[int, int], np.ndarray],
        summaries: dict[int, Table],
        zps: dict[int, dict[str, Any]],
        sky_map: dict[str, Any],
        tract: int,
        patch: int,
    ) -> Struct:
        """Return ``deepCoadd`` for one patch."""
        geom = patch_geometry(tract, patch, sky_map)
        n = geom.pixels
        yy, xx = np.mgrid[0:n, 0:n]
        ra, dec = geom.pixel_to_sky(xx.ravel(), yy.ravel())
        num = np.zeros(n * n)
        wsum = np.zeros(n * n)
        used = 0
        for (visit, detector), image in sorted(pvis.items()):
            zp = zps.get(visit, {}).get("zero_point", float("nan"))
            summary = summaries.get(visit)
            if summary is None or not math.isfinite(zp):
                continue
            row = summary[summary["detector"] == detector]
            if len(row) == 0:
                continue
            wcs = LinearWcs(
                float(row["ra0"][0]),
                float(row["dec0"][0]),
                float(row["u0"][0]),
                float(row["v0"][0]),
                float(row["scale"][0]),
            )
            x, y = wcs.sky_to_pixel(ra, dec)
            values = bilinear(image, x, y)
            ok = np.isfinite(values)
            if not ok.any():
                continue
            # counts per PVI pixel -> nJy per coadd pixel (area ratio of the two pixel grids).
            area = (geom.scale_ra * math.cos(math.radians(wcs.dec0)) * geom.scale_dec) / wcs.scale**2
            scale = counts_to_njy(zp) * area
            var = (float(row["noise"][0]) * scale) ** 2
            num[ok] += values[ok] * scale / var
            wsum[ok] += 1.0 / var
            used += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            image = np.where(wsum > 0, num / wsum, 0.0)
        coadd = np.stack([image.reshape(n, n), wsum.reshape(n, n)]).astype(np.float32)
        self.log.info("tract %d patch %d: %d PVIs contributed", tract, patch, used)
        return Struct(deepCoadd=coadd)
