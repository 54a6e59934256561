"""A campaign run that misses its deadline raises an alert, under the real scheduler and
triggerer (include/airflowstack): the same ``run_deadline`` the campaign DAG takes from the
campaign file's ``alerts.run_deadline_hours``, here 3 seconds on a one-task DAG whose task
sleeps longer. Airflow's scheduler sees the miss and queues the callback; the triggerer runs
``notifiers.alert.deadline_missed``, which writes the campaign's ``alerts.jsonl``."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml
from airflowstack import AirflowStack
from airflowstack.stack import STATIC_DAGS

CAMPAIGN = Path(__file__).resolve().parents[2] / "include" / "campaigns" / "minidrp_embedded.yaml"

TINY = '''
import time
from airflow.sdk import dag, task
from multisite_drp.notifiers.alert import run_deadline

@dag(dag_id="deadline_tiny", schedule=None, catchup=False, deadline=run_deadline(3 / 3600))
def deadline_tiny():
    @task
    def slow():
        time.sleep(45)

    slow()

deadline_tiny()
'''


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    dags = tmp_path_factory.mktemp("deadline_dags")
    (dags / "deadline_tiny.py").write_text(TINY)
    data = tmp_path_factory.mktemp("deadline_data")
    doc = yaml.safe_load(CAMPAIGN.read_text())
    doc["pipeline"] = str((CAMPAIGN.parent / doc["pipeline"]).resolve())
    (data / "campaign.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    old = os.environ.get("MULTISITE_DRP_ALLOWED_ROOTS")
    os.environ["MULTISITE_DRP_ALLOWED_ROOTS"] = f"{data}:{CAMPAIGN.parents[1] / 'pipelines'}"
    root = Path(os.environ["AIRFLOW_HOME"]) / "stack-deadline"
    st = AirflowStack(root, dags_folder=dags, settings=STATIC_DAGS)
    st.down()
    shutil.rmtree(root, ignore_errors=True)
    try:
        st.up()
        yield st, data
    finally:
        st.down()
        if old is None:
            os.environ.pop("MULTISITE_DRP_ALLOWED_ROOTS", None)
        else:
            os.environ["MULTISITE_DRP_ALLOWED_ROOTS"] = old


def test_a_missed_run_deadline_alerts_from_the_triggerer(stack) -> None:
    st, data = stack
    client = st.endpoint().client()
    client.wait_dag("deadline_tiny", timeout=120)
    client.unpause("deadline_tiny")
    conf = {"campaign_file": str(data / "campaign.yaml"), "data_root": str(data), "generation": 0}
    run = client.trigger("deadline_tiny", conf)
    alerts = data / "work" / "alerts.jsonl"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and not alerts.exists():
        time.sleep(1)
    assert alerts.exists(), "no deadline alert was written; see " + str(st.logs / "triggerer.log")
    [record] = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert (record["level"], record["dag_id"], record["run_id"]) == ("deadline", "deadline_tiny", run["dag_run_id"])
    assert record["error"].startswith("run not finished 0.000833333 h after it was queued")
    # Not before the deadline had passed (queued + 3 s).
    from airflowstack.client import parse_time

    assert record["at"] >= parse_time(client.run("deadline_tiny", run["dag_run_id"])["queued_at"]) + 3.0
