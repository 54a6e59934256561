"""The butler port: what the orchestrator asks of a site's data repository.

Production and embedded sites both speak lsst.daf.butler; only the repository
differs (Postgres + object store vs SQLite + files), so one adapter serves both.
The orchestrator never trusts its own bookkeeping for "is it there": it asks the
registry (DESIGN: durable truth lives outside Airflow).

Embedded SQLite registries tolerate one writer at a time, so every writer in this
package (merges, replica ingests, chain updates) takes ``site_write_lock`` first, and
waits for it at most ``timeouts.lock_seconds`` of the campaign (``LockTimeoutError``
naming the repository and the limit). No Airflow imports.

``lsst.daf.butler`` is imported where a butler is first used, not with this module: a
task that never opens a butler (a submit finding its workflow, a rule added in Rucio)
does not pay for it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multisite_drp.services.fileio import file_lock

if TYPE_CHECKING:
    from lsst.daf.butler import Butler, DatasetRef, DimensionRecord

__all__ = ["DEFAULT_LOCK_SECONDS", "VISIT_SYSTEM_ELEMENTS", "SiteButler", "copy_visit_records", "site_write_lock",
           "visit_records_for"]

#: Longest wait for a site's write lock when the caller names no limit (the campaign's
#: ``timeouts.lock_seconds`` default): a merge of a large run holds it for minutes.
DEFAULT_LOCK_SECONDS = 3600.0

# In insertion (dependency) order: each element's foreign keys point to earlier ones.
VISIT_SYSTEM_ELEMENTS: tuple[str, ...] = (
    "physical_filter", "day_obs", "group", "exposure", "visit",
    "visit_definition", "visit_system_membership", "visit_detector_region",
)


def _records(butler: Butler, element: str, where: str, bind: dict[str, Any],
             instrument: str) -> list[DimensionRecord]:
    return list(butler.query_dimension_records(
        element, where=where, bind=bind, instrument=instrument, explain=False, limit=None))


def visit_records_for(butler: Butler, visits: Iterable[int], instrument: str) -> dict[str, list[DimensionRecord]]:
    """The observation records of ``visits`` in ``butler``, keyed by element name.

    Exposures, groups, days and filters are restricted to those the visits use.
    """
    visit_ids = sorted({int(v) for v in visits})
    if not visit_ids:
        return {}
    bind = {"visits": visit_ids}

    def q(element: str, where: str, values: dict[str, Any]) -> list[DimensionRecord]:
        return _records(butler, element, where, values, instrument)

    visit_recs = q("visit", "visit IN (visits)", bind)
    definitions = q("visit_definition", "visit IN (visits)", bind)
    exposure_ids = sorted({r.exposure for r in definitions})
    exposures = q("exposure", "exposure IN (e)", {"e": exposure_ids}) if exposure_ids else []
    days = sorted({r.day_obs for r in visit_recs} | {r.day_obs for r in exposures})
    groups = sorted({r.group for r in exposures})
    filters = sorted({r.physical_filter for r in visit_recs} | {r.physical_filter for r in exposures})
    return {
        "physical_filter": q("physical_filter", "physical_filter IN (pf)", {"pf": filters}) if filters else [],
        "day_obs": q("day_obs", "day_obs IN (days)", {"days": days}) if days else [],
        "group": q("group", "group IN (groups)", {"groups": groups}) if groups else [],
        "exposure": exposures,
        "visit": visit_recs,
        "visit_definition": definitions,
        "visit_system_membership": q("visit_system_membership", "visit IN (visits)", bind),
        "visit_detector_region": q("visit_detector_region", "visit IN (visits)", bind),
    }


def copy_visit_records(source: Butler, dest: Butler, visits: Iterable[int], instrument: str) -> dict[str, int]:
    """Insert into ``dest`` the observation records of ``visits`` from ``source``.

    Idempotent (existing records are skipped, not compared). ``dest`` must already hold
    the instrument and detector records. Returns the records offered per element.
    """
    records = visit_records_for(source, visits, instrument)
    counts: dict[str, int] = {}
    with dest.transaction():
        for element in VISIT_SYSTEM_ELEMENTS:
            recs = records.get(element, [])
            counts[element] = len(recs)
            if recs:
                dest.registry.insertDimensionData(element, *recs, skip_existing=True)
    return counts


#: The file whose ``flock`` serialises a local repository's writers (:func:`site_write_lock`).
WRITE_LOCK_FILE = ".multisite-drp-write.lock"


def local_root(repo: str) -> Path | None:
    """Directory of a local repository (path, ``file://`` URI or its butler.yaml); None if remote."""
    if "://" in repo and not repo.startswith("file://"):
        return None
    root = Path(repo.removeprefix("file://"))
    return root.parent if root.suffix == ".yaml" else root


@contextlib.contextmanager
def site_write_lock(repo: str, timeout: float | None = DEFAULT_LOCK_SECONDS) -> Iterator[None]:
    """Serialise writers of a local repository; a no-op for remote (URI) repositories.

    Waits at most ``timeout`` seconds for another writer (``LockTimeoutError``)."""
    root = local_root(repo)
    if root is None:
        yield
        return
    with file_lock(root / WRITE_LOCK_FILE, timeout,
                   f"the write lock of butler {repo} (limit: the campaign's timeouts.lock_seconds)"):
        yield


#: Per process, one Butler per (repository, writeable) that is never queried itself: every
#: :class:`SiteButler` of the process gets a ``clone()`` of it (its own registry caches and
#: sessions, the same connection pool), so a process that runs many tasks (``dag.test``, the
#: demo) reads each repository's configuration and builds its schema objects once, not per
#: task: ``Butler.from_config`` was 15% of a ``dag.test`` rerun of the embedded campaign.
#: Keyed by the process id too (a forked child opens its own) and, for a local repository, by
#: its ``butler.yaml``'s inode (a repository built again at the same path is a new one).
_TEMPLATES: dict[tuple[int, str, bool, int], Butler] = {}
_TEMPLATES_LOCK = threading.Lock()


def _open(repo: str, writeable: bool) -> Butler:
    """A fresh clone of the process's template Butler for ``repo``."""
    from lsst.daf.butler import Butler

    root = local_root(repo)
    try:
        inode = os.stat(root / "butler.yaml").st_ino if root is not None else 0
    except OSError:
        inode = -1  # not a repository (yet): from_config says so
    key = (os.getpid(), repo, writeable, inode)
    with _TEMPLATES_LOCK:
        template = _TEMPLATES.get(key)
        if template is None:
            template = _TEMPLATES[key] = Butler.from_config(repo, writeable=writeable)
    return template.clone()


class SiteButler:
    """A site's butler, opened lazily; the same code for every site and every adapter."""

    def __init__(self, site: str, repo: str | os.PathLike[str], *, writeable: bool = True,
                 lock_timeout: float | None = DEFAULT_LOCK_SECONDS) -> None:
        self.site = site
        self.repo = str(repo)  # callers may pass a Path; the lock and the cache key read a str
        self.writeable = writeable
        self.lock_timeout = lock_timeout

    @cached_property
    def butler(self) -> Butler:
        """The repository's Butler: a clone with caches of its own (:func:`_open`)."""
        return _open(self.repo, self.writeable)

    def refresh(self) -> None:
        """Drop cached registry state (another process may have written)."""
        if "butler" in self.__dict__:
            self.butler.registry.refresh()

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """The site's write lock, waited for at most ``lock_timeout`` seconds."""
        with site_write_lock(self.repo, self.lock_timeout):
            yield

    # -- queries -------------------------------------------------------------------------------

    def collection_exists(self, name: str) -> bool:
        from lsst.daf.butler.registry import MissingCollectionError

        try:
            self.butler.collections.get_info(name)
        except MissingCollectionError:
            return False
        return True

    def refs(self, dataset_type: str, collections: str | Sequence[str], where: str = "",
             find_first: bool = False) -> list[DatasetRef]:
        """Every dataset of a type in the collections (no default 20k limit, no 'explain')."""
        from lsst.daf.butler import MissingDatasetTypeError

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
        """Datasets of each type in the collections, counted by the registry (no refs loaded)."""
        from lsst.daf.butler import MissingDatasetTypeError

        if isinstance(collections, str):
            collections = [collections]
        collections = [c for c in collections if self.collection_exists(c)]
        out = {}
        for dt in dataset_types:
            out[dt] = 0
            if not collections:
                continue
            try:
                with self.butler.query() as q:
                    results = q.datasets(dt, collections=collections, find_first=False)
                    out[dt] = (results.where(where) if where else results).count(exact=True, discard=True)
            except MissingDatasetTypeError:
                pass
        return out

    def flatten(self, collections: str | Sequence[str]) -> list[str]:
        """The collections named, chains replaced by their members (recursively), in order."""
        return list(self.butler.collections.query(collections, flatten_chains=True))

    def chain_children(self, name: str) -> list[str] | None:
        """The members of CHAINED collection ``name``, in order; None if it is not a chain."""
        from lsst.daf.butler import CollectionType

        info = self.butler.collections.get_info(name)
        return list(info.children) if info.type is CollectionType.CHAINED else None

    def runs_matching(self, pattern: str) -> list[str]:
        """The RUN collections whose names match the glob ``pattern`` (``campaign.names``)."""
        from lsst.daf.butler import CollectionType

        return list(self.butler.collections.query(pattern, collection_types={CollectionType.RUN}))

    def data_ids(self, dimensions: Sequence[str], where: str, bind: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The registry's data IDs over ``dimensions`` matching ``where`` (one dict per row,
        the dimensions' required values)."""
        with self.butler.query() as q:
            return [dict(d.required) for d in q.data_ids(list(dimensions)).where(where, bind=bind or {})]

    def dimension_ids(self, element: str, where: str) -> list[Any]:
        """The primary keys of ``element``'s records matching ``where`` (a night's visits)."""
        return [r.id for r in self.butler.query_dimension_records(element, where=where, explain=False, limit=None)]

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
        from lsst.daf.butler import CollectionType

        with self.write_lock():
            self.butler.collections.register(chain, CollectionType.CHAINED)
            present = [c for c in children if self.collection_exists(c)]
            current = list(self.butler.collections.get_info(chain).children)
            wanted = present + [c for c in current if c not in present]
            if wanted != current:
                self.butler.collections.redefine_chain(chain, wanted)

    def sync_visit_records(self, source: SiteButler, visits: Iterable[int], instrument: str) -> int:
        """Copy the visit-system records of ``visits`` from ``source`` under the write lock.

        A site's merge needs visit, visit_definition and visit_detector_region records,
        which a quantum-backed butler cannot carry (daf_butler: "populated_by records ...
        require a full Butler"). In production they travel as lsst-rucio-register
        ``dimensions`` files; here they are copied from the hub's registry. Returns the
        number of records offered.
        """
        with self.write_lock():
            counts = copy_visit_records(source.butler, self.butler, visits, instrument)
        return sum(counts.values())

    def datastore_root(self) -> Path | None:
        """Filesystem root of the repository's (single) file datastore; None if it is not local.

        A file's path relative to this root is its Rucio DID name (lsst-rucio-register),
        which may differ from the repository root (the embedded sites keep their files in
        ``<repo>/<scope>``).
        """
        roots = [r for r in self.butler.get_datastore_roots().values() if r is not None]
        if len(roots) != 1 or roots[0].scheme not in ("", "file"):
            return None
        return Path(roots[0].ospath)

