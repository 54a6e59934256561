"""Alert mails through the SMTP provider's SmtpNotifier, to a real SMTP server on loopback
(aiosmtpd in a thread; no mail leaves the machine). The campaign file names the connection
and the recipients (``alerts``); the connection (type smtp) holds host, port and sender.
A connection password registered with Airflow's secrets masker, planted in the error, must
reach neither the mail nor the logs; a server that never answers is abandoned at the limit."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from aiosmtpd.controller import Controller
from airflow.sdk.log import mask_secret
from multisite_drp.campaign.config import CampaignConfigError, load_campaign
from multisite_drp.notifiers.alert import CampaignAlertNotifier

CAMPAIGN = Path(__file__).resolve().parents[2] / "include" / "campaigns" / "minidrp_embedded.yaml"
SECRET = "smtp-Planted-3e9a71"


class Inbox:
    def __init__(self) -> None:
        self.mails: list = []

    async def handle_DATA(self, server, session, envelope):
        self.mails.append((envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _campaign(tmp_path: Path, **alerts) -> Path:
    doc = yaml.safe_load(CAMPAIGN.read_text())
    doc["pipeline"] = str((CAMPAIGN.parent / doc["pipeline"]).resolve())
    doc["alerts"] = alerts
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _context(campaign: Path, tmp_path: Path, exc: BaseException) -> dict:
    ti = SimpleNamespace(dag_id="drp_campaign", run_id="manual__2026", task_id="step4.frdf.wait_workflow",
                         try_number=2, log_url="http://localhost:8080/dags/drp_campaign/runs/r/tasks/t")
    return {"ti": ti, "task": SimpleNamespace(step="step4", site="frdf"), "exception": exc,
            "params": {"campaign_file": str(campaign), "data_root": str(tmp_path / "data"), "generation": 0}}


def _smtp_conn(monkeypatch, port: int) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DRP_ALERTS_SMTP", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"from_email": "drp-alerts@example.org", "disable_ssl": True, "disable_tls": True, "timeout": 30,
                  "retry_limit": 1}}))


@pytest.fixture
def allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTISITE_DRP_ALLOWED_ROOTS", f"{tmp_path}:{CAMPAIGN.parents[1] / 'pipelines'}")
    monkeypatch.delenv("MULTISITE_DRP_ALERT_WEBHOOK", raising=False)


def test_alert_is_mailed_masked_and_bounded(tmp_path, monkeypatch, caplog, allowed) -> None:
    mask_secret(SECRET)
    inbox, port = Inbox(), _free_port()
    server = Controller(inbox, hostname="127.0.0.1", port=port)
    server.start()
    try:
        _smtp_conn(monkeypatch, port)
        campaign = _campaign(tmp_path, smtp_conn_id="drp_alerts_smtp", email_to=["ops@example.org"])
        caplog.set_level(logging.INFO, logger="multisite_drp.hooks.alerts")
        error = RuntimeError(f"SMTP-side secret {SECRET} in a long first line " + "x" * 2000 + "\nline two")
        CampaignAlertNotifier().notify(_context(campaign, tmp_path, error))
    finally:
        server.stop()
    [(rcpt, mail)] = inbox.mails
    assert rcpt == ["ops@example.org"] and mail["From"] == "drp-alerts@example.org"
    assert mail["Subject"] == "DRP alert: step4.frdf.wait_workflow failed (try 2)"
    text = mail.get_body(preferencelist=("html",)).get_content()
    for field in ("step4", "frdf", "http://localhost:8080/dags/drp_campaign/runs/r/tasks/t",
                  "RuntimeError: SMTP-side secret *** in a long first line"):
        assert field in text
    assert SECRET not in text and "line two" not in text and len(text) < 5000
    assert SECRET not in caplog.text
    assert "alert mail through connection drp_alerts_smtp to 1 recipient(s): sent" in caplog.text
    record = json.loads((tmp_path / "data" / "work" / "alerts.jsonl").read_text().splitlines()[-1])
    assert record["task_id"] == "step4.frdf.wait_workflow"  # the JSONL record is kept


def test_a_server_that_never_answers_is_abandoned(tmp_path, monkeypatch, caplog, allowed) -> None:
    """A listener that accepts and says nothing (no SMTP greeting): the send is given up at
    alerts.send_seconds (1 s here), far before the connection's own 30 s timeout."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    accepted: list = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    try:
        _smtp_conn(monkeypatch, silent.getsockname()[1])
        campaign = _campaign(tmp_path, smtp_conn_id="drp_alerts_smtp", email_to=["ops@example.org"], send_seconds=1.0)
        t0 = time.monotonic()
        CampaignAlertNotifier().notify(_context(campaign, tmp_path, RuntimeError("boom")))
        returned_after = time.monotonic() - t0
    finally:
        silent.close()
    assert accepted, "the notifier never connected"
    assert "alert mail through connection drp_alerts_smtp to 1 recipient(s): no answer within 1 s" in caplog.text
    assert returned_after < 15  # not a timing benchmark: the connection's own timeout is 30 s


@pytest.mark.parametrize("alerts, match", [
    ({"smtp_conn_id": "drp_alerts_smtp"}, "alerts.email_to is empty"),
    ({"smtp_conn_id": "Bad-Id", "email_to": ["a@example.org"]}, "smtp_conn_id"),
    ({"email_to": ["not an address"]}, "email_to"),
    ({"send_seconds": 0}, "send_seconds"),
    ({"smtp_password": "x"}, "smtp_password"),
])
def test_bad_alert_settings_are_refused_naming_the_field(tmp_path, alerts, match) -> None:
    with pytest.raises(CampaignConfigError, match=match) as info:
        load_campaign(_campaign(tmp_path, **alerts), check_pipeline=False, allowed_roots=[tmp_path, CAMPAIGN.parent])
    assert "campaign.yaml" in str(info.value)
