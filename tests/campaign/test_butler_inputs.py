"""The butler path on the real embedded repos (MiniCam, minisky) built by include/minidrp.

Most real thing here: real butler repositories (SQLite registry) with real sphgeom
regions, the real minidrp pipeline read by lsst.pipe.base, and ctrl_bps's BpsConfig.
Skipped if include/minidrp is not importable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from layouts import CAMPAIGN
from lsst.ctrl.bps import BpsConfig
from multisite_drp.campaign.__main__ import main
from multisite_drp.campaign.config import load_campaign
from multisite_drp.campaign.plan import CampaignPlan
from multisite_drp.campaign.spatial import from_butler

minidrp_build = pytest.importorskip("minidrp.build")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("minidrp")
    minidrp_build.build_sites(r)
    return r


def test_geometry_overlaps_match_registry_spatial_join(root: Path) -> None:
    cfg = load_campaign(CAMPAIGN, data_root=root)
    repo = cfg.repo_of(cfg.hub)
    a = from_butler(repo, cfg.instrument, cfg.skymap, overlaps="geometry")
    b = from_butler(repo, cfg.instrument, cfg.skymap, overlaps="registry")
    assert a.n_visits > 0 and len(a.ov_visit) > a.n_visits  # visits straddle tracts
    for name in ("ov_visit", "ov_tract", "ov_ndet", "det_visit", "det_detector", "det_tract", "det_patch",
                 "visit_radius"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    # Footprint radius (centre to farthest detector corner): MiniCam's 2x2 detectors span about 2 deg.
    assert ((a.visit_radius > 0.5) & (a.visit_radius < 2.0)).all()


def test_empty_selection_from_butler(root: Path) -> None:
    from multisite_drp.campaign.spatial import SpatialInputError

    cfg = load_campaign(CAMPAIGN, data_root=root)
    with pytest.raises(SpatialInputError, match="empty selection: no visits match"):
        from_butler(cfg.repo_of(cfg.hub), cfg.instrument, cfg.skymap, where="visit = -1")


def test_cli_plans_the_embedded_campaign(root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "plan"
    assert main(["plan", str(CAMPAIGN), "--out", str(out), "--data-root", str(root)]) == 0
    plan = CampaignPlan.load(out)
    assert plan.metrics.connected
    assert sorted(v for s in plan.sites for v in s.visits) == sorted({v for s in plan.sites for v in s.visits})
    for p in (out / "bps").rglob("*.yaml"):
        assert BpsConfig(str(p))[".payload.butlerConfig"].startswith(str(root))
    assert (out / "skymap.png").is_file() and (out / "plan.md").is_file()
    assert "share" in capsys.readouterr().out


def test_cli_reports_bad_config(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(CAMPAIGN.read_text().replace("share: 0.25", "share: 0.0"))
    assert main(["plan", str(bad), "--out", str(tmp_path / "o"), "--data-root", str(tmp_path)]) == 2
    assert "share" in capsys.readouterr().err
