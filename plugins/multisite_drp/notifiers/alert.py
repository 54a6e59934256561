"""CampaignAlertNotifier: a failed task becomes an alert an operator can act on.

The DAG sets it as every task's ``on_failure_callback``. The alert names the DAG run, the
task (``step4.frdf.wait_workflow``) and its map index, its step and site, the try, the
error's first line and the log URL; it is logged, appended to the campaign's
``alerts.jsonl``, mailed (``SmtpNotifier``), posted to Slack (``SlackWebhookNotifier``)
and to the raw webhook ``$MULTISITE_DRP_ALERT_WEBHOOK`` as the campaign file and the
environment say. How, with what bounds, masking and deadlines: ``hooks/alerts.py``.

:func:`run_deadline` is the campaign DAG's ``deadline``: a run still unfinished
``alerts.run_deadline_hours`` after it was queued raises the same kind of alert from the
triggerer (:func:`deadline_missed`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from airflow.sdk import BaseNotifier
from airflow.sdk._shared.secrets_masker import redact

from multisite_drp.hooks.alerts import (
    DEADLINE_SECONDS,
    ERROR_CHARS,
    WEBHOOK_ENV,
    WebhookRefused,
    _cap,
    alert_record,
    check_url,
    deliver,
    post_webhook,
    safe_url,
)

__all__ = ["DEADLINE_SECONDS", "ERROR_CHARS", "CampaignAlertNotifier", "WebhookRefused", "alert_record",
           "check_url", "deadline_missed", "post_webhook", "run_deadline", "safe_url"]

log = logging.getLogger(__name__)


class CampaignAlertNotifier(BaseNotifier):
    """Log, record and send the alert of a failed campaign task (``hooks.alerts.deliver``)."""

    template_fields = ()

    def __init__(self, webhook_env: str = WEBHOOK_ENV, deadline: float = DEADLINE_SECONDS) -> None:
        super().__init__()
        self.webhook_env = webhook_env
        self.deadline = deadline

    def notify(self, context: dict[str, Any]) -> None:
        deliver(alert_record(context), context.get("params") or {}, context, webhook_env=self.webhook_env,
                webhook_deadline=self.deadline)


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
    (``level`` "deadline", the run instead of a task), delivered as a failure is (logged,
    ``alerts.jsonl``, mail, Slack, webhook), once per run. Runs in the triggerer; the
    delivery goes through a thread, so the event loop is not blocked."""
    import asyncio

    run = (context or {}).get("dag_run") or {}
    conf = run.get("conf") or {}
    record = redact({
        "at": time.time(), "level": "deadline", "kind": None, "dag_id": run.get("dag_id"),
        "run_id": run.get("dag_run_id"), "task_id": None, "map_index": None, "step": None, "site": None,
        "try_number": None,
        "error": _cap(f"run not finished {hours:g} h after it was queued (queued at {run.get('queued_at')}, "
                      f"state {run.get('state')})", ERROR_CHARS),
        "log_url": None, "campaign_file": conf.get("campaign_file"), "generation": conf.get("generation"),
        "key": f"deadline:{run.get('dag_id')}:{run.get('dag_run_id')}",
    })
    subject = f"DRP alert: run {record['run_id']} missed its {hours:g} h deadline"
    try:
        await asyncio.to_thread(deliver, record, conf, {}, subject=subject)
    except Exception as exc:  # noqa: BLE001 - deliver logs the alert before anything can fail
        log.error("could not deliver the deadline alert: %s", _cap(str(redact(f"{type(exc).__name__}: {exc}")),
                                                                     ERROR_CHARS))
    return record
