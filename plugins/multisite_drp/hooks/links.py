"""Operator extra links: where an operator follows a task's work outside Airflow.

* ``Workflow monitor``: the workflow's page in its workflow system, the PanDA monitor's
  request page (base: the PanDA connection's ``monitor_url`` extra), or for the embedded
  workflows their logs directory (a ``file://`` URL on the Airflow host); recorded by
  ``submit`` in its return value (``monitor_url``).
* ``DRP campaign`` (the plan task): the run's page in the campaign's own view
  (``/drp-campaign/run``, mounted by the project's plugin on Airflow's API server, under
  the deployment's ``[api] base_url`` path).
* ``Rucio``: the Rucio WebUI page of the rule or dataset a replication task made
  (``/rule?rule_id=...``, ``/did?scope=...&name=...``; base: the hub's replica connection's
  ``webui_url`` extra), recorded by the task as XCom ``rucio_url``.

A waiting task (``wait_workflow``, ``wait_inputs``, ``wait_outputs``, ``wait_ingested``)
shows the link of the task before it in its chain: the workflow or rule it waits on (the
``raws`` task before ``wait_ingested``, in ``drp_campaign``'s distribution and in
``drp_nightly`` alike). The
URLs are built when the task runs, from its connections (the API server that renders a
link reads only XCom); no secret is in them (base URLs with credentials are refused when
the connection is read). An unset base URL gives no link, not a broken one.
"""

from __future__ import annotations

from types import SimpleNamespace

from airflow.sdk import BaseOperatorLink

__all__ = ["CAMPAIGN_PAGE", "RUCIO_URL_KEY", "WAITS_ON", "CampaignPageLink", "RucioLink", "WorkflowMonitorLink"]

#: Where the project's plugin mounts the campaign page (``web/app.py``'s PREFIX).
CAMPAIGN_PAGE = "/drp-campaign"

#: A waiting task links to what the task before it in its chain created.
WAITS_ON = {"wait_workflow": "submit", "wait_inputs": "replicate_inputs", "wait_outputs": "replicate_outputs",
            "wait_ingested": "raws"}
RUCIO_URL_KEY = "rucio_url"


def _source(ti_key) -> SimpleNamespace:
    """The task instance whose XCom holds the link: the task itself, or for a wait, the task
    before it in the chain (same map index). ``ti_key``: what Airflow passes, a
    ``TaskInstanceKey`` or (as the task runner does when it stores the links) the task instance."""
    *prefix, last = ti_key.task_id.split(".")
    task_id = ".".join([*prefix, WAITS_ON[last]]) if last in WAITS_ON else ti_key.task_id
    return SimpleNamespace(dag_id=ti_key.dag_id, task_id=task_id, run_id=ti_key.run_id, map_index=ti_key.map_index)


class WorkflowMonitorLink(BaseOperatorLink):
    """The workflow's page (``monitor_url`` in the submit task's return value)."""

    name = "Workflow monitor"

    def get_link(self, operator, *, ti_key) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=_source(ti_key), key="return_value")
        return str(value.get("monitor_url") or "") if isinstance(value, dict) else ""


class RucioLink(BaseOperatorLink):
    """The Rucio WebUI page of the task's rule or dataset (XCom ``rucio_url``)."""

    name = "Rucio"

    def get_link(self, operator, *, ti_key) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=_source(ti_key), key=RUCIO_URL_KEY)
        return value if isinstance(value, str) else ""


class CampaignPageLink(BaseOperatorLink):
    """The run's campaign page (``/drp-campaign/run?dag_id=...&run_id=...``), under the path
    of the API server's ``[api] base_url`` (a deployment behind a path prefix keeps it)."""

    name = "DRP campaign"

    def get_link(self, operator, *, ti_key) -> str:
        from urllib.parse import urlencode, urlsplit

        from airflow.configuration import conf

        base = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
        return f"{base}{CAMPAIGN_PAGE}/run?{urlencode({'dag_id': ti_key.dag_id, 'run_id': ti_key.run_id})}"
