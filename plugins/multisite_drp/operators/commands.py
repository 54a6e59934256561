"""CommandOperatorMixin: start a stack command through the command-runner port and defer while it runs.

For an operator whose task is one heavy command (a group's graph build, a merge, a
registration): ``execute`` builds the ``CommandSpec`` (deterministic name from
``campaign.names.command_name``), calls :meth:`start_command` and returns what
:meth:`command_done` returns. ``start_command`` starts the command (or finds the one a
previous try started: same name, same argv), waits up to the task's ``settle_seconds`` in
the worker for a short command, and, unless it has ended by then, defers on
``triggers.commands.CommandTrigger`` with the campaign's ``timeouts.command_seconds``
(plus the startup allowance) as the deferral's limit. ``execute_complete`` checks the
event: an input-error event fails the task without retry, a command that failed raises
``CommandFailedError`` with its log tail (Airflow retries the task, whose ``start`` then
replaces the failed command), a success calls :meth:`command_done`.

Put it before the campaign mixin and the Airflow base:
``class BuildGraph(CommandOperatorMixin, CampaignTaskMixin, BaseOperator)``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from multisite_drp.triggers.commands import CommandTrigger

if TYPE_CHECKING:
    from multisite_drp.hooks.campaign import CampaignHook
    from multisite_drp.services.commands.base import CommandRef, CommandSpec

__all__ = ["CommandOperatorMixin"]

#: Seconds added to the command's own limit for a pod to be scheduled and its image pulled.
STARTUP_ALLOWANCE_SECONDS = 1800.0


class CommandOperatorMixin:
    """``start_command`` + defer + ``execute_complete`` for an operator that runs one command."""

    def start_command(self, context, hook: CampaignHook, spec: CommandSpec, *, again: bool = False) -> Any:
        """Start ``spec`` (``again``: discard a succeeded predecessor first, its output being
        gone) or find it, and defer until it ends; returns at once if it already has."""
        service = hook.command_service(spec.site)
        ref = service.begin(spec, again=again)
        self.log.info("%s: command %s %s (%s, attempt %d)", self.task_id, spec.name,
                      "found" if ref.found else "started", ref.handle, ref.attempt)
        # A command that ends within the settle time (or a predecessor that had already
        # ended) needs no deferral.
        if self.settled(lambda: service.status([ref])[ref.name].terminal):
            return self.execute_complete(context, {"status": "done",
                                                   "commands": {ref.name: service.result(ref).to_dict()}},
                                         ref=ref.to_dict(), argv=list(spec.argv))
        settings = hook.command_settings(spec.site)
        conn_ids = [settings["conn_id"]] if "conn_id" in settings else []
        limit = (spec.timeout or hook.config.timeouts.command_seconds) + STARTUP_ALLOWANCE_SECONDS
        self.defer(
            trigger=CommandTrigger(self.hook_params(context), conn_ids, spec.site, [ref.to_dict()],
                                   poll_interval=settings["poll_interval"], label=f"{self.task_id} {spec.name}",
                                   not_before=self.not_before()),
            method_name="execute_complete",
            kwargs={"ref": ref.to_dict(), "argv": list(spec.argv)},
            timeout=timedelta(seconds=limit),
        )
        return None  # pragma: no cover - defer raises

    def execute_complete(self, context, event: dict[str, Any] | None = None, ref: dict | None = None,
                         argv: list[str] | None = None) -> Any:
        from multisite_drp.services.commands.base import CommandRef, CommandResult, CommandService

        if not event or event.get("status") != "done":
            message = (event or {}).get("message", f"unexpected event {event!r}")
            if (event or {}).get("input_error"):
                raise AirflowFailException(f"{self.task_id}: {message} [bad input, retrying cannot help]")
            raise RuntimeError(f"{self.task_id}: {message}")
        command = CommandRef.from_dict(ref or {})
        result = CommandResult.from_dict(event["commands"][command.name])
        CommandService.check(command, result, argv or [command.name], None)
        return self.command_done(context, command, result)

    def command_done(self, context, ref: CommandRef, result) -> Any:
        """What the task returns once its command has succeeded (a subclass reads its outputs)."""
        return {"command": ref.name, "handle": ref.handle, "attempt": ref.attempt, "exit_code": result.exit_code}
