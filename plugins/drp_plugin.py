"""AirflowPlugin of multisite-drp: registers the operators' extra links with the API server.

The "Workflow monitor" link on every submit task opens the PanDA monitor's page of the
step's request at that site (empty for the embedded sites, which have no monitor).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from multisite_drp.operators.drp import WorkflowMonitorLink


class MultisiteDrpPlugin(AirflowPlugin):
    name = "multisite_drp"
    operator_extra_links = [WorkflowMonitorLink()]  # noqa: RUF012 - AirflowPlugin reads a class attribute
