"""CommandTrigger on the embedded command runner, and the operator mixin's ending of its event.

The trigger is serialised and rebuilt (what the triggerer does) and run on an event loop
until its first event, against real local commands started through the CampaignHook's
command runner of the embedded campaign (which names no ``commands`` connection, so its
commands are local subprocesses). It carries Params, connection ids and refs: no secret.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from multisite_drp.campaign import names
from multisite_drp.hooks.campaign import CampaignHook
from multisite_drp.services.commands.base import CommandFailedError, CommandSpec
from multisite_drp.triggers.commands import CommandTrigger

CAMPAIGN = Path(__file__).resolve().parents[2] / "include" / "campaigns" / "minidrp_embedded.yaml"


def _rebuilt(trigger):
    from airflow.sdk._shared.module_loading import import_string

    classpath, kwargs = trigger.serialize()
    return import_string(classpath)(**json.loads(json.dumps(kwargs)))


def _first_event(trigger, timeout: float = 120.0):
    async def first():
        async for event in trigger.run():
            return event

    return asyncio.run(asyncio.wait_for(first(), timeout))


def test_command_trigger_fires_when_every_command_of_the_site_has_ended(tmp_path: Path) -> None:
    params = {"campaign_file": str(CAMPAIGN), "data_root": str(tmp_path), "sites": [], "generation": 0}
    hook = CampaignHook.from_params(params)
    assert hook.command_settings("frdf")["adapter"] == "embedded"
    service = hook.command_service("frdf")
    cfg = hook.config
    specs = []
    for group, code in ((0, "import time; time.sleep(1.5); print('graph saved')"),
                        (1, "import sys; print('no inputs for group 1', file=sys.stderr); sys.exit(2)")):
        name = names.command_name(cfg, "step1", "frdf", 0, group, "qgraph")
        specs.append(CommandSpec(name=name, site="frdf", kind="qgraph", argv=(sys.executable, "-c", code),
                                 log_path=str(names.site_work_dir(cfg, "frdf") / "logs" / f"{name}.log")))
    refs = [service.start(s) for s in specs]
    trigger = CommandTrigger(params=params, conn_ids=hook.conn_ids("commands", ["frdf"]), site="frdf",
                             refs=[r.to_dict() for r in refs], poll_interval=0.1, label="t")
    assert set(trigger.serialize()[1]) == {"params", "conn_ids", "site", "refs", "poll_interval", "label", "not_before"}
    event = _first_event(_rebuilt(trigger))
    assert event.payload["status"] == "done"
    ok, bad = (event.payload["commands"][s.name] for s in specs)
    assert ok["state"] == "SUCCEEDED" and ok["exit_code"] == 0
    assert bad["state"] == "FAILED" and bad["exit_code"] == 2 and "no inputs for group 1" in bad["tail"]

    # The operator mixin ends the task by the event: success returns, failure raises with the tail.
    from airflow.sdk import BaseOperator
    from airflow.sdk.exceptions import AirflowFailException
    from multisite_drp.operators.commands import CommandOperatorMixin

    class BuildGraph(CommandOperatorMixin, BaseOperator):
        pass

    op = BuildGraph(task_id="step1.frdf.qgraph")
    done = op.execute_complete({}, event.payload, ref=refs[0].to_dict(), argv=list(specs[0].argv))
    assert done["command"] == specs[0].name and done["exit_code"] == 0
    with pytest.raises(CommandFailedError, match="no inputs for group 1") as info:
        op.execute_complete({}, event.payload, ref=refs[1].to_dict(), argv=list(specs[1].argv))
    assert info.value.returncode == 2
    with pytest.raises(AirflowFailException, match="bad input"):
        op.execute_complete({}, {"status": "error", "input_error": True, "message": "ConnectionMissingError: x"},
                            ref=refs[0].to_dict(), argv=[])


def test_an_event_is_held_until_not_before(tmp_path: Path) -> None:
    """Work that has already ended when the task defers: the trigger still holds its event
    until ``not_before`` (so the scheduler has read the deferred try's exit; DESIGN 53)."""
    import time

    params = {"campaign_file": str(CAMPAIGN), "data_root": str(tmp_path), "sites": [], "generation": 0}
    hook = CampaignHook.from_params(params)
    service = hook.command_service("frdf")
    name = names.command_name(hook.config, "step1", "frdf", 0, 0, "qgraph")
    ref = service.start(CommandSpec(name=name, site="frdf", kind="qgraph", argv=(sys.executable, "-c", "pass"),
                                    log_path=str(tmp_path / f"{name}.log")))
    while not service.status([ref])[ref.name].terminal:
        time.sleep(0.05)
    for hold in (0.0, 2.0):
        not_before = time.time() + hold
        trigger = CommandTrigger(params=params, conn_ids=[], site="frdf", refs=[ref.to_dict()], poll_interval=0.1,
                                 label="t", not_before=not_before)
        event = _first_event(_rebuilt(trigger))
        fired = time.time()
        assert event.payload["status"] == "done" and fired >= not_before, (hold, fired - not_before)
        assert fired - not_before < 1.5, "held for longer than asked"
