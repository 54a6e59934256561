"""How a campaign alert is built, recorded and sent: failures, deadlines and warnings.

An alert is a record: the DAG run, the task (``step4.frdf.wait_workflow``) and its map
index, its step and site, the try, the error's first line (or the warning's text) and the
log URL. :func:`deliver` then

* logs it (``DRP ALERT {...}`` at ERROR for failures and deadlines, ``DRP WARNING {...}``
  at WARNING for warnings: what Airflow's log shipping picks up);
* appends it as one JSON line to ``<campaign work dir>/alerts.jsonl``, the campaign's
  durable record (the report and operators read it). A record with a ``key`` that the
  file already holds is not written or sent again: a warning raised by every poke of a
  sensor, or by a retried task, reaches the operator once;
* mails it through the SMTP provider's ``SmtpNotifier`` (``alerts.smtp_conn_id``,
  ``alerts.email_to``) and posts it to Slack through the Slack provider's
  ``SlackWebhookNotifier`` (``alerts.slack_webhook_conn_id``), both from the campaign
  file; warnings go there too unless ``alerts.warnings`` is false;
* for failures only, POSTs it as JSON to ``$MULTISITE_DRP_ALERT_WEBHOOK`` if set (a raw
  incoming webhook; see :func:`post_webhook` for its safety rules).

Warnings (:data:`WARNING_KINDS`) are things an operator should look at that did not fail
a task: a STUCK Rucio rule, a workflow restarted by policy, a partial success accepted.
:func:`warn` never raises: alerting must not turn one problem into two.

What leaves the worker is bounded and masked. The record goes through Airflow's secrets
masker (``airflow.sdk._shared.secrets_masker.redact``: every connection password and
sensitive extra the task read is registered there) before it is logged, written or sent;
the error is its first line only, at most :data:`ERROR_CHARS` characters (the full
traceback stays in the task log, behind the link), every other text field at most
:data:`FIELD_CHARS`. Every send runs in a daemon thread with an overall deadline
(``alerts.send_seconds``; :data:`DEADLINE_SECONDS` for the raw webhook): past it the send
is abandoned and logged, and the task's own handling goes on.

This is the hooks layer (the transport); ``notifiers/alert.py`` is the Airflow notifier
and the DAG's deadline, and operators and sensors raise warnings through
``CampaignTaskMixin.warn``.
"""

from __future__ import annotations

import html
import http.client
import ipaddress
import json
import logging
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow.sdk._shared.secrets_masker import redact

__all__ = ["DEADLINE_SECONDS", "ERROR_CHARS", "FIELD_CHARS", "HOSTS_ENV", "WARNING_KINDS", "WEBHOOK_ENV",
           "WebhookRefused", "alert_record", "allowed_hosts", "append_record", "check_url", "deliver", "error_line",
           "mail", "post_webhook", "safe_url", "slack", "slack_text", "subject_of", "warn"]

log = logging.getLogger(__name__)

#: The error in an alert: its first line, at most this many characters.
ERROR_CHARS = 500
#: Any other text field of an alert (task id, log URL, campaign file...), at most.
FIELD_CHARS = 1000
#: Seconds the whole raw-webhook send may take (connect, TLS, request, response).
DEADLINE_SECONDS = 5.0
WEBHOOK_ENV = "MULTISITE_DRP_ALERT_WEBHOOK"
HOSTS_ENV = "MULTISITE_DRP_ALERT_HOSTS"

#: The warnings a campaign raises, by kind: what each means to the operator.
WARNING_KINDS: dict[str, str] = {
    "replication_stuck": "a Rucio rule is STUCK: a transfer failed and Rucio's retries are exhausted or pending",
    "workflow_restarted": "a workflow was restarted or rescued by the campaign's policy",
    "partial_success": "a workflow ended with failed quanta and was accepted as a partial success",
}


class WebhookRefused(ValueError):
    """The webhook URL is not one an alert may be sent to (scheme, host)."""


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _masked(text: str, limit: int = ERROR_CHARS) -> str:
    """Masked first, then cut (a cut secret would no longer match its mask)."""
    return _cap(str(redact(text)), limit)


def error_line(exc: BaseException | None) -> str | None:
    """``Type: first line of the message``, masked before it is cut, at most
    :data:`ERROR_CHARS` characters."""
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


def alert_record(context: dict[str, Any], *, level: str = "failure", kind: str | None = None,
                 text: str | None = None, key: str | None = None) -> dict[str, Any]:
    """The alert of a task: who, where, what, and the log link; masked and bounded.

    ``level`` is ``failure`` (the error is the context's exception) or ``warning`` (the
    error is ``text``, ``kind`` one of :data:`WARNING_KINDS`). ``key``: what makes the
    alert the same one again (see :func:`deliver`)."""
    if level == "warning" and kind not in WARNING_KINDS:
        raise ValueError(f"warning kind {kind!r}: expected one of {sorted(WARNING_KINDS)}")
    ti = context.get("ti") or context.get("task_instance")
    params = context.get("params") or {}
    task_id = getattr(ti, "task_id", None)
    step, site = _step_site(context.get("task") or getattr(ti, "task", None), task_id)
    try:
        log_url = getattr(ti, "log_url", None)
    except Exception:  # noqa: BLE001 - the link is a property that reads Airflow's config
        log_url = None
    map_index = getattr(ti, "map_index", None)
    record = {
        "at": time.time(),
        "level": level,
        "kind": kind,
        "dag_id": getattr(ti, "dag_id", None),
        "run_id": getattr(ti, "run_id", None),
        "task_id": task_id,
        "map_index": map_index if isinstance(map_index, int) and map_index >= 0 else None,
        "step": step,
        "site": site,
        "try_number": getattr(ti, "try_number", None),
        "error": error_line(context.get("exception")) if text is None else _masked(" ".join(text.split())),
        "log_url": log_url,
        "campaign_file": params.get("campaign_file"),
        "generation": params.get("generation"),
        "key": key,
    }
    record = {k: _cap(str(v), FIELD_CHARS) if isinstance(v, str) and k != "error" else v for k, v in record.items()}
    return redact(record)


def subject_of(record: dict[str, Any]) -> str:
    """One line that says what happened, for a mail subject or a chat message."""
    where = record.get("task_id") or record.get("run_id")
    if record.get("map_index") is not None:
        where = f"{where}[{record['map_index']}]"
    if record.get("level") == "warning":
        return _cap(f"DRP warning ({record.get('kind')}): {where}", 200)
    if record.get("level") == "deadline":
        return _cap(f"DRP alert: run {record.get('run_id')} missed its deadline", 200)
    return _cap(f"DRP alert: {where} failed (try {record.get('try_number')})", 200)


# --- the durable record ------------------------------------------------------------------


def _claim(path: Path, record: dict[str, Any]) -> bool:
    """Claim the record's ``key`` for ``alerts.jsonl`` at ``path``: True if no record with it
    was appended before, by this or any other process. The claim is a file named by the key's
    digest in ``alerts.keys/`` beside it, created exclusively (one ``open``, however long the
    log has grown), holding the record itself."""
    import hashlib

    keys = path.parent / "alerts.keys"
    keys.mkdir(exist_ok=True)
    marker = keys / hashlib.sha256(record["key"].encode()).hexdigest()[:40]
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(record) + "\n")
    return True


_append_lock = threading.Lock()


def append_record(params: dict[str, Any], record: dict[str, Any]):
    """Append ``record`` to the ``alerts.jsonl`` of the campaign the run's Params (or conf)
    name, held inside the deployment's allowed roots, unless a record with the same
    ``key`` was appended before (:func:`_claim`). ``(the loaded campaign config, whether it was new)``."""
    from multisite_drp.campaign.config import load_campaign
    from multisite_drp.hooks.campaign import deployment_roots

    cfg = load_campaign(params["campaign_file"], data_root=params.get("data_root"), check_pipeline=False,
                        allowed_roots=deployment_roots())
    path = cfg.work_path / "alerts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _append_lock:
        if record.get("key") and not _claim(path, record):
            return cfg, False
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
    return cfg, True


# --- sending -----------------------------------------------------------------------------


def _bounded(fn: Callable[[], Any], seconds: float, name: str) -> tuple[bool, Any, BaseException | None]:
    """Run ``fn`` in a daemon thread for at most ``seconds``: ``(finished, result, error)``.
    An unfinished call is left to its thread (a daemon: it never holds the process)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join(seconds)
    return not worker.is_alive(), outcome.get("result"), outcome.get("error")


def _within(seconds: float, what: str, send: Callable[[], Any]) -> bool:
    """Run ``send`` for at most ``seconds`` (:func:`_bounded`); log how it ended. True if it
    returned in time."""
    finished, _, error = _bounded(send, seconds, "drp-alert-send")
    if not finished:
        log.error("%s: no answer within %g s; given up", what, seconds)
        return False
    if error is not None:
        log.error("%s failed: %s", what, _masked(f"{type(error).__name__}: {error}"))
        return False
    log.info("%s: sent", what)
    return True


def mail(record: dict[str, Any], settings: Any, context: dict[str, Any], subject: str | None = None) -> bool:
    """Mail the (masked, bounded) record through the SMTP provider's ``SmtpNotifier`` on
    ``settings.smtp_conn_id`` to ``settings.email_to``, within ``settings.send_seconds``.
    Subject and body are ours, plain text escaped into HTML, never a template. True if the
    server accepted it."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    rows = "".join(f"<tr><th align=left>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in record.items() if v is not None)
    notifier = SmtpNotifier(to=list(settings.email_to), smtp_conn_id=settings.smtp_conn_id,
                            subject=_cap(subject or subject_of(record), 200),
                            html_content=f"<p>{html.escape(str(record.get('error')))}</p><table>{rows}</table>")
    where = f"alert mail through connection {settings.smtp_conn_id} to {len(settings.email_to)} recipient(s)"
    return _within(settings.send_seconds, where, lambda: notifier.notify(context))


def _slack_escape(text: str) -> str:
    """Slack's mrkdwn control characters, escaped as Slack asks (``& < >``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(record: dict[str, Any], subject: str | None = None) -> str:
    """The Slack message of a record: its subject, the run, step and site, the error's
    first line, and a link to the task log. Escaped, bounded."""
    lines = [f"*{_slack_escape(subject or subject_of(record))}*"]
    lines.append(_slack_escape(" · ".join(f"{k} {record[k]}" for k in ("run_id", "step", "site")
                                          if record.get(k) is not None)))
    if record.get("error"):
        lines.append(_slack_escape(str(record["error"])))
    url = record.get("log_url")
    if url and urllib.parse.urlsplit(str(url)).scheme in ("http", "https"):
        lines.append(f"<{str(url).replace('|', '%7C').replace('>', '%3E')}|task log>")
    return _cap("\n".join(line for line in lines if line), 3000)


def slack(record: dict[str, Any], settings: Any, context: dict[str, Any], subject: str | None = None) -> bool:
    """Post the record to Slack through the Slack provider's ``SlackWebhookNotifier`` on
    ``settings.slack_webhook_conn_id`` (a ``slackwebhook`` connection: the webhook URL and
    its token stay in Airflow), within ``settings.send_seconds``. True if Slack accepted it."""
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    # The client's own socket timeout is longer than our deadline, so the deadline decides
    # (and says so); the abandoned thread then ends on the client's timeout.
    notifier = SlackWebhookNotifier(slack_webhook_conn_id=settings.slack_webhook_conn_id,
                                    text=slack_text(record, subject), timeout=math.ceil(settings.send_seconds) + 5)
    where = f"alert to Slack through connection {settings.slack_webhook_conn_id}"
    return _within(settings.send_seconds, where, lambda: notifier.notify(context))


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
    """POST ``body`` (JSON) to ``url``; the HTTP status.

    The URL must be ``https://`` to a host in ``$MULTISITE_DRP_ALERT_HOSTS`` or ``http://``
    on loopback; redirects are refused (a redirect could send the alert elsewhere); the
    whole send, connect to last byte, has a deadline, past which the connection is shut
    down. Raises `WebhookRefused` for a URL alerts may not go to, `TimeoutError` past
    ``deadline``, or the send's own error (``urllib.error.HTTPError`` for a redirect)."""
    check_url(url, allowed_hosts() if hosts is None else hosts)
    conns = _Connections()
    opener = _opener(conns)

    def send() -> int:
        req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        with opener.open(req, timeout=deadline) as resp:
            resp.read(65536)
            return int(resp.status)

    finished, status, error = _bounded(send, deadline, "drp-alert-webhook")
    if not finished:
        conns.shut()  # a server that trickles bytes keeps a read alive; end it
        raise TimeoutError(f"no complete answer within {deadline:g} s")
    if error is not None:
        raise error
    return status


def _post_raw_webhook(record: dict[str, Any], url: str, env: str, deadline: float, subject: str) -> None:
    where = safe_url(url)  # the URL's path is often the webhook's secret: never logged
    text = f"{subject}: {record['error']}" if record.get("error") else subject
    body = json.dumps(redact({"text": text, **record})).encode()
    try:
        status = post_webhook(url, body, deadline=deadline)
        log.info("alert posted to the webhook at %s (HTTP %s)", where, status)
    except Exception as exc:  # noqa: BLE001 - alerting must not turn one failure into two
        reason = str(exc).replace(url, where)
        log.error("alert webhook at %s ($%s) failed: %s: %s", where, env, type(exc).__name__, _masked(reason))


def deliver(record: dict[str, Any], params: dict[str, Any], context: dict[str, Any], *, subject: str | None = None,
            webhook_env: str = WEBHOOK_ENV, webhook_deadline: float = DEADLINE_SECONDS) -> bool:
    """Log, record and send ``record`` as the module's docstring says. ``params``: the
    run's Params (or conf), which name the campaign file. False if the record's key was
    already recorded (nothing was sent again); never raises for a failed send."""
    warning = record.get("level") == "warning"
    if warning:
        log.warning("DRP WARNING %s", json.dumps(record))
    else:
        log.error("DRP ALERT %s", json.dumps(record))
    cfg = None
    try:
        cfg, new = append_record(params, record)
    except Exception as exc:  # noqa: BLE001 - the alert itself must not fail
        log.error("could not record the alert in the campaign's alerts.jsonl: %s",
                  _masked(f"{type(exc).__name__}: {exc}"))
        new = True
    if not new:
        log.info("alert %s was already recorded; not sent again", record.get("key"))
        return False
    subject = subject or subject_of(record)
    settings = cfg.alerts if cfg is not None else None
    if settings is not None and (settings.warnings or not warning):
        if settings.smtp_conn_id:
            mail(record, settings, context, subject)
        if settings.slack_webhook_conn_id:
            slack(record, settings, context, subject)
    url = os.environ.get(webhook_env)
    if url and not warning:
        _post_raw_webhook(record, url, webhook_env, webhook_deadline, subject)
    return True


def warn(context: dict[str, Any], kind: str, text: str, key: str) -> bool:
    """Raise a warning alert of ``kind`` (one of :data:`WARNING_KINDS`) from a running task:
    ``text`` says what happened, ``key`` what makes it the same warning again (a warning
    whose key is already in ``alerts.jsonl`` is not sent again). Never raises; True if it
    was new."""
    try:
        record = alert_record(context, level="warning", kind=kind, text=text, key=key)
        return deliver(record, context.get("params") or {}, context)
    except Exception as exc:  # noqa: BLE001 - a warning must never fail its task
        log.error("could not raise the %s warning: %s", kind, _masked(f"{type(exc).__name__}: {exc}"))
        return False
