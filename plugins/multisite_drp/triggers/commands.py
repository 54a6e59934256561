"""The trigger that waits on a site's stack commands (graph builds, merges, registrations).

Like the other campaign triggers (``triggers.site``) it carries the DAG run's Params that
locate the campaign, the ids of the connections it reads and the commands' refs (name,
site, kind, pod or record handle, log path): never settings or secrets. In the triggerer
it rebuilds the site's command runner through ``CampaignHook.afrom_params`` (a pod site's
KubernetesHook reads its kube config there) and asks the port's batch ``status`` about all
its commands in one call per poll, in a thread.

Its event: ``{"status": "done", "commands": {name: {state, exit_code, tail, message}}}``
once every command has ended; ``{"status": "error", "input_error": true, ...}`` when the
connection or campaign is wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import TriggerEvent

from multisite_drp.errors import InputError
from multisite_drp.triggers.site import _CampaignTrigger, input_error_event

__all__ = ["CommandTrigger"]


class CommandTrigger(_CampaignTrigger):
    """Fires when every command in ``refs`` (all of one site) has ended."""

    def __init__(self, params: dict[str, Any], conn_ids: list[str], site: str, refs: list[dict[str, Any]],
                 poll_interval: float, label: str = "") -> None:
        super().__init__(params, conn_ids, poll_interval, label)
        self.site = site
        self.refs = refs

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {**self._kwargs(), "site": self.site, "refs": self.refs})

    async def _service(self):
        hook = await self._hook()

        def build():
            from multisite_drp.services.commands.base import CommandRef

            return hook.command_service(self.site), [CommandRef.from_dict(r) for r in self.refs]

        return await asyncio.to_thread(build)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            service, refs = await self._service()
        except InputError as exc:
            yield input_error_event(exc)
            return
        last = None
        while True:
            try:
                states = await asyncio.to_thread(service.status, refs)
            except InputError as exc:
                yield input_error_event(exc)
                return
            except Exception as exc:  # noqa: BLE001 - the cluster briefly unreachable: keep waiting, say so
                self.log.warning("%s: status call failed (%s: %s); trying again in %.0f s", self.label,
                                 type(exc).__name__, exc, self.poll_interval)
                await asyncio.sleep(self.poll_interval)
                continue
            shown = {k: v.value for k, v in states.items()}
            if shown != last:
                self.log.info("%s: %s", self.label, shown)
                last = shown
            if all(st.terminal for st in states.values()):
                results = {}
                for ref in refs:
                    res = await asyncio.to_thread(service.result, ref)
                    results[ref.name] = res.to_dict()
                yield TriggerEvent({"status": "done", "commands": results})
                return
            await asyncio.sleep(self.poll_interval)

    async def on_kill(self) -> None:
        """The deferred task was marked failed or cleared: stop its commands (delete the pods,
        signal the local process groups), unless the campaign's ``on_kill.workflows`` is ``leave``."""
        hook = await self._hook()
        if hook.config.on_kill.workflows == "leave":
            self.log.warning("%s: task killed; its commands run on (on_kill.workflows: leave)", self.label)
            return
        service, refs = await self._service()
        for ref in refs:
            self.log.warning("%s: task killed; cancelling command %s (%s)", self.label, ref.name, ref.handle)
            await asyncio.to_thread(service.cancel, ref)
