"""MiniCam: the synthetic instrument, skymap, survey and nine-step DRP-shaped pipeline.

This is the embedded test bed: ``python -m minidrp build --root DIR`` makes the
three site repositories, ``python -m minidrp validate --root DIR`` runs the
whole pipeline at the hub with the real middleware and checks the golden
dataset counts. Importing the package is cheap (no butler is opened); the
heavy modules are imported on use.
"""

from __future__ import annotations

from .constants import (
    CALIB_RUN,
    DATA_QUERY,
    DEFAULT_SEED,
    DEFAULTS_CHAIN,
    HUB_SITE,
    INPUT_DATASET_TYPES,
    INSTRUMENT_NAME,
    RAW_RUN,
    REFCAT_RUN,
    SITES,
    SKYMAP_NAME,
    SKYMAP_RUN,
    STEP_OUTPUTS,
    STEPS,
)

__all__ = [
    "CALIB_RUN",
    "DATA_QUERY",
    "DEFAULTS_CHAIN",
    "DEFAULT_SEED",
    "HUB_SITE",
    "INPUT_DATASET_TYPES",
    "INSTRUMENT_NAME",
    "RAW_RUN",
    "REFCAT_RUN",
    "SITES",
    "SKYMAP_NAME",
    "SKYMAP_RUN",
    "STEPS",
    "STEP_OUTPUTS",
    "build_sites",
    "copy_visit_records",
]


def build_sites(root, seed: int = DEFAULT_SEED, **kwargs):  # type: ignore[no-untyped-def]
    """Build the usdf, frdf and ukdf repositories under ``root`` (``scope``, ``holds_all_raws``
    as keywords); see `minidrp.build.build_sites`."""
    from .build import build_sites as _build

    return _build(root, seed, **kwargs)


def copy_visit_records(source, dest, visits):  # type: ignore[no-untyped-def]
    """Copy observation records of ``visits`` between butlers; see `minidrp.records.copy_visit_records`."""
    from .records import copy_visit_records as _copy

    return _copy(source, dest, visits)
