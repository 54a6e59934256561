"""drp_campaign: a multi-site DRP campaign, triggered by an operator from the Airflow UI.

This file only builds the DAG; the work is in ``multisite_drp.services.actions`` and the
planner in ``multisite_drp.campaign``. Heavy imports (the LSST middleware) happen inside
tasks, never at parse time.

Current scope: the trigger-time validation of the Params and the campaign file, and the
planning task that writes the plan every later task reads. The per-step TaskGroups
(generate_qg, replicate_inputs, submit, wait, merge, register, replicate_outputs) are
the open campaign-DAG issue; their actions already exist in services/actions.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, Param, get_current_context, task

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CAMPAIGN = os.environ.get(
    "MULTISITE_DRP_CAMPAIGN", str(ROOT / "include" / "campaigns" / "minidrp_embedded.yaml")
)

with DAG(
    dag_id="drp_campaign",
    description="Rubin DRP across USDF, FrDF and UKDF",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["drp", "multisite"],
    doc_md=__doc__,
    params={
        "campaign_file": Param(DEFAULT_CAMPAIGN, type="string", minLength=1,
                               description="Campaign YAML (validated before anything runs)."),
        "data_root": Param(None, type=["null", "string"],
                           description="Override the campaign's data_root (embedded sites)."),
        "steps": Param([], type="array", items={"type": "string", "pattern": "^step[1-9]$"},
                       description="Steps to run; empty means all."),
        "sites": Param([], type="array", items={"type": "string", "pattern": "^[a-z][a-z0-9]{1,15}$"},
                       description="Sites to include; empty means all."),
        "dry_run": Param(False, type="boolean", description="Plan and report, take no external action."),
    },
) as dag:

    @task(doc_md="Load and validate the campaign file and the Params; fail with file, field and expectation.")
    def validate_campaign() -> dict:
        from multisite_drp.campaign.config import load_campaign

        params = get_current_context()["params"]
        cfg = load_campaign(params["campaign_file"], data_root=params.get("data_root"))
        unknown_steps = sorted(set(params["steps"]) - {s.name for s in cfg.steps})
        unknown_sites = sorted(set(params["sites"]) - {s.name for s in cfg.sites})
        if unknown_steps or unknown_sites:
            raise ValueError(
                f"{params['campaign_file']}: Params name steps {unknown_steps} / sites {unknown_sites} "
                f"that the campaign does not define (steps: {[s.name for s in cfg.steps]}, "
                f"sites: {[s.name for s in cfg.sites]})"
            )
        return {"campaign": cfg.name, "work_dir": str(cfg.work_path),
                "sites": [s.name for s in cfg.sites], "steps": [s.name for s in cfg.steps]}

    @task(doc_md="Plan the campaign: site regions, whole-visit assignment, transfers, BPS configs, sky map.")
    def plan_campaign(summary: dict) -> dict:
        from multisite_drp.campaign.config import load_campaign
        from multisite_drp.campaign.planner import plan_to_directory

        params = get_current_context()["params"]
        cfg = load_campaign(params["campaign_file"], data_root=params.get("data_root"))
        out = cfg.work_path / "plan"
        plan_to_directory(cfg, out)
        return {"plan_dir": str(out), **summary}

    plan_campaign(validate_campaign())
