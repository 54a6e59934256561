"""Build the three embedded site repositories: usdf (the hub, with all inputs), frdf, ukdf.

Each site is a real butler repository (SQLite registry + file datastore).
usdf gets the instrument, the skymap, every observation record, the raws, the
calibrations, the reference catalogue and the ``skyMap`` dataset, chained as
``MiniCam/defaults``. frdf and ukdf get only what DMTN-213 says every DF has
before a campaign: the instrument, the skymap records and the ``skyMap``
dataset; everything else reaches them by replication. They also get the input
RUN collections (empty), the ``MiniCam/defaults`` chain and the input dataset
types registered, so arriving files can be ingested without setup. A remote site
named in ``holds_all_raws`` (a campaign's ``sites[].holds_all_raws``; DMTN-213's
FrDF keeps a copy of every raw) also gets every raw, with the hub's dataset IDs and
exposure records (``Butler.transfer_from``), as a Data Facility holding replicas of
USDF's raws has them: the campaign then replicates no raw to it.

Each repository keeps its files under ``<repo>/minidrp/`` (the datastore root, ``DATASTORE_DIR``),
following lsst-rucio-register's convention that a site's butler datastore lies at
``<rse_root>/<scope>/``: the site's Rucio RSE is rooted at the repository and the
campaign's Rucio scope is ``minidrp`` (``include/campaigns/minidrp_embedded.yaml``), so a
file's Rucio DID name is its path relative to the datastore root at every site.

The build is all-or-nothing: repositories are written under a temporary
directory inside ``root`` and renamed into place only when complete, each with
a ``minidrp_build.json`` marker. Building again over a complete root is a
no-op; a root holding anything else at a site path is a clear error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lsst.daf.butler import (
    Butler,
    CollectionType,
    Config,
    DataCoordinate,
    DatasetIdGenEnum,
    DatasetRef,
    DatasetType,
)

from . import data, instrument, skymap, survey
from .constants import (
    BIAS,
    CALIB_RUN,
    DEFAULT_SEED,
    DEFAULTS_CHAIN,
    FLAT,
    HUB_SITE,
    INPUT_DATASET_TYPES,
    INSTRUMENT_NAME,
    RAW,
    RAW_RUN,
    REFCAT,
    REFCAT_RUN,
    SITES,
    SKYMAP_DATASET,
    SKYMAP_NAME,
    SKYMAP_RUN,
)

#: The datastore root inside each repository: the embedded campaign's Rucio scope. Tests that
#: share one Rucio server give each fresh build its own scope (``build_sites(..., scope=...)``).
DATASTORE_DIR = "minidrp"

MARKER = "minidrp_build.json"
#: Bump when the builder's output changes, so stale roots are detected.
BUILD_VERSION = 3  # 2: the skyMap dataset has the same ID at every site; 3: datastore under <repo>/minidrp


class BuildError(RuntimeError):
    """The root holds something that is not a complete MiniCam build."""


def _log(msg: str) -> None:
    print(f"[minidrp build] {msg}", flush=True)


def register_input_dataset_types(butler: Butler) -> None:
    """Register raw, bias, flat, refcat and skyMap."""
    for name, (dims, storage_class) in INPUT_DATASET_TYPES.items():
        butler.registry.registerDatasetType(
            DatasetType(name, dims, storage_class, universe=butler.dimensions)
        )


def register_input_collections(butler: Butler) -> None:
    """Create the input RUN collections and the ``MiniCam/defaults`` chain over them."""
    runs = [RAW_RUN, CALIB_RUN, REFCAT_RUN, SKYMAP_RUN]
    for run in runs:
        butler.collections.register(run, CollectionType.RUN)
    butler.collections.register(DEFAULTS_CHAIN, CollectionType.CHAINED)
    butler.collections.redefine_chain(DEFAULTS_CHAIN, runs)


def insert_records(butler: Butler, records: dict[str, list[dict[str, Any]]]) -> None:
    """Insert dimension records element by element, in the dict's (dependency) order."""
    for element, rows in records.items():
        if rows:
            butler.registry.insertDimensionData(element, *rows)


def _init_site(path: Path, scope: str = DATASTORE_DIR) -> Butler:
    """Create an empty repo with instrument, skymap, dataset types, collections and the skyMap dataset."""
    Butler.makeRepo(str(path), config=Config({"datastore": {"root": f"<butlerRoot>/{scope}"}}),
                    forceConfigRoot=False)
    butler = Butler.from_config(str(path), writeable=True)
    insert_records(butler, instrument.instrument_records())
    insert_records(butler, skymap.skymap_records())
    register_input_dataset_types(butler)
    register_input_collections(butler)
    # Every site registers the skymap under the same dataset ID (derived from type, data ID
    # and run), as Data Facilities do: a graph built at the hub then names a skyMap every
    # site already has, and replication never tries to bring a second one.
    ref = DatasetRef(butler.get_dataset_type(SKYMAP_DATASET), DataCoordinate.standardize(skymap=SKYMAP_NAME, universe=butler.dimensions), run=SKYMAP_RUN,
                     id_generation_mode=DatasetIdGenEnum.DATAID_TYPE_RUN)
    butler.put(skymap.skymap_parameters(), ref)
    return butler


def _fill_hub(butler: Butler, seed: int) -> dict[str, int]:
    """Observation records, refcat, calibs and raws for the hub."""
    visits = survey.make_survey(seed)
    insert_records(butler, survey.visit_records(visits))
    refcat = data.make_refcat(seed)
    butler.put(refcat, REFCAT, dataId={}, run=REFCAT_RUN)
    n_calib = 0
    for det in instrument.DETECTOR_IDS:
        butler.put(data.make_bias(seed, det), BIAS, instrument=INSTRUMENT_NAME, detector=det, run=CALIB_RUN)
        n_calib += 1
        for pf in instrument.PHYSICAL_FILTERS:
            butler.put(
                data.make_flat(seed, det, pf),
                FLAT,
                instrument=INSTRUMENT_NAME,
                detector=det,
                physical_filter=pf,
                run=CALIB_RUN,
            )
            n_calib += 1
    n_raw = 0
    for visit in visits:
        for det in instrument.DETECTOR_IDS:
            raw = data.make_raw(seed, visit, det, refcat)
            butler.put(raw, RAW, instrument=INSTRUMENT_NAME, exposure=visit.id, detector=det, run=RAW_RUN)
            n_raw += 1
    return {"visits": len(visits), "raw": n_raw, "calib": n_calib, "refcat": len(refcat)}


def _copy_raws(hub: Butler, site: Butler) -> int:
    """Give ``site`` every raw of ``hub``: same dataset IDs, same RUN, the exposure records with them."""
    refs = hub.query_datasets(RAW, collections=RAW_RUN, limit=None, explain=False)
    site.transfer_from(hub, refs, transfer="copy", transfer_dimensions=True)
    return len(refs)


def _marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None


def site_paths(root: Path) -> dict[str, Path]:
    """Where each site's repository lives under ``root``."""
    return {site: Path(root) / site for site in SITES}


def is_complete(root: Path, seed: int = DEFAULT_SEED, scope: str = DATASTORE_DIR,
                holds_all_raws: Iterable[str] = ()) -> bool:
    """True if ``root`` holds a complete build made with ``seed`` (and datastore ``scope``, and
    the same ``holds_all_raws`` sites) by this version."""
    for path in site_paths(root).values():
        marker = _marker(path)
        if marker is None or marker.get("seed") != seed or marker.get("version") != BUILD_VERSION \
                or marker.get("scope", DATASTORE_DIR) != scope \
                or marker.get("holds_all_raws", []) != sorted(set(holds_all_raws)):
            return False
    return True


def build_sites(root: str | os.PathLike[str], seed: int = DEFAULT_SEED, scope: str = DATASTORE_DIR,
                holds_all_raws: Iterable[str] = ()) -> dict[str, Path]:
    """Build (or find already built) the usdf, frdf and ukdf repositories under ``root``.

    Each keeps its files under ``<repo>/<scope>``: ``scope`` must be the campaign's Rucio
    scope (``replication.scope``). The remote sites in ``holds_all_raws`` (the campaign's
    sites with ``holds_all_raws: true``) get every raw, as the hub has them.

    Returns site name -> repository path. Raises `BuildError` if any site path
    exists but is not part of a complete build with the same seed (and raw holders), or if
    ``holds_all_raws`` names the hub or a site the test bed does not have.
    """
    full = sorted(set(holds_all_raws))
    wrong = [s for s in full if s not in SITES or s == HUB_SITE]
    if wrong:
        raise BuildError(f"holds_all_raws: {wrong} are not remote sites of the test bed; expected some of "
                         f"{[s for s in SITES if s != HUB_SITE]} (the hub {HUB_SITE} always holds every raw)")
    root = Path(root).absolute()
    paths = site_paths(root)
    if is_complete(root, seed, scope, full):
        _log(f"{root}: complete build found (seed {seed}); nothing to do")
        return paths
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing:
        raise BuildError(
            f"{root} already holds {existing} but not a complete MiniCam build with seed {seed}, scope {scope} "
            f"and holds_all_raws {full} (marker {MARKER} missing or different); remove them or choose another root"
        )
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".minidrp-build-", dir=root))
    try:
        summary: dict[str, Any] = {}
        assert SITES[0] == HUB_SITE  # the hub is built first: raw holders copy from it
        hub = None
        for site in SITES:
            t0 = time.perf_counter()
            butler = _init_site(tmp / site, scope)
            if site == HUB_SITE:
                summary = _fill_hub(butler, seed)
                hub = butler
            else:
                if site in full:
                    _log(f"{site}: {_copy_raws(hub, butler)} raws copied from {HUB_SITE} (holds_all_raws)")
                butler.close()
            _log(f"{site}: built in {time.perf_counter() - t0:.1f} s")
        hub.close()
        for site in SITES:
            marker = {
                "version": BUILD_VERSION,
                "seed": seed,
                "scope": scope,
                "site": site,
                "hub": site == HUB_SITE,
                "holds_all_raws": full,
                **summary,
            }
            (tmp / site / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True))
        for site in SITES:
            (tmp / site).rename(paths[site])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _log(f"built {', '.join(SITES)} under {root} in {time.perf_counter() - t_start:.1f} s: {summary}")
    return paths
