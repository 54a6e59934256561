"""Run one small test DAG through ``dag.test()`` in a fresh Python (its own Airflow home
from the environment), and read back the run's state and each task's state and try."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DRIVER = textwrap.dedent('''
    import json, sys
    from scripts.run_campaign import _migrate

    _migrate()
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag

    settings.configure_orm()
    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    dr = bag.dags[sys.argv[2]].test(run_conf=json.loads(sys.argv[3]))
    print("RESULT " + json.dumps({"state": str(dr.state), "tasks": {
        ti.task_id: [str(ti.state), ti.try_number] for ti in dr.get_task_instances()}}))
''')


def run_dag_test(dags: Path, dag_id: str, conf: dict, env: dict, log: Path) -> tuple[dict, str]:
    """(result, log text): result is ``{"state": ..., "tasks": {task_id: [state, try_number]}}``."""
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-c", DRIVER, str(dags), dag_id, json.dumps(conf)], cwd=ROOT, env=env,
                       stdout=fh, stderr=subprocess.STDOUT, timeout=600, check=False)
    text = log.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"dag.test printed no result; see {log}:\n{text[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):]), text
