"""The campaign report: what ran where, how fast, and how many bytes moved.

One row per submission group (step, site, group) that was submitted: quanta succeeded
and failed (from the workflow service), wall time (first start to final end of the
workflow, restarts included), bytes moved in (the group's input rule to the site) and out
(the rules returning or fanning out its outputs), and rates in quanta and visits per
hour. ``steps`` sums the groups per (step, site) and per step, with the wall time from
the first group's start to the last one's end. The rates are compared with the campaign's
``rate_target``. ``planned_vs_moved`` puts the planner's estimated bytes per link
beside what Rucio's rules moved (:func:`planned_vs_moved`). Totals are sums of the rows; the
campaign rate divides the total quanta by the campaign's wall time (first transfer or
workflow start to last transfer or workflow end), which includes transfers, waits and
orchestration between steps, so it is the honest figure.

Written as ``report.json`` and ``report.md`` under ``names.report_dir``. No Airflow imports.
"""

from __future__ import annotations

import time
from pathlib import Path

from multisite_drp.campaign import names
from multisite_drp.services.fileio import atomic_write_json, read_json
from multisite_drp.services.replica.base import RuleRef

__all__ = ["campaign_report", "planned_vs_moved", "render_markdown", "write_report"]


def _per_hour(count: float, seconds: float) -> float | None:
    return round(count * 3600.0 / seconds, 1) if seconds > 0 else None


def _rule_statuses(ctx, rules: list[list[dict]], window: list[float]) -> dict:
    """The status of every rule of ``rules`` (lists of rule dicts), with one batched call;
    widens ``window`` [first, last] with the rules' times."""
    refs = {r["rule_id"]: RuleRef.from_dict(r) for rs in rules for r in rs}
    status = ctx.replica.rule_status(list(refs.values())) if refs else {}
    for st in status.values():
        window += [t for t in (st.created, st.updated) if t]
    return status


def planned_vs_moved(transfers, moved: list[tuple[str, str, str, int]]) -> dict:
    """The planner's estimated bytes (``transfers``: the plan's) beside what the replica
    service moved (``moved``: (step, source, destination, bytes) per rule), per step and link
    (``source->destination``) and per link. The plan books a transfer under the step that
    consumes it and models site-to-site overlaps; the campaign's rules send every input from
    the hub and book a global step's fan-out under that step: the per-link totals compare
    like with like, the per-step rows show where the two models differ."""
    rows: dict[tuple[str, str], dict] = {}
    for t in transfers:
        row = rows.setdefault((t.step, f"{t.source}->{t.destination}"), {"planned_bytes": 0, "moved_bytes": 0})
        row["planned_bytes"] += int(t.bytes)
    for step, src, dst, n in moved:
        row = rows.setdefault((step, f"{src}->{dst}"), {"planned_bytes": 0, "moved_bytes": 0})
        row["moved_bytes"] += int(n)
    by_step_link = [{"step": k[0], "link": k[1], **v} for k, v in sorted(rows.items())]
    links: dict[str, dict] = {}
    for r in by_step_link:
        tot = links.setdefault(r["link"], {"planned_bytes": 0, "moved_bytes": 0})
        tot["planned_bytes"] += r["planned_bytes"]
        tot["moved_bytes"] += r["moved_bytes"]
    by_link = [{"link": k, **v, "moved_over_planned": round(v["moved_bytes"] / v["planned_bytes"], 3)
                if v["planned_bytes"] else None} for k, v in sorted(links.items())]
    return {"by_step_and_link": by_step_link, "by_link": by_link,
            "planned_bytes": sum(r["planned_bytes"] for r in by_link),
            "moved_bytes": sum(r["moved_bytes"] for r in by_link)}


def _span(rows: list[dict]) -> float:
    starts = [r["started"] for r in rows if r["started"]]
    ends = [r["finished"] for r in rows if r["finished"]]
    return round(max(ends) - min(starts), 2) if starts and ends else 0.0


def _summaries(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Rows summed per ``keys`` (e.g. step and site): groups, quanta, visits, bytes, and the
    wall time from the first group's start to the last group's end."""
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    summaries = []
    for key, rs in out.items():
        wall = _span(rs)
        ok = sum(r["quanta_succeeded"] for r in rs)
        visits = sum(r["visits"] for r in rs)
        summaries.append({**dict(zip(keys, key, strict=True)), "groups": len(rs),
                          "quanta": sum(r["quanta"] for r in rs), "quanta_succeeded": ok,
                          "quanta_failed": sum(r["quanta_failed"] for r in rs), "visits": visits,
                          "wall_seconds": wall, "bytes_in": sum(r["bytes_in"] for r in rs),
                          "bytes_out": sum(r["bytes_out"] for r in rs), "quanta_per_hour": _per_hour(ok, wall),
                          "visits_per_hour": _per_hour(visits, wall) if visits else None})
    return summaries


def campaign_report(ctx, *, airflow_started: float | None = None) -> dict:
    """Gather the report from the ports (the workflow service, Rucio, the graphs).

    The campaign's wall time runs from its first transfer or workflow start to its last
    transfer or workflow end, as the services recorded them: a rerun or a cleared report
    task reports the same figures. ``airflow_started`` (the DAG run's start) is reported
    beside it, for the orchestration overhead before the first transfer.
    """
    from multisite_drp.services import actions

    cfg = ctx.config
    target = cfg.rate_target
    rows = []
    window: list[float] = []
    rules_in, rules_out = [], []
    plan = ctx.plan()
    for step in cfg.steps:
        for site in plan.sites_for(step.name):
            for g in plan.groups_for(step.name, site):
                ref = actions.workflow_ref(ctx, step.name, site, g.group)
                if ref is None:
                    continue
                st = ctx.workflows[site].report(ref)
                graph = actions.graph_summary(ctx, step.name, site, g.group)
                decision = read_json(Path(ref.submit_dir) / "decision.json") or {}
                wall = (st.finished - st.started) if st.started and st.finished else 0.0
                window += [t for t in (st.started, st.finished) if t]
                visits = len(graph.get("visits", []))
                rows.append({
                    "step": step.name,
                    "site": site,
                    "group": g.group,
                    "label": g.label,
                    "sharding": step.sharding.value,
                    "workflow": ref.name,
                    "state": st.state.name,
                    "attempts": st.attempt,
                    "accepted": decision.get("accepted"),
                    "quanta": st.quanta_total,
                    "quanta_succeeded": st.quanta_succeeded,
                    "quanta_failed": st.quanta_failed + st.quanta_blocked,
                    "visits": visits,
                    "started": st.started,
                    "finished": st.finished,
                    "wall_seconds": round(wall, 2),
                    "quanta_per_hour": _per_hour(st.quanta_succeeded, wall),
                    # Tract-sharded steps have no visits of their own: no visit rate.
                    "visits_per_hour": _per_hour(visits, wall) if visits else None,
                })
                rules_in.append(actions.input_rules(ctx, step.name, site, g.group))
                rules_out.append(actions.output_rules(ctx, step.name, site, g.group))
    dist_rules = {site.name: actions.distribution_rules(ctx, site.name) for site in cfg.sites}
    dist_rules = {k: v for k, v in dist_rules.items() if v}
    # One status call for every rule of the campaign.
    status = _rule_statuses(ctx, [*rules_in, *rules_out, *dist_rules.values()], window)
    moved = []  # (step, source, destination, bytes) per rule
    for row, r_in, r_out in zip(rows, rules_in, rules_out, strict=True):
        row["bytes_in"] = sum(status[r["rule_id"]].bytes for r in r_in)
        row["bytes_out"] = sum(status[r["rule_id"]].bytes for r in r_out)
        moved += [(row["step"], plan.hub, r["site"], status[r["rule_id"]].bytes) for r in r_in]
        moved += [(row["step"], row["site"], r["site"], status[r["rule_id"]].bytes) for r in r_out]
    distribution = {}
    first_step = cfg.steps[0].name  # the plan books the distribution under the first step too
    for site, rules in dist_rules.items():
        distribution[site] = sum(status[r["rule_id"]].bytes for r in rules)
        moved += [(first_step, plan.hub, r["site"], status[r["rule_id"]].bytes) for r in rules]
    started, finished = (min(window), max(window)) if window else (None, None)
    campaign_wall = (finished - started) if window else 0.0
    total_quanta = sum(r["quanta_succeeded"] for r in rows)
    n_visits = len({v for s in ctx.plan().sites for v in s.visits})
    rate = _per_hour(total_quanta, campaign_wall)
    visit_rate = _per_hour(n_visits, campaign_wall)
    totals = {
        "workflows": len(rows),  # one per submission group
        "quanta": sum(r["quanta"] for r in rows),
        "quanta_succeeded": total_quanta,
        "quanta_failed": sum(r["quanta_failed"] for r in rows),
        "bytes_in": sum(r["bytes_in"] for r in rows),
        "bytes_out": sum(r["bytes_out"] for r in rows),
        "bytes_distributed": sum(distribution.values()),
        "workflow_seconds": round(sum(r["wall_seconds"] for r in rows), 2),
    }
    return {
        "campaign": cfg.name,
        "generation": ctx.generation,
        "started": started,
        "finished": finished,
        "wall_seconds": round(campaign_wall, 2),
        "airflow_run_started": airflow_started,
        "reported": time.time(),
        "visits": n_visits,
        "rate": {
            "quanta_per_hour": rate,
            "visits_per_hour": visit_rate,
            "target_quanta_per_hour": target.quanta_per_hour,
            "target_visits_per_hour": target.visits_per_hour,
            "meets_quanta_target": rate is not None and rate >= target.quanta_per_hour,
            "meets_visits_target": (None if target.visits_per_hour is None
                                    else visit_rate is not None and visit_rate >= target.visits_per_hour),
        },
        "totals": totals,
        "distribution_bytes": distribution,
        "steps": {"by_step_and_site": _summaries(rows, ("step", "site")), "by_step": _summaries(rows, ("step",))},
        "planned_vs_moved": planned_vs_moved(plan.transfers, moved),
        "rows": rows,
    }


def _met(flag: bool | None) -> str:
    return "n/a" if flag is None else "met" if flag else "NOT met"


def _dash(value) -> str:
    return "-" if value is None else str(value)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def render_markdown(report: dict) -> str:
    r = report["rate"]
    lines = [
        f"# Campaign {report['campaign']} (generation {report['generation']})",
        "",
        (f"Wall time {report['wall_seconds']:.0f} s; {report['totals']['quanta_succeeded']} quanta succeeded, "
         f"{report['totals']['quanta_failed']} failed; {report['visits']} visits."),
        "",
        (f"Rate: {r['quanta_per_hour']} quanta/h (target {r['target_quanta_per_hour']}, "
         f"{'met' if r['meets_quanta_target'] else 'NOT met'}); {r['visits_per_hour']} visits/h "
         f"(target {r['target_visits_per_hour']}, {_met(r['meets_visits_target'])})."),
        "",
        "Per step and site (groups summed; wall time from the first group's start to the last one's end):",
        "",
        "| step | site | groups | quanta ok | failed | visits | wall s | MB in | MB out | quanta/h | visits/h |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report.get("steps", {}).get("by_step_and_site", []):
        lines.append(
            f"| {row['step']} | {row['site']} | {row['groups']} | {row['quanta_succeeded']} | "
            f"{row['quanta_failed']} | {row['visits']} | {row['wall_seconds']:.1f} | {_mb(row['bytes_in'])} | "
            f"{_mb(row['bytes_out'])} | {row['quanta_per_hour']} | {_dash(row['visits_per_hour'])} |"
        )
    t = report["totals"]
    lines.append(
        f"| **total** | | {t['workflows']} | {t['quanta_succeeded']} | {t['quanta_failed']} | | "
        f"{t['workflow_seconds']:.1f} | {_mb(t['bytes_in'])} | {_mb(t['bytes_out'])} | | |"
    )
    lines += ["", "Per group:", "",
              "| step | site | group | state | attempts | quanta ok | failed | visits | wall s | MB in | MB out | quanta/h |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        lines.append(
            f"| {row['step']} | {row['site']} | {row['group']}: {row['label']} | {row['state']} | {row['attempts']} | "
            f"{row['quanta_succeeded']} | {row['quanta_failed']} | {row['visits']} | {row['wall_seconds']:.1f} | "
            f"{_mb(row['bytes_in'])} | {_mb(row['bytes_out'])} | {row['quanta_per_hour']} |"
        )
    pm = report.get("planned_vs_moved")
    if pm:
        lines += ["", (f"Planned against moved: {_mb(pm['planned_bytes'])} MB planned (the planner's estimate), "
                  f"{_mb(pm['moved_bytes'])} MB moved (Rucio's rules). Per link:"), "",
                  "| link | MB planned | MB moved | moved / planned |", "|---|---:|---:|---:|"]
        lines += [f"| {r['link']} | {_mb(r['planned_bytes'])} | {_mb(r['moved_bytes'])} | "
                  f"{_dash(r['moved_over_planned'])} |" for r in pm["by_link"]]
        lines += ["", ("Per step and link (the plan books a transfer under the step that consumes it, the rules "
                  "under the step that made them):"), "", "| step | link | MB planned | MB moved |",
                  "|---|---|---:|---:|"]
        lines += [f"| {r['step']} | {r['link']} | {_mb(r['planned_bytes'])} | {_mb(r['moved_bytes'])} |"
                  for r in pm["by_step_and_link"]]
    if report["distribution_bytes"]:
        lines += ["", "Distribution before step 1 (calibrations, refcat, raws): "
                  + ", ".join(f"{s} {_mb(b)} MB" for s, b in report["distribution_bytes"].items())]
    return "\n".join(lines) + "\n"


def write_report(ctx, *, airflow_started: float | None = None) -> tuple[dict, Path]:
    report = campaign_report(ctx, airflow_started=airflow_started)
    out = names.report_dir(ctx.config, ctx.generation)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", report)
    (out / "report.md").write_text(render_markdown(report))
    return report, out
