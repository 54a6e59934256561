"""Step 3 (global, hub only): FGCM-like photometric calibration over the whole survey.

One quantum over (instrument) reads every visit's sourceTable_visit. Stars seen
in several visits tie the visits together: the solver alternates between star
magnitudes (mean over visits) and visit zero points (median over stars), then
anchors the whole system to the reference catalogue. This is why the step
cannot be split among sites: every visit's solution depends on every other's.
Outputs one ``zeroPoint`` per visit (a multiple=True output with more
dimensions than the quantum, like FGCM's per-visit photoCalib catalogues) and
one ``fgcmSummary``.
"""

from __future__ import annotations

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


class GlobalPhotoCalibConnections(PipelineTaskConnections, dimensions=("instrument",)):
    """Every sourceTable_visit -> zeroPoint per visit + fgcmSummary."""

    sourceTable_visit = cT.Input(
        doc="Per-visit source tables, all visits.",
        name="sourceTable_visit",
        storageClass="ArrowAstropy",
        dimensions=("instrument", "visit"),
        multiple=True,
    )
    zeroPoint = cT.Output(
        doc="Photometric zero point of a visit (AB mag giving one count).",
        name="zeroPoint",
        storageClass="StructuredDataDict",
        dimensions=("instrument", "visit"),
        multiple=True,
    )
    fgcmSummary = cT.Output(
        doc="Fit statistics of the global calibration.",
        name="fgcmSummary",
        storageClass="StructuredDataDict",
        dimensions=("instrument",),
    )


class GlobalPhotoCalibConfig(PipelineTaskConfig, pipelineConnections=GlobalPhotoCalibConnections):
    """Solver settings."""

    n_iter = Field[int](doc="Alternating-solve iterations.", default=8)
    min_snr = Field[float](doc="Minimum S/N of a star measurement used in the fit.", default=20.0)


class GlobalPhotoCalibTask(PipelineTask):
    """Solve per-visit zero points from repeated stars, anchored to the refcat."""

    ConfigClass = GlobalPhotoCalibConfig
    _DefaultName = "globalPhotoCalib"
    config: GlobalPhotoCalibConfig

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        """Solve, then write one zeroPoint per output ref (matched by visit)."""
        tables = butlerQC.get(inputRefs.sourceTable_visit)
        visits = [int(ref.dataId["visit"]) for ref in inputRefs.sourceTable_visit]
        result = self.run(dict(zip(visits, tables)))
        for ref in outputRefs.zeroPoint:
            butlerQC.put(result.zeroPoints[int(ref.dataId["visit"])], ref)
        butlerQC.put(result.fgcmSummary, outputRefs.fgcmSummary)

    def run(self, tables: dict[int, Table]) -> Struct:
        """Return ``zeroPoints`` (visit -> dict) and ``fgcmSummary`` (dict)."""
        cat = vstack([tables[v] for v in sorted(tables)], metadata_conflicts="silent")
        zero_points: dict[int, dict[str, Any]] = {}
        summary: dict[str, Any] = {"n_visits": len(tables), "bands": {}}
        for band in sorted({str(b) for b in cat["band"]}):
            sel = (
                (cat["band"] == band)
                & (cat["ref_id"] >= 0)
                & np.isfinite(cat["inst_flux"])
                & (cat["inst_flux"] > self.config.min_snr * cat["inst_flux_err"])
            )
            sub = cat[sel]
            visits = np.array(
                sorted(v for v in tables if len(tables[v]) and str(tables[v]["band"][0]) == band),
                dtype=np.int64,
            )
            band_zp, stats = self._solve(sub, visits)
            summary["bands"][band] = stats
            for v in visits:
                zp = band_zp.get(int(v), np.nan)
                n = int((sub["visit"] == v).sum())
                zero_points[int(v)] = {"visit": int(v), "band": band, "zero_point": float(zp), "n_stars": n}
        for v in tables:
            zero_points.setdefault(
                int(v), {"visit": int(v), "band": "", "zero_point": float("nan"), "n_stars": 0}
            )
        return Struct(zeroPoints=zero_points, fgcmSummary=summary)

    def _solve(self, sub: Table, visits: np.ndarray) -> tuple[dict[int, float], dict[str, Any]]:
        """Alternating least-squares-like solve for one band."""
        if len(sub) == 0:
            return {}, {"n_obs": 0}
        inst = -2.5 * np.log10(np.asarray(sub["inst_flux"], dtype=np.float64))
        star_ids, star_idx = np.unique(np.asarray(sub["ref_id"]), return_inverse=True)
        visit_idx = np.searchsorted(visits, np.asarray(sub["visit"]))
        ref_mag = np.asarray(sub["ref_mag"], dtype=np.float64)
        zp = np.array(
            [
                np.median(ref_mag[visit_idx == i] - inst[visit_idx == i])
                if (visit_idx == i).any()
                else np.nan
                for i in range(len(visits))
            ]
        )
        n_star = np.bincount(star_idx, minlength=len(star_ids))
        for _ in range(self.config.n_iter):
            star_mag = np.bincount(star_idx, weights=inst + zp[visit_idx], minlength=len(star_ids)) / n_star
            for i in range(len(visits)):
                m = visit_idx == i
                if m.any():
                    zp[i] = np.median(star_mag[star_idx[m]] - inst[m])
        star_mag = np.bincount(star_idx, weights=inst + zp[visit_idx], minlength=len(star_ids)) / n_star
        star_ref = np.bincount(star_idx, weights=ref_mag, minlength=len(star_ids)) / n_star
        anchor = float(np.median(star_ref - star_mag))
        zp = zp + anchor
        resid = inst + zp[visit_idx] - (star_mag + anchor)[star_idx]
        multi = n_star[star_idx] > 1
        stats = {
            "n_obs": len(sub),
            "n_stars": len(star_ids),
            "n_repeated_stars": int((n_star > 1).sum()),
            "anchor": anchor,
            "repeatability_mmag": float(1000 * 1.4826 * np.median(np.abs(resid[multi])))
            if multi.any()
            else float("nan"),
        }
        return {int(v): float(z) for v, z in zip(visits, zp)}, stats
