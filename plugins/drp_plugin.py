"""AirflowPlugin of multisite-drp: registers the operators' extra links with the API server.

"Workflow monitor" (submit, wait_workflow): the PanDA monitor's page of the group's request,
or the embedded workflow's logs directory. "Rucio" (distribute.*, replicate_inputs,
wait_inputs, register, replicate_outputs, wait_outputs): the Rucio WebUI page of the task's
rule or dataset. See ``multisite_drp.hooks.links``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from multisite_drp.hooks.links import RucioLink, WorkflowMonitorLink


class MultisiteDrpPlugin(AirflowPlugin):
    name = "multisite_drp"
    operator_extra_links = [WorkflowMonitorLink(), RucioLink()]  # noqa: RUF012 - AirflowPlugin reads a class attribute
