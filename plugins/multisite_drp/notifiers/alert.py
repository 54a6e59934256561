"""CampaignAlertNotifier: a failed task becomes an alert an operator can act on.

Each alert names the DAG run, the task (``step4.frdf.wait_workflow``), the try, the
error and the log URL. It is

* logged at ERROR level (what Airflow's own alerting and log shipping pick up);
* appended as one JSON line to ``<campaign work dir>/alerts.jsonl`` (the campaign's
  durable record; the report and operators read it);
* POSTed as JSON to ``$MULTISITE_DRP_ALERT_WEBHOOK`` if set (Slack/Mattermost-style
  incoming webhook). A webhook failure is logged, never raised: alerting must not turn
  one failure into two.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from typing import Any

from airflow.sdk import BaseNotifier

__all__ = ["CampaignAlertNotifier", "alert_record"]

log = logging.getLogger(__name__)


def alert_record(context: dict[str, Any]) -> dict[str, Any]:
    ti = context.get("ti") or context.get("task_instance")
    exc = context.get("exception")
    params = context.get("params") or {}
    return {
        "at": time.time(),
        "dag_id": getattr(ti, "dag_id", None),
        "run_id": getattr(ti, "run_id", None),
        "task_id": getattr(ti, "task_id", None),
        "try_number": getattr(ti, "try_number", None),
        "error": f"{type(exc).__name__}: {exc}" if exc else None,
        "log_url": getattr(ti, "log_url", None),
        "campaign_file": params.get("campaign_file"),
        "generation": params.get("generation"),
    }


class CampaignAlertNotifier(BaseNotifier):
    """Log, record and (optionally) post an alert for a failed campaign task."""

    template_fields = ()

    def __init__(self, webhook_env: str = "MULTISITE_DRP_ALERT_WEBHOOK") -> None:
        super().__init__()
        self.webhook_env = webhook_env

    def notify(self, context: dict[str, Any]) -> None:
        record = alert_record(context)
        log.error("DRP ALERT %s", json.dumps(record))
        params = context.get("params") or {}
        try:
            from multisite_drp.campaign.config import load_campaign

            from multisite_drp.hooks.campaign import deployment_roots

            # The Params name the file we append to: held inside the deployment's allowed roots.
            cfg = load_campaign(params["campaign_file"], data_root=params.get("data_root"), check_pipeline=False,
                                allowed_roots=deployment_roots())
            path = cfg.work_path / "alerts.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        except Exception as exc:  # noqa: BLE001 - the alert itself must not fail
            log.error("could not record the alert in the campaign's alerts.jsonl: %s", exc)
        url = os.environ.get(self.webhook_env)
        if url:
            text = f"DRP {record['task_id']} failed (try {record['try_number']}): {record['error']}"
            body = json.dumps({"text": text, **record}).encode()
            try:
                req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
                urllib.request.urlopen(req, timeout=10).close()
            except Exception as exc:  # noqa: BLE001
                log.error("alert webhook %s failed: %s", url, exc)
