"""What a deferred task hands the triggerer (kept in Airflow's ``trigger`` table): the
Params that locate the campaign, connection ids and handles, never a credential.

The hook the sensors defer from is built from connections whose passwords are planted;
the triggers are built the way the sensors build them (``CampaignHook.carried_params``,
``conn_ids``, the settings' poll interval) and serialised as the triggerer stores them.
"""

from __future__ import annotations

import json

import pytest
from multisite_drp.hooks.campaign import PARAM_KEYS, CampaignHook
from multisite_drp.triggers.site import ReplicationTrigger, WorkflowTrigger

from tests.conftest import CAMPAIGN

PASSWORDS = {site: f"rucio-pw-{site}-93ad" for site in ("usdf", "frdf", "ukdf")}
TOKEN = "oidc-token-frdf-71c2"


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> CampaignHook:
    for site, pw in PASSWORDS.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_DRP_{site.upper()}_REPLICA", json.dumps(
            {"conn_type": "generic", "host": "https://rucio.example.org", "login": f"drp_{site}", "password": pw,
             "extra": {"adapter": "rucio", "account": f"drp_{site}"}}))
        monkeypatch.setenv(f"AIRFLOW_CONN_DRP_{site.upper()}_BUTLER", json.dumps(
            {"conn_type": "generic", "extra": {"adapter": "embedded"}}))
        monkeypatch.setenv(f"AIRFLOW_CONN_DRP_{site.upper()}_WORKFLOW", json.dumps(
            {"conn_type": "generic", "host": "https://panda.example.org", "password": TOKEN,
             "extra": {"adapter": "panda", "auth_vo": "Rubin"}} if site != "usdf" else
            {"conn_type": "generic", "extra": {"adapter": "embedded"}}))
    return CampaignHook(str(CAMPAIGN))


def test_triggers_carry_connection_ids_never_credentials(hook) -> None:
    params = {"campaign_file": str(CAMPAIGN), "data_root": None, "sites": [], "generation": 0, "steps": [],
              "dry_run": False, "rescue": False}
    assert hook.settings  # every connection read and validated, passwords included
    triggers = [
        WorkflowTrigger(params=hook.carried_params(params), conn_ids=hook.conn_ids("workflow", ["frdf"]),
                        site="frdf", refs=[{"run_id": "1", "name": "w", "site": "frdf", "submit_dir": "/s"}],
                        poll_interval=hook.workflow_settings("frdf")["poll_interval"], label="step1/frdf"),
        ReplicationTrigger(params=hook.carried_params(params), conn_ids=hook.conn_ids("replica"),
                           rules=[{"rule_id": "r1", "site": "frdf", "dataset": "d"}],
                           poll_interval=hook.replica_settings["poll_interval"], label="step1/frdf inputs"),
    ]
    for trigger in triggers:
        classpath, kwargs = trigger.serialize()
        text = json.dumps(kwargs)
        assert TOKEN not in text and not any(pw in text for pw in PASSWORDS.values()), classpath
        assert set(kwargs["params"]) == set(PARAM_KEYS)
        assert all(c.startswith("drp_") for c in kwargs["conn_ids"])
