"""Bench-only pieces of ``bench/campaign_scale.py``: never offered to users.

* :func:`dr1_campaign` — a three-site, nine-step campaign shaped like DR1 (DMTN-213
  shares, DRP's sharding) written as a YAML file the product's loader reads;
* :class:`BenchDelayWorkflowService` — a stand-in for a Data Facility's workflow system
  whose workflows finish after a configured delay and run nothing; it exists so that the
  product's triggers can be driven at many groups per site on this machine;
* :func:`install_bench_adapter` — registers that stand-in as workflow adapter
  ``bench_delay`` by patching the factory's adapter table *inside the benchmark's own
  process* (nothing in ``plugins/`` knows the name);
* ``standins`` — the stand-ins of the other ports (butler, replica, command runner, graph
  reader, the hub registry's sky) for the real-scheduler run, and ``site/sitecustomize.py``,
  which puts them in place in every process of that run's Airflow stack;
* :data:`BARE_DAG` — the ``bench_bare`` DAG whose bare ``@task`` s are the floor of
  ``task_overhead_ratio``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml

ROOT = Path(__file__).resolve().parents[2]

#: DMTN-213 processing shares.
SHARES = {"usdf": 0.35, "frdf": 0.40, "ukdf": 0.25}
#: DRP's sharding of the nine steps (as include/campaigns/minidrp_embedded.yaml).
STEPS = [
    ("step1", "visit", ["raw"]), ("step2", "visit", ["src"]), ("step3", "global", ["sourceTable_visit"]),
    ("step4", "tract", ["pvi", "visitSummary", "zeroPoint"]), ("step5", "tract", ["deepCoadd"]),
    ("step6", "tract", []), ("step7", "visit", ["objectTable_tract", "visitSummary", "zeroPoint"]),
    ("step8", "visit", []), ("step9", "global", ["forcedSourceTable_visit", "objectTable_tract"]),
]
BENCH_ADAPTER = "bench_delay"
#: Set (to the state directory) in the real-scheduler run's processes: the stand-ins of
#: ``standins`` keep their records there.
STATE_ENV = "MULTISITE_DRP_BENCH_STANDINS"


def dr1_campaign(path: Path, data_root: Path, max_group_size: int, poll_interval: float = 1.0) -> Path:
    """Write the DR1-shaped bench campaign to ``path`` (inside the deployment's allowed roots)."""
    conns = lambda s: {"butler": f"drp_{s}_butler", "replica": f"drp_{s}_replica", "workflow": f"drp_{s}_workflow"}
    data = {
        "name": "dr1bench", "description": "DR1-shaped orchestration benchmark (bench/campaign_scale.py)",
        "pipeline": str(ROOT / "include" / "pipelines" / "minidrp.yaml"),
        "instrument": "LSSTCam", "skymap": "lsst_cells_v1", "input_collections": ["LSSTCam/defaults"],
        "data_query": "instrument = 'LSSTCam' AND skymap = 'lsst_cells_v1'",
        "output_prefix": "LSSTCam/runs/DRP/dr1bench", "data_root": str(data_root),
        "rate_target": {"quanta_per_hour": 1e6},
        "planner": {"method": "graph", "max_group_size": int(max_group_size), "partition_trials": 4},
        "replication": {"scope": "dr1bench"},
        "sites": [
            {"name": "usdf", "role": "hub", "butler_repo": "s3://usdf/repo", "rse": "SLAC_BUTLER_DISK",
             "compute_site": "SLAC", "compute_cloud": "US", "queue": "SLAC_Rubin", "share": SHARES["usdf"],
             "holds_all_raws": True, "connections": conns("usdf")},
            {"name": "frdf", "role": "remote", "butler_repo": "s3://frdf/repo", "rse": "IN2P3_BUTLER_DISK",
             "compute_site": "CC-IN2P3", "compute_cloud": "EU", "queue": "CC-IN2P3_Rubin",
             "share": SHARES["frdf"], "holds_all_raws": True, "connections": conns("frdf")},
            {"name": "ukdf", "role": "remote", "butler_repo": "s3://ukdf/repo", "rse": "LANCS_BUTLER_DISK",
             "compute_site": "LANCS", "compute_cloud": "EU", "queue": "LANCS_Rubin", "share": SHARES["ukdf"],
             "connections": conns("ukdf")},
        ],
        "steps": [{"name": n, "subset": n, "sharding": sh, "requires": req} for n, sh, req in STEPS],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class BenchDelayWorkflowService:
    """Bench-only workflow "system": a submitted workflow is SUCCEEDED ``delay`` seconds after
    its submission and runs nothing. The deadline travels in the run id
    (``<name>@<deadline>``), so any process (a trigger, a sensor) reads the same state
    without shared memory. ``calls`` counts status calls and ``asked`` the workflows asked
    about, per process."""

    calls: ClassVar[list[tuple[float, str, int]]] = []  # (time, site, number of refs) per status call

    def __init__(self, site: str, delay: float, total: int = 10) -> None:
        self.site, self.delay, self.total = site, float(delay), int(total)

    def _ref(self, spec, deadline: float):
        from multisite_drp.services.workflow.base import WorkflowRef

        return WorkflowRef(run_id=f"{spec.name}@{deadline:.3f}", name=spec.name, site=spec.site,
                           submit_dir=spec.submit_dir)

    def find(self, spec):
        marker = Path(spec.submit_dir) / "bench_delay.deadline"
        return self._ref(spec, float(marker.read_text())) if marker.exists() else None

    def submit(self, spec):
        ref = self.find(spec)
        if ref is None:
            marker = Path(spec.submit_dir) / "bench_delay.deadline"
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{time.time() + self.delay:.3f}")
            ref = self.find(spec)
        return ref

    def status(self, refs: Sequence[Any]) -> dict[str, Any]:
        from multisite_drp.services.workflow.base import WmsStates, WorkflowStatus

        now = time.time()
        type(self).calls.append((now, self.site, len(refs)))
        if os.environ.get(STATE_ENV):  # the real-scheduler run: counted across processes
            from campaign_scale_support.standins import record_call

            record_call("workflows", self.site, len(refs))
        out = {}
        for r in refs:
            deadline = float(r.run_id.rsplit("@", 1)[1])
            done = now >= deadline
            out[r.run_id] = WorkflowStatus(
                run_id=r.run_id, state=WmsStates.SUCCEEDED if done else WmsStates.RUNNING,
                quanta_total=self.total, quanta_succeeded=self.total if done else 0,
                started=deadline - self.delay, finished=deadline if done else None, merged=done)
        return out

    def report(self, ref):
        return self.status([ref])[ref.run_id]

    def cancel(self, ref) -> None:
        return None

    def restart(self, ref):
        return ref

    def rescue(self, spec):
        return self.submit(spec)

    def monitor_url(self, ref) -> None:
        return None


def install_bench_adapter() -> None:
    """Make workflow connections with extra ``{"adapter": "bench_delay", "delay": s}`` build a
    :class:`BenchDelayWorkflowService` — in this process only (patches the factory's table)."""
    from multisite_drp.services import factory

    if BENCH_ADAPTER in factory.WORKFLOW_ADAPTERS:
        return
    factory.WORKFLOW_ADAPTERS = (*factory.WORKFLOW_ADAPTERS, BENCH_ADAPTER)
    factory.DEFAULT_POLL_SECONDS[BENCH_ADAPTER] = 1.0
    real_settings, real_service = factory.workflow_settings, factory.workflow_service

    def workflow_settings(config, site, conn):
        if conn.extra.get("adapter") != BENCH_ADAPTER:
            return real_settings(config, site, conn)
        return {"adapter": BENCH_ADAPTER, "site": site, "delay": float(conn.extra.get("delay", 5.0)),
                "poll_interval": factory.poll_seconds(conn.extra, BENCH_ADAPTER, conn.where)}

    def workflow_service(settings, secret=None):
        if settings["adapter"] != BENCH_ADAPTER:
            return real_service(settings, secret)
        return BenchDelayWorkflowService(settings["site"], settings["delay"])

    factory.workflow_settings, factory.workflow_service = workflow_settings, workflow_service


#: ``bench_bare``: bare ``@task`` instances that return at once, the floor our tasks are
#: compared with. Written alone in its own file (``{dag_id}`` bench_bare: a parse of
#: milliseconds) and appended to the bench's copy of ``drp_campaign.py`` (bench_bare_same_file:
#: its tasks parse the whole campaign DAG first, as ours do).
BARE_DAG = '''

from airflow.sdk import dag as _bench_dag, task as _bench_task


@_bench_dag(dag_id="{dag_id}", schedule=None, catchup=False, max_active_runs=4, tags=["bench"])
def _bench_bare():
    @_bench_task
    def bare(i: int) -> int:
        return i

    bare.expand(i=list(range({n})))


_bench_bare()
'''
BARE_SAME_FILE, BARE_OWN_FILE = "bench_bare_same_file", "bench_bare"
BARES = (BARE_SAME_FILE, BARE_OWN_FILE)
