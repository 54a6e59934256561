"""No credential of the worker reaches a child process, a detached runner, or BPS's files.

Every launch path is run for real with planted credentials in ``os.environ`` (an
``AIRFLOW_CONN_*`` connection URI with its password, a ``*_PASSWORD`` variable, a
``*_TOKEN``, a database URL with its password): ``middleware.run_command`` running a
Python that prints its environment; the embedded adapter's detached-runner launch
(``EmbeddedWorkflowService.submit``) with an interpreter stand-in that records the
environment it was started with; the PanDA adapter's prepare stage, where BPS itself
dumps ``os.environ`` to ``<name>.env.info.yaml`` and runs its update-graph-run command
(BPS's own ``_dump_env_info`` and ``pre_transform.execute``); the Replica Monitor daemon
started by ``localrucio.campaign.start_monitor`` on the session's local Rucio.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from multisite_drp.services import middleware
from multisite_drp.services.procs import child_env, is_secret_name, is_secret_value

PLANTED = {
    "AIRFLOW_CONN_DRP_X_REPLICA": "rucio://drp_x:conn-pw-6a1f@rucio.example:443/?account=drp_x",
    "AIRFLOW_VAR_SOME_SETTING": "var-value-2b7c",
    "DRP_DB_PASSWORD": "db-pw-91e0",
    "SOME_API_TOKEN": "tok-4d2e",
    "RUBIN_REGISTRY_URL": "postgresql://butler:url-pw-77aa@db.example/registry",
    "_AIRFLOW_WWW_USER_PASSWORD": "admin-pw-0c3d",
}


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in PLANTED.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DAF_BUTLER_REPOSITORY_INDEX", "/tmp/index.yaml")  # a stack setting: passes
    return PLANTED


def _assert_clean(env: dict[str, str], where: str) -> None:
    leaked = sorted(k for k in PLANTED if k in env)
    assert not leaked, f"{where}: {leaked} reached the child"
    text = json.dumps(env)
    for value in ("conn-pw-6a1f", "db-pw-91e0", "tok-4d2e", "url-pw-77aa", "admin-pw-0c3d", "var-value-2b7c"):
        assert value not in text, f"{where}: {value} reached the child"
    assert env.get("PATH") == os.environ["PATH"], where
    assert os.environ["PYTHONPATH"] in env.get("PYTHONPATH", ""), where


def test_child_env_rules(planted, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", "/srv/airflow")
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "fernet-8e8e")
    monkeypatch.setenv("MULTISITE_DRP_ALERT_WEBHOOK", "https://hooks.example/secret-path")
    env = child_env({"PYTHONUNBUFFERED": "1"})
    _assert_clean(env, "child_env")
    assert env["PYTHONUNBUFFERED"] == "1" and env["DAF_BUTLER_REPOSITORY_INDEX"] == "/tmp/index.yaml"
    # Airflow's own settings and the project's other settings are not the stack's business.
    assert not {"AIRFLOW_HOME", "AIRFLOW__CORE__FERNET_KEY", "MULTISITE_DRP_ALERT_WEBHOOK"} & set(env)
    for name in ("AIRFLOW_CONN_X", "AIRFLOW_VAR_Y", "_AIRFLOW_DB_MIGRATE", "PANDA_AUTH_ID_TOKEN", "aws_secret_access_key",
                 "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__FERNET_KEY", "MY_PASSWD"):
        assert is_secret_name(name), name
    for name in ("PATH", "PYTHONPATH", "DAF_BUTLER_REPOSITORY_INDEX", "PANDA_URL", "RUCIO_CONFIG"):
        assert not is_secret_name(name), name
    assert is_secret_value("redis://:pw@broker:6379/0") and is_secret_value("https://u:p@proxy:3128")
    assert not is_secret_value("http://127.0.0.1:8080/x") and not is_secret_value("/a/b:/c/d")
    # An explicit extra may not carry a credential either.
    with pytest.raises(ValueError, match="'PANDA_AUTH_ID_TOKEN' names or carries a credential"):
        child_env({"PANDA_AUTH_ID_TOKEN": "x"})
    # A deployment adds names; the credential rules still apply to them.
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("MULTISITE_DRP_CHILD_ENV", "HTTPS_PROXY, DRP_DB_PASSWORD")
    env = child_env()
    assert env["HTTPS_PROXY"] == "http://proxy.example:3128" and "DRP_DB_PASSWORD" not in env


def test_run_command_child_sees_no_credential(planted, tmp_path) -> None:
    log = tmp_path / "env.log"
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    middleware.run_command([sys.executable, "-c", code], log, env={"MW_EXTRA": "42"})
    env = json.loads(log.read_text().splitlines()[-1])
    _assert_clean(env, "run_command")
    assert env["MW_EXTRA"] == "42"


ENV_RECORDING_PYTHON = """#!/bin/sh
# Stand-in for the interpreter the embedded adapter starts its runner with: records the
# environment it was given (argv: -m MODULE SUBMIT_DIR ...) and exits.
exec "{python}" -c 'import json, os, sys; open(os.path.join(sys.argv[1], "launched_env.json"), "w").write(json.dumps(dict(os.environ)))' "$3"
"""


def test_detached_runner_starts_without_credentials(planted, tmp_path) -> None:
    from multisite_drp.services.workflow.base import WorkflowSpec
    from multisite_drp.services.workflow.embedded import EmbeddedWorkflowService

    python = tmp_path / "env_recording_python"
    python.write_text(ENV_RECORDING_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    graph = tmp_path / "g.qg"
    graph.write_bytes(b"not read by the stand-in")
    submit_dir = tmp_path / "submit"
    spec = WorkflowSpec(name="w", site="usdf", qgraph=str(graph), butler_repo=str(tmp_path / "repo"),
                        output_run="u/x/run", submit_dir=str(submit_dir))
    EmbeddedWorkflowService("usdf", python=str(python)).submit(spec)
    from tests.conftest import wait_until

    recorded = wait_until(lambda: (submit_dir / "launched_env.json").is_file()
                          and (submit_dir / "launched_env.json").read_text(), timeout=60, interval=0.1)
    env = json.loads(recorded)
    _assert_clean(env, "embedded runner")
    assert env["PYTHONUNBUFFERED"] == "1"
    for name in ("spec.json", "state.json"):
        text = (submit_dir / name).read_text()
        assert not any(v in text for v in ("conn-pw-6a1f", "db-pw-91e0", "tok-4d2e")), name


def test_bps_prepare_sees_no_credentials(planted, tmp_path) -> None:
    """What BPS writes and runs while the PanDA adapter prepares a submission
    (``_client_env(with_token=False)``): its environment dump and its update-graph-run
    subprocess. The token and the planted credentials are put back afterwards."""
    from lsst.ctrl.bps.bps_utils import _dump_env_info
    from lsst.ctrl.bps.pre_transform import execute
    from multisite_drp.services.workflow.panda import PanDASite, PanDAWorkflowService

    service = PanDAWorkflowService(PanDASite(site="usdf", url="http://127.0.0.1:9/server/panda", vo="Rubin"),
                                   token="oidc-token-5f5f")
    dump = tmp_path / "w.env.info.yaml"
    out = tmp_path / "update_graph.out"
    with service._client_env(with_token=False):
        _dump_env_info(str(dump))
        execute(f"{sys.executable} -c 'import json, os; print(json.dumps(dict(os.environ)))'", str(out))
    import yaml

    dumped = yaml.safe_load(dump.read_text())
    assert not (set(PLANTED) & set(dumped)), sorted(set(PLANTED) & set(dumped))
    assert "oidc-token-5f5f" not in dump.read_text() and "PANDA_AUTH_ID_TOKEN" not in dumped
    assert dumped["PATH"] == os.environ["PATH"]
    line = next(ln for ln in out.read_text().splitlines() if ln.startswith("{"))
    child = json.loads(line)
    assert not (set(PLANTED) & set(child)) and "oidc-token-5f5f" not in line
    for k, v in PLANTED.items():  # put back after the prepare stage
        assert os.environ[k] == v
    with service._client_env():  # the token is there for the calls that need it
        assert os.environ["PANDA_AUTH_ID_TOKEN"] == "oidc-token-5f5f"
    assert "PANDA_AUTH_ID_TOKEN" not in os.environ


@pytest.mark.server
def test_replica_monitor_daemon_starts_without_credentials(planted, local_rucio) -> None:
    """The monitor is a daemon that outlives whoever starts it (``make up``, the demo,
    a test session): it is started now (an interval of its own, so not an earlier
    start's process) and its environment is read from /proc."""
    from localrucio.campaign import MONITOR, start_monitor
    from multisite_drp.campaign.config import load_campaign

    from tests.conftest import CAMPAIGN

    cfg = load_campaign(CAMPAIGN, check_pipeline=False)
    try:
        start_monitor(local_rucio, cfg, interval=0.77)
        pid = local_rucio.status()["extra"][MONITOR]["pid"]
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        start_monitor(local_rucio, cfg)  # the session's own monitor again
    assert b"0.77" in cmdline
    env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    _assert_clean(env, "replica monitor")
    assert Path(env["RUCIO_CONFIG"]).is_file() and env["RUCIO_ACCOUNT"] == "root"
