"""iDDS detail rows -> WorkflowStatus: the one mapping of iDDS states, the quanta weighing,
the final job's merge, iDDS times. Rows are shaped as ctrl_bps_panda's ``report()`` reads
them (see the relay tests for rows from a running relay)."""

from __future__ import annotations

import pytest
from multisite_drp.services.workflow.base import WmsStates, WorkflowRef
from multisite_drp.services.workflow.panda import IDDS_STATES, workflow_status

REF = WorkflowRef(run_id="7", name="c_step1_frdf_g0", site="frdf", submit_dir="/nowhere")


def _enum(name: str) -> dict:
    return {"class": "RequestStatus", "module": "idds.common.constants", "attributes": {"_name_": name}}


def _row(request: str, n: int, task: str, label: str, total: int, ok: int, failed: int = 0, missing: int = 0):
    return {"request_id": 7, "name": REF.name, "status": _enum(request), "transform_id": n,
            "transform_workload_id": 100 + n, "transform_name": f"{REF.name}_{n:02d}_{label}_01",
            "transform_status": _enum(task), "output_total_files": total, "output_processed_files": ok,
            "output_failed_files": failed, "output_missing_files": missing, "output_processing_files": 0,
            "created_at": "Mon, 23 Nov 2026 14:00:00 UTC", "updated_at": "Mon, 23 Nov 2026 14:05:30 UTC"}


JOBS = {"pipetaskInit": [1, 1], "step1_visit": [4, 32]}  # 8 quanta per job


def test_subfinished_is_failed_with_weighed_counts_and_merged() -> None:
    rows = [_row("SubFinished", 1, "Finished", "pipetaskInit", 1, 1),
            _row("SubFinished", 2, "SubFinished", "step1_visit", 4, 3, failed=1),
            _row("SubFinished", 3, "Finished", "finalJob", 1, 1)]
    st = workflow_status(REF, rows, JOBS)
    assert st.state is WmsStates.FAILED and st.merged
    assert (st.quanta_total, st.quanta_succeeded, st.quanta_failed, st.quanta_blocked) == (32, 24, 8, 0)
    assert st.failed_fraction == pytest.approx(0.25)
    assert st.finished - st.started == 330
    assert "step1_visit: 1 of 4 jobs failed" in st.message


def test_finished_running_cancelled_and_an_unmerged_final_job() -> None:
    done = workflow_status(REF, [_row("Finished", 2, "Finished", "step1_visit", 4, 4),
                                 _row("Finished", 3, "Finished", "finalJob", 1, 1)], JOBS)
    assert done.state is WmsStates.SUCCEEDED and done.merged and done.quanta_succeeded == 32
    running = workflow_status(REF, [_row("Transforming", 2, "Transforming", "step1_visit", 4, 1)], JOBS)
    assert running.state is WmsStates.RUNNING and not running.terminal and running.finished is None
    assert running.quanta_blocked == 0  # still to run is not blocked
    cancelled = workflow_status(REF, [_row("Cancelled", 2, "Cancelled", "step1_visit", 4, 1)], JOBS)
    assert cancelled.state is WmsStates.DELETED and not cancelled.merged
    assert cancelled.quanta_blocked == 24
    merge_failed = workflow_status(REF, [_row("SubFinished", 2, "Finished", "step1_visit", 4, 4),
                                         _row("SubFinished", 3, "Failed", "finalJob", 1, 0, failed=1)], JOBS)
    assert not merge_failed.merged and "final job (merge) failed" in merge_failed.message


def test_every_idds_request_status_is_mapped() -> None:
    from idds.common.constants import RequestStatus

    assert {s.name for s in RequestStatus} <= set(IDDS_STATES), sorted({s.name for s in RequestStatus}
                                                                        - set(IDDS_STATES))
    assert IDDS_STATES["SubFinished"] is WmsStates.FAILED  # decided by failed_quanta_threshold, not here
