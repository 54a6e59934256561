"""Task start-up: what one campaign task process spends before (and at the start of) ``execute``.

Under a real scheduler every task instance is a fresh process that parses the DAG file and
then runs one operator. A bare ``@task`` pays the interpreter, Airflow's own imports and the
DAG parse; ours pay, on top, whatever ``CampaignTaskMixin.prepare`` does (campaign load and
validation, the plan read behind the skip decision, connection reading and settings
validation, building the ports) and the imports of the action. This benchmark measures those
phases, each task kind in a fresh process (``--repeat`` times, median), with the embedded
campaign (``include/campaigns/minidrp_embedded.yaml``) on sites built under ``--root``.

No service is contacted: replica and workflow connections get placeholder hosts and
passwords (``BENCH-NOT-A-SECRET``); nothing here logs in, submits or moves data. The plan
the step tasks read is made once by the product's own planner (``actions.make_plan``).

Phases, per task kind (seconds; each a delta on the previous one, in one process):

* ``dag_parse``: importing ``dags/drp_campaign.py`` after ``airflow.sdk`` (what a task
  process parses; a bare ``@task`` in the same file pays it too);
* ``hook``: ``CampaignHook`` from the Params (``load_campaign`` with the allowed roots);
* ``skip``: ``skip_reason`` (reads the plan for a (step, site) task);
* ``context``: ``hook.get_conn()`` (the connections it reads and validates, the ports it
  builds, and what it imports: ``services.actions``, where ``CampaignContext`` lives);
* ``act_imports``: the modules the task's ``act`` imports (``services.actions`` and what it
  pulls in) that are not loaded yet.

``validate_campaign`` is timed as one ``execute`` under ``dry_run`` (full pipeline check,
every connection; without the Rucio login a real run adds). Also printed: ``python -X
importtime`` of the DAG file and of each module a task imports, on top of ``airflow.sdk``.

Not a test: figures only. The last line is
``task_startup: prepare_s=P act_imports_s=A dag_parse_s=D prepare_cpu_s=.. act_imports_cpu_s=..``
(medians over the step/site tasks: wall and CPU seconds).

    python bench/task_startup.py [--root DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = [str(ROOT / "plugins"), str(ROOT / "include"), str(ROOT)]
CAMPAIGN = ROOT / "include" / "campaigns" / "minidrp_embedded.yaml"
DAG_FILE = ROOT / "dags" / "drp_campaign.py"
PLACEHOLDER = "BENCH-NOT-A-SECRET"
#: Modules whose presence after a phase says what it pulled in.
HEAVY = ("lsst.daf.butler", "lsst.pipe.base", "lsst.ctrl.bps", "lsst.ctrl.bps.panda", "numpy", "astropy",
         "rucio.client", "pandaclient.Client", "idds", "sqlalchemy", "lsst.resources")
PHASES = ("dag_parse", "hook", "skip", "context", "act_imports")
#: Operator and sensor classes measured: (class name, preferred site, extra note).
KINDS = (
    "GenerateGraphOperator", "ReplicateInputsOperator", "SubmitWorkflowOperator", "MergeOutputsOperator",
    "RegisterOutputsOperator", "ReplicateOutputsOperator", "DistributeOperator", "BarrierOperator",
    "FinalizeOperator", "CampaignReportOperator", "PlanCampaignOperator", "WorkflowSensor",
    "ReplicationSensor", "ValidateCampaignOperator",
)
#: The step/site action tasks the headline figure is the median of (the "trivial" tasks).
STEP_SITE = ("ReplicateInputsOperator", "SubmitWorkflowOperator", "MergeOutputsOperator",
             "RegisterOutputsOperator", "ReplicateOutputsOperator", "WorkflowSensor", "ReplicationSensor")


def _env(root: Path, plugins: Path) -> dict[str, str]:
    """The environment a worker would have: connections as AIRFLOW_CONN_* (as
    scripts/run_campaign.py sets them from airflow_settings.yaml), placeholder hosts and secrets."""
    import yaml

    sys.path[:0] = [p for p in PATHS if p not in sys.path]
    from scripts.load_airflow_settings import connection_env

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(plugins), *PATHS[1:]])
    env.setdefault("AIRFLOW_HOME", str(ROOT / "var" / "airflow-bench-startup"))
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["PANDA_BEHIND_REAL_LB"] = "1"
    env["MULTISITE_DRP_ALLOWED_ROOTS"] = os.pathsep.join(
        [str(ROOT / "include" / "campaigns"), str(ROOT / "include" / "pipelines"), str(ROOT / "var"),
         str(root.resolve())])
    for key, value in connection_env(yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())).items():
        conn = json.loads(value)
        if conn.get("host") == "local-rucio":
            conn["host"] = "http://127.0.0.1:9"  # the discard port: never contacted here
            conn["password"] = PLACEHOLDER
        elif conn.get("host") == "local-panda":
            conn["host"] = "http://127.0.0.1:9/server/panda"  # as localpanda fills it (no token)
        env[key] = json.dumps(conn, sort_keys=True)
    return env


def _ensure_sites_and_plan(root: Path, env: dict[str, str], generation: int) -> None:
    if not (root / "usdf" / "butler.yaml").is_file():
        subprocess.run([sys.executable, "-m", "minidrp", "build", "--root", str(root)], env=env, check=True)
    code = ("from multisite_drp.campaign.config import load_campaign\n"
            "from multisite_drp.services.actions import make_plan\n"
            f"cfg = load_campaign({str(CAMPAIGN)!r}, data_root={str(root)!r}, check_pipeline=False)\n"
            f"print('plan:', make_plan(cfg, {generation})['plan_dir'])\n")
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


# -- the child: one task kind in a fresh process ------------------------------------------------


def _loaded() -> list[str]:
    return [m for m in HEAVY if m in sys.modules]


def _pick(dag, kind: str):
    """The DAG's first task of class ``kind``, a remote site's if there is one (PanDA, Rucio)."""
    tasks = [t for t in dag.tasks if type(t).__name__ == kind
             or getattr(getattr(t, "operator_class", None), "__name__", None) == kind]
    if not tasks:
        return None
    tasks.sort(key=lambda t: (getattr(t, "site", None) in (None, "usdf"), t.task_id))
    return tasks[0]


def child(kind: str, root: Path, generation: int) -> dict:
    import importlib.util

    out: dict = {"kind": kind, "phases": {}, "cpu": {}, "loaded": {}}
    t, c = time.perf_counter(), time.process_time()

    def mark(phase: str) -> None:
        nonlocal t, c
        out["phases"][phase] = time.perf_counter() - t
        out["cpu"][phase] = time.process_time() - c
        out["loaded"][phase] = _loaded()
        t, c = time.perf_counter(), time.process_time()

    import airflow.sdk  # noqa: F401 - both kinds of task process pay it; not counted

    out["loaded"]["airflow.sdk"] = _loaded()
    t, c = time.perf_counter(), time.process_time()
    spec = importlib.util.spec_from_file_location("bench_drp_campaign", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    mark("dag_parse")
    op = _pick(module.dag, kind)
    if op is None:
        return {"kind": kind, "missing": True}
    if hasattr(op, "unmap"):  # a mapped task: its unmapped operator, as a worker runs it
        op = op.unmap(None)
    out["task_id"] = op.task_id
    params = {k: (v.value if hasattr(v, "value") else v) for k, v in module.dag.params.items()}
    params.update(campaign_file=str(CAMPAIGN), data_root=str(root), generation=generation)

    class _TI:
        try_number = 1

    context = {"params": params, "ti": _TI()}
    t, c = time.perf_counter(), time.process_time()
    if kind == "ValidateCampaignOperator":
        op.execute({**context, "params": {**params, "dry_run": True}})
        mark("execute_dry_run")
        return out
    from multisite_drp.hooks.mixin import skip_reason

    t, c = time.perf_counter(), time.process_time()
    hook = op.campaign_hook(context)
    mark("hook")
    reason = skip_reason(params, hook, op.step, op.site)
    out["skip"] = reason
    mark("skip")
    hook.get_conn()
    mark("context")
    if kind not in ("PlanCampaignOperator",):
        import multisite_drp.services.actions
        import multisite_drp.services.workflow.base  # noqa: F401
    mark("act_imports")
    return out


# -- the parent ------------------------------------------------------------------------------------


def _importtime(env: dict[str, str], target: str) -> float:
    """Cumulative import seconds of ``target`` (a module, or the DAG file) on top of airflow.sdk."""
    if target.endswith(".py"):
        stmt = (f"import importlib.util as u; s = u.spec_from_file_location('drp_campaign', {target!r}); "
                "s.loader.exec_module(u.module_from_spec(s))")
    else:
        stmt = f"import {target}"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import airflow.sdk\n{stmt}"], env=env,
                          capture_output=True, text=True, check=True)
    marker = proc.stderr.rfind("| airflow.sdk\n")
    total = 0
    for line in proc.stderr[marker:].splitlines()[1:]:
        if not line.startswith("import time:"):
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):  # top level: what this statement imported
            total += int(cumulative)
    return total / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(ROOT / "var" / "bench-task-startup-sites"),
                    help="where the embedded sites are (built if missing)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--plugins", default=str(ROOT / "plugins"),
                    help="the plugins directory to import multisite_drp from (a patched copy, to measure a change)")
    ap.add_argument("--generation", type=int, default=0,
                    help="the plan's generation (a new one if the campaign's grouping changed since the last plan)")
    ap.add_argument("--no-importtime", action="store_true", help="only the per-task phases")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    if args.child:
        print(json.dumps(child(args.child, root, args.generation)))
        return 0
    env = _env(root, Path(args.plugins).resolve())
    print(f"multisite_drp from {args.plugins}", flush=True)
    _ensure_sites_and_plan(root, env, args.generation)

    modules = ["multisite_drp.campaign.config", "multisite_drp.hooks.campaign", "multisite_drp.hooks.mixin",
               "multisite_drp.triggers.site", "multisite_drp.operators.drp", "multisite_drp.sensors.drp",
               "multisite_drp.operators.groups", "multisite_drp.notifiers.alert", "multisite_drp.services.factory",
               "multisite_drp.campaign.plan", "multisite_drp.services.butler", "multisite_drp.services.replica.rucio",
               "multisite_drp.services.workflow.base", "multisite_drp.services.workflow.embedded",
               "multisite_drp.services.workflow.panda", "multisite_drp.services.qgraph",
               "multisite_drp.services.actions", "lsst.daf.butler", "lsst.pipe.base"]
    print("import seconds on top of airflow.sdk (python -X importtime, median of "
          f"{args.repeat}):", flush=True)
    for target in [] if args.no_importtime else [str(DAG_FILE), *modules]:
        secs = statistics.median(_importtime(env, target) for _ in range(args.repeat))
        print(f"  {Path(target).name if target.endswith('.py') else target:45s} {secs:6.3f}", flush=True)

    rows: dict[str, dict] = {}
    print(f"\nper task kind, seconds by phase, wall / CPU (median of {args.repeat} fresh processes; "
          "the machine's other load inflates wall, CPU less so):", flush=True)
    print(f"  {'kind':26s} {'task':28s} " + " ".join(f"{p:>12s}" for p in PHASES) + "  after-parse  heavy modules loaded")
    for kind in args.kinds.split(","):
        runs = []
        for _ in range(args.repeat):
            proc = subprocess.run([sys.executable, __file__, "--root", str(root), "--generation", str(args.generation),
                                   "--child", kind], check=False, env=env,
                                  capture_output=True, text=True)
            if proc.returncode:
                print(f"  {kind}: failed\n{proc.stderr[-3000:]}", flush=True)
                runs = []
                break
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        if not runs:
            continue
        if runs[0].get("missing"):
            print(f"  {kind:26s} (no such task in the DAG)")
            continue
        wall = {p: statistics.median(r["phases"][p] for r in runs) for p in runs[0]["phases"]}
        cpu = {p: statistics.median(r["cpu"][p] for r in runs) for p in runs[0]["cpu"]}
        rows[kind] = {"wall": wall, "cpu": cpu}
        last = list(runs[0]["loaded"])[-1]
        cells = " ".join(f"{wall[p]:5.2f}/{cpu[p]:5.2f}  " if p in wall else f"{'-':>12s}" for p in PHASES)
        after = (sum(v for p, v in wall.items() if p != "dag_parse"), sum(v for p, v in cpu.items() if p != "dag_parse"))
        extra = " (validate_campaign: one execute under dry_run)" if "execute_dry_run" in wall else ""
        print(f"  {kind:26s} {runs[0]['task_id'][:28]:28s} {cells}{after[0]:5.2f}/{after[1]:5.2f}  "
              f"{','.join(runs[0]['loaded'][last]) or '-'}{extra}", flush=True)
        if runs[0].get("skip"):
            print(f"  {'':26s} (skipped: {runs[0]['skip']})")
    step_site = [rows[k] for k in STEP_SITE if k in rows]
    if not step_site:
        return 1

    def med(what: str, phases: tuple[str, ...]) -> float:
        return statistics.median(sum(r[what][p] for p in phases) for r in step_site)

    prep = ("hook", "skip", "context")
    print(f"\ntask_startup: prepare_s={med('wall', prep):.3f} act_imports_s={med('wall', ('act_imports',)):.3f} "
          f"dag_parse_s={med('wall', ('dag_parse',)):.3f} prepare_cpu_s={med('cpu', prep):.3f} "
          f"act_imports_cpu_s={med('cpu', ('act_imports',)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
