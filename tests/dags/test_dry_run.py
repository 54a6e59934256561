"""A dry run of the campaign DAG: the plan and its report, and nothing external.

Its own fresh sites under their own Rucio scope; the same ``scripts/run_campaign.py``
path as the end-to-end campaign (tests/dags/test_campaign_e2e.py), which it does not
need, so it runs beside it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from multisite_drp.campaign import names

from tests.dags.test_campaign_e2e import _butler, _run_dag, _step_runs

pytestmark = pytest.mark.e2e


def test_dry_run_plans_and_reports_without_any_external_action(rucio_campaign_factory) -> None:
    rucio = rucio_campaign_factory("dryrun", monitor=False)
    data_root, cfg, tmp_path = rucio.data_root, rucio.cfg, rucio.base
    from localpanda import LocalPanDA

    try:
        run = _run_dag(data_root, tmp_path / "airflow", tmp_path / "dry.json", "--dry-run",
                       campaign=rucio.campaign_file, panda_root=tmp_path / "panda")
    finally:
        LocalPanDA(tmp_path / "panda").down()  # run_campaign fills the PanDA connections: it started one
    assert run["state"] == "success", f"dry run failed; log {run['log']}"
    states = run["task_states"]
    assert states["success"] == 3 and states["skipped"] == sum(states.values()) - 3  # validate, plan, report
    assert (names.plan_dir(cfg, 0) / "plan.json").is_file() and (names.plan_dir(cfg, 0) / "skymap.png").is_file()
    # Nothing external happened: no rule, no graph, no submission, no new dataset at any site.
    assert rucio.service.list_rules() == [] and rucio.service.list_datasets() == []
    assert not (cfg.work_path / "graphs").exists() and not (cfg.work_path / "submit").exists()
    for s in cfg.sites:
        b = _butler(cfg, s.name)
        assert _step_runs(b, cfg) == []
        assert len(b.refs("raw", cfg.input_collections)) == (120 if s.name == cfg.hub.name else 0)
    assert "dry run: the plan" in Path(run["log"]).read_text()
