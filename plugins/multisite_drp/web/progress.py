"""Where a campaign run stands, from its task instances' states and its plan.

Pure functions over plain data (task states as Airflow writes them, the plan's groups):
the campaign page (``web/app.py``) reads the metadata database and the campaign's files,
and these turn that into per-group, per-(step, site) and per-tract progress.

A group's state, from the tasks of its chain (``step4.frdf.submit[2]`` ...):

* ``failed``: a task failed, or is ``upstream_failed``;
* ``done``: every task succeeded or was skipped, and at least one succeeded;
* ``skipped``: every task was skipped (a dry run, a step left out);
* ``running``: anything in between (a task queued, running, deferred, up for retry; or
  some done and the rest still to run);
* ``waiting``: no task has started.

A tract's state is its owning site's groups that cover it, in the tract-sharded steps:
failed if any is, done if all are, running if any has begun, else waiting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["STATES", "GroupProgress", "group_progress", "open_alerts", "step_site_table", "tract_progress"]

#: The progress states, in the order the page lists them.
STATES = ("done", "running", "waiting", "failed", "skipped")

_FAILED = {"failed", "upstream_failed"}
_ACTIVE = {"queued", "scheduled", "running", "deferred", "up_for_retry", "up_for_reschedule", "restarting"}


@dataclass(frozen=True)
class GroupProgress:
    step: str
    site: str
    group: int
    label: str
    dimension: str
    ids: tuple[int, ...]
    state: str
    tasks: dict[str, str | None]  # task name -> its state (None: not yet scheduled)


def _chain_state(states: Iterable[str | None]) -> str:
    states = list(states)
    if not states:
        return "waiting"
    if any(s in _FAILED for s in states):
        return "failed"
    finished = [s in ("success", "skipped") for s in states]
    if all(finished):
        return "done" if any(s == "success" for s in states) else "skipped"
    if any(s in _ACTIVE for s in states) or any(finished):
        return "running"
    return "waiting"


def group_progress(plan, task_states: Iterable[tuple[str, int, str | None]]) -> list[GroupProgress]:
    """Every group of the plan with its state. ``task_states``: (task_id, map_index, state)
    of the run's task instances; a site's chain is mapped over its groups, so the map index
    is the group id."""
    by_group: dict[tuple[str, str, int], dict[str, str | None]] = {}
    for task_id, map_index, state in task_states:
        parts = task_id.split(".")
        if len(parts) != 3 or map_index is None or map_index < 0:
            continue  # not a group task (plan, distribute, barriers, report; the split)
        by_group.setdefault((parts[0], parts[1], int(map_index)), {})[parts[2]] = state
    out = []
    for g in plan.groups:
        tasks = by_group.get((g.step, g.site, g.group), {})
        out.append(GroupProgress(step=g.step, site=g.site, group=g.group, label=g.label, dimension=g.dimension,
                                 ids=tuple(g.ids), state=_chain_state(tasks.values()), tasks=tasks))
    return out


def step_site_table(groups: list[GroupProgress]) -> list[dict]:
    """Per (step, site), in the plan's order: how many groups are in each state."""
    rows: dict[tuple[str, str], dict] = {}
    for g in groups:
        row = rows.setdefault((g.step, g.site), {"step": g.step, "site": g.site, "groups": 0,
                                                 **dict.fromkeys(STATES, 0)})
        row["groups"] += 1
        row[g.state] += 1
    return list(rows.values())


def tract_progress(plan, groups: list[GroupProgress]) -> dict[int, tuple[str, str]]:
    """``{tract: (owning site, state)}`` for every tract a site owns."""
    owner = {t: s.name for s in plan.sites for t in [*s.tracts, *s.empty_tracts]}
    covering: dict[int, list[str]] = {}
    for g in groups:
        if g.dimension != "tract":
            continue
        for t in g.ids:
            if owner.get(t) == g.site:
                covering.setdefault(t, []).append(g.state)
    out = {}
    for t, site in owner.items():
        states = covering.get(t, [])
        if any(s == "failed" for s in states):
            state = "failed"
        elif states and all(s == "done" for s in states):
            state = "done"
        elif states and all(s == "skipped" for s in states):
            state = "skipped"
        elif any(s in ("running", "done") for s in states):
            state = "running"
        else:
            state = "waiting"
        out[t] = (site, state)
    return out


def open_alerts(records: list[dict], run_id: str, task_states: dict[tuple[str, int], str | None],
                run_finished: bool) -> list[dict]:
    """The run's alerts an operator still has to see, newest first: a failure whose task has
    not since succeeded (a cleared and rerun task closes its alert), a missed deadline
    while the run is unfinished, and every warning (each was sent once; it says what
    happened, not what is wrong now)."""
    out = []
    for r in records:
        if r.get("run_id") != run_id:
            continue
        if r.get("level") == "warning":
            out.append(r)
            continue
        if r.get("level") == "deadline":
            if not run_finished:
                out.append(r)
            continue
        key = (r.get("task_id"), r.get("map_index") if r.get("map_index") is not None else -1)
        if task_states.get(key) not in ("success", "skipped"):
            out.append(r)
    return sorted(out, key=lambda r: r.get("at") or 0, reverse=True)
