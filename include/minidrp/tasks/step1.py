"""Step 1 (sharded by visit): instrument signature removal and single-frame calibration.

Mirrors DRP's isr + calibrateImage: ``isr`` runs per (exposure, detector),
``calibrate`` per (visit, detector) and joins exposures to visits through
visit_definition, exactly as LSSTCam processing does. Calibrate starts from the
nominal pointing (the visit region recorded in the registry) and fits the
pointing error by matching detected stars to the reference catalogue.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.table import Table
from lsst.daf.butler import DataCoordinate
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
from ._algorithms import box_flux, centroid, find_peaks, match_nearest, robust_stats
from ._faults import raise_if_injected


class IsrConnections(PipelineTaskConnections, dimensions=("instrument", "exposure", "detector")):
    """raw + bias + flat -> postIsr."""

    raw = cT.Input(
        doc="Raw image.",
        name="raw",
        storageClass="NumpyArray",
        dimensions=("instrument", "exposure", "detector"),
    )
    bias = cT.PrerequisiteInput(
        doc="Bias frame (plain dataset in a RUN collection, no validity ranges).",
        name="bias",
        storageClass="NumpyArray",
        dimensions=("instrument", "detector"),
    )
    flat = cT.PrerequisiteInput(
        doc="Flat field for this detector and filter.",
        name="flat",
        storageClass="NumpyArray",
        dimensions=("instrument", "detector", "physical_filter"),
    )
    postIsr = cT.Output(
        doc="Bias-subtracted, flat-fielded image.",
        name="postIsr",
        storageClass="NumpyArray",
        dimensions=("instrument", "exposure", "detector"),
    )


class IsrConfig(PipelineTaskConfig, pipelineConnections=IsrConnections):
    """No options: ISR here is (raw - bias) / flat."""


class IsrTask(PipelineTask):
    """Remove the bias and divide by the flat."""

    ConfigClass = IsrConfig
    _DefaultName = "isr"

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        """The base class's runQuantum, after the test bed's fault check (``MINIDRP_FAIL_QUANTA``)."""
        raise_if_injected(self, butlerQC.quantum.dataId)
        super().runQuantum(butlerQC, inputRefs, outputRefs)

    def run(self, raw: np.ndarray, bias: np.ndarray, flat: np.ndarray) -> Struct:
        """Return ``postIsr = (raw - bias) / flat`` as float32."""
        post = (raw.astype(np.float64) - bias) / flat
        return Struct(postIsr=post.astype(np.float32))


class CalibrateConnections(PipelineTaskConnections, dimensions=("instrument", "visit", "detector")):
    """postIsr (all exposures of the visit) + refcat -> pvi + src + pviSummary.

    Parquet does not keep astropy table ``meta`` (daf_butler strips it), so
    the per-detector calibration state is its own small dataset, as in DRP.
    """

    postIsr = cT.Input(
        doc="ISR-corrected exposures of this visit (one for MiniCam).",
        name="postIsr",
        storageClass="NumpyArray",
        dimensions=("instrument", "exposure", "detector"),
        multiple=True,
    )
    refcat = cT.PrerequisiteInput(
        doc="Reference catalogue (one global dataset).",
        name="refcat",
        storageClass="ArrowAstropy",
        dimensions=(),
    )
    pvi = cT.Output(
        doc="Processed visit image: background-subtracted counts.",
        name="pvi",
        storageClass="NumpyArray",
        dimensions=("instrument", "visit", "detector"),
    )
    src = cT.Output(
        doc="Single-frame source catalogue with fitted astrometry and reference matches.",
        name="src",
        storageClass="ArrowAstropy",
        dimensions=("instrument", "visit", "detector"),
    )
    pviSummary = cT.Output(
        doc="Calibration state of the detector: fitted WCS, background, noise, match count.",
        name="pviSummary",
        storageClass="StructuredDataDict",
        dimensions=("instrument", "visit", "detector"),
    )


class CalibrateConfig(PipelineTaskConfig, pipelineConnections=CalibrateConnections):
    """Detection and matching thresholds."""

    threshold = Field[float](doc="Detection threshold in units of the background noise.", default=5.0)
    match_radius = Field[float](doc="Reference match radius, pixels.", default=1.5)
    aperture_half = Field[int](doc="Half-size of the photometry box, pixels.", default=2)


class CalibrateTask(PipelineTask):
    """Subtract the background, detect and measure stars, fit the pointing against the refcat."""

    ConfigClass = CalibrateConfig
    _DefaultName = "calibrate"
    config: CalibrateConfig

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        """Read inputs, take the nominal pointing and band from the quantum's data ID, write outputs."""
        data_id = butlerQC.quantum.dataId
        assert data_id is not None
        raise_if_injected(self, data_id)
        inputs = butlerQC.get(inputRefs)
        outputs = self.run(
            postIsr=inputs["postIsr"],
            refcat=inputs["refcat"],
            boresight=nominal_boresight(data_id),
            visit=int(data_id["visit"]),
            detector=int(data_id["detector"]),
            band=str(data_id["band"]),
        )
        butlerQC.put(outputs, outputRefs)

    def run(
        self,
        postIsr: list[np.ndarray],
        refcat: Table,
        boresight: tuple[float, float],
        visit: int,
        detector: int,
        band: str,
    ) -> Struct:
        """Return ``pvi`` (image), ``src`` (catalogue) and ``pviSummary`` (fitted WCS, background, noise)."""
        image = np.sum([np.asarray(im, dtype=np.float64) for im in postIsr], axis=0)
        bg, noise = robust_stats(image)
        image = image - bg
        py, px = find_peaks(image, self.config.threshold * noise)
        cy, cx = centroid(image, py, px)
        flux, flux_err = box_flux(image, cx, cy, self.config.aperture_half, noise)
        flux_err = np.sqrt(flux_err**2 + np.clip(np.nan_to_num(flux), 0, None))

        wcs = LinearWcs.for_detector(boresight[0], boresight[1], detector)
        ref_ra, ref_dec = np.asarray(refcat["ra"]), np.asarray(refcat["dec"])
        rx, ry = wcs.sky_to_pixel(ref_ra, ref_dec)
        near = (rx > -5) & (rx < image.shape[1] + 5) & (ry > -5) & (ry < image.shape[0] + 5)
        ref_idx = np.nonzero(near)[0]
        shift = np.zeros(2)
        match = np.full(len(cx), -1, dtype=np.int64)
        for radius in (3.0 * self.config.match_radius, self.config.match_radius):
            match = match_nearest(cx - shift[0], cy - shift[1], rx[ref_idx], ry[ref_idx], radius)
            ok = match >= 0
            if ok.sum() >= 3:
                shift = np.array(
                    [np.median(cx[ok] - rx[ref_idx][match[ok]]), np.median(cy[ok] - ry[ref_idx][match[ok]])]
                )
        # A source at pixel x sits where the nominal WCS puts x - shift: move the boresight accordingly.
        fitted = LinearWcs.for_detector(
            wcs.ra0 - shift[0] * wcs.scale / wcs.cosdec, wcs.dec0 - shift[1] * wcs.scale, detector
        )
        ra, dec = fitted.pixel_to_sky(cx, cy)
        matched = match >= 0
        ref_rows = ref_idx[match[matched]]
        ref_id = np.full(len(cx), -1, dtype=np.int64)
        ref_id[matched] = np.asarray(refcat["id"])[ref_rows]
        ref_mag = np.full(len(cx), np.nan)
        ref_mag[matched] = np.asarray(refcat[f"{band}_mag"], dtype=np.float64)[ref_rows]
        src = Table(
            {
                "id": (np.int64(visit) * 10 + detector) * 100000 + np.arange(len(cx), dtype=np.int64),
                "visit": np.full(len(cx), visit, dtype=np.int64),
                "detector": np.full(len(cx), detector, dtype=np.int32),
                "band": np.full(len(cx), band, dtype="U1"),
                "x": cx,
                "y": cy,
                "ra": ra,
                "dec": dec,
                "inst_flux": flux,
                "inst_flux_err": flux_err,
                "ref_id": ref_id,
                "ref_mag": ref_mag,
            }
        )
        summary = {
            "visit": visit,
            "detector": detector,
            "band": band,
            "wcs": fitted.to_dict(),
            "background": float(bg),
            "noise": float(noise),
            "n_src": len(src),
            "n_matched": int(matched.sum()),
            "shift_x": float(shift[0]),
            "shift_y": float(shift[1]),
        }
        self.log.info(
            "visit %d detector %d: %d sources, %d matched, shift %.3f,%.3f px",
            visit,
            detector,
            len(src),
            matched.sum(),
            *shift,
        )
        return Struct(pvi=image.astype(np.float32), src=src, pviSummary=summary)


def nominal_boresight(data_id: DataCoordinate) -> tuple[float, float]:
    """Nominal pointing (ra, dec) in degrees: the centre of the visit region in the registry.

    MiniCam has no raw headers (raws are bare arrays), so the expanded quantum
    data ID's visit record is where the pointing comes from.
    """
    record: Any = data_id.records["visit"]
    if record is None or record.region is None:
        raise RuntimeError(f"Quantum data ID {data_id} carries no visit region; cannot start astrometry.")
    center = record.region.getBoundingBox().getCenter()
    return float(center.getLon().asDegrees()), float(center.getLat().asDegrees())


__all__ = ["CalibrateConfig", "CalibrateTask", "IsrConfig", "IsrTask", "nominal_boresight"]
