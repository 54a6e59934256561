"""The trigger that waits on a site's stack commands (graph builds, merges, registrations).

Like the other campaign triggers (``triggers.site``) it carries the DAG run's Params that
locate the campaign, the ids of the connections it reads and the commands' refs (name,
site, kind, pod or record handle, log path): never settings or secrets. In the triggerer
it rebuilds the site's command runner through ``CampaignHook.afrom_params`` (a pod site's
KubernetesHook reads its kube config there) and asks the port's batch ``status`` about all
its commands, sharing one call per poll with the site's other command triggers (``SharedPoll``).

Its event: ``{"status": "done", "commands": {name: {state, exit_code, tail, message}}}``
once every command has ended; ``{"status": "error", "input_error": true, ...}`` when the
connection or campaign is wrong.
"""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.triggers.base import TriggerEvent

from multisite_drp.hooks.campaign import CampaignHook
from multisite_drp.triggers.site import SiteRefsTrigger

__all__ = ["CommandTrigger"]


class CommandTrigger(SiteRefsTrigger):
    """Fires when every command in ``refs`` (all of one site) has ended; its event carries
    each command's result (state, exit code, log tail). Polls through the site's
    :class:`~multisite_drp.triggers.site.SharedPoll`, and cancels on kill, as
    ``WorkflowTrigger`` does (``SiteRefsTrigger``)."""

    kind = "command"

    def _build(self, hook: CampaignHook) -> tuple[Any, list[Any]]:
        from multisite_drp.services.commands.base import CommandRef

        return hook.command_service(self.site), [CommandRef.from_dict(r) for r in self.refs]

    @staticmethod
    def _ref_id(ref: Any) -> str:
        return ref.name

    def _shown(self, statuses: dict[str, Any]) -> dict[str, Any]:
        return {k: v.value for k, v in statuses.items()}

    async def _done(self, service: Any, refs: list[Any], statuses: dict[str, Any]) -> TriggerEvent:
        results = {}
        for ref in refs:
            results[ref.name] = (await asyncio.to_thread(service.result, ref)).to_dict()
        return TriggerEvent({"status": "done", "commands": results})
