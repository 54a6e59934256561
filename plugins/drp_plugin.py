"""AirflowPlugin of multisite-drp: registers the operators' extra links with the API server.

"Workflow monitor" (submit, wait_workflow): the PanDA monitor's page of the group's request,
or the embedded workflow's logs directory. "Rucio" (distribute.*, replicate_inputs,
wait_inputs, register, replicate_outputs, wait_outputs): the Rucio WebUI page of the task's
rule or dataset. See ``multisite_drp.hooks.links``.

The "DRP campaign" page (``multisite_drp.web.app``): a FastAPI app mounted at
``/drp-campaign``, reached from the navigation bar (the runs of ``drp_campaign``) and from
each DAG run (that run's page), both as external views Airflow's UI shows in a frame.
The page enforces Airflow's own auth (a mounted app is not behind the login by itself).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from multisite_drp.hooks.links import CampaignPageLink, RucioLink, WorkflowMonitorLink
from multisite_drp.web.app import PREFIX, app


class MultisiteDrpPlugin(AirflowPlugin):
    name = "multisite_drp"
    operator_extra_links = [WorkflowMonitorLink(), RucioLink(), CampaignPageLink()]  # noqa: RUF012 - AirflowPlugin reads a class attribute
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "DRP campaign"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {"name": "DRP campaign", "href": f"{PREFIX}/", "destination": "nav", "url_route": "drp-campaign",
         "category": "browse"},
        {"name": "DRP campaign", "href": f"{PREFIX}/run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}", "destination": "dag_run",
         "url_route": "drp-campaign-run"},
    ]
