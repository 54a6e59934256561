"""Step 5 (sharded by tract): detection per band, then multi-band measurement per patch.

DRP detects on each band's coadd, merges the detections across bands and
measures every merged object in every band; here ``detectCoadd`` runs per
(tract, patch, band) and ``measureCoadd`` per (tract, patch) does the merge and
the forced-position measurement. Objects are flagged primary if their centroid
lies inside the patch's inner box, so each sky position has one owner.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.table import Table
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

from ..skymap import patch_geometry
from ._algorithms import box_flux, centroid, find_peaks, njy_to_mag

BANDS_ORDER = ("g", "r", "i")


class DetectCoaddConnections(PipelineTaskConnections, dimensions=("skymap", "tract", "patch", "band")):
    """deepCoadd -> deepCoadd_det."""

    deepCoadd = cT.Input(
        doc="Coadd image and inverse variance.",
        name="deepCoadd",
        storageClass="NumpyArray",
        dimensions=("skymap", "tract", "patch", "band"),
    )
    skyMap = cT.PrerequisiteInput(
        doc="Skymap definition.", name="skyMap", storageClass="StructuredDataDict", dimensions=("skymap",)
    )
    deepCoadd_det = cT.Output(
        doc="Peaks above threshold.",
        name="deepCoadd_det",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract", "patch", "band"),
    )


class DetectCoaddConfig(PipelineTaskConfig, pipelineConnections=DetectCoaddConnections):
    """Detection threshold."""

    threshold = Field[float](doc="Peak S/N threshold (per pixel).", default=5.0)


class DetectCoaddTask(PipelineTask):
    """Find local maxima above ``threshold`` sigma on one band's coadd."""

    ConfigClass = DetectCoaddConfig
    _DefaultName = "detectCoadd"
    config: DetectCoaddConfig

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        """Pass the patch and band along from the quantum data ID."""
        inputs = butlerQC.get(inputRefs)
        data_id = butlerQC.quantum.dataId
        assert data_id is not None
        butlerQC.put(
            self.run(
                inputs["deepCoadd"],
                inputs["skyMap"],
                int(data_id["tract"]),
                int(data_id["patch"]),
                str(data_id["band"]),
            ),
            outputRefs,
        )

    def run(self, deepCoadd: np.ndarray, skyMap: dict[str, Any], tract: int, patch: int, band: str) -> Struct:
        """Return ``deepCoadd_det``: one row per peak."""
        image, ivar = deepCoadd[0].astype(np.float64), deepCoadd[1].astype(np.float64)
        sigma = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.inf)
        py, px = find_peaks(np.where(ivar > 0, image, np.nan), self.config.threshold * sigma)
        cy, cx = centroid(image, py, px)
        geom = patch_geometry(tract, patch, skyMap)
        ra, dec = geom.pixel_to_sky(cx, cy)
        det = Table(
            {
                "band": np.full(len(cx), band, dtype="U1"),
                "x": cx,
                "y": cy,
                "ra": ra,
                "dec": dec,
                "snr": image[py, px] / sigma[py, px],
            }
        )
        return Struct(deepCoadd_det=det)


class MeasureCoaddConnections(PipelineTaskConnections, dimensions=("skymap", "tract", "patch")):
    """deepCoadd_det + deepCoadd (all bands) -> deepCoadd_obj."""

    deepCoadd_det = cT.Input(
        doc="Per-band peaks.",
        name="deepCoadd_det",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract", "patch", "band"),
        multiple=True,
    )
    deepCoadd = cT.Input(
        doc="Per-band coadds.",
        name="deepCoadd",
        storageClass="NumpyArray",
        dimensions=("skymap", "tract", "patch", "band"),
        multiple=True,
    )
    skyMap = cT.PrerequisiteInput(
        doc="Skymap definition.", name="skyMap", storageClass="StructuredDataDict", dimensions=("skymap",)
    )
    deepCoadd_obj = cT.Output(
        doc="Merged multi-band object catalogue of the patch.",
        name="deepCoadd_obj",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract", "patch"),
    )


class MeasureCoaddConfig(PipelineTaskConfig, pipelineConnections=MeasureCoaddConnections):
    """Merge radius and aperture."""

    merge_radius = Field[float](doc="Peaks closer than this (coadd pixels) are one object.", default=1.5)
    aperture_half = Field[int](doc="Half-size of the photometry box, coadd pixels.", default=2)


class MeasureCoaddTask(PipelineTask):
    """Merge peaks across bands and measure box fluxes in every band."""

    ConfigClass = MeasureCoaddConfig
    _DefaultName = "measureCoadd"
    config: MeasureCoaddConfig

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        """Key the per-band inputs by band."""
        data_id = butlerQC.quantum.dataId
        assert data_id is not None
        dets = {str(ref.dataId["band"]): butlerQC.get(ref) for ref in inputRefs.deepCoadd_det}
        coadds = {str(ref.dataId["band"]): butlerQC.get(ref) for ref in inputRefs.deepCoadd}
        sky_map = butlerQC.get(inputRefs.skyMap)
        butlerQC.put(
            self.run(dets, coadds, sky_map, int(data_id["tract"]), int(data_id["patch"])), outputRefs
        )

    def run(
        self,
        dets: dict[str, Table],
        coadds: dict[str, np.ndarray],
        skyMap: dict[str, Any],
        tract: int,
        patch: int,
    ) -> Struct:
        """Return ``deepCoadd_obj``."""
        geom = patch_geometry(tract, patch, skyMap)
        peaks = [
            (float(s), float(x), float(y))
            for b in sorted(dets)
            for s, x, y in zip(dets[b]["snr"], dets[b]["x"], dets[b]["y"])
        ]
        peaks.sort(key=lambda p: (-p[0], p[1], p[2]))
        xs: list[float] = []
        ys: list[float] = []
        n_bands: list[int] = []
        r2 = self.config.merge_radius**2
        for _, x, y in peaks:
            if xs:
                d2 = (np.asarray(xs) - x) ** 2 + (np.asarray(ys) - y) ** 2
                j = int(np.argmin(d2))
                if d2[j] <= r2:
                    n_bands[j] += 1
                    continue
            xs.append(x)
            ys.append(y)
            n_bands.append(1)
        x_arr, y_arr = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        ra, dec = geom.pixel_to_sky(x_arr, y_arr)
        base = (tract * 100 + patch) * 100000
        table = Table(
            {
                "id": base + np.arange(len(xs), dtype=np.int64),
                "tract": np.full(len(xs), tract, dtype=np.int32),
                "patch": np.full(len(xs), patch, dtype=np.int32),
                "x": x_arr,
                "y": y_arr,
                "ra": ra,
                "dec": dec,
                "n_detect_bands": np.asarray(n_bands, dtype=np.int32),
                "is_primary": geom.contains(ra, dec),
            }
        )
        for band in BANDS_ORDER:
            if band in coadds:
                image, ivar = coadds[band][0].astype(np.float64), coadds[band][1].astype(np.float64)
                noise = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.nan)
                flux, err = box_flux(
                    np.where(ivar > 0, image, np.nan), x_arr, y_arr, self.config.aperture_half, noise
                )
            else:
                flux = err = np.full(len(xs), np.nan)
            table[f"{band}_flux"] = flux
            table[f"{band}_flux_err"] = err
            table[f"{band}_mag"] = njy_to_mag(flux)
        self.log.info("tract %d patch %d: %d objects from %d peaks", tract, patch, len(table), len(peaks))
        return Struct(deepCoadd_obj=table)
