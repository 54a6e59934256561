"""The URLs behind the tasks' extra links (hooks/links.py), built when the task runs: exact,
quoted, and empty (no link) rather than broken when the deployment names no base URL. The
end-to-end module checks them on a real run's task instances through the REST API."""

from __future__ import annotations

from pathlib import Path

import pytest
from multisite_drp.services.factory import AdapterError, web_base_url
from multisite_drp.services.replica.base import webui_link
from multisite_drp.services.workflow.base import WorkflowRef
from multisite_drp.services.workflow.embedded import EmbeddedWorkflowService

BASE = "https://rucio-ui.example.org"


def test_rule_dataset_and_list_pages() -> None:
    rule = {"rule_id": "0f3c9a", "dataset": "Dataset/minidrp/g0/step1/frdf/group000/inputs", "site": "frdf",
            "rse": "FRDF_DISK"}
    assert webui_link(BASE, rule) == f"{BASE}/rule?rule_id=0f3c9a"
    assert webui_link(BASE + "/", [rule, {**rule, "rule_id": "other"}]) == f"{BASE}/rule?rule_id=0f3c9a"
    registered = {"name": "Dataset/minidrp/g0/step1/frdf/group000/outputs", "site": "frdf", "files": 3}
    assert webui_link(BASE, registered, "minidrp") == \
        f"{BASE}/did?scope=minidrp&name=Dataset%2Fminidrp%2Fg0%2Fstep1%2Ffrdf%2Fgroup000%2Foutputs"
    assert webui_link(BASE, {"name": "a b&c=d", "scope": "s"}) == f"{BASE}/did?scope=s&name=a+b%26c%3Dd"


@pytest.mark.parametrize("recorded", [None, [], {}, {"name": "no scope"}, "a string", 3])
def test_nothing_to_show_is_no_link(recorded) -> None:
    assert webui_link(BASE, recorded) == ""


def test_no_base_url_is_no_link() -> None:
    assert webui_link(None, {"rule_id": "x"}) == "" and webui_link("", {"rule_id": "x"}) == ""


@pytest.mark.parametrize("value, ok", [
    ("https://rucio-ui.example.org/", "https://rucio-ui.example.org"),
    ("http://127.0.0.1:8443/ui", "http://127.0.0.1:8443/ui"),
    (None, None), ("", None),
    ("ftp://rucio-ui.example.org", AdapterError),
    ("https://user:pw@rucio-ui.example.org", AdapterError),  # a credential would reach every viewer of the UI
    ("https://rucio-ui.example.org/?token=abc", AdapterError),
    ("rucio-ui.example.org", AdapterError),
    (["https://x"], AdapterError),
])
def test_base_url_extra_is_checked(value, ok) -> None:
    extra = {} if value is None else {"webui_url": value}
    if ok is AdapterError:
        with pytest.raises(AdapterError, match=r"connection drp_usdf_replica: extra field 'webui_url' is .*expected a base URL"):
            web_base_url(extra, "webui_url", "connection drp_usdf_replica")
    else:
        assert web_base_url(extra, "webui_url", "connection drp_usdf_replica") == ok


def test_embedded_workflow_links_its_logs_directory(tmp_path: Path) -> None:
    ref = WorkflowRef(run_id="r", name="n", site="usdf", submit_dir=str(tmp_path / "step1 usdf"))
    assert EmbeddedWorkflowService("usdf").monitor_url(ref) == (tmp_path / "step1 usdf" / "logs").as_uri()
    assert "%20" in EmbeddedWorkflowService("usdf").monitor_url(ref)
