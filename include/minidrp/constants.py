"""Names shared by the MiniCam test bed, its builder, its pipeline and the orchestrator.

Everything that reaches a collection name, a dataset type or a data query lives
here once, so the builder, the PipelineTasks, the validation run and the
multi-site orchestrator cannot drift apart.
"""

from __future__ import annotations

from typing import Final

INSTRUMENT_NAME: Final = "MiniCam"
SKYMAP_NAME: Final = "minisky"

#: The three embedded "Data Facilities"; usdf is the hub that holds everything.
SITES: Final = ("usdf", "frdf", "ukdf")
HUB_SITE: Final = "usdf"

# RUN collections written by the builder.
RAW_RUN: Final = "MiniCam/raw/all"
CALIB_RUN: Final = "MiniCam/calib"
REFCAT_RUN: Final = "refcats/mini"
SKYMAP_RUN: Final = "skymaps"
#: CHAINED collection over the four RUNs above: the pipeline's input.
DEFAULTS_CHAIN: Final = "MiniCam/defaults"
#: What remote sites get at build time (the skymap only); they gain the rest by replication.
REMOTE_INPUT_RUNS: Final = (SKYMAP_RUN,)

# Dataset types created by the builder (name -> (dimensions, storage class)).
RAW: Final = "raw"
BIAS: Final = "bias"
FLAT: Final = "flat"
REFCAT: Final = "refcat"
SKYMAP_DATASET: Final = "skyMap"
INPUT_DATASET_TYPES: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    RAW: (("instrument", "exposure", "detector"), "NumpyArray"),
    BIAS: (("instrument", "detector"), "NumpyArray"),
    FLAT: (("instrument", "detector", "physical_filter"), "NumpyArray"),
    REFCAT: ((), "ArrowAstropy"),
    SKYMAP_DATASET: (("skymap",), "StructuredDataDict"),
}

#: Data query the pipeline steps run with (governors pinned, as DRP does).
DATA_QUERY: Final = f"instrument = '{INSTRUMENT_NAME}' AND skymap = '{SKYMAP_NAME}'"

#: Seed for everything synthetic: same seed, same survey, same pixels, same numbers.
DEFAULT_SEED: Final = 20240601

#: Output dataset types of each pipeline step (the subsets in pipelines/minidrp.yaml).
STEP_OUTPUTS: Final[dict[str, tuple[str, ...]]] = {
    "step1": ("postIsr", "pvi", "src", "pviSummary"),
    "step2": ("sourceTable_visit", "visitSummary"),
    "step3": ("zeroPoint", "fgcmSummary"),
    "step4": ("deepCoadd",),
    "step5": ("deepCoadd_det", "deepCoadd_obj"),
    "step6": ("objectTable_tract",),
    "step7": ("forcedSource",),
    "step8": ("forcedSourceTable_visit",),
    "step9": ("surveySummary",),
}
STEPS: Final = tuple(STEP_OUTPUTS)
