"""The report's planned-against-moved table (services.report.planned_vs_moved): the planner's
estimated bytes per step and link beside the bytes Rucio's rules moved, summed per link. The
end-to-end module checks the moved side against the report's own totals on a real run."""

from __future__ import annotations

from multisite_drp.campaign.plan import Transfer
from multisite_drp.services.report import planned_vs_moved, render_markdown


def _t(step, src, dst, kind, n):
    return Transfer(step=step, dataset_type="x", source=src, destination=dst, kind=kind, count=1, bytes=n)


def test_planned_and_moved_side_by_side_per_step_link_and_link() -> None:
    transfers = [_t("step1", "usdf", "frdf", "raw", 1000), _t("step1", "frdf", "usdf", "return", 500),
                 _t("step1", "frdf", "usdf", "return", 100), _t("step4", "frdf", "ukdf", "overlap", 300)]
    moved = [("step1", "usdf", "frdf", 900), ("step1", "frdf", "usdf", 650), ("step4", "usdf", "ukdf", 280)]
    pm = planned_vs_moved(transfers, moved)
    assert pm["by_step_and_link"] == [
        {"step": "step1", "link": "frdf->usdf", "planned_bytes": 600, "moved_bytes": 650},
        {"step": "step1", "link": "usdf->frdf", "planned_bytes": 1000, "moved_bytes": 900},
        {"step": "step4", "link": "frdf->ukdf", "planned_bytes": 300, "moved_bytes": 0},  # planned site to site
        {"step": "step4", "link": "usdf->ukdf", "planned_bytes": 0, "moved_bytes": 280},  # sent from the hub
    ]
    assert {r["link"]: r["moved_over_planned"] for r in pm["by_link"]} == {
        "frdf->usdf": round(650 / 600, 3), "usdf->frdf": 0.9, "frdf->ukdf": 0.0, "usdf->ukdf": None}
    assert (pm["planned_bytes"], pm["moved_bytes"]) == (1900, 1830)


def test_the_markdown_report_shows_the_table() -> None:
    pm = planned_vs_moved([_t("step1", "usdf", "frdf", "raw", 2_000_000)], [("step1", "usdf", "frdf", 1_500_000)])
    report = {"campaign": "c", "generation": 0, "wall_seconds": 1.0, "visits": 1,
              "rate": {"quanta_per_hour": 1, "target_quanta_per_hour": 1, "meets_quanta_target": True,
                       "visits_per_hour": 1, "target_visits_per_hour": None, "meets_visits_target": None},
              "totals": {"workflows": 0, "quanta_succeeded": 0, "quanta_failed": 0, "workflow_seconds": 0.0,
                         "bytes_in": 0, "bytes_out": 0},
              "steps": {"by_step_and_site": []}, "rows": [], "distribution_bytes": {}, "planned_vs_moved": pm}
    md = render_markdown(report)
    assert "2.00 MB planned (the planner's estimate), 1.50 MB moved" in md
    assert "| usdf->frdf | 2.00 | 1.50 | 0.75 |" in md
