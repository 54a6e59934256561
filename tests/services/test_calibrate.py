"""``planner.dataset_bytes`` calibrated on real files: the single-site validation's outputs
and inputs at USDF, measured through the butler's URIs (``services/calibrate.py``) and
checked against the files' sizes on disk; the script's block fits the campaign schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from minidrp.validate import VALIDATION_CHAIN
from multisite_drp.services.butler import SiteButler
from multisite_drp.services.calibrate import measure_dataset_bytes

from tests.conftest import CAMPAIGN, ROOT


def test_measured_sizes_are_the_files_on_disk(minidrp_validation, minidrp_root: Path) -> None:
    hub = SiteButler("usdf", minidrp_root / "usdf")
    measured = measure_dataset_bytes(hub, [VALIDATION_CHAIN, "MiniCam/defaults"])
    assert not [t for t in measured if t.endswith(("_metadata", "_log", "_config")) or t == "packages"]
    assert {"raw", "pvi", "src", "deepCoadd", "objectTable_tract"} <= set(measured)
    for name in ("raw", "src", "deepCoadd"):
        refs = hub.butler.query_datasets(name, collections=[VALIDATION_CHAIN, "MiniCam/defaults"], find_first=False,
                                         explain=False)
        on_disk = [os.path.getsize(hub.butler.getURI(r).ospath) for r in refs]
        m = measured[name]
        assert (m["datasets"], m["measured"], m["bytes"]) == (len(refs), len(refs), sum(on_disk))
        assert m["mean"] == round(sum(on_disk) / len(on_disk))
    sampled = measure_dataset_bytes(hub, VALIDATION_CHAIN, ["src"], sample=3)
    assert (sampled["src"]["datasets"], sampled["src"]["measured"]) == (measured["src"]["datasets"], 3)


def test_the_script_prints_a_block_the_campaign_accepts(minidrp_validation, minidrp_root: Path, tmp_path) -> None:
    out = tmp_path / "bytes.yaml"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "calibrate_dataset_bytes.py"), "--campaign", str(CAMPAIGN),
         "--data-root", str(minidrp_root), "--collections", VALIDATION_CHAIN, "MiniCam/defaults", "--write", str(out)],
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    block = yaml.safe_load(out.read_text())["planner"]["dataset_bytes"]
    assert block["raw"] > 10_000 and block["src"] < block["raw"]
    assert "raw " in proc.stdout and "planner:" in proc.stdout
    # The embedded campaign carries these figures, measured so on this test bed's files
    # (within 2 %: compressed tables shift by a few bytes when another CPU rounds differently).
    configured = yaml.safe_load(CAMPAIGN.read_text())["planner"]["dataset_bytes"]
    assert set(configured) == set(block)
    assert all(abs(configured[k] - block[k]) <= 0.02 * block[k] + 8 for k in block), (configured, block)
