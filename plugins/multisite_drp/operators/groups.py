"""TaskGroup factories: the distribution before step 1, and one group per DRP step.

Task ids read like a sentence: ``step3.frdf.replicate_inputs``,
``distribute.ukdf.raws``, ``step5.barrier``. Every task carries ``doc_md``.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import TaskGroup, TriggerRule

from multisite_drp.operators.drp import (
    BarrierOperator,
    DistributeOperator,
    GenerateGraphOperator,
    MergeOutputsOperator,
    RegisterOutputsOperator,
    ReplicateInputsOperator,
    ReplicateOutputsOperator,
    SubmitWorkflowOperator,
)
from multisite_drp.sensors.drp import ReplicationSensor, WorkflowSensor

__all__ = ["distribution_group", "step_group"]

# Stack commands (graph builds, merges) are bounded per site by a pool; replica-service
# requests by one shared pool. The pools come from airflow_settings.yaml.
REPLICATION_POOL = "drp_replication"


def site_pool(site: str) -> str:
    return f"drp_{site}"


def distribution_group(remote_sites: list[str], *, wait_timeout: timedelta) -> TaskGroup:
    """Before step 1: calibrations, refcat and skymap, then each site's raws, to every remote site."""
    with TaskGroup("distribute", tooltip="Calibrations, refcat and raws to the remote sites") as group:
        for site in remote_sites:
            with TaskGroup(site, tooltip=f"Inputs for {site}"):
                boot = DistributeOperator(
                    task_id="bootstrap", site=site, what="bootstrap", pool=REPLICATION_POOL,
                    doc_md=f"Register the hub's calibrations, refcat and skymap as one Rucio dataset and add "
                           f"a rule to {site}'s RSE (once; a rerun finds the rule).")
                raws = DistributeOperator(
                    task_id="raws", site=site, what="raws", pool=REPLICATION_POOL,
                    doc_md=f"Register the raws of the visits the plan assigns to {site} and add a rule to its "
                           "RSE. Whole visits only: a visit is never split between sites.")
                wait = ReplicationSensor(
                    task_id="wait_ingested", site=site, kind="distribution", timeout=wait_timeout,
                    doc_md=f"Wait (deferred, no worker held) until the bootstrap and raw rules to {site} are "
                           f"OK and {site}'s butler has ingested every dataset.")
                chain = DistributeOperator(
                    task_id="input_chain", site=site, what="input_chain", pool=site_pool(site),
                    doc_md=f"Recreate the campaign's input CHAINED collections in {site}'s butler.")
                [boot, raws] >> wait >> chain
    return group


def step_group(step: str, sites: list[str], *, is_global: bool, description: str,
               wait_timeout: timedelta, workflow_timeout: timedelta) -> tuple[TaskGroup, BarrierOperator]:
    """One DRP step: per site, graph → inputs → submit → wait → merge → register → return; then a barrier."""
    with TaskGroup(step, tooltip=description or step) as group:
        tails = []
        for site in sites:
            with TaskGroup(site, tooltip=f"{step} at {site}"):
                qg = GenerateGraphOperator(
                    task_id="generate_qg", step=step, site=site, pool=site_pool(site),
                    trigger_rule=TriggerRule.NONE_FAILED,
                    doc_md=f"Build {step}'s QuantumGraph for {site} at the hub (pipetask qgraph, restricted "
                           f"to {site}'s visits or tracts by the plan) and copy it, checksummed, to {site}. "
                           "Kept at the hub as provenance. An existing graph is reused.")
                inputs = ReplicateInputsOperator(
                    task_id="replicate_inputs", step=step, site=site, pool=REPLICATION_POOL,
                    doc_md=f"The graph's overall inputs that {site}'s butler lacks become one Rucio dataset "
                           f"with one rule to {site}. Nothing to move: no rule.")
                wait_in = ReplicationSensor(
                    task_id="wait_inputs", step=step, site=site, kind="inputs", timeout=wait_timeout,
                    doc_md=f"Wait (deferred) until the input rule to {site} is OK and ingested there.")
                submit = SubmitWorkflowOperator(
                    task_id="submit", step=step, site=site,
                    doc_md=f"Submit the graph at {site} (BPS; embedded: detached run-qbb). A workflow of the "
                           "same name is found, not resubmitted; a failed one is restarted.")
                wait_wf = WorkflowSensor(
                    task_id="wait_workflow", step=step, site=site, timeout=workflow_timeout,
                    doc_md="Wait (deferred) for the workflow to end, then apply the partial-success policy "
                           "(failed-quanta threshold). A rejected workflow is restarted once before failing.")
                merge = MergeOutputsOperator(
                    task_id="merge", step=step, site=site, pool=site_pool(site),
                    doc_md=f"Check {site}'s butler holds every predicted output; run the merge if the "
                           "workflow's final job did not; chain the output RUN.")
                register = RegisterOutputsOperator(
                    task_id="register", step=step, site=site, pool=REPLICATION_POOL,
                    doc_md=f"Register the step's outputs at {site} in Rucio as one dataset, with "
                           "lsst-rucio-register metadata (files already registered are skipped).")
                back = ReplicateOutputsOperator(
                    task_id="replicate_outputs", step=step, site=site, pool=REPLICATION_POOL,
                    doc_md=("Fan the global step's outputs out to every remote site." if is_global else
                            f"Add the rule returning {site}'s outputs to USDF (none for the hub itself)."))
                wait_out = ReplicationSensor(
                    task_id="wait_outputs", step=step, site=site, kind="outputs", timeout=wait_timeout,
                    doc_md="Wait (deferred) until the output rules are OK and the destination butlers "
                           "have ingested every dataset.")
                qg >> inputs >> wait_in >> submit >> wait_wf >> merge >> register >> back >> wait_out
                tails.append(wait_out)
        barrier = BarrierOperator(
            task_id="barrier", step=step, trigger_rule=TriggerRule.NONE_FAILED,
            doc_md=f"Hold the next step until every site has an accepted {step} workflow and every "
                   f"transfer of {step} is OK.")
        tails >> barrier
    return group, barrier
