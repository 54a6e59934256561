"""The DAG folder parses with no import errors (Airflow 3.3: DagBag(dag_folder=...)), and its
shape is the campaign's: per step, per site, the plan's submission groups (``split``) and the
seven actions and their waits mapped over them (one map index per group), then a barrier."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
SITE_TASKS = ["generate_qg", "replicate_inputs", "wait_inputs", "submit", "wait_workflow", "merge", "register",
              "replicate_outputs", "wait_outputs"]


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags["drp_campaign"]


def test_dag_parses_with_params_and_docs(dag) -> None:
    assert {"validate_campaign", "plan_campaign"} <= set(dag.task_ids)
    assert set(dag.params.keys()) >= {"campaign_file", "steps", "sites", "dry_run", "data_root", "generation"}
    for t in dag.tasks:
        assert t.doc_md, f"{t.task_id} has no doc_md"


def test_step_groups_read_like_sentences(dag) -> None:
    ids = set(dag.task_ids)
    for i in range(1, 10):
        sites = ["usdf"] if i in (3, 9) else ["usdf", "frdf", "ukdf"]
        for site in sites:
            split = f"step{i}.split.{site}"
            chain = [f"step{i}.{site}.{name}" for name in SITE_TASKS]
            assert set(chain) <= ids and split in ids
            assert chain[0] in dag.get_task(split).downstream_task_ids
            for up, down in itertools.pairwise(chain):
                assert down in dag.get_task(up).downstream_task_ids, f"{up} -> {down} missing"
            assert f"step{i}.barrier" in dag.get_task(chain[-1]).downstream_task_ids
            # The site's chain is one task group mapped over its split's list of groups.
            mapped = [dag.get_task(t).get_closest_mapped_task_group() for t in chain]
            assert all(g is not None and g is mapped[0] for g in mapped), chain
            assert mapped[0].group_id == f"step{i}.{site}"
            assert [t.task_id for t in mapped[0].iter_mapped_dependencies()] == [split]
            # With no groups the split skips exactly these at once (not the barrier, not the next step).
            assert sorted(t.task_id for t in dag.get_task(split).chain_tasks()) == sorted(chain)
        for other in {"usdf", "frdf", "ukdf"} - set(sites):
            assert f"step{i}.{other}.submit" not in ids  # global steps run at the hub only
            assert f"step{i}.split.{other}" not in ids
        if i < 9:
            # The barrier holds every site's next split (and so its next graphs).
            nxt = ["usdf"] if i + 1 in (3, 9) else ["usdf", "frdf", "ukdf"]
            assert {f"step{i + 1}.split.{s}" for s in nxt} <= dag.get_task(f"step{i}.barrier").downstream_task_ids
    for site in ("frdf", "ukdf"):
        assert {f"distribute.{site}.{t}" for t in ("bootstrap", "raws", "wait_ingested", "input_chain")} <= ids
    assert "distribute.usdf.raws" not in ids
    assert {"finalize.chain_outputs", "finalize.collect_provenance", "finalize.report"} <= ids


def test_waits_are_deferrable_sensors_with_triggers_in_the_plugins_package(dag) -> None:
    from airflow.sdk import BaseSensorOperator

    waits = [t for t in dag.tasks if t.task_id.rsplit(".", 1)[-1].startswith("wait")]
    assert len(waits) == 2 + 23 * 3
    for t in waits:
        assert isinstance(t, BaseSensorOperator) and t.deferrable, t.task_id


@pytest.mark.parametrize("field,value,why", [
    ("campaign_file", "include/campaigns/minidrp_embedded.yaml", "does not match"),  # relative
    ("campaign_file", "/work/campaign.txt", "does not match"),  # not YAML
    ("campaign_file", "", "non-empty|too short"),
    ("data_root", "var/sites", "does not match"),  # relative
    ("generation", -1, "less than the minimum"),
    ("sites", ["usdf", "mars"], "is not one of"),
])
def test_a_bad_param_is_refused_when_the_run_is_created(dag, field, value, why) -> None:
    """What Airflow checks when a run is created (the trigger form shows it; no run is made):
    each DAG Param's JSON schema, here the paths' patterns and the enums."""
    import copy
    import re

    from airflow.sdk.exceptions import ParamValidationError

    copy.deepcopy(dag.params).validate()  # the defaults pass
    bad = copy.deepcopy(dag.params)
    with pytest.raises(ParamValidationError, match=f"param {field}") as info:
        bad[field] = value  # what the API does with the form's conf
        bad.validate()
    assert re.search(why, str(info.value)), info.value
