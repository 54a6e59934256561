"""The Rucio replica adapter and the Replica Monitor against a REAL local Rucio server.

The server (PostgreSQL, gunicorn, the judge and conveyor daemons with the local-copy
transfertool standing in for FTS) is started once per session by the ``local_rucio``
fixture. Each test module gets its own scope and freshly built butler repositories, so
nothing here depends on another module's DIDs. The service is built the way the DAG
builds it: from Connection-shaped settings, with each site's own account and password.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from multisite_drp.services.butler import SiteButler
from multisite_drp.services.replica.base import ReplicaError, RuleState, replication_progress
from multisite_drp.services.replica.monitor import OkRules, ReplicaMonitor

from tests.conftest import wait_until

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def env(rucio_campaign_factory):
    return rucio_campaign_factory("adapter", monitor=False)


def _refs(env, dataset_type: str, n: int):
    hub = SiteButler("usdf", env.cfg.repo_of("usdf"))
    return hub.refs(dataset_type, env.cfg.input_collections)[:n]


def test_register_is_idempotent_and_carries_lsst_rucio_register_metadata(env) -> None:
    service, client = env.service, env.root_client
    refs = _refs(env, "flat", 3)
    first = service.register("usdf", "Dataset/test/flats", refs)
    assert (first.files, first.new_files) == (3, 3) and first.bytes > 0
    again = service.register("usdf", "Dataset/test/flats", refs)
    assert (again.files, again.new_files, again.bytes) == (3, 0, first.bytes)
    # The server's own catalogue: a closed dataset, three file DIDs with the sidecars, replicas at USDF.
    scope = env.cfg.replication.scope
    did = client.get_did(scope, "Dataset/test/flats")
    assert did["type"] == "DATASET" and did["open"] is False
    files = list(client.list_files(scope, "Dataset/test/flats"))
    assert len(files) == 3
    metas = list(client.get_metadata_bulk([{"scope": scope, "name": f["name"]} for f in files], plugin="JSON"))
    assert {m["rubin_butler"] for m in metas} == {"data_product"}
    assert sorted(m["rubin_sidecar"] for m in metas) == sorted(r.to_json() for r in
                                                                 _expanded_json(env, refs))
    reps = list(client.list_replicas([{"scope": scope, "name": f["name"]} for f in files]))
    assert all(set(r["rses"]) == {"USDF_LOCAL_DISK"} for r in reps)
    root = SiteButler("usdf", env.cfg.repo_of("usdf")).datastore_root()
    assert all((root / f["name"]).is_file() for f in files)


def _expanded_json(env, refs):
    from multisite_drp.services.replica.rucio import _expanded

    return _expanded(SiteButler("usdf", env.cfg.repo_of("usdf")).butler, refs)


def test_raws_are_registered_as_raw_files(env) -> None:
    refs = _refs(env, "raw", 2)
    env.service.register("usdf", "Dataset/test/raws", refs)
    scope = env.cfg.replication.scope
    names = [f["name"] for f in env.root_client.list_files(scope, "Dataset/test/raws")]
    metas = env.root_client.get_metadata_bulk([{"scope": scope, "name": n} for n in names], plugin="JSON")
    assert {m["rubin_butler"] for m in metas} == {"raw_file"}


def test_rule_is_found_not_duplicated_and_replicates_then_ingests(env) -> None:
    service = env.service
    refs = _refs(env, "flat", 3)
    service.register("usdf", "Dataset/test/flats", refs)
    rule = service.add_rule("Dataset/test/flats", "frdf")
    assert service.add_rule("Dataset/test/flats", "frdf") == rule
    assert service.find_rule("Dataset/test/flats", "frdf") == rule
    scope = env.cfg.replication.scope
    rules = [r for r in env.root_client.list_did_rules(scope, "Dataset/test/flats")]
    assert len(rules) == 1
    r = rules[0]
    assert (r["rse_expression"], r["account"], r["activity"]) == ("FRDF_LOCAL_DISK", "drp_frdf", "Production Output")
    assert "Dataset/test/flats to frdf" in env.root_client.get_replication_rule(r["id"])["comments"]
    wait_until(lambda: service.rule_status([rule])[rule.rule_id].state is RuleState.OK)
    # Rucio says OK: the files are at FrDF's RSE, but not in its butler until the monitor ingests them.
    assert service.verify_ingested(rule).found == 0
    monitor = ReplicaMonitor(env.root_client, scope, "FRDF_LOCAL_DISK", env.cfg.repo_of("frdf"), env.base / "mon")
    reports = monitor.poll()
    assert [(x.files, x.ingested, x.failed) for x in reports] == [(3, 3, {})]
    check = service.verify_ingested(rule)
    assert (check.expected, check.found) == (3, 3)
    assert replication_progress(service, [rule]).state == "ok"
    # Exactly once: a second pass does nothing, and the registry holds the same three IDs.
    assert monitor.poll() == []
    frdf = SiteButler("frdf", env.cfg.repo_of("frdf"))
    assert sorted(str(x.id) for x in frdf.refs("flat", "MiniCam/calib")) == sorted(str(x.id) for x in refs)


def test_monitor_refuses_a_file_whose_checksum_is_wrong(env) -> None:
    service, scope = env.service, env.cfg.replication.scope
    refs = _refs(env, "bias", 2)
    service.register("usdf", "Dataset/test/bias", refs)
    rule = service.add_rule("Dataset/test/bias", "ukdf")
    wait_until(lambda: service.rule_status([rule])[rule.rule_id].state is RuleState.OK)
    root = SiteButler("ukdf", env.cfg.repo_of("ukdf")).datastore_root()
    names = sorted(f["name"] for f in env.root_client.list_files(scope, "Dataset/test/bias"))
    bad = root / names[0]
    bad.write_bytes(bad.read_bytes()[:-1] + b"X")  # corrupted at the destination after the transfer
    monitor = ReplicaMonitor(env.root_client, scope, "UKDF_LOCAL_DISK", env.cfg.repo_of("ukdf"), env.base / "mon")
    (report,) = monitor.poll()
    assert report.ingested == 1 and list(report.failed) == [names[0]] and "adler32" in report.failed[names[0]]
    assert monitor.failures() == report.failed
    assert monitor.poll() == []  # a refused dataset is not examined again on every pass
    check = service.verify_ingested(rule)
    assert (check.expected, check.found) == (2, 1)  # the DAG would keep waiting, and the failure is recorded


def test_the_daemons_listing_asks_only_for_rules_updated_since_the_last(env) -> None:
    """The Replica Monitor daemon's listing (OkRules) against the real server's filter: a full
    listing, then only the rules whose updated_at (Rucio's clock) is at or after the newest seen."""
    import time

    service, scope = env.service, env.cfg.replication.scope
    refs = _refs(env, "flat", 6)

    def ok_rule(i: int):
        service.register("usdf", f"Dataset/test/inc/{i}", refs[i:i + 1])
        rule = service.add_rule(f"Dataset/test/inc/{i}", "ukdf")
        wait_until(lambda: service.rule_status([rule])[rule.rule_id].state is RuleState.OK)
        time.sleep(1.1)  # Rucio's dates have whole seconds: the next rule is stamped later
        return rule.rule_id

    oldest, old = ok_rule(0), ok_rule(1)
    lister = OkRules(env.root_client, scope, full_seconds=3600, overlap_seconds=0)
    first = {r["id"]: r for r in lister.list()}
    mark = lister.mark
    assert lister.last_was_full and {oldest, old} <= set(first) and mark >= first[old]["updated_at"]
    newer = ok_rule(2)
    second = {r["id"]: r for r in lister.list()}
    assert not lister.last_was_full and newer in second
    # Only what was stamped at or after the mark: never the oldest rule, stamped a second before it.
    assert oldest not in second and all(r["updated_at"] >= mark for r in second.values())
    assert lister.mark >= second[newer]["updated_at"] > mark
    # A full listing is due again after full_seconds: everything OK is listed.
    # (A second past it: full_at + 3600 - full_at can round below 3600 when the monotonic clock is large.)
    third = {r["id"] for r in lister.list(now=lister.full_at + lister.full_seconds + 1)}
    assert lister.last_was_full and {oldest, old, newer} <= third


def test_batch_status_costs_one_call_per_site_whatever_the_number_of_rules(env) -> None:
    service = env.service
    raws = _refs(env, "raw", 50)
    for i, ref in enumerate(raws):
        service.register("usdf", f"Dataset/test/count/{i:02d}", [ref])
    counts = {}
    for n in (1, 50):
        rules = [service.add_rule(f"Dataset/test/count/{i:02d}", site) for i in range(n)
                 for site in ("usdf", "frdf", "ukdf")]
        before = dict(service.calls)
        status = service.rule_status(rules)
        assert len(status) == 3 * n
        counts[n] = {k: service.calls[k] - before.get(k, 0) for k in service.calls if service.calls[k] != before.get(k, 0)}
    assert counts[1] == counts[50] == {"list_replication_rules": 3}


def test_stuck_rule_is_repaired_by_retry_without_a_second_rule(env) -> None:
    service, scope = env.service, env.cfg.replication.scope
    (ref,) = _refs(env, "raw", 120)[-1:]
    service.register("usdf", "Dataset/test/stuck", [ref])
    (name,) = [f["name"] for f in env.root_client.list_files(scope, "Dataset/test/stuck")]
    source = SiteButler("usdf", env.cfg.repo_of("usdf")).datastore_root() / name
    hidden = source.with_name(source.name + ".hidden")
    shutil.move(source, hidden)
    try:
        rule = service.add_rule("Dataset/test/stuck", "frdf")
        status = wait_until(lambda: (s := service.rule_status([rule])[rule.rule_id]).state is RuleState.STUCK and s,
                       timeout=180)
        assert status.locks_stuck == 1 and status.error
        assert replication_progress(service, [rule]).state == "stuck"
    finally:
        shutil.move(hidden, source)
    assert service.retry(rule) == rule
    wait_until(lambda: service.rule_status([rule])[rule.rule_id].state is RuleState.OK, timeout=180)
    assert len(list(env.root_client.list_did_rules(scope, "Dataset/test/stuck"))) == 1
    dest = SiteButler("frdf", env.cfg.repo_of("frdf")).datastore_root() / name
    assert dest.read_bytes() == source.read_bytes()


def test_refusals_name_what_is_wrong(env) -> None:
    with pytest.raises(ReplicaError, match="no such dataset"):
        env.service.add_rule("Dataset/test/never-registered", "frdf")
    with pytest.raises(ReplicaError, match="has no replica settings"):
        env.service.client("nowhere")


def test_wrong_password_fails_clearly_without_showing_it(env, caplog) -> None:
    from multisite_drp.services import factory

    secrets = dict(env.secrets)
    secrets["frdf"] = "not-the-password-0123"
    service = factory.replica_service(env.settings, secrets)
    with pytest.raises(ReplicaError, match=r"frdf \(connection drp_frdf_replica, account drp_frdf .*refused the "
                                           r"login 'drp_frdf'") as err:
        service.find_rule("Dataset/test/flats", "frdf")
    text = f"{err.value!r} {err.value} " + caplog.text
    assert "not-the-password-0123" not in text and env.secrets["frdf"] not in text
    assert "not-the-password-0123" not in repr(service.__dict__)


def test_validate_logs_in_as_every_site_and_names_a_wrong_password(env, monkeypatch) -> None:
    """The validate task, before any external action, logs in to Rucio as each site."""
    import json

    import yaml
    from multisite_drp.operators.drp import ValidateCampaignOperator

    from scripts.load_airflow_settings import connection_env

    root = Path(__file__).resolve().parents[2]
    for key, value in {**connection_env(yaml.safe_load((root / "airflow_settings.yaml").read_text())),
                       **env.connection_env()}.items():
        monkeypatch.setenv(key, value)
    params = {"campaign_file": str(env.campaign_file), "data_root": str(env.data_root), "steps": [], "sites": [],
              "generation": 0, "dry_run": False}
    op = ValidateCampaignOperator(task_id="validate_campaign", dag_sites=["usdf", "frdf", "ukdf"],
                                  dag_steps=[f"step{i}" for i in range(1, 10)])
    summary = op.execute({"params": params})
    assert summary["replica_identities"] == {"usdf": "drp_usdf", "frdf": "drp_frdf", "ukdf": "drp_ukdf"}

    bad = json.loads(env.connection_env()["AIRFLOW_CONN_DRP_UKDF_REPLICA"])
    bad["password"] = "wrong-password-4567"
    monkeypatch.setenv("AIRFLOW_CONN_DRP_UKDF_REPLICA", json.dumps(bad))
    # A refused login is bad input (ReplicaAuthError): the task fails at once, without retry.
    from airflow.sdk.exceptions import AirflowFailException
    from multisite_drp.services.replica.base import ReplicaAuthError

    with pytest.raises(AirflowFailException, match=r"ukdf \(connection drp_ukdf_replica, account drp_ukdf .*refused "
                                                   r"the login 'drp_ukdf': check the connection's login and "
                                                   r"password") as err:
        op.execute({"params": params})
    assert isinstance(err.value.__cause__, ReplicaAuthError)
    assert "wrong-password-4567" not in str(err.value) and env.secrets["ukdf"] not in str(err.value)


def test_a_rucio_token_in_the_connection_is_used_as_is(env) -> None:
    """auth_type 'token': the connection's password field holds a Rucio auth token."""
    import copy

    from multisite_drp.services import factory
    from multisite_drp.services.replica.rucio import RucioCredentials, RucioSite, _make_client

    # A fresh token (a plain Client would hand back whatever its shared cache holds, maybe stale).
    frdf = RucioSite.from_dict(env.settings["sites"]["frdf"])
    token = _make_client(frdf, RucioCredentials(env.secrets["frdf"])).auth_token
    settings = copy.deepcopy(env.settings)
    settings["sites"]["frdf"]["auth_type"] = "token"
    service = factory.replica_service(settings, {**env.secrets, "frdf": token})
    env.service.register("usdf", "Dataset/test/token", _refs(env, "flat", 1))
    rule = service.add_rule("Dataset/test/token", "frdf")
    assert env.root_client.get_replication_rule(rule.rule_id)["account"] == "drp_frdf"
    bogus = factory.replica_service(settings, {**env.secrets, "frdf": "drp_frdf-not-a-token"})
    with pytest.raises(ReplicaError, match="Rucio refused the token: it is wrong or has expired") as err:
        bogus.find_rule("Dataset/test/token", "frdf")
    assert "not-a-token" not in str(err.value)
