"""The MiniCam builder on real butler repositories (SQLite registry + file datastore).

Most real thing here: lsst.daf.butler repositories created by Butler.makeRepo, with real
sphgeom regions, queried through the registry's own spatial joins. No mocks.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from lsst.daf.butler import Butler, CollectionType
from minidrp import constants
from minidrp.build import MARKER, BuildError, build_sites
from minidrp.instrument import DETECTOR_IDS, PHYSICAL_FILTERS
from minidrp.records import copy_visit_records
from minidrp.skymap import N_TRACT_DEC, N_TRACT_RA, PATCH_NX, PATCH_NY, tract_ra_third
from minidrp.survey import make_survey

N_VISITS = len(make_survey())
N_TRACTS = N_TRACT_RA * N_TRACT_DEC


def _butler(path: Path, writeable: bool = False) -> Butler:
    return Butler.from_config(str(path), writeable=writeable)


def _dataset_counts(butler: Butler, collections: str = "*") -> dict[str, int]:
    counts: dict[str, int] = {}
    for dt in butler.registry.queryDatasetTypes():
        n = len(
            butler.query_datasets(
                dt.name, collections=collections, find_first=False, explain=False, limit=None
            )
        )
        if n:
            counts[dt.name] = n
    return counts


def _record_count(butler: Butler, element: str) -> int:
    return len(butler.query_dimension_records(element, explain=False, limit=None))


def test_build_makes_three_repos(minidrp_root: Path) -> None:
    for site in constants.SITES:
        assert (minidrp_root / site / "butler.yaml").is_file()
        marker = json.loads((minidrp_root / site / MARKER).read_text())
        assert marker["site"] == site and marker["seed"] == constants.DEFAULT_SEED


def test_hub_holds_all_inputs(minidrp_root: Path) -> None:
    with _butler(minidrp_root / "usdf") as butler:
        # Only the input chain: the session's validation run may have added outputs elsewhere.
        assert _dataset_counts(butler, constants.DEFAULTS_CHAIN) == {
            "raw": N_VISITS * len(DETECTOR_IDS),
            "bias": len(DETECTOR_IDS),
            "flat": len(DETECTOR_IDS) * len(PHYSICAL_FILTERS),
            "refcat": 1,
            "skyMap": 1,
        }
        info = butler.collections.get_info(constants.DEFAULTS_CHAIN)
        assert info.type is CollectionType.CHAINED
        assert list(info.children) == [
            constants.RAW_RUN,
            constants.CALIB_RUN,
            constants.REFCAT_RUN,
            constants.SKYMAP_RUN,
        ]
        assert _record_count(butler, "visit") == N_VISITS
        assert _record_count(butler, "exposure") == N_VISITS
        assert _record_count(butler, "visit_definition") == N_VISITS
        assert _record_count(butler, "visit_detector_region") == N_VISITS * len(DETECTOR_IDS)
        # Inputs are findable through the chain, as the pipeline will look for them.
        raw = butler.get(
            "raw",
            instrument="MiniCam",
            exposure=make_survey()[0].id,
            detector=0,
            collections=constants.DEFAULTS_CHAIN,
        )
        assert raw.shape == (100, 100) and raw.dtype == np.float32
        sky = butler.get("skyMap", skymap=constants.SKYMAP_NAME, collections=constants.DEFAULTS_CHAIN)
        assert sky["n_tract_ra"] == N_TRACT_RA


@pytest.mark.parametrize("site", ["frdf", "ukdf"])
def test_remote_sites_hold_instrument_and_skymap_only(minidrp_root: Path, site: str) -> None:
    with _butler(minidrp_root / site) as butler:
        assert _dataset_counts(butler) == {"skyMap": 1}
        assert _record_count(butler, "instrument") == 1
        assert _record_count(butler, "detector") == len(DETECTOR_IDS)
        assert _record_count(butler, "physical_filter") == len(PHYSICAL_FILTERS)
        assert _record_count(butler, "skymap") == 1
        assert _record_count(butler, "tract") == N_TRACTS
        assert _record_count(butler, "patch") == N_TRACTS * PATCH_NX * PATCH_NY
        for element in ("exposure", "visit", "visit_detector_region", "day_obs", "group"):
            assert _record_count(butler, element) == 0, element
        # Ready to receive replicas: input dataset types and the defaults chain exist.
        assert {dt.name for dt in butler.registry.queryDatasetTypes()} >= set(constants.INPUT_DATASET_TYPES)
        assert butler.collections.get_info(constants.DEFAULTS_CHAIN).type is CollectionType.CHAINED


def test_visits_straddle_tracts_of_different_sites(minidrp_root: Path) -> None:
    """The registry's own visit x tract spatial join: visits cross the RA-thirds split lines."""
    with _butler(minidrp_root / "usdf") as butler:
        rows = butler.query_data_ids(
            ["visit", "tract"], where=constants.DATA_QUERY, explain=False, limit=None
        )
    thirds: dict[int, set[int]] = defaultdict(set)
    tracts_per_visit: dict[int, set[int]] = defaultdict(set)
    for row in rows:
        thirds[int(row["visit"])].add(tract_ra_third(int(row["tract"])))
        tracts_per_visit[int(row["visit"])].add(int(row["tract"]))
    assert len(thirds) == N_VISITS
    crossing = [v for v, t in thirds.items() if len(t) > 1]
    assert len(crossing) >= 5, f"only {len(crossing)} visits cross a site boundary"
    assert all(len(t) >= 2 for t in tracts_per_visit.values()), "every visit is wider than a tract"
    assert set().union(*tracts_per_visit.values()) == set(range(N_TRACTS)), "every tract is covered"


def test_every_patch_is_covered_in_every_band(minidrp_root: Path) -> None:
    with _butler(minidrp_root / "usdf") as butler:
        rows = butler.query_data_ids(
            ["visit", "detector", "patch"], where=constants.DATA_QUERY, explain=False, limit=None
        )
        cover = {(int(r["tract"]), int(r["patch"]), str(r["band"])) for r in rows}
    assert len(cover) == N_TRACTS * PATCH_NX * PATCH_NY * len(PHYSICAL_FILTERS)


def test_build_is_idempotent(minidrp_root: Path) -> None:
    before = {s: (minidrp_root / s / MARKER).stat().st_mtime_ns for s in constants.SITES}
    paths = build_sites(minidrp_root)
    assert paths == {s: minidrp_root / s for s in constants.SITES}
    assert before == {s: (minidrp_root / s / MARKER).stat().st_mtime_ns for s in constants.SITES}


def test_build_refuses_a_partial_root(tmp_path: Path) -> None:
    (tmp_path / "frdf").mkdir()
    with pytest.raises(BuildError, match="not a complete MiniCam build"):
        build_sites(tmp_path)
    assert not (tmp_path / "usdf").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".minidrp-build-")]


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second build that tests may modify (the session build stays pristine)."""
    root = tmp_path_factory.mktemp("minidrp_scratch")
    build_sites(root)
    return root


def test_builds_are_deterministic(minidrp_root: Path, scratch_root: Path) -> None:
    visit = make_survey()[7].id
    with _butler(minidrp_root / "usdf") as a, _butler(scratch_root / "usdf") as b:
        for det in DETECTOR_IDS:
            kw = {
                "instrument": "MiniCam",
                "exposure": visit,
                "detector": det,
                "collections": constants.RAW_RUN,
            }
            assert np.array_equal(a.get("raw", **kw), b.get("raw", **kw))
        ta = a.get("refcat", collections=constants.REFCAT_RUN)
        tb = b.get("refcat", collections=constants.REFCAT_RUN)
        assert np.array_equal(np.asarray(ta["ra"]), np.asarray(tb["ra"]))


def test_transfer_dimensions_and_copy_visit_records(scratch_root: Path) -> None:
    """What transfer_from(transfer_dimensions=True) carries for a raw, and what copy_visit_records adds."""
    visit = make_survey()[3].id
    with _butler(scratch_root / "usdf") as hub, _butler(scratch_root / "frdf", writeable=True) as remote:
        ref = hub.find_dataset(
            "raw", instrument="MiniCam", exposure=visit, detector=1, collections=constants.RAW_RUN
        )
        remote.transfer_from(hub, [ref], transfer="copy", transfer_dimensions=True)
        assert _record_count(remote, "exposure") == 1
        assert _record_count(remote, "group") == 1 and _record_count(remote, "day_obs") == 1
        assert _record_count(remote, "visit") == 0, "a raw carries no visit records"
        assert _record_count(remote, "visit_detector_region") == 0

        counts = copy_visit_records(hub, remote, [visit])
        assert counts["visit_detector_region"] == len(DETECTOR_IDS)
        assert _record_count(remote, "visit") == 1
        assert _record_count(remote, "visit_definition") == 1
        assert _record_count(remote, "visit_detector_region") == len(DETECTOR_IDS)
        # Idempotent.
        copy_visit_records(hub, remote, [visit])
        assert _record_count(remote, "visit_detector_region") == len(DETECTOR_IDS)
        # The region survives the copy: the remote registry can do the spatial join itself.
        rows = remote.query_data_ids(
            ["visit", "patch"], where=constants.DATA_QUERY, explain=False, limit=None
        )
        assert {int(r["visit"]) for r in rows} == {visit}
        assert np.array_equal(
            remote.get("raw", dataId=ref.dataId, collections=constants.RAW_RUN), hub.get(ref)
        )
