"""drp_campaign: a multi-site DRP campaign, triggered by an operator from the Airflow UI.

**Shape.** `validate_campaign` → `plan_campaign` → `distribute.<site>.*` (calibrations,
refcat and each remote site's raws, verified ingested) → `step1` … `step9` → `finalize.*`.
The plan splits each step at a site into submission groups of bounded size
(`planner.max_group_size`). Each step group holds `stepN.split.<site>` (the plan's groups,
read at run time) and, per site, a chain mapped over those groups, one map index per
group: `generate_qg` → `replicate_inputs` → `wait_inputs` → `submit` → `wait_workflow` →
`merge` → `register` → `replicate_outputs` → `wait_outputs`; then `stepN.barrier`, which
holds the next step until every group of every site has an accepted workflow and every
transfer is OK. Global steps (3, 9) run at the hub only, as one group; their outputs fan
out to the remote sites. The pools `drp_<site>` (graph builds, merges) and
`drp_<site>_workflows` (workflows in flight, deferred waits counted) bound the work per site.

**Params** (validated at trigger time, then again against the campaign file before
any external action): `campaign_file` and `data_root` (paths used as written, never
`$VAR`- or `~`-expanded, that must lie inside the deployment's allowed roots:
`$MULTISITE_DRP_ALLOWED_ROOTS`, by default the repository's `include/campaigns`,
`include/pipelines` and `var`), `steps` (empty: all), `sites`
(empty: all; the hub is required; shares are rescaled), `generation` (bump it for a
fresh run in new collections; the same generation always finds its earlier work),
`dry_run` (plan and report, no external action).

**Safety.** Every task is idempotent: names are deterministic, and each action looks
before it acts, so clearing any task never duplicates a submission, a rule or a
dataset. Waiting tasks defer to the triggerer and hold no worker slot.

The DAG's site and step groups come from the campaign file named by
`$MULTISITE_DRP_CAMPAIGN` at parse time (default: the embedded three-site campaign).
Heavy imports (the LSST middleware) happen inside tasks, never at parse time.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG, Param, TaskGroup, TriggerRule
from multisite_drp.campaign.config import load_campaign
from multisite_drp.notifiers.alert import CampaignAlertNotifier, run_deadline
from multisite_drp.operators.drp import (
    CampaignReportOperator,
    FinalizeOperator,
    PlanCampaignOperator,
    ValidateCampaignOperator,
)
from multisite_drp.operators.groups import distribution_group, step_group
from multisite_drp.operators.params import campaign_params

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CAMPAIGN = os.environ.get(
    "MULTISITE_DRP_CAMPAIGN", str(ROOT / "include" / "campaigns" / "minidrp_embedded.yaml")
)
SHAPE = load_campaign(DEFAULT_CAMPAIGN, check_pipeline=False)
SITES = [s.name for s in SHAPE.sites]
REMOTE = [s.name for s in SHAPE.sites if s.name != SHAPE.hub.name]
STEPS = [s.name for s in SHAPE.steps]

with DAG(
    dag_id="drp_campaign",
    description="Rubin DRP across USDF, FrDF and UKDF",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    max_active_tasks=32,
    tags=["drp", "multisite"],
    doc_md=__doc__,
    # The campaign file's alerts.run_deadline_hours: an alert when a run is not done in time.
    deadline=run_deadline(SHAPE.alerts.run_deadline_hours),
    default_args={
        "retries": 1,
        "retry_delay": timedelta(seconds=30),
        "on_failure_callback": CampaignAlertNotifier(),
    },
    params={
        **campaign_params(DEFAULT_CAMPAIGN, SITES),
        "steps": Param([], type="array", items={"type": "string", "enum": STEPS}, uniqueItems=True,
                       description="Steps to run; empty means all."),
        "rescue": Param(False, type="boolean",
                        description="A failed workflow found by a cleared submit task gets a rescue submission "
                                    "(new name; only missing outputs run) instead of a restart."),
    },
) as dag:
    validate = ValidateCampaignOperator(
        task_id="validate_campaign", dag_sites=SITES, dag_steps=STEPS, retries=0,
        doc_md="Load the campaign file and its pipeline, check the Params, the connections and the "
               "butler repositories. Fails with file, field and expectation before any external action.")
    plan = PlanCampaignOperator(
        task_id="plan_campaign", retries=0,
        doc_md="Plan the generation: contiguous tract regions by share, whole visits per site, the transfer "
               "plan, per-site BPS configs and a sky map (work/plan/gN). A rerun checks the plan is unchanged.")
    distribute = distribution_group(REMOTE, wait_timeout=timedelta(days=2))
    validate >> plan >> distribute

    previous = distribute
    for step in SHAPE.steps:
        group, barrier = step_group(
            step.name, [SHAPE.hub.name] if step.is_global else SITES, is_global=step.is_global,
            description=step.description, wait_timeout=timedelta(days=2), workflow_timeout=timedelta(days=14))
        previous >> group
        previous = barrier

    with TaskGroup("finalize", tooltip="Chain the outputs, keep the provenance, report") as finalize:
        chain = FinalizeOperator(
            task_id="chain_outputs", what="chain_outputs", trigger_rule=TriggerRule.NONE_FAILED,
            doc_md="At USDF, chain every step's output RUNs (newest step first) and the inputs under the "
                   "campaign's output prefix.")
        provenance = FinalizeOperator(
            task_id="collect_provenance", what="collect_provenance", trigger_rule=TriggerRule.NONE_FAILED,
            doc_md="Copy every site's QuantumGraph, workflow state and logs back to USDF's provenance area.")
        report = CampaignReportOperator(
            task_id="report", trigger_rule=TriggerRule.NONE_FAILED,  # runs in dry_run too: the plan's report
            doc_md="Write report.json and report.md (quanta, wall time, bytes in/out, quanta and visits per "
                   "hour against the campaign's rate target) and print the table in this log.")
        chain >> provenance >> report
    previous >> finalize
