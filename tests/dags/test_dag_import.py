"""The DAG folder parses with no import errors (Airflow 3.3: DagBag(dag_folder=...))."""

from __future__ import annotations

from pathlib import Path

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_dagbag_has_no_import_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    dag = bag.dags["drp_campaign"]
    assert {"validate_campaign", "plan_campaign"} <= set(dag.task_ids)
    assert set(dag.params.keys()) >= {"campaign_file", "steps", "sites", "dry_run", "data_root"}
    for t in dag.tasks:
        assert t.doc_md, f"{t.task_id} has no doc_md"
