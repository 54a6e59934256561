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

from lsst.daf.butler import Butler, DimensionRecord
from multisite_drp.services.butler import VISIT_SYSTEM_ELEMENTS
from multisite_drp.services.butler import copy_visit_records as _copy_visit_records
from multisite_drp.services.butler import visit_records_for as _visit_records_for

from .constants import INSTRUMENT_NAME

#: Elements copied, in insertion (dependency) order.
VISIT_ELEMENTS: tuple[str, ...] = VISIT_SYSTEM_ELEMENTS


def visit_records_for(butler: Butler, visits: Iterable[int]) -> dict[str, list[DimensionRecord]]:
    """Gather, from ``butler``, the MiniCam observation records of ``visits`` keyed by element name."""
    return _visit_records_for(butler, visits, INSTRUMENT_NAME)


def copy_visit_records(source: Butler, dest: Butler, visits: Iterable[int]) -> dict[str, int]:
    """Insert into ``dest`` the MiniCam observation records of ``visits`` from ``source``.

    The orchestrator's shared implementation (``multisite_drp.services.butler``);
    idempotent, returns the number of records offered per element.
    """
    return _copy_visit_records(source, dest, visits, INSTRUMENT_NAME)
