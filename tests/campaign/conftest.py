"""Fixtures for the campaign planner tests: small synthetic layouts and the embedded campaign file.

The layouts are synthetic (multisite_drp.campaign.synthetic) so the tests run in seconds
and do not need the MiniCam butler repos; the butler path is tested separately when
those repos can be built.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from layouts import CAMPAIGN, small_inputs
from multisite_drp.campaign import synthetic
from multisite_drp.campaign.config import CampaignConfig, load_campaign
from multisite_drp.campaign.dataflow import Dataflow, dataflow_from_mapping
from multisite_drp.campaign.spatial import SpatialInputs


@pytest.fixture
def config(tmp_path: Path) -> CampaignConfig:
    return load_campaign(CAMPAIGN, data_root=tmp_path / "data", check_pipeline=False)


@pytest.fixture
def flow(config: CampaignConfig) -> Dataflow:
    return dataflow_from_mapping(config, synthetic.DRP_LIKE_DATAFLOW)


@pytest.fixture
def inputs() -> SpatialInputs:
    return small_inputs()
