"""Step 6 (sharded by tract): the per-tract object table.

Like DRP's transformObjectTable/consolidateObjectTable: the primary objects of
every patch of a tract become one ``objectTable_tract``. Forced photometry in
step 7 needs these tables from every tract a visit touches -- including tracts
owned by other sites.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table, vstack
from lsst.pipe.base import PipelineTask, PipelineTaskConfig, PipelineTaskConnections, Struct
from lsst.pipe.base import connectionTypes as cT


class ObjectTableConnections(PipelineTaskConnections, dimensions=("skymap", "tract")):
    """deepCoadd_obj (all patches) -> objectTable_tract."""

    deepCoadd_obj = cT.Input(
        doc="Per-patch object catalogues.",
        name="deepCoadd_obj",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract", "patch"),
        multiple=True,
    )
    objectTable_tract = cT.Output(
        doc="Primary objects of the tract.",
        name="objectTable_tract",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract"),
    )


class ObjectTableConfig(PipelineTaskConfig, pipelineConnections=ObjectTableConnections):
    """No options."""


class ObjectTableTask(PipelineTask):
    """Keep primary objects, sort by id."""

    ConfigClass = ObjectTableConfig
    _DefaultName = "objectTable"

    def run(self, deepCoadd_obj: list[Table]) -> Struct:
        """Return ``objectTable_tract``."""
        table = vstack([Table(t, copy=True) for t in deepCoadd_obj], metadata_conflicts="silent")
        table = table[np.asarray(table["is_primary"], dtype=bool)]
        table.sort("id")
        table.remove_column("is_primary")
        table.meta.clear()
        return Struct(objectTable_tract=table)
