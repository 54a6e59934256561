"""CampaignAlertNotifier: a failed task becomes an alert an operator can act on.

Each alert names the DAG run, the task (``step4.frdf.wait_workflow``), its step and
site, the try, the error's first line and the log URL. It is

* logged at ERROR level (``DRP ALERT {...}``: what Airflow's own alerting and log
  shipping pick up);
* appended as one JSON line to ``<campaign work dir>/alerts.jsonl`` (the campaign's
  durable record; the report and operators read it);
* POSTed as JSON to ``$MULTISITE_DRP_ALERT_WEBHOOK`` if set (Slack/Mattermost-style
  incoming webhook). A webhook failure is logged, never raised: alerting must not turn
  one failure into two.

What leaves the worker is bounded and masked. The record goes through Airflow's secrets
masker (``airflow.sdk._shared.secrets_masker.redact``: every connection password and
sensitive extra the task read is registered there) before it is logged, written or
sent; the error is its first line only, at most :data:`ERROR_CHARS` characters (the full
traceback stays in the task log, behind the link), every other text field at most
:data:`FIELD_CHARS`.

The webhook is posted only to ``https://`` on a host listed in
``$MULTISITE_DRP_ALERT_HOSTS`` (comma-separated host names), or to ``http://`` on a
loopback address (a local receiver); redirects are refused (a redirect could send the
alert elsewhere); and the whole send, connect to last byte, has a deadline
(``deadline`` seconds, default :data:`DEADLINE_SECONDS`): past it the connection is shut
down and the notifier returns. The URL (whose path is often the webhook's secret) is
never logged: only its scheme and host are.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from airflow.sdk import BaseNotifier
from airflow.sdk._shared.secrets_masker import redact

__all__ = ["DEADLINE_SECONDS", "ERROR_CHARS", "CampaignAlertNotifier", "WebhookRefused", "alert_record",
           "deadline_missed", "post_webhook", "run_deadline", "safe_url"]

log = logging.getLogger(__name__)

#: The error in an alert: its first line, at most this many characters.
ERROR_CHARS = 500
#: Any other text field of an alert (task id, log URL, campaign file...), at most.
FIELD_CHARS = 1000
#: Seconds the whole webhook send may take (connect, TLS, request, response).
DEADLINE_SECONDS = 5.0
WEBHOOK_ENV = "MULTISITE_DRP_ALERT_WEBHOOK"
HOSTS_ENV = "MULTISITE_DRP_ALERT_HOSTS"


class WebhookRefused(ValueError):
    """The webhook URL is not one an alert may be sent to (scheme, host)."""


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_line(exc: BaseException | None) -> str | None:
    """``Type: first line of the message``, masked before it is cut (a cut secret would no
    longer match its mask), at most :data:`ERROR_CHARS` characters."""
    if exc is None:
        return None
    message = str(redact(str(exc))).strip()
    first = message.splitlines()[0] if message else ""
    return _cap(f"{type(exc).__name__}: {first}" if first else type(exc).__name__, ERROR_CHARS)


def _step_site(task: Any, task_id: str | None) -> tuple[str | None, str | None]:
    """The task's step and site: its operator's attributes, else its task id's group
    names (``step4.frdf.wait_workflow``, ``distribute.ukdf.raws``: step, site, task)."""
    step, site = getattr(task, "step", None), getattr(task, "site", None)
    parts = (task_id or "").split(".")
    if len(parts) == 3:
        step, site = step or parts[0], site or parts[1]
    return step, site


def alert_record(context: dict[str, Any]) -> dict[str, Any]:
    """The alert of a failed task: who, where, what, and the log link; masked and bounded."""
    ti = context.get("ti") or context.get("task_instance")
    params = context.get("params") or {}
    task_id = getattr(ti, "task_id", None)
    step, site = _step_site(context.get("task") or getattr(ti, "task", None), task_id)
    try:
        log_url = getattr(ti, "log_url", None)
    except Exception:  # noqa: BLE001 - the link is a property that reads Airflow's config
        log_url = None
    record = {
        "at": time.time(),
        "dag_id": getattr(ti, "dag_id", None),
        "run_id": getattr(ti, "run_id", None),
        "task_id": task_id,
        "step": step,
        "site": site,
        "try_number": getattr(ti, "try_number", None),
        "error": _error_line(context.get("exception")),
        "log_url": log_url,
        "campaign_file": params.get("campaign_file"),
        "generation": params.get("generation"),
    }
    record = {k: _cap(str(v), FIELD_CHARS) if isinstance(v, str) and k != "error" else v for k, v in record.items()}
    return redact(record)


def safe_url(url: str) -> str:
    """What may be logged of a URL: its scheme and host (and port), never path, query or user."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    return f"{parts.scheme or '?'}://{host}{port}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(env: dict[str, str] | None = None) -> frozenset[str]:
    """The host names ``$MULTISITE_DRP_ALERT_HOSTS`` lists (comma-separated, any case)."""
    raw = (os.environ if env is None else env).get(HOSTS_ENV, "")
    return frozenset(h.strip().lower().rstrip(".") for h in raw.split(",") if h.strip())


def check_url(url: str, hosts: frozenset[str]) -> None:
    """Raise `WebhookRefused` unless ``url`` is https to a listed host or http on loopback."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise WebhookRefused(f"${WEBHOOK_ENV}: not a URL; expected https://<host>/...") from None
    if parts.scheme == "https" and host in hosts:
        return
    if parts.scheme == "http" and _loopback(host):
        return
    if parts.scheme == "https":
        raise WebhookRefused(f"${WEBHOOK_ENV}: host {host!r} is not in ${HOSTS_ENV} ({sorted(hosts)}); "
                             "expected one of the hosts alerts may be sent to")
    raise WebhookRefused(f"${WEBHOOK_ENV}: scheme {parts.scheme!r} to {host!r}; expected https to a host in "
                         f"${HOSTS_ENV}, or http on a loopback address")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuses every redirect: an alert goes where it was configured to, or nowhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"redirect ({code}) refused", headers, fp)


class _Connections:
    """The sockets an opener's connections made, so a deadline can shut them down (urllib
    drops the connection's own reference once the response has begun; the response
    still reads from the socket)."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []
        self.lock = threading.Lock()

    def factory(self, cls: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
        tracker = self

        class Tracked(cls):  # type: ignore[valid-type, misc]
            def connect(self) -> None:
                super().connect()
                with tracker.lock:
                    tracker.socks.append(self.sock)

        return Tracked

    def shut(self) -> None:
        """Shut every socket down (the plain socket's call, under TLS too): a blocked read
        returns at once and the sender's thread ends."""
        with self.lock:
            socks = list(self.socks)
        for sock in socks:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass


def _opener(conns: _Connections) -> urllib.request.OpenerDirector:
    class Http(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(conns.factory(http.client.HTTPConnection), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(conns.factory(http.client.HTTPSConnection), req, context=self._context,
                                check_hostname=self._check_hostname)

    return urllib.request.build_opener(_NoRedirect, Http, Https)


def post_webhook(url: str, body: bytes, *, deadline: float = DEADLINE_SECONDS,
                 hosts: frozenset[str] | None = None) -> int:
    """POST ``body`` (JSON) to ``url``; the HTTP status. Raises `WebhookRefused` for a URL
    alerts may not go to, `TimeoutError` past ``deadline`` seconds (the connection shut
    down), or the send's own error (``urllib.error.HTTPError`` for a refused redirect)."""
    check_url(url, allowed_hosts() if hosts is None else hosts)
    conns = _Connections()
    opener = _opener(conns)
    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            with opener.open(req, timeout=deadline) as resp:
                resp.read(65536)
                outcome["status"] = resp.status
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=send, name="drp-alert-webhook", daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        conns.shut()  # a server that trickles bytes keeps a read alive; end it
        worker.join(1.0)
        raise TimeoutError(f"no complete answer within {deadline:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return int(outcome["status"])


def append_record(params: dict[str, Any], record: dict[str, Any]):
    """Append ``record`` to the ``alerts.jsonl`` of the campaign the run's Params (or conf)
    name, held inside the deployment's allowed roots; the loaded campaign config."""
    from multisite_drp.campaign.config import load_campaign
    from multisite_drp.hooks.campaign import deployment_roots

    cfg = load_campaign(params["campaign_file"], data_root=params.get("data_root"), check_pipeline=False,
                        allowed_roots=deployment_roots())
    path = cfg.work_path / "alerts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return cfg


class CampaignAlertNotifier(BaseNotifier):
    """Log, record and (optionally) post an alert for a failed campaign task."""

    template_fields = ()

    def __init__(self, webhook_env: str = WEBHOOK_ENV, deadline: float = DEADLINE_SECONDS) -> None:
        super().__init__()
        self.webhook_env = webhook_env
        self.deadline = deadline

    def notify(self, context: dict[str, Any]) -> None:
        cfg = None
        record = alert_record(context)
        log.error("DRP ALERT %s", json.dumps(record))
        params = context.get("params") or {}
        try:
            cfg = append_record(params, record)
        except Exception as exc:  # noqa: BLE001 - the alert itself must not fail
            cfg = None
            log.error("could not record the alert in the campaign's alerts.jsonl: %s",
                      _cap(str(redact(f"{type(exc).__name__}: {exc}")), ERROR_CHARS))
        if cfg is not None and cfg.alerts.smtp_conn_id:
            self.mail(record, cfg.alerts, context)
        url = os.environ.get(self.webhook_env)
        if url:
            text = f"DRP {record['task_id']} failed (try {record['try_number']}): {record['error']}"
            body = json.dumps(redact({"text": text, **record})).encode()
            where = safe_url(url)
            try:
                status = post_webhook(url, body, deadline=self.deadline)
                log.info("alert posted to the webhook at %s (HTTP %s)", where, status)
            except Exception as exc:  # noqa: BLE001 - alerting must not turn one failure into two
                reason = str(exc).replace(url, where)
                log.error("alert webhook at %s ($%s) failed: %s: %s", where, self.webhook_env, type(exc).__name__,
                          _cap(str(redact(reason)), ERROR_CHARS))

    def mail(self, record: dict[str, Any], settings: Any, context: dict[str, Any], subject: str | None = None) -> bool:
        """Mail the (masked, bounded) record through the SMTP provider's ``SmtpNotifier`` on
        ``settings.smtp_conn_id`` to ``settings.email_to``, within ``settings.send_seconds``
        (the send runs in a daemon thread; past the limit it is abandoned, logged, and the
        task's failure handling goes on). Subject and body are ours, plain text escaped into
        HTML, never a template. True if the server accepted it."""
        import html

        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        subject = _cap(subject or f"DRP alert: {record['task_id']} failed (try {record['try_number']})", 200)
        rows = "".join(f"<tr><th align=left>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in record.items() if v is not None)
        body = f"<p>{html.escape(str(record.get('error')))}</p><table>{rows}</table>"
        notifier = SmtpNotifier(to=list(settings.email_to), smtp_conn_id=settings.smtp_conn_id, subject=subject,
                                html_content=body)
        outcome: dict[str, Any] = {}

        def send() -> None:
            try:
                notifier.notify(context)
                outcome["ok"] = True
            except BaseException as exc:  # noqa: BLE001 - reported by the caller's thread
                outcome["error"] = exc

        worker = threading.Thread(target=send, name="drp-alert-smtp", daemon=True)
        worker.start()
        worker.join(settings.send_seconds)
        where = f"connection {settings.smtp_conn_id} to {len(settings.email_to)} recipient(s)"
        if worker.is_alive():
            log.error("alert mail through %s: no answer within %g s; given up", where, settings.send_seconds)
            return False
        if "error" in outcome:
            exc = outcome["error"]
            log.error("alert mail through %s failed: %s", where,
                      _cap(str(redact(f"{type(exc).__name__}: {exc}")), ERROR_CHARS))
            return False
        log.info("alert mailed through %s", where)
        return True


def run_deadline(hours: float | None):
    """The campaign DAG's ``deadline``: a DeadlineAlert ``hours`` after a run is queued whose
    callback (:func:`deadline_missed`, run in the triggerer) records and sends an alert;
    None without a limit."""
    if not hours:
        return None
    from datetime import timedelta

    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    return DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=timedelta(hours=hours),
                         callback=AsyncCallback(deadline_missed, kwargs={"hours": hours}))


async def deadline_missed(*, hours: float, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """A campaign run missed its deadline: the same masked, bounded record as a failure
    (``level`` "deadline", the run instead of a task), logged, appended to the campaign's
    ``alerts.jsonl`` and mailed when the campaign says so. Runs in the triggerer; the file
    and the mail go through a thread, so the event loop is not blocked."""
    import asyncio

    run = (context or {}).get("dag_run") or {}
    conf = run.get("conf") or {}
    record = redact({
        "at": time.time(), "level": "deadline", "dag_id": run.get("dag_id"), "run_id": run.get("dag_run_id"),
        "task_id": None, "step": None, "site": None, "try_number": None,
        "error": _cap(f"run not finished {hours:g} h after it was queued (queued at {run.get('queued_at')}, "
                      f"state {run.get('state')})", ERROR_CHARS),
        "log_url": None, "campaign_file": conf.get("campaign_file"), "generation": conf.get("generation"),
    })
    log.error("DRP ALERT %s", json.dumps(record))

    def write_and_mail() -> None:
        cfg = append_record(conf, record)
        if cfg.alerts.smtp_conn_id:
            CampaignAlertNotifier().mail(record, cfg.alerts, {},
                                         subject=f"DRP alert: run {record['run_id']} missed its {hours:g} h deadline")

    try:
        await asyncio.to_thread(write_and_mail)
    except Exception as exc:  # noqa: BLE001 - the alert is logged above whatever else fails
        log.error("could not record or mail the deadline alert: %s",
                  _cap(str(redact(f"{type(exc).__name__}: {exc}")), ERROR_CHARS))
    return record
