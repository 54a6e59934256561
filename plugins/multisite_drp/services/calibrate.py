"""Real file sizes at a site, per dataset type: what ``planner.dataset_bytes`` should say.

The planner sizes its transfer plan (and the report's "planned" bytes) from the campaign's
``planner.dataset_bytes``, an estimate per dataset type. :func:`measure_dataset_bytes`
reads the actual files behind a collection's datasets (the butler's own URIs, each file's
size through ``lsst.resources``), so the estimates can be calibrated on what a campaign, or
the single-site validation, really wrote; ``scripts/calibrate_dataset_bytes.py`` prints
them as the campaign file's block. A dataset type's mean is over every dataset of it, or
over the first ``sample`` in data-ID order (a DR1 repository holds millions).

No Airflow here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["BOOKKEEPING", "measure_dataset_bytes"]

#: Dataset types that are not data products: never moved as such, not calibrated.
BOOKKEEPING = re.compile(r".*_(metadata|log|config)$|^packages$")


def measure_dataset_bytes(butler, collections: str | Sequence[str], dataset_types: Sequence[str] | None = None,
                          sample: int | None = None) -> dict[str, dict[str, int]]:
    """``{type: {"datasets", "measured", "bytes", "mean"}}`` for the dataset types found in
    ``collections`` (or those named), bookkeeping left out: how many datasets there are,
    how many files were measured, their total and mean size in bytes. ``butler``: a
    ``SiteButler``. A dataset with no file (none in a RUN) is left out of the figures."""
    from lsst.resources import ResourcePath

    b = butler.butler
    names = list(dataset_types) if dataset_types is not None else _types_in(b, collections)
    out = {}
    for name in names:
        if BOOKKEEPING.fullmatch(name):
            continue
        refs = sorted(b.query_datasets(name, collections=collections, find_first=False, explain=False, limit=None),
                      key=lambda r: str(r.dataId.required))
        if not refs:
            continue
        chosen = refs[:sample] if sample else refs
        sizes = []
        for ref in chosen:
            uri = b.getURI(ref)
            sizes.append(ResourcePath(uri).size())
        total = int(sum(sizes))
        out[name] = {"datasets": len(refs), "measured": len(sizes), "bytes": total,
                     "mean": round(total / len(sizes)) if sizes else 0}
    return out


def _types_in(b, collections: str | Sequence[str]) -> list[str]:
    """The dataset types with datasets in ``collections`` (chains followed)."""
    names: set[str] = set()
    for coll in [collections] if isinstance(collections, str) else collections:
        for child in b.collections.query(coll, flatten_chains=True):
            info = b.collections.get_info(child, include_summary=True)
            names.update(info.dataset_types)
    return sorted(names)
