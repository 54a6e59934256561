"""The alert notifier against real HTTP receivers on loopback (``http.server`` in a thread).

A secret is registered with Airflow's secrets masker the way the task runner registers a
connection's password (``airflow.sdk.log.mask_secret``); it must then appear nowhere the
alert goes: the ``DRP ALERT`` log line, ``alerts.jsonl``, the webhook body, the notifier's
other log lines. The webhook's own URL path (where Slack-style hooks keep their secret)
is never logged either. Receivers: one that answers 204, one that redirects (not
followed), one that accepts the POST and then trickles its answer a byte at a time for
far longer than the notifier's deadline (abandoned, the connection shut down).
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
from airflow.sdk.log import mask_secret
from multisite_drp.notifiers.alert import (
    ERROR_CHARS,
    CampaignAlertNotifier,
    WebhookRefused,
    check_url,
    post_webhook,
    safe_url,
)

CAMPAIGN = Path(__file__).resolve().parents[2] / "include" / "campaigns" / "minidrp_embedded.yaml"
SECRET = "pw-Planted-7d1c9e42"  # a connection password, as the task runner masks it
HOOK_PATH = "/hooks/T0/B0/hookpath-is-a-secret-too"
TRICKLE_SECONDS = 60.0  # how long the slow receiver would take to answer in full


class Receiver:
    """A loopback HTTP server in a thread, recording what it was sent."""

    def __init__(self, behaviour: str, redirect_to: str = "") -> None:
        self.posts: list[dict] = []
        self.gets: list[str] = []
        self.started = threading.Event()  # a POST's body was read
        self.cut = threading.Event()  # the client went away mid-answer
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append({"path": self.path, "body": body.decode()})
                outer.started.set()
                if behaviour == "redirect":
                    self.send_response(303)  # urllib's default handler follows it (as a GET)
                    self.send_header("Location", redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif behaviour == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Length", str(int(TRICKLE_SECONDS / 0.2)))
                    self.end_headers()
                    end = time.monotonic() + TRICKLE_SECONDS
                    try:
                        while time.monotonic() < end:
                            self.wfile.write(b".")
                            self.wfile.flush()
                            time.sleep(0.2)
                    except OSError:
                        outer.cut.set()
                else:
                    self.send_response(204)
                    self.end_headers()

            def do_GET(self) -> None:
                outer.gets.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = HOOK_PATH) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


def _context(tmp_path: Path, exc: BaseException) -> dict:
    ti = SimpleNamespace(dag_id="drp_campaign", run_id="manual__2026", task_id="step4.frdf.wait_workflow",
                         try_number=2, log_url="http://localhost:8080/dags/drp_campaign/runs/r/tasks/t")
    task = SimpleNamespace(step="step4", site="frdf")
    return {"ti": ti, "task": task, "exception": exc,
            "params": {"campaign_file": str(CAMPAIGN), "data_root": str(tmp_path), "generation": 0}}


def _failure() -> RuntimeError:
    # What a middleware or Rucio error can carry: a credential in its text, a long argv, many lines.
    return RuntimeError(f"login to rucio as drp_frdf with password {SECRET} refused; argv: "
                        + " ".join(f"--opt{i}" for i in range(400))
                        + "\n--- last 40 lines ---\nTraceback ...\n" + SECRET)


def test_alert_is_posted_masked_and_bounded(tmp_path, receivers, monkeypatch, caplog) -> None:
    mask_secret(SECRET)
    hook = Receiver("ok")
    receivers.append(hook)
    monkeypatch.setenv("MULTISITE_DRP_ALERT_WEBHOOK", hook.url())
    caplog.set_level(logging.INFO, logger="multisite_drp.hooks.alerts")

    CampaignAlertNotifier().notify(_context(tmp_path, _failure()))

    assert len(hook.posts) == 1 and hook.posts[0]["path"] == HOOK_PATH
    body = json.loads(hook.posts[0]["body"])
    record = json.loads((tmp_path / "work" / "alerts.jsonl").read_text().splitlines()[-1])
    for alert in (body, record):
        assert (alert["task_id"], alert["step"], alert["site"], alert["try_number"]) == \
            ("step4.frdf.wait_workflow", "step4", "frdf", 2)
        assert alert["log_url"] == "http://localhost:8080/dags/drp_campaign/runs/r/tasks/t"
        assert alert["error"].startswith("RuntimeError: login to rucio as drp_frdf with password *** refused")
        assert "\n" not in alert["error"] and len(alert["error"]) <= ERROR_CHARS
    assert body["text"].startswith("DRP alert: step4.frdf.wait_workflow failed (try 2): RuntimeError: login")
    # The secret is nowhere: body, record, logs. The hook's path is not in the logs either.
    assert SECRET not in hook.posts[0]["body"]
    assert SECRET not in (tmp_path / "work" / "alerts.jsonl").read_text()
    assert SECRET not in caplog.text and "hookpath-is-a-secret-too" not in caplog.text
    assert "DRP ALERT" in caplog.text
    assert f"alert posted to the webhook at http://127.0.0.1:{hook.server.server_port} (HTTP 204)" in caplog.text


def test_a_redirect_is_not_followed(tmp_path, receivers, monkeypatch, caplog) -> None:
    elsewhere = Receiver("ok")
    hook = Receiver("redirect", redirect_to=elsewhere.url("/stolen"))
    receivers += [elsewhere, hook]
    monkeypatch.setenv("MULTISITE_DRP_ALERT_WEBHOOK", hook.url())

    CampaignAlertNotifier().notify(_context(tmp_path, RuntimeError("boom")))

    assert len(hook.posts) == 1
    assert elsewhere.posts == [] and elsewhere.gets == []
    assert "redirect (303) refused" in caplog.text and "HTTPError" in caplog.text
    assert "hookpath-is-a-secret-too" not in caplog.text and "/stolen" not in caplog.text


def test_a_slow_receiver_is_abandoned_at_the_deadline(tmp_path, receivers, monkeypatch, caplog) -> None:
    """The receiver takes the POST, then answers one byte every 0.2 s for a minute. The
    notifier gives up after its deadline (1 s here) and shuts the connection, which the
    receiver sees as a broken write long before its minute is over."""
    hook = Receiver("trickle")
    receivers.append(hook)
    monkeypatch.setenv("MULTISITE_DRP_ALERT_WEBHOOK", hook.url())
    t0 = time.monotonic()
    CampaignAlertNotifier(deadline=1.0).notify(_context(tmp_path, RuntimeError("boom")))
    returned_after = time.monotonic() - t0
    assert hook.started.is_set() and len(hook.posts) == 1  # the send began and reached the receiver
    assert "TimeoutError: no complete answer within 1 s" in caplog.text
    assert hook.cut.wait(timeout=TRICKLE_SECONDS / 2), "the connection was left open to the slow receiver"
    # Not a timing benchmark: the receiver would have held a non-deadline client for a minute.
    assert returned_after < TRICKLE_SECONDS / 2


def test_where_alerts_may_go() -> None:
    hosts = frozenset({"hooks.slack.com"})
    check_url("https://hooks.slack.com/services/T/B/x", hosts)
    check_url("http://127.0.0.1:8080/x", frozenset())
    check_url("http://localhost/x", frozenset())
    check_url("http://[::1]:9/x", frozenset())
    for url, match in (("https://evil.example/x", r"host 'evil.example' is not in \$MULTISITE_DRP_ALERT_HOSTS"),
                       ("http://hooks.slack.com/x", "expected https to a host in"),
                       ("ftp://127.0.0.1/x", "scheme 'ftp'"),
                       ("file:///etc/passwd", "scheme 'file'"),
                       ("https://hooks.slack.com:99999/x", "not a URL")):
        with pytest.raises(WebhookRefused, match=match):
            check_url(url, hosts)
    assert safe_url("https://u:p@hooks.slack.com:443/services/T/B/secret?x=1") == "https://hooks.slack.com:443"


def test_a_refused_webhook_sends_nothing_and_says_why(tmp_path, receivers, monkeypatch, caplog) -> None:
    """An https URL to a host not listed is refused before any connection (the alert is
    still logged and recorded)."""
    monkeypatch.setenv("MULTISITE_DRP_ALERT_WEBHOOK", "https://alerts.example.org/hook/abc-secret-path")
    monkeypatch.setenv("MULTISITE_DRP_ALERT_HOSTS", "hooks.slack.com, chat.example.org")
    CampaignAlertNotifier().notify(_context(tmp_path, RuntimeError("boom")))
    assert "WebhookRefused" in caplog.text and "https://alerts.example.org" in caplog.text
    assert "abc-secret-path" not in caplog.text
    assert (tmp_path / "work" / "alerts.jsonl").read_text().count("step4.frdf.wait_workflow") == 1
    with pytest.raises(WebhookRefused):
        post_webhook("https://alerts.example.org/hook", b"{}")
