"""The butler port: what the orchestrator asks of a site's data repository.

Production and embedded sites both speak lsst.daf.butler; only the repository
differs (Postgres + object store vs SQLite + files), so one adapter serves both.
The orchestrator never trusts its own bookkeeping for "is it there": it asks the
registry (DESIGN: durable truth lives outside Airflow).

Embedded SQLite registries tolerate one writer at a time, so every writer in this
package (merges, replica ingests, chain updates) takes ``site_write_lock`` first.
No Airflow imports.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path

from lsst.daf.butler import Butler, CollectionType, DatasetRef, MissingDatasetTypeError
from lsst.daf.butler.registry import MissingCollectionError

from multisite_drp.services.fileio import file_lock

__all__ = ["SiteButler", "site_write_lock", "VISIT_SYSTEM_ELEMENTS"]

# In dependency order: each element's foreign keys point to earlier ones.
VISIT_SYSTEM_ELEMENTS = (
    "day_obs", "group", "physical_filter", "exposure", "visit_system", "visit",
    "visit_definition", "visit_detector_region", "visit_system_membership",
)


@contextlib.contextmanager
def site_write_lock(repo: str) -> Iterator[None]:
    """Serialise writers of a local repository; a no-op for remote (URI) repositories."""
    if "://" in repo and not repo.startswith("file://"):
        yield
        return
    root = Path(repo.removeprefix("file://"))
    root = root.parent if root.suffix == ".yaml" else root
    with file_lock(root / ".multisite-drp-write.lock"):
        yield


class SiteButler:
    """A site's butler, opened lazily; the same code for every site and every adapter."""

    def __init__(self, site: str, repo: str, *, writeable: bool = True) -> None:
        self.site = site
        self.repo = repo
        self.writeable = writeable

    @cached_property
    def butler(self) -> Butler:
        return Butler.from_config(self.repo, writeable=self.writeable)

    def refresh(self) -> None:
        """Drop cached registry state (another process may have written)."""
        if "butler" in self.__dict__:
            self.butler.registry.refresh()

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        with site_write_lock(self.repo):
            yield

    # -- queries -------------------------------------------------------------------------------

    def collection_exists(self, name: str) -> bool:
        try:
            self.butler.collections.get_info(name)
        except MissingCollectionError:
            return False
        return True

    def refs(self, dataset_type: str, collections: str | Sequence[str], where: str = "",
             find_first: bool = False) -> list[DatasetRef]:
        """Every dataset of a type in the collections (no default 20k limit, no 'explain')."""
        if isinstance(collections, str):
            collections = [collections]
        collections = [c for c in collections if self.collection_exists(c)]
        if not collections:
            return []
        try:
            return self.butler.query_datasets(
                dataset_type, collections=collections, where=where, find_first=find_first,
                limit=None, explain=False,
            )
        except MissingDatasetTypeError:
            return []

    def count(self, dataset_types: Iterable[str], collections: str | Sequence[str], where: str = "") -> dict[str, int]:
        return {dt: len(self.refs(dt, collections, where)) for dt in dataset_types}

    def dataset_types_in(self, collection: str) -> list[str]:
        """Names of dataset types that have datasets in ``collection`` (registry summary)."""
        if not self.collection_exists(collection):
            return []
        return sorted(self.butler.collections.get_info(collection, include_summary=True).dataset_types)

    def missing(self, refs: Iterable[DatasetRef]) -> list[DatasetRef]:
        """The refs whose dataset ID this registry does not know."""
        out = []
        for ref in refs:
            if self.butler.get_dataset(ref.id) is None:
                out.append(ref)
        return out

    # -- writes --------------------------------------------------------------------------------

    def ensure_chain(self, chain: str, children: Sequence[str]) -> None:
        """Make ``chain`` a CHAINED collection that starts with ``children`` (idempotent)."""
        with self.write_lock():
            self.butler.collections.register(chain, CollectionType.CHAINED)
            present = [c for c in children if self.collection_exists(c)]
            current = list(self.butler.collections.get_info(chain).children)
            wanted = present + [c for c in current if c not in present]
            if wanted != current:
                self.butler.collections.redefine_chain(chain, wanted)

    def sync_visit_records(self, source: SiteButler, visits: Iterable[int], instrument: str) -> int:
        """Copy the visit-system dimension records of ``visits`` from ``source`` (idempotent).

        A site's merge (transfer-from-graph) needs visit, visit_definition and
        visit_detector_region records, which a quantum-backed butler cannot carry
        (daf_butler: "populated_by records ... require a full Butler"). In production
        they travel as lsst-rucio-register ``dimensions`` files; here they are copied
        from the hub's registry. Returns the number of records offered.
        """
        visits = sorted(set(visits))
        if not visits:
            return 0
        where = f"visit IN ({', '.join(map(str, visits))})"
        n = 0
        with self.write_lock():
            for element in VISIT_SYSTEM_ELEMENTS:
                if element not in source.butler.dimensions.elements.names:
                    continue
                records = source.butler.query_dimension_records(
                    element, where=where, instrument=instrument, explain=False
                )
                if records:
                    self.butler.registry.insertDimensionData(element, *records, skip_existing=True)
                    n += len(records)
        return n

    def datastore_root(self) -> Path | None:
        """Filesystem root of a local file datastore (for checksums), None if remote."""
        if "://" in self.repo and not self.repo.startswith("file://"):
            return None
        root = Path(self.repo.removeprefix("file://"))
        return root.parent if root.suffix == ".yaml" else root

