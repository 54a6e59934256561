"""Copy observation (visit-system) dimension records between site butlers.

A remote site must know a visit's exposure, visit, visit_definition and
visit_detector_region records before it can ingest that visit's raws or PVIs
or build a graph that joins them spatially with patches.

What ``Butler.transfer_from(..., transfer_dimensions=True)`` already carries
(daf_butler 30.2026.4300 ``DirectButler.transfer_dimension_records_from``,
measured on the embedded repos and asserted in tests/test_minidrp_build.py):
the records in the *expanded* data IDs of the transferred datasets, plus the
``populated_by`` elements of those that are not already in the data ID,
followed back to their required dimensions.

- a raw (instrument, exposure, detector) brings exposure, group and day_obs
  (and the instrument/detector/physical_filter it needs) -- but *no* visit,
  visit_definition or visit_detector_region;
- a PVI (instrument, visit, detector) brings visit, visit_definition (and
  through it the exposure, group, day_obs) and the visit_detector_region of
  *that detector only* (visit_detector_region is already in the data ID, so
  the other detectors' regions are not looked up).

So a site receiving raws cannot build step-1 graphs joined to visits, and a
site receiving some PVIs of a visit has an incomplete set of detector regions.
The orchestrator therefore copies the full observation records of every visit
a site needs with :func:`copy_visit_records` before moving any dataset.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lsst.daf.butler import Butler, DimensionRecord

from .constants import INSTRUMENT_NAME

#: Elements copied, in insertion (dependency) order.
VISIT_ELEMENTS: tuple[str, ...] = (
    "physical_filter",
    "day_obs",
    "group",
    "exposure",
    "visit",
    "visit_definition",
    "visit_system_membership",
    "visit_detector_region",
)


def _query(butler: Butler, element: str, where: str, bind: dict[str, Any]) -> list[DimensionRecord]:
    """All records of ``element`` matching ``where`` (empty when the element table is empty)."""
    return list(
        butler.query_dimension_records(
            element, where=where, bind=bind, instrument=INSTRUMENT_NAME, explain=False, limit=None
        )
    )


def visit_records_for(butler: Butler, visits: Iterable[int]) -> dict[str, list[DimensionRecord]]:
    """Gather, from ``butler``, the observation records of ``visits`` keyed by element name."""
    visit_ids = sorted({int(v) for v in visits})
    if not visit_ids:
        return {}
    bind = {"visits": visit_ids}
    visit_recs = _query(butler, "visit", "visit IN (visits)", bind)
    definitions = _query(butler, "visit_definition", "visit IN (visits)", bind)
    exposure_ids = sorted({r.exposure for r in definitions})
    exposures = (
        _query(butler, "exposure", "exposure IN (exposures)", {"exposures": exposure_ids})
        if exposure_ids
        else []
    )
    days = sorted({r.day_obs for r in visit_recs} | {r.day_obs for r in exposures})
    groups = sorted({r.group for r in exposures})
    filters = sorted({r.physical_filter for r in visit_recs} | {r.physical_filter for r in exposures})
    return {
        "physical_filter": _query(butler, "physical_filter", "physical_filter IN (pf)", {"pf": filters})
        if filters
        else [],
        "day_obs": _query(butler, "day_obs", "day_obs IN (days)", {"days": days}) if days else [],
        "group": _query(butler, "group", "group IN (groups)", {"groups": groups}) if groups else [],
        "exposure": exposures,
        "visit": visit_recs,
        "visit_definition": definitions,
        "visit_system_membership": _query(butler, "visit_system_membership", "visit IN (visits)", bind),
        "visit_detector_region": _query(butler, "visit_detector_region", "visit IN (visits)", bind),
    }


def copy_visit_records(source: Butler, dest: Butler, visits: Iterable[int]) -> dict[str, int]:
    """Insert into ``dest`` the observation records of ``visits`` from ``source``.

    Idempotent: records already present are skipped (not compared). The
    destination must already hold the instrument and detector records (every
    site gets them at build time). Returns the number of records offered per
    element.
    """
    records = visit_records_for(source, visits)
    counts: dict[str, int] = {}
    with dest.transaction():
        for element in VISIT_ELEMENTS:
            recs = records.get(element, [])
            counts[element] = len(recs)
            if recs:
                dest.registry.insertDimensionData(element, *recs, skip_existing=True)
    return counts
