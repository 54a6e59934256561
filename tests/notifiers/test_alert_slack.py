"""Alerts to Slack through the Slack provider's ``SlackWebhookNotifier``, and warning alerts.

The Slack side is a local HTTP receiver on loopback (``http.server`` in a thread) that
answers as Slack's incoming webhooks do (200, body ``ok``); the connection is a real
``slackwebhook`` connection whose host is that receiver and whose password is the token.
No Slack is involved. A secret is registered with Airflow's secrets masker as the task
runner registers a connection's password; it must appear nowhere the alert goes, and the
webhook token appears in no log line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from airflow.sdk.log import mask_secret
from multisite_drp.campaign.config import CampaignConfigError, load_campaign
from multisite_drp.hooks import alerts
from multisite_drp.notifiers.alert import CampaignAlertNotifier

CAMPAIGN = Path(__file__).resolve().parents[2] / "include" / "campaigns" / "minidrp_embedded.yaml"
SECRET = "slack-Planted-5b2f08"  # a connection password the task read, as the task runner masks it
TOKEN = "T0AAA/B0BBB/token-is-the-secret"


class SlackReceiver:
    """A loopback stand-in for Slack's incoming-webhook endpoint: records each POST's JSON
    body and path; answers 200 ``ok``, or (``silent``) holds the request without answering."""

    def __init__(self, silent: bool = False) -> None:
        self.posts: list[dict] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append({"path": self.path, "json": json.loads(body)})
                if silent:
                    outer.release.wait(30)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_port

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[SlackReceiver]:
    r = SlackReceiver()
    yield r
    r.stop()


def _campaign(tmp_path: Path, **alert_settings) -> Path:
    doc = yaml.safe_load(CAMPAIGN.read_text())
    doc["pipeline"] = str((CAMPAIGN.parent / doc["pipeline"]).resolve())
    doc["alerts"] = alert_settings
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _slack_conn(monkeypatch, port: int) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DRP_ALERTS_SLACK", json.dumps({
        "conn_type": "slackwebhook", "host": f"http://127.0.0.1:{port}/services", "password": TOKEN}))
    mask_secret(TOKEN)


def _context(campaign: Path, tmp_path: Path, exc: BaseException | None = None, try_number: int = 2) -> dict:
    ti = SimpleNamespace(dag_id="drp_campaign", run_id="manual__2026", task_id="step4.frdf.wait_workflow",
                         map_index=1, try_number=try_number,
                         log_url="http://localhost:8080/dags/drp_campaign/runs/r/tasks/t?try_number=2")
    return {"ti": ti, "task": SimpleNamespace(step="step4", site="frdf"), "exception": exc,
            "params": {"campaign_file": str(campaign), "data_root": str(tmp_path / "data"), "generation": 0}}


def _records(tmp_path: Path) -> list[dict]:
    return [json.loads(ln) for ln in (tmp_path / "data" / "work" / "alerts.jsonl").read_text().splitlines()]


@pytest.fixture
def allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTISITE_DRP_ALLOWED_ROOTS", f"{tmp_path}:{CAMPAIGN.parents[1] / 'pipelines'}")
    monkeypatch.delenv("MULTISITE_DRP_ALERT_WEBHOOK", raising=False)


def test_a_failure_reaches_slack_masked_bounded_with_its_log_link(tmp_path, monkeypatch, caplog, allowed,
                                                                   receiver) -> None:
    campaign = _campaign(tmp_path, slack_webhook_conn_id="drp_alerts_slack", send_seconds=10)
    _slack_conn(monkeypatch, receiver.port)
    mask_secret(SECRET)
    caplog.set_level(logging.INFO, logger="multisite_drp.hooks.alerts")
    error = RuntimeError(f"PanDA said no <&> using {SECRET}\n" + "traceback line\n" * 500 + "x" * 5000)
    CampaignAlertNotifier().notify(_context(campaign, tmp_path, error))

    [post] = receiver.posts
    assert post["path"] == "/services/" + TOKEN  # where the provider's hook sent it: host + token
    text = post["json"]["text"]
    assert text.startswith("*DRP alert: step4.frdf.wait_workflow[1] failed (try 2)*")
    assert "run_id manual__2026 · step step4 · site frdf" in text
    assert "RuntimeError: PanDA said no &lt;&amp;&gt; using ***" in text  # Slack's escapes; the secret masked
    assert SECRET not in json.dumps(post) and "traceback line" not in text and len(text) <= 3000
    assert text.endswith("<http://localhost:8080/dags/drp_campaign/runs/r/tasks/t?try_number=2|task log>")
    [record] = _records(tmp_path)
    assert (record["level"], record["map_index"], record["step"], record["site"]) == ("failure", 1, "step4", "frdf")
    assert len(record["error"]) <= alerts.ERROR_CHARS and SECRET not in json.dumps(record)
    assert "alert to Slack through connection drp_alerts_slack: sent" in caplog.text
    assert TOKEN not in caplog.text and "token-is-the-secret" not in caplog.text and SECRET not in caplog.text


def test_a_silent_slack_is_abandoned_at_send_seconds(tmp_path, monkeypatch, caplog, allowed) -> None:
    silent = SlackReceiver(silent=True)
    try:
        campaign = _campaign(tmp_path, slack_webhook_conn_id="drp_alerts_slack", send_seconds=1)
        _slack_conn(monkeypatch, silent.port)
        caplog.set_level(logging.INFO, logger="multisite_drp.hooks.alerts")
        started = time.monotonic()
        CampaignAlertNotifier().notify(_context(campaign, tmp_path, RuntimeError("boom")))
        returned_after = time.monotonic() - started
    finally:
        silent.stop()
    assert len(silent.posts) == 1  # it was sent, and never answered
    assert "alert to Slack through connection drp_alerts_slack: no answer within 1 s; given up" in caplog.text
    assert returned_after < 10  # not a timing benchmark: without the deadline it would wait 30 s
    assert _records(tmp_path)[0]["error"] == "RuntimeError: boom"  # the durable record is there regardless


def test_a_warning_is_sent_once_per_key(tmp_path, monkeypatch, caplog, allowed, receiver) -> None:
    campaign = _campaign(tmp_path, slack_webhook_conn_id="drp_alerts_slack")
    _slack_conn(monkeypatch, receiver.port)
    caplog.set_level(logging.INFO, logger="multisite_drp.hooks.alerts")
    context = _context(campaign, tmp_path)
    text = "2 of 3 rule(s) STUCK: raws@ukdf: DESTINATION_UNREACHABLE"
    assert alerts.warn(context, "replication_stuck", text, key="replication_stuck:r1,r2:manual__2026:1")
    assert not alerts.warn(context, "replication_stuck", text, key="replication_stuck:r1,r2:manual__2026:1")
    assert alerts.warn(context, "replication_stuck", text, key="replication_stuck:r1,r2:manual__2026:2")

    records = _records(tmp_path)
    assert [(r["level"], r["kind"], r["key"][-1]) for r in records] == [
        ("warning", "replication_stuck", "1"), ("warning", "replication_stuck", "2")]
    assert records[0]["error"] == text
    assert len(receiver.posts) == 2
    assert receiver.posts[0]["json"]["text"].startswith(
        "*DRP warning (replication_stuck): step4.frdf.wait_workflow[1]*")
    assert "DRP WARNING" in caplog.text and "already recorded; not sent again" in caplog.text


def _append_in_child(params: dict, record: dict, out) -> None:
    out.put(alerts.append_record(params, record)[1])


def test_one_key_is_recorded_once_across_processes(tmp_path, allowed) -> None:
    """Four processes append a warning with the same key at once (as retried or parallel
    tasks may): one record, one claim, whatever the log already holds."""
    import multiprocessing

    campaign = _campaign(tmp_path)
    params = _context(campaign, tmp_path)["params"]
    log = tmp_path / "data" / "work" / "alerts.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("".join(json.dumps({"key": f"old:{i}", "level": "warning"}) + "\n" for i in range(5000)))
    record = {"key": "replication_stuck:r9:manual__2026:1", "level": "warning", "kind": "replication_stuck"}
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_append_in_child, args=(params, record, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(out.get(timeout=5) for _ in procs) == [False, False, False, True]
    keys = [json.loads(ln)["key"] for ln in log.read_text().splitlines()]
    assert keys.count(record["key"]) == 1 and len(keys) == 5001
    assert alerts.append_record(params, record)[1] is False  # and later, in this process


def test_warnings_false_keeps_warnings_local_but_sends_failures(tmp_path, monkeypatch, allowed, receiver) -> None:
    campaign = _campaign(tmp_path, slack_webhook_conn_id="drp_alerts_slack", warnings=False)
    _slack_conn(monkeypatch, receiver.port)
    context = _context(campaign, tmp_path, RuntimeError("failed for real"))
    assert alerts.warn(context, "partial_success", "accepted: 1 failed of 8 quanta", key="partial_success:w:1:1")
    assert receiver.posts == []
    CampaignAlertNotifier().notify(context)
    assert len(receiver.posts) == 1 and "failed for real" in receiver.posts[0]["json"]["text"]
    assert [r["level"] for r in _records(tmp_path)] == ["warning", "failure"]


def test_a_warning_never_fails_its_task(tmp_path, monkeypatch, caplog, allowed) -> None:
    campaign = _campaign(tmp_path, slack_webhook_conn_id="drp_alerts_slack")
    monkeypatch.setenv("AIRFLOW_CONN_DRP_ALERTS_SLACK", json.dumps({"conn_type": "slackwebhook"}))  # no token
    caplog.set_level(logging.INFO, logger="multisite_drp.hooks.alerts")
    context = _context(campaign, tmp_path)
    assert alerts.warn(context, "workflow_restarted", "restarted", key="k1")  # recorded; the send failed, logged
    assert "alert to Slack through connection drp_alerts_slack failed" in caplog.text
    assert not alerts.warn(context, "no_such_kind", "x", key="k2")  # refused, logged, not raised
    assert "could not raise the no_such_kind warning" in caplog.text
    unreadable = _context(tmp_path / "missing.yaml", tmp_path)
    assert alerts.warn(unreadable, "workflow_restarted", "restarted", key="k3")  # logged even without the file
    assert "could not record the alert" in caplog.text


@pytest.mark.parametrize("settings, match", [
    ({"slack_webhook_conn_id": "Bad Id"}, "slack_webhook_conn_id"),
    ({"slack_webhook_url": "https://hooks.slack.com/services/x"}, "slack_webhook_url"),
    ({"warnings": "sometimes"}, "warnings"),
])
def test_bad_slack_settings_are_refused_naming_the_field(tmp_path, settings, match) -> None:
    with pytest.raises(CampaignConfigError, match=match) as info:
        load_campaign(_campaign(tmp_path, **settings), check_pipeline=False,
                      allowed_roots=[tmp_path, CAMPAIGN.parent])
    assert "campaign.yaml" in str(info.value)
