"""TaskGroup factories: the distribution before step 1, and one group per DRP step.

Task ids read like a sentence: ``step3.frdf.replicate_inputs``,
``distribute.ukdf.raws``, ``step5.barrier``. A step's site chain is mapped over the
plan's submission groups of that step at that site (``step1.split.frdf`` lists them at run
time), so ``step1.frdf.submit[17]`` is group 17's submission, and the UI shows the group's
visits or tracts as its map index. Every task carries ``doc_md``.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import TaskGroup, TriggerRule, task_group

from multisite_drp.operators.drp import (
    BarrierOperator,
    DistributeOperator,
    GenerateGraphOperator,
    MergeOutputsOperator,
    RegisterOutputsOperator,
    ReplicateInputsOperator,
    ReplicateOutputsOperator,
    SplitStepOperator,
    SubmitWorkflowOperator,
)
from multisite_drp.sensors.drp import ReplicationSensor, WorkflowSensor

__all__ = ["distribution_group", "site_pool", "step_group", "workflow_pool"]

# Stack commands (graph builds, merges) are bounded per site by a pool, workflows in flight
# per site by another (counting deferred waits); replica-service requests by one shared
# pool. The pools come from airflow_settings.yaml.
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


def workflow_pool(site: str) -> str:
    """The pool bounding how many of a site's groups have a workflow in flight: ``submit`` and
    the deferred ``wait_workflow`` take a slot each (the pool counts deferred tasks)."""
    return f"drp_{site}_workflows"


def step_group(step: str, sites: list[str], *, is_global: bool, description: str,
               wait_timeout: timedelta, workflow_timeout: timedelta,
               night: bool = False) -> tuple[TaskGroup, BarrierOperator]:
    """One DRP step: per site, the plan's groups (``split``), then the site's chain mapped over
    them (graph → inputs → submit → wait → merge → register → return, one map index per
    group); then a barrier after every group of every site.

    ``night``: the same tasks scoped to the run's night (``drp_nightly``'s step 1: every name
    from ``names.night_config``, the night's plan; skipped unless the Param ``run_step1``)."""
    with TaskGroup(step, tooltip=description or step) as group:
        tails = []
        with TaskGroup("split", tooltip=f"{step}: the plan's submission groups per site"):
            splits = {
                site: SplitStepOperator(
                    task_id=site, step=step, site=site, trigger_rule=TriggerRule.NONE_FAILED, night_scoped=night,
                    doc_md=f"Read the plan's submission groups of {step} at {site} (each bounded by "
                           "planner.max_group_size quanta-equivalents): the list the site's chain is mapped over. "
                           "None: the chain is skipped.")
                for site in sites}
        for site in sites:
            chain = _site_chain(step, site, is_global=is_global, wait_timeout=wait_timeout,
                                workflow_timeout=workflow_timeout, night=night)
            tails.append(chain.expand(group=splits[site].output))
        barrier = BarrierOperator(
            task_id="barrier", step=step, trigger_rule=TriggerRule.NONE_FAILED, night_scoped=night,
            doc_md=f"Hold the next step until every group of every site has an accepted {step} workflow and "
                   f"every transfer of {step} is OK.")
        tails >> barrier
    return group, barrier


def _site_chain(step: str, site: str, *, is_global: bool, wait_timeout: timedelta, workflow_timeout: timedelta,
                night: bool = False):
    """The per-group chain of a step at a site, as a task group to be mapped over the groups."""

    @task_group(group_id=site, tooltip=f"{step} at {site}, one map index per submission group")
    def chain(group):
        on = {"step": step, "site": site, "group": group, "night_scoped": night}  # every task of the chain
        qg = GenerateGraphOperator(
            task_id="generate_qg", **on, pool=site_pool(site),
            doc_md=f"Build this group's {step} QuantumGraph for {site} at the hub (pipetask qgraph, restricted "
                   f"to the group's visits or tracts by the plan) and copy it, checksummed, to {site}. "
                   "Kept at the hub as provenance. An existing graph is reused. The build runs through the "
                   "hub's command runner (a pod in production) and the task defers while it runs.")
        inputs = ReplicateInputsOperator(
            task_id="replicate_inputs", **on, pool=REPLICATION_POOL,
            doc_md=f"The group graph's overall inputs that {site}'s butler lacks become one Rucio dataset "
                   f"with one rule to {site}. Nothing to move: no rule.")
        wait_in = ReplicationSensor(
            task_id="wait_inputs", **on, kind="inputs", timeout=wait_timeout,
            doc_md=f"Wait (deferred) until the group's input rule to {site} is OK and ingested there.")
        submit = SubmitWorkflowOperator(
            task_id="submit", **on, pool=workflow_pool(site),
            weight_rule="absolute", priority_weight=1,
            doc_md=f"Submit the group's graph at {site} (BPS; embedded: detached run-qbb). A workflow of the "
                   "same name is found, not resubmitted; a failed one is restarted. The site's workflow pool "
                   "bounds how many groups are in flight.")
        wait_wf = WorkflowSensor(
            task_id="wait_workflow", **on, timeout=workflow_timeout,
            pool=workflow_pool(site), weight_rule="absolute", priority_weight=2,
            doc_md="Wait (deferred, holding a slot of the site's workflow pool) for the group's workflow to end, "
                   "then apply the partial-success policy (failed-quanta threshold). A rejected workflow is "
                   "restarted once before failing.")
        merge = MergeOutputsOperator(
            task_id="merge", **on, pool=site_pool(site),
            doc_md=f"Check {site}'s butler holds every predicted output of the group; run the merge if the "
                   "workflow's final job did not; add the group's RUN to the step's chain at the site.")
        register = RegisterOutputsOperator(
            task_id="register", **on, pool=REPLICATION_POOL,
            doc_md=f"Register the group's outputs at {site} in Rucio as one dataset, with "
                   "lsst-rucio-register metadata (files already registered are skipped).")
        back = ReplicateOutputsOperator(
            task_id="replicate_outputs", **on, pool=REPLICATION_POOL,
            doc_md=("Fan the global step's outputs out to every remote site." if is_global else
                    f"Add the rule returning the group's outputs at {site} to USDF (none for the hub itself)."))
        wait_out = ReplicationSensor(
            task_id="wait_outputs", **on, kind="outputs", timeout=wait_timeout,
            doc_md="Wait (deferred) until the group's output rules are OK and the destination butlers "
                   "have ingested every dataset.")
        qg >> inputs >> wait_in >> submit >> wait_wf >> merge >> register >> back >> wait_out
        return wait_out

    return chain
