"""One observing night's raws: found at the hub, assigned to sites, registered and replicated.

What ``drp_nightly`` does for a night (``day_obs``), each step idempotent:

1. :func:`find_night`: the night's visits at the hub, and for each the tracts it overlaps,
   weighted by detectors (the butler's own spatial join: visit x detector x tract);
2. :func:`assign_night`: each visit's site and home tract, with the generation's tract
   regions (the plan's). A visit the plan already places keeps its site; a new visit goes
   to the owner of the tract it overlaps with most detectors. The regions are fixed, and
   an assignment once written is never changed: a rerun or backfill reads it back. Written
   to ``names.night_assignment_path``;
3. :func:`register_night`: the night's raws at the hub as Rucio datasets, one per home
   tract (``Dataset/{instrument}/raw/Tract{tract}/{day_obs}``, Rubin's raw routing);
4. :func:`replicate_night`: a rule per dataset a site needs. A site that holds every raw
   (``holds_all_raws``: FrDF in DMTN-213; the hub holds them already) needs all of the
   night's datasets; any other site needs the datasets of its own tracts, so UKDF holds
   the raws of its own visits;
5. :func:`night_rules` and ``actions.verify_ingest``: what the wait checks, until every
   rule is OK and the site's butler has ingested each raw;
6. :func:`plan_night` (only with the Param ``run_step1``): the night's step-1 plan, from the
   generation's plan and the assignment, in the night's own scope (``names.night_config``),
   which the campaign's own step TaskGroup then runs.

No Airflow here.
"""

from __future__ import annotations

import logging
from collections import Counter

from multisite_drp.campaign import names
from multisite_drp.errors import InputError
from multisite_drp.services.fileio import atomic_write_json, read_json

__all__ = ["NightAssignmentError", "assign_night", "find_night", "night_datasets", "night_rules", "plan_night",
           "register_night", "replicate_night"]

log = logging.getLogger(__name__)

RAW = "raw"


class NightAssignmentError(InputError, RuntimeError):
    """A night's assignment cannot be made or read as it must be."""


def _where(ctx, day_obs: int) -> str:
    return f"instrument = '{ctx.config.instrument}' AND day_obs = {int(day_obs)}"


def find_night(ctx, day_obs: int) -> dict:
    """The night's visits at the hub with the tracts each overlaps, by detector count:
    ``{"day_obs", "visits": {visit: {tract: detectors}}, "raws": n}``."""
    names.night_raw_dataset(ctx.config, 0, day_obs)  # checks day_obs before any query
    hub = ctx.butlers[ctx.hub]
    hub.refresh()
    overlaps: dict[int, Counter] = {}
    for d in hub.data_ids(["visit", "detector", "tract"], f"{_where(ctx, day_obs)} AND skymap = sm",
                          bind={"sm": ctx.config.skymap}):
        overlaps.setdefault(int(d["visit"]), Counter())[int(d["tract"])] += 1
    visits = {int(v) for v in hub.dimension_ids("visit", _where(ctx, day_obs))}
    for v in visits:
        overlaps.setdefault(v, Counter())
    raws = hub.count([RAW], ctx.config.input_collections, where=_where(ctx, day_obs))[RAW] if visits else 0
    log.info("night %d: %d visits, %d raws at %s", day_obs, len(visits), raws, ctx.hub)
    return {"day_obs": int(day_obs), "raws": raws,
            "visits": {v: dict(sorted(overlaps[v].items())) for v in sorted(visits)}}


def assign_night(ctx, night: dict) -> dict:
    """Each of the night's visits to a site and a home tract (see the module), written once.

    Returns ``{"day_obs", "generation", "visits": {visit: {"site", "tract", "new"}},
    "found": bool}``; ``found`` when every visit was already in the written assignment."""
    cfg, day_obs = ctx.config, night["day_obs"]
    try:
        plan = ctx.plan()
    except FileNotFoundError:
        raise NightAssignmentError(
            f"night {day_obs}: generation {ctx.generation} has no plan at {names.plan_dir(cfg, ctx.generation)}; "
            "expected the campaign's tract regions: run drp_campaign's plan_campaign for this generation first "
            "(a dry_run run plans and does nothing else)") from None
    path = names.night_assignment_path(cfg, ctx.generation, day_obs)
    recorded = read_json(path) or {}
    done = {int(v): a for v, a in (recorded.get("visits") or {}).items()}
    owner = {t: s.name for s in plan.sites for t in [*s.tracts, *s.empty_tracts]}
    placed = {v: s.name for s in plan.sites for v in s.visits}
    out = dict(done)
    for visit, tracts in night["visits"].items():
        visit = int(visit)
        if visit in out:
            continue  # never moved
        tracts = {int(t): n for t, n in tracts.items()}
        by_weight = sorted(tracts, key=lambda t: (-tracts[t], t))
        site = placed.get(visit) or next((owner[t] for t in by_weight if t in owner), None)
        if site is None:
            raise NightAssignmentError(
                f"night {day_obs}: visit {visit} overlaps no tract of the generation's regions "
                f"(tracts {sorted(tracts)}; plan {names.plan_dir(cfg, ctx.generation)}); expected a visit inside the "
                "campaign's sky, or a new generation planned over it")
        home = next((t for t in by_weight if owner.get(t) == site), by_weight[0] if by_weight else None)
        if home is None:
            raise NightAssignmentError(f"night {day_obs}: visit {visit} overlaps no tract of skymap {cfg.skymap}")
        out[visit] = {"site": site, "tract": home, "new": visit not in placed}
    doc = {"day_obs": day_obs, "generation": ctx.generation,
           "visits": {str(v): out[v] for v in sorted(out)}}
    found = bool(done) and set(out) == set(done)
    if not found:
        atomic_write_json(path, doc)
        log.info("night %d: %d visits assigned (%s)", day_obs, len(out),
                 dict(Counter(a["site"] for a in out.values())))
    return {**doc, "found": found}


def night_datasets(ctx, assignment: dict) -> dict[int, dict]:
    """``{tract: {"dataset", "site", "visits"}}``: the night's datasets by home tract."""
    out: dict[int, dict] = {}
    for visit, a in assignment["visits"].items():
        d = out.setdefault(int(a["tract"]), {
            "dataset": names.night_raw_dataset(ctx.config, int(a["tract"]), assignment["day_obs"]),
            "site": a["site"], "visits": []})
        d["visits"].append(int(visit))
    return dict(sorted(out.items()))


def register_night(ctx, assignment: dict) -> list[dict]:
    """Register the night's raws at the hub, one dataset per home tract (files already in
    a dataset are not added again). One entry per dataset: name, files, new files, bytes."""
    hub = ctx.butlers[ctx.hub]
    out = []
    for tract, d in night_datasets(ctx, assignment).items():
        where = (f"instrument = '{ctx.config.instrument}' AND exposure IN "
                 f"({', '.join(map(str, sorted(d['visits'])))})")
        refs = hub.refs(RAW, ctx.config.input_collections, where=where)
        reg = ctx.replica.register(ctx.hub, d["dataset"], refs)
        out.append({"tract": tract, "dataset": d["dataset"], "name": d["dataset"], "visits": len(d["visits"]),
                    "files": reg.files, "new_files": reg.new_files, "bytes": reg.bytes})
    return out


def _needed(ctx, site: str, assignment: dict) -> list[str]:
    if site == ctx.hub:
        return []
    everything = ctx.config.site(site).holds_all_raws
    return [d["dataset"] for d in night_datasets(ctx, assignment).values() if everything or d["site"] == site]


def replicate_night(ctx, site: str, assignment: dict) -> list[dict]:
    """A rule to ``site`` for each of the night's datasets it needs (an existing rule is
    found, not added again)."""
    rules = [ctx.replica.add_rule(dataset, site).to_dict() for dataset in _needed(ctx, site, assignment)]
    log.info("night %d to %s: %d rule(s)", assignment["day_obs"], site, len(rules))
    return rules


def night_rules(ctx, site: str, day_obs: int) -> list[dict]:
    """The rules of the night to ``site`` that exist (what the wait checks), from the
    written assignment."""
    assignment = read_json(names.night_assignment_path(ctx.config, ctx.generation, day_obs))
    if assignment is None:
        return []
    found = [ctx.replica.find_rule(dataset, site) for dataset in _needed(ctx, site, assignment)]
    return [r.to_dict() for r in found if r is not None]


def visit_detectors(ctx, visits: list[int]) -> dict[int, int]:
    """``{visit: detectors}`` at the hub: each visit's detector-visits, the weight of its quanta."""
    hub = ctx.butlers[ctx.hub]
    hub.refresh()
    counts: Counter = Counter()
    if visits:
        where = f"instrument = '{ctx.config.instrument}' AND visit IN ({', '.join(map(str, sorted(visits)))})"
        for d in hub.data_ids(["visit", "detector"], where):
            counts[int(d["visit"])] += 1
    return {int(v): counts[int(v)] for v in visits}


def plan_night(ctx, assignment: dict) -> dict:
    """Write the night's step-1 plan once (``planner.night_plan`` in the night's scope,
    ``names.night_config``), so that the campaign's step TaskGroup can run the night's visits
    at their sites. A plan already written with the same groups is found; one with other
    groups (visits were added to the night after its step 1 was planned) is refused: those
    groups' graphs and workflows may exist, so a new generation must take them."""
    from multisite_drp.campaign.plan import CampaignPlan, plan_complete
    from multisite_drp.campaign.planner import night_plan, publish_plan
    from multisite_drp.services.actions import PlanChangedError

    day_obs, gen = int(assignment["day_obs"]), ctx.generation
    night_cfg = names.night_config(ctx.config, day_obs)
    visits = sorted(int(v) for v in assignment["visits"])
    plan = night_plan(night_cfg, ctx.plan(), assignment, visit_detectors(ctx, visits))
    out = names.plan_dir(night_cfg, gen)
    found = plan_complete(out)
    if found:
        old = CampaignPlan.load(out)
        key = [(g.step, g.site, g.group, g.ids) for g in plan.groups]
        if [(g.step, g.site, g.group, g.ids) for g in old.groups] != key:
            raise PlanChangedError(
                f"{out / 'plan.json'}: night {day_obs}'s step 1 was planned in other groups than its assignment "
                f"({names.night_assignment_path(ctx.config, gen, day_obs)}) now gives; its graphs and workflows "
                "may exist already. Process the night again with a new 'generation'")
    else:
        publish_plan(night_cfg, plan, out, generation=gen)
    by_site = Counter(g.site for g in plan.groups)
    log.info("night %d step 1: %d groups %s (%s)", day_obs, len(plan.groups), dict(by_site),
             "found" if found else "planned")
    return {"day_obs": day_obs, "plan_dir": str(out), "campaign": night_cfg.name, "step": night_cfg.steps[0].name,
            "groups": dict(by_site), "visits": {s.name: len(s.visits) for s in plan.sites}, "found": found}
