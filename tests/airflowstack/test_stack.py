"""The real-scheduler harness itself (include/airflowstack): PostgreSQL 15, scheduler with the
LocalExecutor, triggerer, dag-processor and API server, brought up under a root of this
session's Airflow home; a tiny mapped DAG triggered through the REST API, its task instances
read back page by page, one task cleared and run again; a killed process found stale and restarted alone; nothing left
running after ``down``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import time
from pathlib import Path

import pytest
from airflowstack import AirflowStack
from airflowstack.stack import STATIC_DAGS
from localrucio import _procs

TINY = '''
from airflow.sdk import dag, task

@dag(dag_id="stack_tiny", schedule=None, catchup=False, params={"n": 3})
def stack_tiny():
    @task
    def items(params=None):
        return list(range(int(params["n"])))

    @task
    def double(x):
        return 2 * x

    double.expand(x=items())

    @task
    def preloaded():
        import sys  # this DAG file imports no lsst module: only the scheduler's preload can have
        return sorted(m for m in ("lsst.daf.butler", "multisite_drp.services.actions") if m in sys.modules)

    preloaded()

stack_tiny()
'''


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    dags = tmp_path_factory.mktemp("stack_dags")
    (dags / "stack_tiny.py").write_text(TINY)
    # Under the session's Airflow home (var/...), not pytest's 0700 base temp: PostgreSQL runs
    # as its own user and must reach its data directory.
    root = Path(os.environ["AIRFLOW_HOME"]) / "stack-harness"
    st = AirflowStack(root, dags_folder=dags, settings=STATIC_DAGS)
    st.down()
    shutil.rmtree(root, ignore_errors=True)
    try:
        st.up()
        yield st
    finally:
        st.down()


def test_tiny_dag_through_the_rest_api(stack: AirflowStack) -> None:
    client = stack.endpoint().client()
    client.wait_dag("stack_tiny", timeout=120)
    client.unpause("stack_tiny")
    run = client.trigger("stack_tiny", {"n": 5})
    done = client.wait_run("stack_tiny", run["dag_run_id"], timeout=240, poll=1.0)
    assert done["state"] == "success"
    tis = client.task_instances("stack_tiny", run["dag_run_id"], page=2)  # three pages
    assert sorted((t["task_id"], t["map_index"]) for t in tis) == \
        [("double", i) for i in range(5)] + [("items", -1), ("preloaded", -1)]
    assert all(t["state"] == "success" and t["try_number"] == 1 and t["start_date"] and t["end_date"] for t in tis)
    # The task process was forked from the scheduler, which had imported them (airflowstack.preload).
    assert client.xcom("stack_tiny", run["dag_run_id"], "preloaded") == ["lsst.daf.butler",
                                                                          "multisite_drp.services.actions"]
    grid = client.grid_seconds("stack_tiny", run["dag_run_id"])
    assert set(grid) == {"structure", "runs", "ti_summaries", "total"}
    # Clearing one task (every map index) through the API runs just that task again.
    client.clear("stack_tiny", run["dag_run_id"], task_ids=["double"])
    assert client.wait_run("stack_tiny", run["dag_run_id"], timeout=240, poll=1.0)["state"] == "success"
    again = {(t["task_id"], t["map_index"]): t for t in client.task_instances("stack_tiny", run["dag_run_id"])}
    assert {k: t["try_number"] for k, t in again.items()} == {("items", -1): 1, ("preloaded", -1): 1,
                                                              **{("double", i): 2 for i in range(5)}}
    assert all(t["state"] == "success" for t in again.values())


def test_login_kept_private(stack: AirflowStack) -> None:
    ep = stack.endpoint()
    for path in (ep.password_file, stack.secrets_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = ep.password
    assert len(password) >= 16
    logs = [p for d in (stack.logs, stack.home / "logs") for p in d.rglob("*") if p.is_file()]
    assert logs
    assert not [p for p in logs if password in p.read_text(errors="replace")], "the password reached a log"


def test_up_again_restarts_only_a_dead_process(stack: AirflowStack) -> None:
    before = json.loads(stack.state_file.read_text())["processes"]
    os.killpg(before["triggerer"]["pid"], signal.SIGKILL)  # its record is now stale
    # SIGKILL takes effect when the kernel next runs the process: on a loaded machine it can
    # still be alive when killpg returns, and up() would rightly keep it. Wait for the death.
    deadline = time.monotonic() + 30
    while _procs.alive(before["triggerer"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _procs.alive(before["triggerer"]), "the killed triggerer did not die within 30 s"
    stack.up()
    after = json.loads(stack.state_file.read_text())["processes"]
    assert after["triggerer"]["pid"] != before["triggerer"]["pid"] and _procs.alive(after["triggerer"])
    for name in ("api-server", "dag-processor", "scheduler"):
        assert after[name] == before[name], f"{name} was restarted"
    assert "migrate" not in stack.last_up["steps"] and "initdb" not in stack.last_up["steps"]


def test_down_leaves_no_process(stack: AirflowStack) -> None:
    pids = stack.pids()
    assert {"postgres"} < set(pids) and any(k.startswith("scheduler:") for k in pids)
    stopped = stack.down()
    assert all(stopped.values()), stopped
    assert [pid for pid in pids.values() if _procs.start_time(pid) is not None] == []
    assert stack.pids() == {}
