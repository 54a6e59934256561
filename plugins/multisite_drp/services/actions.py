"""The campaign's actions, one function per DAG task, each idempotent.

Operators are thin: they build a ``CampaignContext`` from Airflow Connections and call
one of these. Every function looks before it acts (deterministic names from
``campaign.names``; the butler, Rucio and the workflow system are
asked what already exists), so a cleared or retried task continues earlier work and
never duplicates a submission, a rule or a dataset.

Data flow per step, site and submission group (DMTN-213; the plan splits each step at a
site into groups of bounded size, ``campaign.grouping``), all addressed through the ports:

1. ``generate_qg``: build the predicted graph against the hub butler (the hub holds
   every input and every returned output), keep it at the hub as provenance and
   distribute a checksummed copy to the site's work area.
2. ``replicate_inputs``: the graph's overall inputs that the site's butler lacks
   become one Rucio dataset (per group) with a rule to the site.
3. ``submit``: the workflow service runs the graph at the site.
4. (wait: deferrable trigger)
5. ``merge``: confirm the outputs are in the site butler; run the merge if the
   workflow's final job did not.
6. ``register``: the outputs become a Rucio dataset at the site's RSE.
7. ``replicate_outputs``: a rule returns them to the hub (for a global step: fans them
   out to every remote site); then wait until the destination butler has them.

No Airflow imports.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from multisite_drp.campaign import names
from multisite_drp.campaign.config import CampaignConfig, SiteRole
from multisite_drp.crashpoints import crashpoint
from multisite_drp.errors import InputError
from multisite_drp.services import middleware
from multisite_drp.services.butler import WRITE_LOCK_FILE, SiteButler, local_root
from multisite_drp.services.commands.base import CommandService, CommandSpec
from multisite_drp.services.fileio import atomic_write_json, read_json, sha256_of
from multisite_drp.services.replica.base import ReplicaService, RuleRef
from multisite_drp.services.workflow.base import WmsStates, WorkflowRef, WorkflowService, WorkflowSpec

log = logging.getLogger(__name__)

__all__ = ["CampaignContext"]

RAW = "raw"


@dataclasses.dataclass
class CampaignContext:
    """Everything an action needs: the validated config, the plan and the ports."""

    config: CampaignConfig
    workflows: Mapping[str, WorkflowService]
    replica: ReplicaService
    butlers: Mapping[str, SiteButler]
    generation: int = 0
    #: site -> command runner (graph builds, merges). Unset: each site's embedded runner,
    #: built when an action first asks for it (``factory.build_context`` does the same; the
    #: hook builds a site's Kubernetes runner when its campaign entry names one).
    commands: Mapping[str, CommandService] | None = None

    def __post_init__(self) -> None:
        if self.commands is None:
            from multisite_drp.services import factory

            cfg = self.config
            self.commands = factory.LazyPorts(
                [s.name for s in cfg.sites],
                lambda site: factory.command_service(factory.command_settings(cfg, site, None)))

    @property
    def hub(self) -> str:
        return self.config.hub.name

    def plan(self):  # -> CampaignPlan (imported lazily: the planner pulls in numpy/pipe_base)
        """The generation's plan (read once per process while ``plan.json`` is unchanged)."""
        from multisite_drp.campaign.plan import CampaignPlan

        return CampaignPlan.load_current(names.plan_dir(self.config, self.generation))


def read_graph(path):
    """``services.qgraph.read_graph``, imported where a graph is read: ``lsst.pipe.base`` and
    ``lsst.daf.butler`` cost a task about 2 s of CPU at start-up, and most tasks read no graph."""
    from multisite_drp.services.qgraph import read_graph as read

    return read(path)


# -- campaign start: plan, then distribute what every site needs before step 1 ----------------


class PlanChangedError(InputError, RuntimeError):
    """A generation's plan would change: its earlier tasks ran on the old one."""


def make_plan(cfg: CampaignConfig, generation: int = 0) -> dict:
    """Plan the generation once; a rerun checks the inputs still give the same plan.

    The plan is what every later task reads. Replanning the same generation with another
    outcome (sites added or removed, new visits in the hub butler) would silently move
    visits between sites under work already done, so it is refused: bump the
    generation for a fresh run in new collections. A plan directory without its
    ``COMPLETE`` marker (a writer stopped midway) is no plan: it is built again. The
    submission groups are part of the plan: a new ``planner.max_group_size`` needs a new
    generation too.
    """
    from multisite_drp.campaign.plan import CampaignPlan, plan_complete
    from multisite_drp.campaign.planner import load_inputs, plan_campaign, plan_to_directory

    out = names.plan_dir(cfg, generation)
    if plan_complete(out):
        old = CampaignPlan.load(out)
        new = plan_campaign(cfg, load_inputs(cfg))  # in memory: only the assignment is compared
        before = {s.name: (s.visits, s.tracts) for s in old.sites}
        after = {s.name: (s.visits, s.tracts) for s in new.sites}
        old_groups = [(g.step, g.site, g.group, g.ids) for g in old.groups]
        new_groups = [(g.step, g.site, g.group, g.ids) for g in new.groups]
        if before == after and old_groups != new_groups:
            changed = sorted({g[0] for g in old_groups if g not in new_groups}
                             | {g[0] for g in new_groups if g not in old_groups})
            raise PlanChangedError(
                f"{out / 'plan.json'}: generation {generation} was split into other submission groups (steps "
                f"{changed}; planner.max_group_size was {old.max_group_size}, is {new.max_group_size}; a step may "
                f"set its own max_group_size): {cfg.source_path} now gives other graphs, RUNs and workflows. Keep "
                "the old sizes, or trigger with a new 'generation' to process in new groups")
        if before != after:
            changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            raise PlanChangedError(
                f"{out / 'plan.json'}: generation {generation} was planned for sites {sorted(before)}; "
                f"planning again now gives another assignment (changed: {changed}). Keep the campaign's "
                "sites and inputs, or trigger with a new 'generation' to reprocess in new collections."
            )
        plan = old
    else:
        if out.exists():
            log.warning("%s is an incomplete plan directory (no COMPLETE marker): building it again", out)
        plan = plan_to_directory(cfg, out, generation=generation)
    return {"plan_dir": str(out), "method": plan.method, "groups": len(plan.groups),
            "sites": {s.name: {"visits": len(s.visits), "tracts": len(s.tracts),
                               "share_target": s.share_target, "share_achieved": round(s.share_achieved, 4)}
                      for s in plan.sites},
            "cross_site_bytes": plan.metrics.cross_site_bytes, "connected": plan.metrics.connected}




def _non_raw_types(ctx: CampaignContext) -> list[str]:
    hub = ctx.butlers[ctx.hub]
    types: set[str] = set()
    for child in hub.flatten(ctx.config.input_collections):
        types.update(hub.dataset_types_in(child))
    return sorted(t for t in types if t != RAW)


def distribute_bootstrap(ctx: CampaignContext, site: str) -> dict | None:
    """Calibrations, refcat and skymap (every non-raw input) to a remote site."""
    if site == ctx.hub:
        return None
    hub, local = ctx.butlers[ctx.hub], ctx.butlers[site]
    refs = [r for t in _non_raw_types(ctx) for r in hub.refs(t, ctx.config.input_collections)]
    # What the site already holds (its skyMap, or everything on a rerun) is not sent again.
    local.refresh()
    refs = local.missing(refs)
    dataset = names.rucio_dataset(ctx.config, "bootstrap", site, "inputs", ctx.generation)
    if not refs:
        existing = ctx.replica.find_rule(dataset, site)
        return existing.to_dict() if existing else None
    reg = ctx.replica.register(ctx.hub, dataset, refs)
    rule = ctx.replica.add_rule(dataset, site)
    log.info("bootstrap %s: %d files (%d bytes) -> rule %s", site, reg.files, reg.bytes, rule.rule_id)
    return rule.to_dict()


class SiteRawsMissingError(InputError, RuntimeError):
    """A site the campaign says holds every raw lacks raws its plan needs."""


def distribute_raws(ctx: CampaignContext, site: str) -> dict | None:
    """The raws of the visits the plan assigns to ``site``, as one Rucio dataset with a rule
    to the site (none to move for the hub).

    A site whose campaign entry sets ``holds_all_raws`` (DMTN-213: FrDF keeps a copy of
    every raw) gets no rule: its butler is checked to hold each of those raws under the
    hub's dataset ID, in the hub's RUN, and `SiteRawsMissingError` names the site and the
    count of missing ones if it does not.
    """
    if site == ctx.hub:
        return None
    plan = ctx.plan()
    visits = plan.site_visits(site)
    if not visits:
        return None
    hub = ctx.butlers[ctx.hub]
    where = f"instrument = '{ctx.config.instrument}' AND exposure IN ({', '.join(map(str, visits))})"
    refs = hub.refs(RAW, ctx.config.input_collections, where=where)
    if ctx.config.site(site).holds_all_raws:
        return _check_held_raws(ctx, site, refs, len(visits), where)
    dataset = names.rucio_dataset(ctx.config, "raws", site, "raw", ctx.generation)
    reg = ctx.replica.register(ctx.hub, dataset, refs)
    rule = ctx.replica.add_rule(dataset, site)
    log.info("raws for %s: %d visits, %d files (%d bytes) -> rule %s",
             site, len(visits), reg.files, reg.bytes, rule.rule_id)
    return rule.to_dict()


def _check_held_raws(ctx: CampaignContext, site: str, refs: list, n_visits: int, where: str) -> dict:
    """Raise unless ``site``'s butler holds every ref of ``refs`` (same dataset ID, same RUN)."""
    cfg, local = ctx.config, ctx.butlers[site]
    local.refresh()
    runs = sorted({r.run for r in refs})
    held = local.refs(RAW, runs, where=where)
    held_ids = {r.id for r in held}
    missing = [r for r in refs if r.id not in held_ids]
    if missing:
        elsewhere = len({r.dataId.required_values for r in missing} & {r.dataId.required_values for r in held})
        other_ids = f"; {elsewhere} of them are there under other dataset IDs" if elsewhere else ""
        raise SiteRawsMissingError(
            f"{cfg.source_path}: sites ({site}).holds_all_raws is true, but {site}'s butler ({cfg.repo_of(site)}) "
            f"lacks {len(missing)} of the {len(refs)} raws of the {n_visits} visits the plan assigns it "
            f"(first: {dict(missing[0].dataId.required)}){other_ids}; expected each in RUN {', '.join(runs)} with "
            "the hub's dataset ID. Ingest them there as replicas of the hub's, or set holds_all_raws: false "
            "so the campaign replicates them")
    log.info("raws for %s: it holds all %d raws of its %d visits (holds_all_raws): nothing to replicate",
             site, len(refs), n_visits)
    return {"site": site, "holds_all_raws": True, "visits": n_visits, "raws": len(refs)}


def distribution_rules(ctx: CampaignContext, site: str) -> list[dict]:
    """The bootstrap and raw rules to ``site`` that exist (what the distribution waits on)."""
    found = [ctx.replica.find_rule(names.rucio_dataset(ctx.config, what, site, dtype, ctx.generation), site)
             for what, dtype in (("bootstrap", "inputs"), ("raws", "raw"))]
    return [r.to_dict() for r in found if r is not None]


def ensure_input_chain(ctx: CampaignContext, site: str) -> None:
    """Recreate the campaign's input chains at a site once their members arrived."""
    if site == ctx.hub:
        return
    hub, local = ctx.butlers[ctx.hub], ctx.butlers[site]
    local.refresh()
    for coll in ctx.config.input_collections:
        children = hub.chain_children(coll)
        if children is not None:
            local.ensure_chain(coll, children)


# -- per step, site and group ------------------------------------------------------------------


def _step_runs_at_hub(ctx: CampaignContext, steps: list[str]) -> list[str]:
    """Output RUNs (every group's) of ``steps`` present at the hub, in the given step order,
    newest generation first."""
    hub = ctx.butlers[ctx.hub]
    hub.refresh()
    runs: list[str] = []
    for name in steps:
        found = hub.runs_matching(names.output_run_pattern(ctx.config, name))
        runs.extend(sorted(found, key=lambda r: (-names.run_generation(r), r)))
    return runs


def _earlier_output_runs(ctx: CampaignContext, step: str) -> list[str]:
    """Output RUNs of the steps before ``step``, latest step first."""
    order = [s.name for s in ctx.config.steps]
    return _step_runs_at_hub(ctx, list(reversed(order[: order.index(step)])))


def data_query(ctx: CampaignContext, step: str, site: str, group: int) -> str:
    """A group's butler query at a site: its visits or tracts ANDed with the campaign's query."""
    return ctx.plan().group_query(step, site, group)


def groups(ctx: CampaignContext, step: str, site: str) -> list[dict]:
    """What the DAG maps a step's site chain over: one item (id, label) per group of the plan."""
    return [g.as_map_item() for g in ctx.plan().groups_for(step, site)]


def _command(ctx: CampaignContext, step: str, runs_at: str, group: int, kind: str, argv: list[str],
             log_path: Path, site: str | None = None) -> CommandSpec:
    """A stack command of one group, run at ``runs_at`` (the hub builds every site's graph):
    named by the group's (step, ``site``, generation, group) and its kind."""
    cfg = ctx.config
    site = site or runs_at
    return CommandSpec(
        name=names.command_name(cfg, step, site, ctx.generation, group, kind), site=runs_at, kind=kind,
        argv=tuple(argv), log_path=str(log_path), timeout=cfg.timeouts.command_seconds,
        labels={"campaign": cfg.name, "step": step, "site": site, "generation": str(ctx.generation),
                "group": str(group), "kind": kind})


def graph_command(ctx: CampaignContext, step: str, site: str, group: int) -> tuple[CommandSpec, bool] | None:
    """The hub's build of one group's graph, if the graph is not there yet: ``(spec, again)``.

    Named by the group (``campaign.names.command_name``): a retry finds a build still
    running or finished instead of starting another; a failed one is run again, and so is
    one that succeeded but whose partial graph is gone (``again``). ``None``: already built."""
    cfg = ctx.config
    path = names.graph_path(cfg, step, site, ctx.generation, group)
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_graph(path)
    argv = middleware.qgraph_argv(
        cfg.repo_of(ctx.hub),
        cfg.pipeline_path,
        [*_earlier_output_runs(ctx, step), *cfg.input_collections],
        None,  # no -o: the step's chain holds only its RUNs; a new generation reads exactly these inputs
        names.output_run(cfg, step, site, ctx.generation, group),
        tmp,
        subset=cfg.step(step).subset,
        data_query=data_query(ctx, step, site, group),
    )
    spec = _command(ctx, step, ctx.hub, group, "qgraph", argv, path.with_suffix(".log"), site=site)
    return spec, not tmp.exists()


def _partial_graph(path: Path) -> Path:
    """Where the graph build writes; renamed to ``path`` once the build has succeeded."""
    return path.with_name(path.stem + ".partial.qg")


def finish_graph(ctx: CampaignContext, step: str, site: str, group: int) -> dict:
    """After the group's graph build succeeded (or found built): keep the graph at the hub,
    write its summary, and distribute a checksummed copy to the site (idempotent)."""
    cfg = ctx.config
    path = names.graph_path(cfg, step, site, ctx.generation, group)
    if not path.exists():
        tmp = _partial_graph(path)
        if not tmp.exists():
            raise RuntimeError(f"{step}/{site} group {group}: the graph build ended without writing {tmp}")
        tmp.rename(path)
    contents = read_graph(path)
    summary = {"qgraph": str(path), "quanta": contents.n_quanta, "quanta_by_task": contents.quanta_by_task,
               "inputs": contents.input_types, "predicted_outputs": contents.predicted_outputs,
               "visits": sorted(contents.visits)}
    atomic_write_json(graph_summary_path(path), summary)
    # Distribute: the site's copy is what its workflow reads (PanDA ships it the same way).
    dest = names.site_graph_path(cfg, step, site, ctx.generation, group)
    digest = sha256_of(path)
    if not dest.exists() or sha256_of(dest) != digest:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest.with_suffix(".tmp"))
        dest.with_suffix(".tmp").rename(dest)
    return {**summary, "group": group, "site_qgraph": str(dest), "sha256": digest, "visits": len(contents.visits)}


def generate_qg(ctx: CampaignContext, step: str, site: str, group: int) -> dict:
    """Build one group's predicted graph at the hub and distribute it to the site (idempotent):
    :func:`graph_command` run to its end through the hub's command runner, then
    :func:`finish_graph`. The DAG's ``generate_qg`` task does the same but defers while the
    command runs (``operators.drp.GenerateGraphOperator``)."""
    pending = graph_command(ctx, step, site, group)
    if pending is not None:
        spec, again = pending
        ctx.commands[ctx.hub].run(spec, again=again)
    return finish_graph(ctx, step, site, group)


def graph_summary_path(graph: str | Path) -> Path:
    """The small JSON beside a graph (quanta, visits, predicted outputs) that the report reads."""
    return Path(graph).with_suffix(".summary.json")


def replicate_inputs(ctx: CampaignContext, step: str, site: str, group: int) -> dict | None:
    """A rule bringing the group graph's missing overall inputs to the site; None if it has them all."""
    cfg = ctx.config
    contents = read_graph(names.graph_path(cfg, step, site, ctx.generation, group))
    local = ctx.butlers[site]
    local.refresh()
    if site != ctx.hub:
        # The merge at the site will need the visit records of every visit-keyed output.
        local.sync_visit_records(ctx.butlers[ctx.hub], contents.visits, cfg.instrument)
    missing = local.missing(contents.overall_inputs)
    dataset = names.rucio_dataset(cfg, step, site, "inputs", ctx.generation, group)
    if not missing:
        existing = ctx.replica.find_rule(dataset, site)
        return existing.to_dict() if existing else None
    reg = ctx.replica.register(ctx.hub, dataset, missing)
    rule = ctx.replica.add_rule(dataset, site)
    log.info("%s group %d inputs for %s: %d of %d datasets missing there (%d bytes) -> rule %s",
             step, group, site, len(missing), len(contents.overall_inputs), reg.bytes, rule.rule_id)
    return rule.to_dict()


def input_rules(ctx: CampaignContext, step: str, site: str, group: int) -> list[dict]:
    """The rule bringing this group's inputs to ``site``, if one was needed."""
    rule = ctx.replica.find_rule(names.rucio_dataset(ctx.config, step, site, "inputs", ctx.generation, group), site)
    return [rule.to_dict()] if rule else []


def output_targets(ctx: CampaignContext, step: str, site: str) -> list[str]:
    """Where a step's outputs at ``site`` go: the hub; for a global step, every remote site."""
    if ctx.config.step(step).is_global:
        return [s.name for s in ctx.config.sites if s.role is SiteRole.remote]
    return [] if site == ctx.hub else [ctx.hub]


def output_rules(ctx: CampaignContext, step: str, site: str, group: int) -> list[dict]:
    """The existing rules moving this group's outputs at ``site`` to their destinations."""
    dataset = names.rucio_dataset(ctx.config, step, site, "outputs", ctx.generation, group)
    found = [ctx.replica.find_rule(dataset, t) for t in output_targets(ctx, step, site)]
    return [r.to_dict() for r in found if r is not None]


def workflow_ref(ctx: CampaignContext, step: str, site: str, group: int) -> WorkflowRef | None:
    """The submission of this group at ``site``, found by its deterministic name."""
    spec = workflow_spec(ctx, step, site, group)
    return ctx.workflows[site].find(spec)


def workflow_spec(ctx: CampaignContext, step: str, site: str, group: int,
                  processes: int | None = None) -> WorkflowSpec:
    """The workflow of one group of a step at a site; ``processes`` None: the site's workflow service decides."""
    cfg = ctx.config
    gen = ctx.generation
    return WorkflowSpec(
        name=names.workflow_name(cfg, step, site, gen, group),
        site=site,
        qgraph=str(names.site_graph_path(cfg, step, site, gen, group)),
        butler_repo=cfg.repo_of(site),
        output_run=names.output_run(cfg, step, site, gen, group),
        submit_dir=str(names.submit_dir(cfg, step, site, gen, group)),
        bps_config=bps_config_path(ctx, step, site, group),
        processes=processes,
    )


def bps_config_path(ctx: CampaignContext, step: str, site: str, group: int) -> str | None:
    """The planner's BPS submit YAML of this group at ``site`` (None if the plan has none)."""
    from multisite_drp.campaign.plan import IncompletePlanError, plan_complete

    root = names.plan_dir(ctx.config, ctx.generation)
    if root.exists() and not plan_complete(root):
        raise IncompletePlanError(f"{root}: incomplete plan directory (no COMPLETE marker); run the plan task again")
    path = root / "bps" / step / site / f"{names.group_label(group)}.yaml"
    return str(path) if path.is_file() else None


def submit(ctx: CampaignContext, step: str, site: str, group: int, *, processes: int | None = None,
           restart_failed: bool = True, rescue: bool = False) -> dict:
    """Submit once; a failed earlier submission is restarted (not resubmitted), or with
    ``rescue`` replaced by a rescue submission (a new name; only missing outputs run).

    The workflow's reference (``WorkflowRef.to_dict``) plus ``submission``: ``new`` (first
    submission), ``found`` (submitted before and not failed: nothing done), ``restarted``
    or ``rescued``; for the last two, ``previous_run_id``, ``previous_state`` and
    ``previous_message`` say what was found (the caller raises the warning alert)."""
    spec = workflow_spec(ctx, step, site, group, processes)
    service = ctx.workflows[site]
    ref = service.find(spec)
    previous: dict = {}
    if ref is None:
        ref = service.submit(spec)
        submission = "new"
        log.info("submitted %s", ref.name)
    else:
        st = service.status([ref])[ref.run_id]
        failed = st.state in (WmsStates.FAILED, WmsStates.DELETED)
        if failed and (rescue or restart_failed):
            previous = {"previous_run_id": ref.run_id, "previous_state": st.state.name,
                        "previous_message": st.message}
        if failed and rescue:
            log.info("%s found in state %s (%s): rescue submission", ref.name, st.state.name, st.message)
            ref, submission = service.rescue(spec), "rescued"
        elif failed and restart_failed:
            log.info("%s found in state %s (%s): restarting", ref.name, st.state.name, st.message)
            ref, submission = service.restart(ref), "restarted"
        else:
            submission = "found"
            log.info("%s already submitted, state %s: not submitting again", ref.name, st.state.name)
    return {**ref.to_dict(), "submission": submission, **previous}


def accept(ctx: CampaignContext, ref: WorkflowRef) -> dict:
    """Apply the partial-success policy to a finished workflow and record it in
    ``decision.json``: ``outcome`` is ``success``, ``partial_success`` (FAILED, merged, its
    failed+blocked fraction within ``failed_quanta_threshold``) or ``rejected``, and
    ``reason`` says why in words (what a failed wait reports)."""
    st = ctx.workflows[ref.site].report(ref)
    threshold = ctx.config.failed_quanta_threshold
    fraction = round(st.failed_fraction, 6)
    counted = (f"{st.quanta_failed} failed and {st.quanta_blocked} blocked of {st.quanta_total} quanta "
               f"(fraction {fraction}, threshold {threshold})")
    if st.state is WmsStates.SUCCEEDED:
        outcome, reason = "success", f"all {st.quanta_total} quanta succeeded"
    elif st.state is not WmsStates.FAILED:
        outcome, reason = "rejected", f"state {st.state.name}"
    elif st.quanta_total == 0:
        outcome, reason = "rejected", "no quantum counts were reported"
    elif not st.merged:
        outcome, reason = "rejected", f"{counted}, but the final job did not merge the outputs"
    elif st.failed_fraction > threshold:
        outcome, reason = "rejected", f"{counted}: fraction {fraction} > threshold {threshold}"
    else:
        outcome, reason = "partial_success", f"{counted}: fraction {fraction} <= threshold {threshold}, merged"
    accepted = outcome != "rejected"
    decision = {"workflow": ref.name, "state": st.state.name, "accepted": accepted, "outcome": outcome,
                "reason": reason, "failed_fraction": fraction, "threshold": threshold, **st.to_dict()}
    log.info("partial-success policy for %s: %s", ref.name, decision)
    atomic_write_json(Path(ref.submit_dir) / "decision.json", decision)
    return decision


def merge_command(ctx: CampaignContext, step: str, site: str, group: int) -> tuple[CommandSpec, bool] | None:
    """The merge the group still needs, as ``(command, again)``; None when the site's butler
    holds every predicted output, or the workflow's final job merged them.

    The command holds the site butler's write lock for its whole life (``CommandSpec.lock``,
    for a local repository; a database-backed butler needs none), so the task that starts
    it may defer. ``again``: the outputs are incomplete, so a merge of that name that
    succeeded before merged too little and runs again; one still running is waited for."""
    cfg = ctx.config
    spec = workflow_spec(ctx, step, site, group)
    predicted = _predicted_outputs(ctx, spec, step, site, group)
    local = ctx.butlers[site]
    local.refresh()
    counts = local.count(predicted, spec.output_run)
    if all(counts[t] >= n for t, n in predicted.items()):
        return None
    ref = ctx.workflows[site].find(spec)
    if ref is not None and ctx.workflows[site].report(ref).merged:
        return None
    log.info("%s/%s group %d: the workflow's final job did not merge; running the merge", step, site, group)
    root = local_root(spec.butler_repo)
    command = dataclasses.replace(
        _command(ctx, step, site, group, "merge", middleware.merge_argv(spec.butler_repo, spec.qgraph),
                 Path(spec.submit_dir) / "logs" / "merge.task.log"),
        lock=str(root / WRITE_LOCK_FILE) if root is not None else None, lock_seconds=cfg.timeouts.lock_seconds)
    return command, True


def finish_merge(ctx: CampaignContext, step: str, site: str, group: int) -> dict:
    """After the merge (or none was needed): count the group's outputs in the site's butler
    and add its RUN to the step's chain at the site (``{prefix}/{step}/{site}``)."""
    crashpoint("merge.after_command")
    spec = workflow_spec(ctx, step, site, group)
    predicted = _predicted_outputs(ctx, spec, step, site, group)
    local = ctx.butlers[site]
    local.refresh()
    counts = local.count(predicted, spec.output_run)
    local.ensure_chain(names.output_chain(ctx.config, step, site), [spec.output_run])  # kept: the other groups' RUNs
    return {"output_run": spec.output_run, "counts": counts, "predicted": predicted}


def graph_summary(ctx: CampaignContext, step: str, site: str, group: int) -> dict:
    """The summary :func:`finish_graph` wrote beside the group's graph at the hub ({}: none yet)."""
    return read_json(graph_summary_path(names.graph_path(ctx.config, step, site, ctx.generation, group))) or {}


def _predicted_outputs(ctx: CampaignContext, spec: WorkflowSpec, step: str, site: str, group: int) -> dict[str, int]:
    """The group graph's predicted outputs per dataset type: from its summary (a small JSON),
    else from the graph."""
    summary = graph_summary(ctx, step, site, group)
    if "predicted_outputs" in summary:
        return {t: int(n) for t, n in summary["predicted_outputs"].items()}
    return read_graph(spec.qgraph).predicted_outputs


def merge(ctx: CampaignContext, step: str, site: str, group: int) -> dict:
    """Make sure the site butler holds the group workflow's outputs, merging now if it does
    not (:func:`merge_command` run to its end through the site's command runner), then
    :func:`finish_merge`. The DAG's ``merge`` task does the same but defers while the merge
    runs (``operators.drp.MergeOutputsOperator``)."""
    pending = merge_command(ctx, step, site, group)
    if pending is not None:
        command, again = pending
        ctx.commands[site].run(command, again=again)
    return finish_merge(ctx, step, site, group)


def register(ctx: CampaignContext, step: str, site: str, group: int) -> dict:
    """Register the group's outputs at the site as one Rucio dataset (lsst-rucio-register style):
    every dataset type in its output RUN, all of which returns to the hub."""
    cfg = ctx.config
    run = names.output_run(cfg, step, site, ctx.generation, group)
    local = ctx.butlers[site]
    local.refresh()
    refs = [r for t in local.dataset_types_in(run) for r in local.refs(t, run)]
    dataset = names.rucio_dataset(cfg, step, site, "outputs", ctx.generation, group)
    reg = ctx.replica.register(site, dataset, refs)
    return dataclasses.asdict(reg)


def replicate_outputs(ctx: CampaignContext, step: str, site: str, group: int) -> list[dict]:
    """Return a group's outputs to the hub; for a global step, fan them out to every remote site."""
    dataset = names.rucio_dataset(ctx.config, step, site, "outputs", ctx.generation, group)
    return [ctx.replica.add_rule(dataset, t).to_dict() for t in output_targets(ctx, step, site)]


def verify_ingest(ctx: CampaignContext, rules: list[dict]) -> list[dict]:
    """Raise unless every rule's datasets are in its destination butler."""
    out = []
    for r in rules:
        check = ctx.replica.verify_ingested(RuleRef.from_dict(r))
        if not check.complete:
            raise RuntimeError(f"{check.dataset}: {check.found} of {check.expected} datasets ingested at {check.site}")
        out.append(dataclasses.asdict(check))
    if rules:
        ctx.butlers[rules[0]["site"]].refresh()
    return out


def step_rules(ctx: CampaignContext, step: str) -> list[RuleRef]:
    """Every rule of a step in Rucio (each group's inputs, returns, fan-outs)."""
    plan = ctx.plan()
    refs = []
    for site in plan.sites_for(step):
        for g in plan.groups_for(step, site):
            for role, dests in (("inputs", [site]), ("outputs", output_targets(ctx, step, site))):
                dataset = names.rucio_dataset(ctx.config, step, site, role, ctx.generation, g.group)
                for dest in dests:
                    rule = ctx.replica.find_rule(dataset, dest)
                    if rule is not None:
                        refs.append(rule)
    return refs


def barrier(ctx: CampaignContext, step: str) -> dict:
    """Hold the next step until every group of every site the plan gives work has an
    accepted, merged workflow and every transfer of the step is OK."""
    plan = ctx.plan()
    sites = plan.sites_for(step)
    unfinished = {}
    n_groups = 0
    for site in sites:
        for g in plan.groups_for(step, site):
            n_groups += 1
            ref = workflow_ref(ctx, step, site, g.group)
            decision = read_json(Path(ref.submit_dir) / "decision.json") if ref else None
            if not decision or not decision.get("accepted"):
                unfinished[f"{site}[{g.group}]"] = ("not submitted" if ref is None
                                                    else (decision or {}).get("state", "not finished"))
    if unfinished:
        raise RuntimeError(f"{step}: groups without an accepted workflow: {unfinished}")
    rules = step_rules(ctx, step)
    status = ctx.replica.rule_status(rules)
    bad = {r.dataset + "@" + r.site: status[r.rule_id].state.value for r in rules
           if status[r.rule_id].state.value != "OK"}
    if bad:
        raise RuntimeError(f"{step}: transfers not quiescent: {bad}")
    return {"step": step, "sites": sites, "groups": n_groups, "rules_ok": len(rules)}


# -- campaign end -----------------------------------------------------------------------------


def chain_outputs(ctx: CampaignContext) -> dict:
    """At the hub, chain every step's output RUNs (newest step first) under the campaign prefix."""
    runs = _step_runs_at_hub(ctx, [s.name for s in reversed(ctx.config.steps)])
    chain = names.campaign_chain(ctx.config)
    ctx.butlers[ctx.hub].ensure_chain(chain, [*runs, *ctx.config.input_collections])
    return {"chain": chain, "runs": runs}


def collect_provenance(ctx: CampaignContext) -> dict:
    """Copy every site's graph, run summary and logs back to the hub's provenance area."""
    cfg = ctx.config
    dest_root = cfg.work_path / "provenance"
    copied = 0
    plan = ctx.plan()
    groups = [g for step in cfg.steps for site in plan.sites_for(step.name) for g in plan.groups_for(step.name, site)]
    for g in groups:
        spec = workflow_spec(ctx, g.step, g.site, g.group)
        src = Path(spec.submit_dir)
        if not src.exists():
            continue
        dest = dest_root / g.step / g.site / names.group_label(g.group)
        dest.mkdir(parents=True, exist_ok=True)
        for f in [Path(spec.qgraph), *src.glob("*.json"), *src.glob("logs/*.log")]:
            if f.exists():
                shutil.copy2(f, dest / f.name)
                copied += 1
    return {"provenance_dir": str(dest_root), "files": copied, "at": time.time()}
