"""Deferrable sensors for a site: its workflow, and its replication rules.

Both look their target up by deterministic name (never through XCom), so a cleared
sensor finds the same workflow or rules. Each checks in the worker and returns at once if
the wait is already over (a rerun of a finished campaign takes seconds), keeps checking
for up to its ``settle_seconds`` (``CampaignTaskMixin.settled``: short work needs no
deferral), and otherwise defers to a trigger in ``multisite_drp.triggers`` with a ``timeout``.

``deferrable=False`` falls back to Airflow's classic poke loop (``poke`` below).

The preamble (build the hook, decide the skip, get the context) and the ending of the
project's errors (an ``InputError`` fails at once, a ``TransientError`` is retried with
backoff) are ``hooks.mixin.CampaignTaskMixin``'s, shared with the operators.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from multisite_drp.hooks.campaign import CampaignHook
from multisite_drp.hooks.links import RucioLink, WorkflowMonitorLink
from multisite_drp.hooks.mixin import GROUP_MAP_INDEX, CampaignTaskMixin, group_id, night_of
from multisite_drp.triggers.site import ReplicationTrigger, WorkflowTrigger

__all__ = ["ReplicationSensor", "WorkflowSensor"]



def _fail_on_input_error(task_id: str, event: dict[str, Any]) -> None:
    """A trigger's input-error event fails the task at once: no retry can mend it."""
    if event.get("input_error"):
        raise AirflowFailException(f"{task_id}: {event.get('message')} (bad input: not retried)")


class _SiteSensor(CampaignTaskMixin, BaseSensorOperator):
    """``group``: the submission group (a mapped item ``{"group": id, "label": ...}``, a
    template field resolved at run time) for the per-group waits; None for the distribution."""

    ui_color = "#ead1dc"
    template_fields: Sequence[str] = ("group",)

    def __init__(self, *, site: str, step: str | None = None, group: Any = None, deferrable: bool = True,
                 settle_seconds: float | None = None, night_scoped: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", timedelta(days=7))
        if group is not None:
            kwargs.setdefault("map_index_template", GROUP_MAP_INDEX)
        super().__init__(**self.with_retry_defaults(kwargs))
        self.step = step
        self.site = site
        self.night_scoped = night_scoped
        self.group = group
        self.deferrable = deferrable
        if settle_seconds is not None:
            self.settle_seconds = settle_seconds

    @property
    def group_id(self) -> int:
        return group_id(self.group)

    @property
    def label(self) -> str:
        return f"{self.step}/{self.site}[{self.group_id}]"

    @property
    def _timeout(self) -> timedelta:
        t = self.timeout
        return t if isinstance(t, timedelta) else timedelta(seconds=float(t))


class WorkflowSensor(_SiteSensor):
    """Waits for the step's workflow at the site, then applies the partial-success policy.

    A workflow that ends rejected (failed, or more failed quanta than the campaign's
    ``failed_quanta_threshold``) is restarted up to ``auto_restarts`` times (``bps
    restart``: only unfinished quanta run again) before the task fails.
    """

    operator_extra_links = (WorkflowMonitorLink(),)

    def __init__(self, *, step: str, site: str, group: Any, auto_restarts: int = 1, **kwargs: Any) -> None:
        super().__init__(step=step, site=site, group=group, **kwargs)
        self.auto_restarts = auto_restarts

    def _ref(self, ctx):
        from multisite_drp.services import actions

        ref = actions.workflow_ref(ctx, self.step, self.site, self.group_id)
        if ref is None:
            raise AirflowException(f"{self.label}: no workflow was submitted; clear the submit task")
        return ref

    _kill_params: dict[str, Any] | None = None

    def poke(self, context) -> bool:
        self._kill_params = self.hook_params(context)
        _, ctx = self.prepare(context)
        ref = self._ref(ctx)
        return ctx.workflows[self.site].status([ref])[ref.run_id].terminal and self._finish(ctx, ref, context)

    def execute(self, context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        hook, ctx = self.prepare(context)
        ref = self._ref(ctx)
        if self.settled(lambda: ctx.workflows[self.site].status([ref])[ref.run_id].terminal):
            return self._finish(ctx, ref, context, hook)
        self._defer(hook, ref, context)

    def _defer(self, hook: CampaignHook, ref, context) -> None:
        settings = hook.workflow_settings(self.site)
        self.defer(
            trigger=WorkflowTrigger(params=hook.carried_params(self.hook_params(context)),
                                    conn_ids=hook.conn_ids("workflow", [self.site]), site=self.site,
                                    refs=[ref.to_dict()], poll_interval=settings["poll_interval"],
                                    label=self.label, not_before=self.not_before()),
            method_name="execute_complete",
            timeout=self._timeout,
        )

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> Any:
        event = event or {}
        _fail_on_input_error(self.task_id, event)
        if event.get("status") != "done":
            raise AirflowException(f"{self.label}: waiting on the workflow failed: "
                                   f"{event.get('message') or event}")
        hook, ctx = self.prepare(context)
        return self._finish(ctx, self._ref(ctx), context, hook)

    def on_kill(self) -> None:
        """Killed while poking (``deferrable=False``): stop the workflow's jobs, unless the
        campaign's ``on_kill.workflows`` is ``leave``. A deferred wait is stopped by
        ``WorkflowTrigger.on_kill`` instead."""
        from multisite_drp.services import actions

        params = self._kill_params
        if not params or params.get("dry_run"):
            return
        hook = CampaignHook.from_params(params)
        if hook.config.on_kill.workflows == "leave":
            self.log.warning("%s: task killed; the workflow runs on (on_kill.workflows: leave)", self.label)
            return
        ctx = hook.get_conn()
        ref = actions.workflow_ref(ctx, self.step, self.site, self.group_id)
        if ref is not None:
            self.log.warning("%s: task killed; cancelling workflow %s", self.label, ref.name)
            ctx.workflows[self.site].cancel(ref)

    def _finish(self, ctx, ref, context, hook: CampaignHook | None = None) -> dict:
        from multisite_drp.services import actions

        decision = actions.accept(ctx, ref)
        attempt = decision.get("attempt", 1)
        if decision["outcome"] == "partial_success":
            self.warn(context, "partial_success", f"{ref.name} accepted as a partial success: {decision['reason']}",
                      key=f"partial_success:{ref.name}:{ref.run_id}:{attempt}")
        if decision["accepted"]:
            return decision
        if hook is not None and self.deferrable and attempt <= self.auto_restarts:
            self.log.warning("%s rejected (%s, %s); restarting it (attempt %d of %d)", ref.name, decision["state"],
                             decision.get("message"), attempt + 1, self.auto_restarts + 1)
            ctx.workflows[self.site].restart(ref)
            self.warn(context, "workflow_restarted",
                      f"{ref.name} rejected ({decision['state']}: {decision['reason']}); restarted by policy, "
                      f"attempt {attempt + 1} of {self.auto_restarts + 1}",
                      key=f"workflow_restarted:{ref.name}:{ref.run_id}:attempt {attempt + 1}")
            self._defer(hook, ref, context)
        raise AirflowException(
            f"{ref.name} rejected by the partial-success policy after {decision.get('attempt', 1)} attempt(s): "
            f"state {decision['state']}, {decision['reason']}; {decision.get('message', '')}. "
            f"Logs: {ref.submit_dir}/logs"
        )


class ReplicationSensor(_SiteSensor):
    """Waits until the rules of one kind are OK and their datasets ingested at the destination.

    ``kind``: ``distribution`` (bootstrap and raws to ``site``), ``inputs`` (the step's
    inputs to ``site``), ``outputs`` (the step's outputs from ``site`` to the hub, or
    fanned out) or ``night`` (``drp_nightly``: the night's raw datasets to ``site``; the
    night is the run's, ``hooks.mixin.night_of``). A STUCK rule raises a ``replication_stuck`` warning alert and fails the
    try with the rule's error; when the task is
    retried, the stuck rules are handed back to Rucio first (``ReplicaService.retry``), and
    for ``retry_grace`` seconds a rule that still reads STUCK counts as waiting.
    """

    operator_extra_links = (RucioLink(),)

    KINDS = ("distribution", "inputs", "outputs", "night")
    UNGROUPED = ("distribution", "night")

    def __init__(self, *, site: str, kind: str, step: str | None = None, group: Any = None,
                 retry_grace: float = 300.0, **kwargs: Any) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"ReplicationSensor: kind={kind!r}; expected one of {list(self.KINDS)}")
        if (kind in self.UNGROUPED) != (group is None):
            raise ValueError(f"ReplicationSensor: kind={kind!r} takes {'no group' if group is None else 'a group'}")
        super().__init__(step=step, site=site, group=group, **kwargs)
        self.kind = kind
        self.retry_grace = retry_grace

    def _night(self, context) -> int | None:
        """The run's night for a ``night`` wait (``hooks.mixin.night_of``); None for the others."""
        return night_of(context) if self.kind == "night" else None

    def _rules(self, ctx, night: int | None) -> list[dict]:
        from multisite_drp.services import actions

        if self.kind == "distribution":
            return actions.distribution_rules(ctx, self.site)
        if self.kind == "night":
            from multisite_drp.services import nightly

            return nightly.night_rules(ctx, self.site, night)
        if self.kind == "inputs":
            return actions.input_rules(ctx, self.step, self.site, self.group_id)
        return actions.output_rules(ctx, self.step, self.site, self.group_id)

    def _progress(self, ctx, rules: list[dict]):
        from multisite_drp.services.replica.base import RuleRef, replication_progress

        return replication_progress(ctx.replica, [RuleRef.from_dict(r) for r in rules])

    _kill_params: dict[str, Any] | None = None
    _kill_night: int | None = None

    def on_kill(self) -> None:
        """Killed while poking (``deferrable=False``): the campaign's ``on_kill.replication``
        says whether the rules stay (``leave``, the default: Rucio goes on and a cleared
        wait finds them) or are deleted (``cancel``). A deferred wait: ``ReplicationTrigger.on_kill``."""
        from multisite_drp.services.replica.base import RuleRef

        params = self._kill_params
        if not params or params.get("dry_run"):
            return
        hook = CampaignHook.from_params(params)
        if hook.config.on_kill.replication != "cancel":
            self.log.warning("%s: task killed; its rules stay (on_kill.replication: leave)", self.task_id)
            return
        ctx = hook.get_conn()
        for r in self._rules(ctx, self._kill_night):
            self.log.warning("%s: task killed; deleting rule %s (on_kill.replication: cancel)", self.task_id,
                             r["rule_id"])
            ctx.replica.delete_rule(RuleRef.from_dict(r))

    def poke(self, context) -> bool:
        self._kill_params = self.hook_params(context)
        self._kill_night = night = self._night(context)
        _, ctx = self.prepare(context)
        rules = self._rules(ctx, night)
        progress = self._progress(ctx, rules) if rules else None
        state = progress.state if progress else "ok"
        if state == "stuck":
            self._warn_stuck(context, rules, progress.stuck)
            raise AirflowException(f"{self.task_id}: a rule is STUCK: {progress.stuck or rules}")
        return state == "ok" and bool(self._finish(ctx, rules))

    def execute(self, context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        hook, ctx = self.prepare(context)
        rules = self._rules(ctx, self._night(context))
        if not rules:
            self.log.info("%s: no transfer was needed", self.task_id)
            return []
        grace = 0.0
        if context["ti"].try_number > 1:
            from multisite_drp.services.replica.base import RuleRef

            for r in rules:
                ctx.replica.retry(RuleRef.from_dict(r))
            grace = self.retry_grace  # the repairer takes a boosted rule at its next pass
        state: dict[str, str] = {}

        def over() -> bool:  # OK, or STUCK (the trigger reports a rule that stays so)
            state["now"] = self._progress(ctx, rules).state
            return state["now"] != "waiting" and (state["now"] != "stuck" or grace == 0.0)

        if self.settled(over) and state["now"] == "ok":
            return self._finish(ctx, rules)
        settings = hook.replica_settings
        self.defer(
            trigger=ReplicationTrigger(params=hook.carried_params(self.hook_params(context)),
                                       conn_ids=hook.conn_ids("replica"), rules=rules,
                                       poll_interval=settings["poll_interval"], label=self.task_id,
                                       stuck_grace=grace, not_before=self.not_before()),
            method_name="execute_complete",
            timeout=self._timeout,
        )

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> Any:
        event = event or {}
        _fail_on_input_error(self.task_id, event)
        if event.get("status") == "error":
            raise AirflowException(f"{self.task_id}: waiting on the rules failed: {event.get('message') or event}")
        if event.get("status") == "stuck":
            self._warn_stuck(context, None, event.get("stuck") or {})
            raise AirflowException(f"{self.task_id}: replication STUCK: {event.get('stuck')}; the task's "
                                   "retry re-evaluates the rule")
        _, ctx = self.prepare(context)
        return self._finish(ctx, self._rules(ctx, self._night(context)))

    def _warn_stuck(self, context, rules: list[dict] | None, stuck: dict[str, str]) -> None:
        """The ``replication_stuck`` warning: which rules (``dataset@site``), and Rucio's
        error for each; once per try of the task (its retry hands the rules back to Rucio,
        and may find them stuck again)."""
        ti = context.get("ti")
        what = "; ".join(f"{where}: {error}" for where, error in sorted(stuck.items())) or "a rule"
        of = f" of {len(rules)}" if rules else ""
        which = ",".join(sorted(stuck)) or ",".join(sorted(r["rule_id"] for r in rules or []))
        self.warn(context, "replication_stuck",
                  f"{len(stuck) or 1}{of} rule(s) STUCK: {what}. The task's retry hands them back to Rucio",
                  key=f"replication_stuck:{which}:{getattr(ti, 'run_id', None)}:{getattr(ti, 'try_number', None)}")

    def _finish(self, ctx, rules: list[dict]) -> list[dict]:
        from multisite_drp.services import actions

        return actions.verify_ingest(ctx, rules)
