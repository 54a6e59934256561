"""The "DRP campaign" page: a FastAPI app the plugin mounts on Airflow's API server.

Routes (under the plugin's prefix, ``/drp-campaign``):

* ``/`` — the recent runs of ``drp_campaign`` (or ``?dag_id=``), each linking to its page;
* ``/run?dag_id=&run_id=`` — one run: open alerts, the progress map and the per-(step,
  site) group counts, shares and bytes per link (planned against moved), the report;
* ``/map.png`` and ``/plan-skymap.png`` with the same query — the progress map, and the
  planner's own sky map (footprints of the boundary-crossing visits).

It reads durable state only and never triggers work: the run and its task instances from
Airflow's metadata database; the campaign file the run names (inside the deployment's
allowed roots), its plan (``plan.json``, ``tracts.json``), report (``report.json``) and
``alerts.jsonl``.

A FastAPI app mounted by a plugin is not behind Airflow's login, so every route depends
on Airflow's own auth: the user from the request's token (the UI's ``_token`` cookie, or
an ``Authorization: Bearer`` header), who must be allowed to read the DAG's runs
(``requires_access_dag("GET", DagAccessEntity.RUN)``). No token: 401; not allowed: 403.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from multisite_drp.hooks.links import CAMPAIGN_PAGE

__all__ = ["DEFAULT_DAG", "PREFIX", "app", "run_page_data"]

log = logging.getLogger(__name__)

PREFIX = CAMPAIGN_PAGE  # hooks/links.py: the plan task links to it
DEFAULT_DAG = "drp_campaign"
RUNS_LISTED = 25

DagId = Annotated[str, Query(pattern=r"^[A-Za-z0-9_.-]{1,250}$")]
RunId = Annotated[str, Query(min_length=1, max_length=250)]


async def _require(request: Request, dag_id: DagId = DEFAULT_DAG) -> None:
    """Airflow's own auth for every route: the user from the request's token (``get_user``:
    a bearer header, else the UI's cookie; 401 without one), who must be allowed to read the
    DAG's runs (``requires_access_dag``; 403 otherwise). Imported here, not at module load:
    the plugin is loaded by every Airflow process, the auth only runs in the API server."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from fastapi.security import HTTPAuthorizationCredentials

    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if token else None
    user = await get_user(request, _oauth_token=None, bearer_credentials=bearer)
    requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=dag_id)(request, user)


Authorized = Depends(_require)

app = FastAPI(title="DRP campaign", docs_url=None, redoc_url=None, openapi_url=None)


def _runs(dag_id: str) -> list[dict]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(DagRun).where(DagRun.dag_id == dag_id)
                               .order_by(DagRun.id.desc()).limit(RUNS_LISTED)).scalars().all()
        return [{"run_id": r.run_id, "state": str(r.state.value if hasattr(r.state, "value") else r.state),
                 "campaign_file": (r.conf or {}).get("campaign_file"), "generation": (r.conf or {}).get("generation"),
                 "start": r.start_date.strftime("%Y-%m-%d %H:%M") if r.start_date else None} for r in rows]


def _run(dag_id: str, run_id: str) -> tuple[dict, list[tuple[str, int, str | None]]]:
    """The run (its effective Params: the DAG's defaults under its conf) and its task
    instances' (task_id, map_index, state)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.execute(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).scalar_one_or_none()
        if run is None:
            raise HTTPException(404, f"{dag_id}: no run {run_id!r}")
        params: dict[str, Any] = {}
        try:
            dag = SerializedDagModel.get_dag(dag_id, session=session)
            params = dict(dag.params.dump()) if dag is not None else {}
        except Exception as exc:  # noqa: BLE001 - the conf alone may do
            log.warning("%s: could not read the DAG's Params (%s); using the run's conf only", dag_id, exc)
        params.update(run.conf or {})
        tis = session.execute(select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state)
                              .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)).all()
        state = run.state.value if hasattr(run.state, "value") else run.state
        return ({"run_id": run_id, "state": str(state), "generation": int(params.get("generation") or 0),
                 "params": params},
                [(t, int(m), None if s is None else str(getattr(s, "value", s))) for t, m, s in tis])


def _campaign(params: dict):
    """The run's campaign, loaded inside the deployment's allowed roots; 422 if it cannot be."""
    from multisite_drp.campaign.config import load_campaign
    from multisite_drp.hooks.campaign import deployment_roots

    if not params.get("campaign_file"):
        raise HTTPException(422, "the run names no campaign_file")
    try:
        return load_campaign(params["campaign_file"], data_root=params.get("data_root"), check_pipeline=False,
                             allowed_roots=deployment_roots())
    except Exception as exc:  # noqa: BLE001 - shown to the operator, who can fix the file
        raise HTTPException(422, f"the run's campaign file cannot be read: {exc}") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _alerts(path: Path, limit: int = 5000) -> list[dict]:
    """The last ``limit`` records of ``alerts.jsonl`` (a line that does not parse is skipped)."""
    try:
        lines = path.read_text().splitlines()[-limit:]
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _progress(run: dict, task_states: list[tuple[str, int, str | None]]) -> dict:
    """The run's campaign, plan and progress (groups, tracts): what the page and the map share."""
    from multisite_drp.campaign import names
    from multisite_drp.campaign.plan import CampaignPlan

    from .progress import group_progress, tract_progress

    config = _campaign(run["params"])
    plan_dir = names.plan_dir(config, run["generation"])
    try:
        plan = CampaignPlan.load_current(plan_dir)
    except Exception as exc:  # noqa: BLE001 - no plan yet (the plan task has not run)
        raise HTTPException(409, f"no plan for generation {run['generation']} yet ({exc})") from None
    groups = group_progress(plan, task_states)
    return {"config": config, "plan": plan, "plan_dir": plan_dir, "groups": groups,
            "tracts": tract_progress(plan, groups)}


def run_page_data(dag_id: str, run: dict, task_states: list[tuple[str, int, str | None]]) -> dict:
    """Everything the run's page shows, from the durable state (no Airflow import here: the
    caller read the run and its task instances)."""
    from multisite_drp.campaign import names
    from multisite_drp.campaign.plan_report import TRACTS_FILE

    from .progress import open_alerts, step_site_table

    data = _progress(run, task_states)
    config = data["config"]
    states = {(t, m): s for t, m, s in task_states}
    return {
        **data, "table": step_site_table(data["groups"]),
        "has_map": (data["plan_dir"] / TRACTS_FILE).is_file(),
        "report": _read_json(names.report_dir(config, run["generation"]) / "report.json"),
        "alerts": open_alerts(_alerts(config.work_path / "alerts.jsonl"), run["run_id"], states,
                              run["state"] in ("success", "failed")),
    }


@app.get("/", response_class=HTMLResponse, dependencies=[Authorized])
def index(dag_id: DagId = DEFAULT_DAG) -> str:
    from .page import render_index

    return render_index(dag_id, _runs(dag_id))


@app.get("/run", response_class=HTMLResponse, dependencies=[Authorized])
def run_page(run_id: RunId, dag_id: DagId = DEFAULT_DAG) -> str:
    from .page import render_index, render_run

    if dag_id != DEFAULT_DAG:  # the UI offers the tab on every DAG's runs
        return render_index(DEFAULT_DAG, [], note=f"{dag_id} is not the campaign DAG: this page follows the runs of "
                                                  f"{DEFAULT_DAG}; open it from one of them, or from the Browse menu.")
    run, tis = _run(dag_id, run_id)
    data = run_page_data(dag_id, run, tis)
    return render_run(dag_id=dag_id, run=run, config=data["config"], plan=data["plan"], groups=data["groups"],
                      table=data["table"], tracts=data["tracts"], report=data["report"], alerts=data["alerts"],
                      has_map=data["has_map"])


@app.get("/map.png", dependencies=[Authorized])
def progress_map(run_id: RunId, dag_id: DagId = DEFAULT_DAG) -> Response:
    from multisite_drp.campaign.plan_report import read_tract_centres

    from .page import render_map_png

    run, tis = _run(dag_id, run_id)
    data = _progress(run, tis)  # the map needs no report or alerts
    centres = read_tract_centres(data["plan_dir"])
    if centres is None:
        raise HTTPException(404, "the plan has no tract centres (tracts.json)")
    png = render_map_png(data["plan"], centres, data["tracts"])
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@app.get("/plan-skymap.png", dependencies=[Authorized])
def plan_skymap(run_id: RunId, dag_id: DagId = DEFAULT_DAG) -> Response:
    from multisite_drp.campaign import names

    run, _ = _run(dag_id, run_id)
    path = names.plan_dir(_campaign(run["params"]), run["generation"]) / "skymap.png"
    if not path.is_file():
        raise HTTPException(404, "the plan has no sky map")
    return Response(path.read_bytes(), media_type="image/png")
