"""A small client of Airflow 3.3's public REST API (v2), as the UI uses it.

Authentication: ``POST /auth/token`` with the user's name and password returns a JWT, sent
as ``Authorization: Bearer`` (fetched again on a 401). The password is never logged.

The grid a person sees for a run is what the UI's grid view loads: ``GET
/ui/grid/structure/{dag_id}`` (the task/group tree), ``GET /ui/grid/runs/{dag_id}`` (the
run headers) and ``GET /ui/grid/ti_summaries/{dag_id}?run_ids=RUN`` (the run's task states,
streamed as NDJSON); :meth:`AirflowClient.grid_seconds` times the three.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import quote

import httpx

TERMINAL_RUN_STATES = ("success", "failed")
ACTIVE_TI_STATES = ("scheduled", "queued", "running", "deferred", "up_for_retry", "up_for_reschedule", "restarting")


class ApiError(RuntimeError):
    """An API call answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


class RunStalled(RuntimeError):
    """A run that will not end by itself (or not in the time given); ``run`` is its last record."""

    def __init__(self, run: dict, message: str, timed_out: bool = False):
        super().__init__(message)
        self.run = run
        self.timed_out = timed_out


class AirflowClient:
    def __init__(self, url: str, username: str, password: str, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.username = username
        self._password = password
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._token: str | None = None

    def __repr__(self) -> str:
        return f"AirflowClient({self.url!r}, user={self.username!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def token(self) -> str:
        resp = self._http.post("/auth/token", json={"username": self.username, "password": self._password})
        if resp.status_code not in (200, 201):
            raise ApiError("POST", "/auth/token", resp.status_code, resp.text)
        self._token = resp.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204), **kw: Any) -> httpx.Response:
        for attempt in (1, 2):
            if self._token is None:
                self.token()
            resp = self._http.request(method, path, headers={"Authorization": f"Bearer {self._token}"}, **kw)
            if resp.status_code == 401 and attempt == 1:
                self._token = None  # expired: log in again once
                continue
            if resp.status_code not in ok:
                raise ApiError(method, path, resp.status_code, resp.text)
            return resp
        raise AssertionError("unreachable")

    def page(self, path: str, *, auth: str | None = "token", **params: Any) -> httpx.Response:
        """GET a page of the API server as it is: ``auth`` ``token`` (this client's bearer
        token), ``cookie`` (the token in the UI's ``_token`` cookie, as a logged-in browser
        sends it), or None (anonymous). Any status is returned, none raised."""
        headers, cookies = {}, {}
        if auth is not None:
            token = self._token or self.token()
            if auth == "cookie":
                cookies["_token"] = token
            else:
                headers["Authorization"] = f"Bearer {token}"
        return httpx.get(str(self._http.base_url).rstrip("/") + path, params=params, headers=headers,
                         cookies=cookies, timeout=120.0)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    # ------------------------------------------------------------------ DAGs
    def dag(self, dag_id: str) -> dict | None:
        try:
            return self.get(f"/api/v2/dags/{quote(dag_id)}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def import_errors(self) -> list[dict]:
        return self.get("/api/v2/importErrors").get("import_errors", [])

    def wait_dag(self, dag_id: str, timeout: float = 180.0, poll: float = 1.0) -> dict:
        """Wait until the dag-processor has parsed ``dag_id`` (it is in the API); an import error
        for it, or the timeout, raises."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.dag(dag_id)
            if found is not None:
                return found
            errors = self.import_errors()
            if errors:
                raise RuntimeError("DAG import errors:\n" + "\n".join(
                    f"{e.get('filename')}: {e.get('stack_trace', '')[-1500:]}" for e in errors))
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAG {dag_id} not parsed within {timeout:.0f} s")
            time.sleep(poll)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{quote(dag_id)}", json={"is_paused": False})

    def ensure_pool(self, name: str, slots: int, description: str = "", include_deferred: bool = False) -> None:
        body = {"name": name, "slots": slots, "description": description, "include_deferred": include_deferred}
        resp = self.request("PATCH", f"/api/v2/pools/{quote(name)}", json=body, ok=(200, 404))
        if resp.status_code == 404:
            self.request("POST", "/api/v2/pools", json=body)

    # ------------------------------------------------------------------ runs
    def trigger(self, dag_id: str, conf: Mapping[str, Any], logical_date: datetime | None = None,
                run_id: str | None = None) -> dict:
        logical_date = logical_date or datetime.now(UTC)
        body: dict[str, Any] = {"conf": dict(conf), "logical_date": logical_date.isoformat()}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/api/v2/dags/{quote(dag_id)}/dagRuns", json=body).json()

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}")

    def find_run(self, dag_id: str, logical_date: datetime) -> dict | None:
        """The run of ``dag_id`` at exactly ``logical_date``, if there is one."""
        for run in self._pages(f"/api/v2/dags/{quote(dag_id)}/dagRuns", "dag_runs",
                               logical_date_gte=logical_date.isoformat(), logical_date_lte=logical_date.isoformat()):
            return run
        return None

    def clear(self, dag_id: str, run_id: str, task_ids: list[str] | None = None, only_failed: bool = False,
              reset_dag_runs: bool = True) -> list[dict]:
        """Clear a run's task instances (all, or ``task_ids``), as "Clear" does in the UI: they
        and, with ``reset_dag_runs``, the run go back to be scheduled again."""
        body: dict[str, Any] = {"dry_run": False, "dag_run_id": run_id, "only_failed": only_failed,
                                "reset_dag_runs": reset_dag_runs, "include_downstream": False,
                                "include_upstream": False}
        if task_ids is not None:
            body["task_ids"] = task_ids
        resp = self.request("POST", f"/api/v2/dags/{quote(dag_id)}/clearTaskInstances", json=body)
        return resp.json().get("task_instances", [])

    def task_instances(self, dag_id: str, run_id: str, page: int = 100) -> list[dict]:
        """Every task instance of the run (mapped ones one per map index), page by page."""
        return list(self._pages(f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances",
                                "task_instances", page=page, order_by="id"))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """A task instance's XCom value (deserialised)."""
        path = (f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}"
                f"/xcomEntries/{quote(key)}")
        return self.get(path, map_index=map_index, deserialize=True)["value"]

    def links(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, str | None]:
        """A task instance's extra links as the UI shows them (name -> URL, None when unset)."""
        path = f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}/links"
        return self.get(path, map_index=map_index)["extra_links"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float, poll: float = 2.0, progress=None,
                 stall_after: float | None = None, ti_poll: float = 10.0) -> dict:
        """Poll the run until it is success or failed, every ``poll`` seconds; its task instances
        every ``ti_poll`` seconds (and once at the end), for ``progress(run, task_instances)``
        when given and for the stall check: a page of task instances costs the API server far
        more than the run (about 0.1 s of CPU per 100), and a campaign has ~300.
        :class:`RunStalled` if the run is still running but no task instance has been in an
        active state (scheduled, queued, running, deferred, waiting for a retry) for
        ``stall_after`` seconds: nothing will move it any more. :class:`RunStalled` too
        (``timed_out``) when ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        last_active = time.monotonic()
        last_tis = -math.inf
        while True:
            run = self.run(dag_id, run_id)
            done = run["state"] in TERMINAL_RUN_STATES
            tis = None
            if (progress or stall_after) and (done or time.monotonic() - last_tis >= ti_poll):
                tis, last_tis = self.task_instances(dag_id, run_id), time.monotonic()
                if progress is not None:
                    progress(run, tis)
            if done:
                return run
            if run["state"] == "queued" or (tis is not None and any(t["state"] in ACTIVE_TI_STATES for t in tis)):
                last_active = time.monotonic()
            elif tis is not None and stall_after is not None and time.monotonic() - last_active > stall_after:
                raise RunStalled(run, f"run {run_id} of {dag_id} is {run['state']} but no task instance has been "
                                      f"active for {stall_after:.0f} s")
            if time.monotonic() > deadline:
                raise RunStalled(run, f"run {run_id} of {dag_id} still {run['state']} after {timeout:.0f} s",
                                 timed_out=True)
            time.sleep(poll)

    def grid_seconds(self, dag_id: str, run_id: str) -> dict[str, float]:
        """Wall seconds of each call the UI's grid view makes for this run, and their sum."""
        out = {}
        for key, path, params in (
            ("structure", f"/ui/grid/structure/{quote(dag_id)}", {}),
            ("runs", f"/ui/grid/runs/{quote(dag_id)}", {}),
            ("ti_summaries", f"/ui/grid/ti_summaries/{quote(dag_id)}", {"run_ids": run_id}),
        ):
            t0 = time.monotonic()
            self.request("GET", path, params=params).read()
            out[key] = round(time.monotonic() - t0, 3)
        out["total"] = round(sum(out.values()), 3)
        return out

    def _pages(self, path: str, key: str, page: int = 100, **params: Any) -> Iterator[dict]:
        offset = 0
        while True:
            data = self.get(path, limit=page, offset=offset, **params)
            items = data.get(key, [])
            yield from items
            offset += len(items)
            if not items or offset >= data.get("total_entries", 0):
                return


def parse_time(value: str | None) -> float | None:
    """An API timestamp as POSIX seconds (None stays None)."""
    if not value:
        return None
    return datetime.fromisoformat(value).timestamp()
