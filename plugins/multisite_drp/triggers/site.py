"""Triggers that wait on a site's workflows or replication rules without holding a worker.

They carry the adapter settings the hook validated (``services.factory``), rebuild
the port in the triggerer, and ask it about *all* their workflows or rules in one
batch call per poll (the ports' ``status`` / ``rule_status`` take many at once), so a
site with many groups costs one request per interval. Blocking port calls run in a
thread (``asyncio.to_thread``): the triggerer's event loop never stalls.

The operators always pass ``timeout`` to ``defer()``; the triggers themselves never
give up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from multisite_drp.services import factory
from multisite_drp.services.replica.base import RuleRef, replication_progress

__all__ = ["ReplicationTrigger", "WorkflowTrigger"]


class WorkflowTrigger(BaseTrigger):
    """Fires when every workflow in ``refs`` is in a terminal state (SUCCEEDED, FAILED, ...)."""

    def __init__(self, settings: dict[str, Any], refs: list[dict[str, str]], poll_interval: float,
                 label: str = "") -> None:
        super().__init__()
        self.settings = settings
        self.refs = refs
        self.poll_interval = poll_interval
        self.label = label

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"settings": self.settings, "refs": self.refs, "poll_interval": self.poll_interval,
                 "label": self.label})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        def build():  # imports the LSST middleware: off the event loop
            from multisite_drp.services.workflow.base import WorkflowRef

            return factory.workflow_service(self.settings), [WorkflowRef.from_dict(r) for r in self.refs]

        service, refs = await asyncio.to_thread(build)
        last = None
        while True:
            statuses = await asyncio.to_thread(service.status, refs)
            summary = {rid: (st.state.name, st.quanta_succeeded, st.quanta_total) for rid, st in statuses.items()}
            if summary != last:
                self.log.info("%s: %s", self.label, summary)
                last = summary
            if all(st.terminal for st in statuses.values()):
                yield TriggerEvent({"status": "done", "workflows": {k: v.to_dict() for k, v in statuses.items()}})
                return
            await asyncio.sleep(self.poll_interval)


class ReplicationTrigger(BaseTrigger):
    """Fires when every rule is OK *and* its datasets are ingested at the destination butler,
    or as soon as one rule is STUCK (the operator decides what to do with it)."""

    def __init__(self, settings: dict[str, Any], rules: list[dict[str, str]], poll_interval: float,
                 label: str = "") -> None:
        super().__init__()
        self.settings = settings
        self.rules = rules
        self.poll_interval = poll_interval
        self.label = label

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"settings": self.settings, "rules": self.rules, "poll_interval": self.poll_interval,
                 "label": self.label})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        service = await asyncio.to_thread(factory.replica_service, self.settings)  # opens the catalogue
        refs = [RuleRef.from_dict(r) for r in self.rules]
        last = None
        while True:
            progress = await asyncio.to_thread(replication_progress, service, refs)
            shown = (progress.states, progress.ingested)
            if shown != last:
                self.log.info("%s: %s %s", self.label, progress.states, progress.ingested or "")
                last = shown
            if progress.state == "stuck":
                yield TriggerEvent({"status": "stuck", "stuck": progress.stuck})
                return
            if progress.state == "ok":
                yield TriggerEvent({"status": "ok", "ingested": {k: int(v.split("/")[0])
                                                                 for k, v in progress.ingested.items()}})
                return
            await asyncio.sleep(self.poll_interval)
