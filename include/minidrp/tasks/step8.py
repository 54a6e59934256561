"""Step 8 (sharded by visit): per-visit forced-source tables.

Gathers the per-detector forced photometry of a visit into one table, the
unit that is shipped back to the hub for the final global step.
"""

from __future__ import annotations

from astropy.table import Table, vstack
from lsst.pipe.base import PipelineTask, PipelineTaskConfig, PipelineTaskConnections, Struct
from lsst.pipe.base import connectionTypes as cT


class ForcedSourceTableConnections(PipelineTaskConnections, dimensions=("instrument", "visit")):
    """forcedSource (all detectors) -> forcedSourceTable_visit."""

    forcedSource = cT.Input(
        doc="Per-detector forced photometry.",
        name="forcedSource",
        storageClass="ArrowAstropy",
        dimensions=("instrument", "visit", "detector"),
        multiple=True,
    )
    forcedSourceTable_visit = cT.Output(
        doc="Forced photometry of the whole visit.",
        name="forcedSourceTable_visit",
        storageClass="ArrowAstropy",
        dimensions=("instrument", "visit"),
    )


class ForcedSourceTableConfig(PipelineTaskConfig, pipelineConnections=ForcedSourceTableConnections):
    """No options."""


class ForcedSourceTableTask(PipelineTask):
    """Stack and sort by (detector, objectId)."""

    ConfigClass = ForcedSourceTableConfig
    _DefaultName = "forcedSourceTable"

    def run(self, forcedSource: list[Table]) -> Struct:
        """Return ``forcedSourceTable_visit``."""
        table = vstack([Table(t, copy=True) for t in forcedSource], metadata_conflicts="silent")
        if len(table):
            table.sort(["detector", "objectId"])
        table.meta.clear()
        return Struct(forcedSourceTable_visit=table)
