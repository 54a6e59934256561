"""Thin operators: each one calls one idempotent action of ``services.actions``.

Every operator reads the DAG run's Params (campaign file, data root, sites, steps,
generation, dry_run), builds the ports through ``CampaignHook`` and decides first
whether it has anything to do (``hooks.mixin.CampaignTaskMixin.prepare``, shared with the
sensors):

* ``dry_run``: nothing external happens; the task is skipped and says so;
* a step the Params leave out, a site the Params leave out, or a site the plan gives
  no work for this step: skipped, with the reason in the log.

The per-group operators (``StepSiteOperator`` and its subclasses) run inside a step's
site chain, which the DAG maps over the plan's groups of that step at that site
(``SplitStepOperator``'s list, read at run time). Their ``group`` is the mapped item
(``{"group": id, "label": ...}``), a template field resolved when the task runs; the
UI shows the label as the map index.

Skips propagate down a site's chain; each step's barrier and first tasks use
``none_failed`` so the campaign goes on past skipped work but never past a failure.

A bad input (``multisite_drp.errors.InputError``: campaign file, Param, connection,
credentials) fails the task at once, without retry; a ``TransientError`` is retried by
Airflow with exponential backoff (``CampaignTaskMixin``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from airflow.sdk import BaseOperator, SkipMixin

from multisite_drp.hooks.links import RUCIO_URL_KEY, CampaignPageLink, RucioLink, WorkflowMonitorLink
from multisite_drp.hooks.mixin import GROUP_MAP_INDEX, CampaignTaskMixin, group_id
from multisite_drp.operators.commands import CommandOperatorMixin

__all__ = [
    "BarrierOperator",
    "CampaignActionOperator",
    "CampaignReportOperator",
    "DistributeOperator",
    "FinalizeOperator",
    "GenerateGraphOperator",
    "MergeOutputsOperator",
    "PlanCampaignOperator",
    "RegisterOutputsOperator",
    "ReplicateInputsOperator",
    "ReplicateOutputsOperator",
    "RucioLink",
    "SplitStepOperator",
    "StepCommandOperator",
    "StepSiteOperator",
    "SubmitWorkflowOperator",
    "ValidateCampaignOperator",
    "WorkflowMonitorLink",
]

log = logging.getLogger(__name__)


class CampaignActionOperator(CampaignTaskMixin, BaseOperator):
    """Base: build the hook from the Params, skip if there is nothing to do, run ``act``."""

    template_fields: Sequence[str] = ()
    ui_color = "#e8f1fb"

    def __init__(self, *, step: str | None = None, site: str | None = None, settle_seconds: float | None = None,
                 night_scoped: bool = False, **kwargs: Any) -> None:
        super().__init__(**self.with_retry_defaults(kwargs))
        self.step = step
        self.site = site
        self.night_scoped = night_scoped
        if settle_seconds is not None:
            self.settle_seconds = settle_seconds

    #: Whether the task's result is a Rucio rule or dataset (see :class:`RucioLink`).
    links_to_rucio: bool = False

    def execute(self, context) -> Any:
        _, ctx = self.prepare(context)
        result = self.act(ctx, context)
        self.log.info("%s: %s", self.task_id, json.dumps(result, default=str)[:4000])
        if self.links_to_rucio:
            url = ctx.replica.webui_link(result)
            if url and context.get("ti") is not None:
                context["ti"].xcom_push(key=RUCIO_URL_KEY, value=url)
                self.log.info("%s: in Rucio at %s", self.task_id, url)
        return result

    def act(self, ctx, context) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class StepSiteOperator(CampaignActionOperator):
    """Calls ``actions.<action>(ctx, step, site, group)`` for one submission group."""

    action: str = ""
    template_fields: Sequence[str] = ("group",)

    def __init__(self, *, step: str, site: str, group: Any, **kwargs: Any) -> None:
        kwargs.setdefault("map_index_template", GROUP_MAP_INDEX)
        super().__init__(step=step, site=site, **kwargs)
        self.group = group

    @property
    def group_id(self) -> int:
        return group_id(self.group)

    def act(self, ctx, context) -> Any:
        from multisite_drp.services import actions

        return getattr(actions, self.action)(ctx, self.step, self.site, self.group_id)


class SplitStepOperator(CampaignActionOperator, SkipMixin):
    """The plan's submission groups of a step at a site, as the list the site's chain is
    mapped over (read at run time: the DAG file does not change with the number of groups).

    No groups (a step or site the Params leave out, a dry run, a site the plan gives no work
    in the step): the split skips every task of the site's chain at once (``SkipMixin``,
    as a short-circuit does) and succeeds. Left to the empty expansion, the skip would
    walk down the chain one task per scheduler pass: nine passes per site and step, about
    12 s per unselected step under ``dag.test``."""

    ui_color = "#d0e0e3"

    def __init__(self, *, step: str, site: str, **kwargs: Any) -> None:
        super().__init__(step=step, site=site, **kwargs)

    def execute(self, context) -> Any:
        from airflow.sdk.exceptions import AirflowSkipException

        from multisite_drp.services import actions

        try:
            _, ctx = self.prepare(context)
        except AirflowSkipException as exc:
            return self._no_groups(context, str(exc))
        groups = actions.groups(ctx, self.step, self.site)
        if not groups:
            return self._no_groups(context, "the plan gives the site no group in this step")
        self.log.info("%s/%s: %d groups: %s", self.step, self.site, len(groups),
                      ", ".join(f"[{g['group']}] {g['label']}" for g in groups))
        return groups

    def chain_tasks(self) -> list:
        """The tasks of the site's chain: the mapped task group this split feeds."""
        groups = {g.group_id for t in self.downstream_list if (g := t.get_closest_mapped_task_group()) is not None}
        return [t for t in self.get_flat_relatives(upstream=False)
                if (g := t.get_closest_mapped_task_group()) is not None and g.group_id in groups]

    def _no_groups(self, context, why: str) -> list:
        chain = self.chain_tasks()
        self.log.info("%s/%s: no groups (%s): skipping its %d chain tasks", self.step, self.site, why, len(chain))
        if chain and context.get("ti") is not None:
            self.skip(context["ti"], chain)  # raises DownstreamTasksSkipped: the runner skips them, this succeeds
        return []


class StepCommandOperator(CommandOperatorMixin, StepSiteOperator):
    """A group's task that is one stack command: ``actions.<command_action>`` says which
    command is still needed (None: none), the task starts it through the site's command
    runner and defers while it runs; ``actions.<finish_action>`` then ends the task. A
    retried task finds its predecessor's command by name."""

    command_action: ClassVar[str] = ""
    finish_action: ClassVar[str] = ""

    def execute(self, context) -> Any:
        from multisite_drp.services import actions

        hook, ctx = self.prepare(context)
        pending = getattr(actions, self.command_action)(ctx, self.step, self.site, self.group_id)
        if pending is None:
            return self._finish(ctx)
        spec, again = pending
        return self.start_command(context, hook, spec, again=again)

    # Its own attribute, so that CampaignTaskMixin ends the project's errors here too.
    execute_complete = CommandOperatorMixin.execute_complete

    def command_done(self, context, ref, result) -> Any:
        _, ctx = self.prepare(context)
        return self._finish(ctx)

    def _finish(self, ctx) -> Any:
        from multisite_drp.services import actions

        result = getattr(actions, self.finish_action)(ctx, self.step, self.site, self.group_id)
        self.log.info("%s: %s", self.task_id, json.dumps(result, default=str)[:4000])
        return result


class GenerateGraphOperator(StepCommandOperator):
    """Builds the group's graph at the hub through the hub's command runner, and defers while
    the command runs (a pod in production: tens of GB and hours at DR1 scale, no worker
    held); then keeps, summarises and distributes the graph (``actions.finish_graph``). A
    graph already built is found."""

    action = "generate_qg"
    command_action = "graph_command"
    finish_action = "finish_graph"
    ui_color = "#d9ead3"


class ReplicateInputsOperator(StepSiteOperator):
    links_to_rucio = True
    operator_extra_links = (RucioLink(),)
    action = "replicate_inputs"
    ui_color = "#fce5cd"


class SubmitWorkflowOperator(StepSiteOperator):
    """Submits once; finds an earlier submission; restarts a FAILED one (``bps restart``), or
    with the Param ``rescue`` makes a rescue submission, and raises a ``workflow_restarted``
    warning alert when it does. Shows the workflow system's page (the PanDA monitor) as an
    extra link."""

    ui_color = "#cfe2f3"
    operator_extra_links = (WorkflowMonitorLink(),)

    def act(self, ctx, context) -> Any:
        from multisite_drp.services import actions

        ref = actions.submit(ctx, self.step, self.site, self.group_id, rescue=bool(context["params"].get("rescue")))
        from multisite_drp.services.workflow.base import WorkflowRef

        url = ctx.workflows[self.site].monitor_url(WorkflowRef.from_dict(ref))
        if ref["submission"] in ("restarted", "rescued"):
            ti = context.get("ti")
            self.warn(context, "workflow_restarted",
                      f"{ref['name']} was found {ref['previous_state']} ({ref['previous_message']}) and "
                      f"{ref['submission']} (run {ref['previous_run_id']} -> {ref['run_id']})",
                      key=f"workflow_restarted:{ref['name']}:{ref['previous_run_id']}:{ref['submission']}:"
                          f"{ref['run_id']}:{getattr(ti, 'run_id', None)}:{getattr(ti, 'try_number', None)}")
        if url:
            self.log.info("%s/%s group %d: follow it at %s", self.step, self.site, self.group_id, url)
        return {**ref, "monitor_url": url}


class MergeOutputsOperator(StepCommandOperator):
    """Checks the site's butler holds every predicted output of the group; if not, and the
    workflow's final job did not merge, runs the merge through the site's command runner
    and defers while it runs (the command itself holds a local butler's write lock, so no
    worker waits on it); then adds the group's RUN to the step's chain at the site
    (``actions.merge_command``, ``actions.finish_merge``)."""

    action = "merge"
    command_action = "merge_command"
    finish_action = "finish_merge"
    ui_color = "#d9ead3"


class RegisterOutputsOperator(StepSiteOperator):
    links_to_rucio = True
    operator_extra_links = (RucioLink(),)
    action = "register"
    ui_color = "#fce5cd"


class ReplicateOutputsOperator(StepSiteOperator):
    links_to_rucio = True
    operator_extra_links = (RucioLink(),)
    action = "replicate_outputs"
    ui_color = "#fce5cd"


class DistributeOperator(CampaignActionOperator):
    """Before step 1: ``bootstrap`` (calibrations, refcat, skymap), ``raws`` (per the plan)
    or ``input_chain`` (recreate the input chains once their members arrived)."""

    ui_color = "#fff2cc"
    operator_extra_links = (RucioLink(),)
    _ACTIONS: ClassVar[dict[str, str]] = {
        "bootstrap": "distribute_bootstrap", "raws": "distribute_raws", "input_chain": "ensure_input_chain"}

    def __init__(self, *, site: str, what: str, **kwargs: Any) -> None:
        if what not in self._ACTIONS:
            raise ValueError(f"DistributeOperator: what={what!r}; expected one of {sorted(self._ACTIONS)}")
        super().__init__(site=site, **kwargs)
        self.what = what

    @property
    def links_to_rucio(self) -> bool:  # type: ignore[override]
        return self.what != "input_chain"

    def act(self, ctx, context) -> Any:
        from multisite_drp.services import actions

        return getattr(actions, self._ACTIONS[self.what])(ctx, self.site)


class BarrierOperator(CampaignActionOperator):
    """End of a step: every site's work is merged and every transfer of the step is OK."""

    ui_color = "#f4cccc"

    def __init__(self, *, step: str, **kwargs: Any) -> None:
        super().__init__(step=step, **kwargs)

    def act(self, ctx, context) -> Any:
        from multisite_drp.services import actions

        return actions.barrier(ctx, self.step)


class ValidateCampaignOperator(CampaignTaskMixin, BaseOperator):
    """Check everything before any external action: the campaign file (with its pipeline),
    the Params against it and against the DAG's shape, the connections, the butler repos."""

    ui_color = "#f3f3f3"

    def __init__(self, *, dag_sites: list[str], dag_steps: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dag_sites = dag_sites
        self.dag_steps = dag_steps

    def execute(self, context) -> dict:
        from pathlib import Path

        params = context["params"]
        hook = self.campaign_hook(context, check_pipeline=True)
        cfg, source = hook.config, params["campaign_file"]
        sites, steps = [s.name for s in cfg.sites], [s.name for s in cfg.steps]
        extra_sites = sorted(set(sites) - set(self.dag_sites))
        extra_steps = sorted(set(steps) - set(self.dag_steps))
        if extra_sites or extra_steps:
            raise ValueError(
                f"{source}: sites/steps: this DAG was built for sites {self.dag_sites} and steps {self.dag_steps} "
                f"(from $MULTISITE_DRP_CAMPAIGN at parse time); the campaign adds sites {extra_sites} and steps "
                f"{extra_steps}. Point MULTISITE_DRP_CAMPAIGN at this file so the DAG has their task groups.")
        unknown = sorted(set(params.get("steps") or []) - set(steps))
        if unknown:
            raise ValueError(f"Params: steps: {unknown} are not steps of {source}; expected some of {steps}")
        settings = hook.settings  # validates every connection the campaign names
        for site, s in settings["butlers"].items():
            repo = s["repo"]
            if "://" not in repo and not (Path(repo) / "butler.yaml").is_file():
                raise FileNotFoundError(f"{source}: sites ({site}).butler_repo: {repo} is not a butler repository "
                                        "(no butler.yaml); for the embedded sites run `make sites`")
        identities = {}
        if not params.get("dry_run"):  # log in to the replica service as every site (no action)
            identities = hook.replica_service().check()
        summary = {"campaign": cfg.name, "generation": hook.generation, "work_dir": str(cfg.work_path),
                   "sites": {s.name: round(s.share, 4) for s in cfg.sites},
                   "steps": params.get("steps") or steps, "dry_run": bool(params.get("dry_run")),
                   "adapters": {site: s["adapter"] for site, s in settings["workflows"].items()},
                   "replica_identities": identities}
        self.log.info("campaign valid: %s", json.dumps(summary))
        return summary


class PlanCampaignOperator(CampaignActionOperator, SkipMixin):
    """Plan the generation (runs in dry_run too: planning takes no external action). Its
    extra link "DRP campaign" opens the run's campaign page.

    In a dry run it then marks every later task skipped at once, except the report,
    which prints the plan: nothing is built, moved or submitted, and nothing waits.
    """

    ui_color = "#d0e0e3"
    operator_extra_links = (CampaignPageLink(),)
    REPORT_TASK = "finalize.report"

    def execute(self, context) -> Any:
        from multisite_drp.services import actions

        hook = self.campaign_hook(context)
        result = actions.make_plan(hook.config, hook.generation)
        self.log.info("plan: %s", json.dumps(result))
        if context["params"].get("dry_run"):
            later = [t for t in self.get_flat_relatives(upstream=False) if t.task_id != self.REPORT_TASK]
            self.log.info("dry run: skipping %d later tasks; %s prints the plan", len(later), self.REPORT_TASK)
            self.skip(ti=context["ti"], tasks=later)
        return result


class FinalizeOperator(CampaignActionOperator):
    """After the last step: ``chain_outputs`` or ``collect_provenance`` at the hub."""

    ui_color = "#d9d2e9"
    _ACTIONS: ClassVar[tuple[str, ...]] = ("chain_outputs", "collect_provenance")

    def __init__(self, *, what: str, **kwargs: Any) -> None:
        if what not in self._ACTIONS:
            raise ValueError(f"FinalizeOperator: what={what!r}; expected one of {list(self._ACTIONS)}")
        super().__init__(**kwargs)
        self.what = what

    def act(self, ctx, context) -> Any:
        from multisite_drp.services import actions

        return getattr(actions, self.what)(ctx)


class CampaignReportOperator(CampaignActionOperator):
    """Write and print the campaign report (or, in dry_run, the plan's report)."""

    ui_color = "#d9d2e9"

    def execute(self, context) -> Any:
        from multisite_drp.campaign import names
        from multisite_drp.services.report import render_markdown, write_report

        hook = self.campaign_hook(context)
        if context["params"].get("dry_run"):
            plan_md = names.plan_dir(hook.config, hook.generation) / "plan.md"
            self.log.info("dry run: the plan\n%s", plan_md.read_text() if plan_md.exists() else "(no plan.md)")
            return {"dry_run": True, "plan": str(plan_md)}
        dag_run = context.get("dag_run")
        started = dag_run.start_date.timestamp() if dag_run is not None and dag_run.start_date else None
        report, out = write_report(hook.get_conn(), airflow_started=started)
        self.log.info("campaign report (%s)\n%s", out, render_markdown(report))
        return {"report_dir": str(out), "rate": report["rate"], "totals": report["totals"]}
