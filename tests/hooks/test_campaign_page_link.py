"""The plan task's "DRP campaign" link: the run's campaign page, under the API server's path.

(The link as the UI reads it from a real run is checked in tests/dags/test_campaign_e2e.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from multisite_drp.hooks.links import CampaignPageLink


@pytest.mark.parametrize("base_url, prefix", [
    ("http://127.0.0.1:8080", ""),
    ("https://airflow.example.org/drp/", "/drp"),
])
def test_the_link_is_the_runs_page_under_the_base_path(monkeypatch, base_url, prefix) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", base_url)
    key = SimpleNamespace(dag_id="drp_campaign", run_id="manual__2026-12-07T08:00:00+00:00", task_id="plan_campaign",
                          map_index=-1)
    assert CampaignPageLink().get_link(None, ti_key=key) == (
        f"{prefix}/drp-campaign/run?dag_id=drp_campaign&run_id=manual__2026-12-07T08%3A00%3A00%2B00%3A00")
