"""Orchestration at DR1 shape (issue 12 s4): figures, not a timed test.

Usage: ``.venv/bin/python bench/campaign_scale.py [--visits N] [--max-group-size Q] [--min-workflows W]``

1. **Campaign.** Three sites with DMTN-213's shares (USDF hub 35 %, FrDF 40 %, UKDF 25 %)
   and DRP's nine steps and sharding (visit: 1, 2, 7, 8; tract: 4, 5, 6; global: 3, 9),
   over a synthetic LSST-like sky of DR1's size (``campaign.synthetic``, as
   ``bench/planner_scale.py``: ~190k visits of 189 detectors, ~19k tracts of 100 patches).
   ``planner.max_group_size`` (quanta-equivalents: detector-visits for visit steps, patches
   for tract steps) defaults to 200,000: a step-1 group is ~1,060 visits, a graph about
   75 times smaller than DP0.2's single 15M-quanta step-1 graph that took days to build.
   The planner splits the full DR1 sky (the DR1 group count is the planner's own count, not
   a guess); then only the number of groups is scaled down, each (step, site) keeping the
   same fraction of its groups (at least one), the smallest fraction giving at least
   ``--min-workflows`` workflows.
2. **Measured here:**
   * the planner's grouping (``planner.plan_groups``) on the full DR1 sky;
   * the DAG parse: a fresh ``python -c`` importing ``dags/drp_campaign.py`` with
     ``MULTISITE_DRP_CAMPAIGN`` at the bench campaign, best of 3 — once with the DR1 group
     bound and once with a bound 100 times smaller, to show the DAG does not change with the
     number of groups (it reads the campaign file, never the plan);
   * status calls per poll: K groups per site, i.e. K product ``WorkflowTrigger`` s per site
     in one event loop (as in one triggerer), against :class:`BenchDelayWorkflowService`
     (bench-only, ``bench/campaign_scale_support``) whose workflows finish after a delay;
     every status call is counted where it lands.
3. **The real scheduler** (``--no-real`` skips it): the product's own ``dags/drp_campaign.py``
   under ``airflow scheduler`` (LocalExecutor), ``triggerer``, ``dag-processor`` and
   ``api-server`` on PostgreSQL (``include/airflowstack``), triggered through the REST API.
   The sky is DR1's footprint with ``--real-visits`` visits (default 32,000: DR1-sized
   groups, about 150 of them; the check refuses fewer than ``--min-workflows``), planned by
   the DAG's own plan task. Every outside system is a bench-only stand-in
   (``campaign_scale_support.standins``, put in place in the stack's processes by
   ``campaign_scale_support/site/sitecustomize.py``): workflows finish ``--delay`` seconds
   after submission, rules are OK ``--replica-delay`` seconds after they are added, graph
   builds take ``--command-delay`` seconds and write a stand-in graph, the butler is a
   catalogue of the synthetic sky that holds no outputs. Everything else is the product's
   code: planner, DAG, operators, actions, sensors, triggers, report. Beside the campaign,
   every ``--bare-every`` seconds, a run of ``--bare-tasks`` bare ``@task`` s in one of two DAGs in turn:
   ``bench_bare_same_file``, appended to the bench's copy of the campaign DAG's file (its
   tasks parse that file first, as ours do), and ``bench_bare`` alone in a one-task file.
   ``task_overhead_ratio`` is the mean Airflow duration of our non-waiting tasks over the
   first's (what our own code adds to a task); the second ratio is printed beside it (what
   the campaign DAG's parse adds on top). Measured: the run's wall time,
   the CPU seconds of each Airflow process over the run, their peak RSS (and the largest task
   process), the metadata database on disk, the grid's three calls for the run, the
   triggerer's status calls per poll interval, and an extrapolation to DR1's group count.

The last line is ``campaign_scale: workflows=W tasks=T wall_s=S task_overhead_ratio=R
scheduler_cpu_s=C parse_s=P status_calls_per_poll=K``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The triggers log a line per trigger and change of state: keep the output to the figures
# (read by Airflow's logging set-up at import, so set before anything imports Airflow).
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
for p in (ROOT / "plugins", ROOT / "include", ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from campaign_scale_support import (
    BARE_DAG,
    BARE_OWN_FILE,
    BARE_SAME_FILE,
    BARES,
    BENCH_ADAPTER,
    STATE_ENV,
    BenchDelayWorkflowService,
    dr1_campaign,
    install_bench_adapter,
)


def best_of(n: int, fn):
    times = []
    out = None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


# -- 1. campaign and groups ----------------------------------------------------------------------


def sky_parquet(work: Path, n_visits: int, seed: int) -> Path:
    """Where the synthetic sky of ``n_visits`` visits is kept (written by :func:`build_inputs`)."""
    return work / f"survey_{n_visits}_{seed}.parquet"


def build_inputs(work: Path, n_visits: int, seed: int):
    from multisite_drp.campaign import synthetic
    from multisite_drp.campaign.spatial import from_parquet, to_parquet

    parquet = sky_parquet(work, n_visits, seed)
    if not parquet.exists():
        t0 = time.perf_counter()
        inputs = synthetic.synthetic_survey(n_visits, skymap=synthetic.rings_skymap(num_rings=120), seed=seed)
        to_parquet(inputs, parquet)
        print(f"inputs: generated in {time.perf_counter() - t0:.1f} s -> {parquet}")
    t0 = time.perf_counter()
    inputs = from_parquet(parquet)
    print(f"inputs: {inputs.n_visits} visits, {int(inputs.visit_ndet.sum())} detector-visits, {inputs.n_tracts} "
          f"tracts, {int(inputs.tract_npatch.sum())} patches; loaded in {time.perf_counter() - t0:.1f} s")
    return inputs


def scale_groups(full: Counter, min_workflows: int) -> tuple[float, Counter]:
    """Keep the same fraction of every (step, site)'s groups (at least one each): the smallest
    fraction giving at least ``min_workflows`` groups in all."""
    total = sum(full.values())
    if total <= min_workflows:
        return 1.0, Counter(full)
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        n = sum(max(1, math.ceil(v * mid)) for v in full.values())
        lo, hi = (mid, hi) if n < min_workflows else (lo, mid)
    return hi, Counter({k: max(1, math.ceil(v * hi)) for k, v in full.items()})


# -- 2. DAG parse -------------------------------------------------------------------------------

PARSE = r"""
import importlib.util, json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import airflow.sdk  # the dag-processor's parsing child has it already (forked from the processor)
t1, c1 = time.perf_counter(), time.process_time()
spec = importlib.util.spec_from_file_location("drp_campaign", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
t2, c2 = time.perf_counter(), time.process_time()
tasks = [(t.task_id, t.get_closest_mapped_task_group() is not None) for t in mod.dag.tasks]
print(json.dumps({"warm": t2 - t1, "warm_cpu": c2 - c1, "cold": t2 - t0, "cold_cpu": c2 - c0, "tasks": tasks}))
"""


def parse_dag(campaign: Path, airflow_home: Path) -> tuple[dict, list]:
    """Best of 3 fresh processes: ``warm`` times the DAG file alone (airflow.sdk imported
    first, untimed), ``cold`` the DAG file with airflow.sdk's import; wall and CPU seconds."""
    env = {**os.environ, "MULTISITE_DRP_CAMPAIGN": str(campaign), "AIRFLOW_HOME": str(airflow_home),
           "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT / "plugins", ROOT / "include", ROOT))}
    best: dict[str, float] = {}
    tasks: list = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", PARSE, str(ROOT / "dags" / "drp_campaign.py")], env=env,
                             capture_output=True, text=True, check=True, timeout=600)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        tasks = res.pop("tasks")
        best = {k: min(v, best.get(k, math.inf)) for k, v in res.items()}
    return best, tasks


def task_instances(tasks: list, groups: Counter) -> tuple[int, int]:
    """Task instances of one DAG run: a mapped task once per group of its (step, site)."""
    total = mapped = 0
    for task_id, is_mapped in tasks:
        if not is_mapped:
            total += 1
            continue
        parts = task_id.split(".")
        n = groups.get((parts[0], parts[1]), 0)
        total += n
        mapped += n
    return total, mapped


# -- 3. status calls per poll -------------------------------------------------------------------


class _Conn:
    """What the hook reads of an Airflow Connection (bench-made; no secret)."""

    def __init__(self, extra: dict) -> None:
        self.extra_dejson, self.host, self.login, self.password, self.schema, self.port = extra, None, None, None, None, None


async def _run_triggers(campaign: Path, data_root: Path, k: int, delay: float, interval: float) -> dict:
    from multisite_drp.campaign.config import load_campaign
    from multisite_drp.hooks.campaign import CampaignHook
    from multisite_drp.triggers.site import SharedPoll, WorkflowTrigger

    install_bench_adapter()
    config = load_campaign(str(campaign), check_pipeline=False)
    conns = {s.connections.workflow: _Conn({"adapter": BENCH_ADAPTER, "delay": delay, "poll_interval": interval})
             for s in config.sites}
    real = CampaignHook.afrom_params

    async def afrom_params(cls, params, conn_ids):  # the triggerer's connection read, from the bench's dict
        return cls(params["campaign_file"], data_root=params.get("data_root"), config=config,
                   connections={c: conns[c] for c in conn_ids})

    CampaignHook.afrom_params = classmethod(afrom_params)
    try:
        params = {"campaign_file": str(campaign), "data_root": str(data_root), "sites": [], "generation": 0}
        # Warm up (imports, campaign load) so the first poll interval is not spent importing.
        hook = await CampaignHook.afrom_params(params, [config.hub.connections.workflow])
        await asyncio.to_thread(hook.workflow_service, config.hub.name)
        deadline = time.time() + delay
        triggers = []
        for s in config.sites:
            for g in range(k):
                name = f"dr1bench_step1_{s.name}_g0_group{g:03d}"
                ref = {"run_id": f"{name}@{deadline:.3f}", "name": name, "site": s.name, "submit_dir": ""}
                triggers.append(WorkflowTrigger(params, [s.connections.workflow], s.name, [ref], interval,
                                                label=f"step1.{s.name}.wait_workflow[{g}]"))
        BenchDelayWorkflowService.calls.clear()
        before = dict(SharedPoll.calls)

        async def first(trigger):
            async for event in trigger.run():
                return event.payload

        t0 = time.perf_counter()
        events = await asyncio.gather(*(first(t) for t in triggers))
        wall = time.perf_counter() - t0
    finally:
        CampaignHook.afrom_params = real
    calls = list(BenchDelayWorkflowService.calls)
    per_site = Counter(site for _, site, _ in calls)
    rounds = max(per_site.values())
    shared = sum(v - before.get(key, 0) for key, v in SharedPoll.calls.items())
    return {"k": k, "triggers": len(triggers), "done": sum(e["status"] == "done" for e in events),
            "calls": len(calls), "shared_poll_calls": shared, "per_site": dict(per_site), "rounds": rounds,
            "per_poll": len(calls) / rounds, "max_refs": max(n for _, _, n in calls), "wall": wall}


def status_calls(campaign: Path, data_root: Path, k: int, delay: float, interval: float) -> dict:
    return asyncio.run(_run_triggers(campaign, data_root, k, delay, interval))


# -- 4. the real scheduler ----------------------------------------------------------------------

#: Task names (the last part of a task id) that wait on an outside system (deferred while it
#: works) or run once per campaign: not in the per-task mean.
WAITING = {"generate_qg", "wait_inputs", "wait_workflow", "wait_outputs", "wait_ingested"}
ONCE = {"validate_campaign", "plan_campaign", "report"}


def _conn(extra: dict) -> str:
    return json.dumps({"conn_type": "generic", "extra": extra}, sort_keys=True)


def duration(ti: dict, since: str = "start_date") -> float | None:
    """Seconds from a task instance's ``since`` (its start, or ``queued_when``) to its end."""
    from airflowstack.client import parse_time

    t0, t1 = parse_time(ti.get(since)), parse_time(ti.get("end_date"))
    return t1 - t0 if t0 and t1 else None


def real_run(args, work: Path) -> dict:
    """The product's DAG at DR1 shape under the real scheduler, triggerer, dag-processor, API
    server and LocalExecutor on PostgreSQL (include/airflowstack), triggered through the REST
    API, every outside system replaced by the stand-ins of ``campaign_scale_support.standins``."""
    import shutil
    import threading

    import psutil
    import yaml
    from airflowstack import AirflowStack
    from airflowstack.stack import STATIC_DAGS
    from campaign_scale_support.standins import SKY_ENV
    from multisite_drp.campaign.config import load_campaign

    from scripts.load_airflow_settings import convert

    real = work / "real"
    stack = AirflowStack(real / "stack")
    stack.down()
    shutil.rmtree(real, ignore_errors=True)
    state, dags = real / "state", real / "dags"
    for d in (state, dags):
        d.mkdir(parents=True)
    parquet = sky_parquet(work, args.real_visits, args.seed)  # (written by main's build_inputs)
    campaign = dr1_campaign(real / "dr1bench.yaml", real / "data", args.max_group_size, args.poll)
    cfg = load_campaign(str(campaign), check_pipeline=False)
    (state / "settings.json").write_text(json.dumps({"poll": args.poll, "command_delay": args.command_delay}))
    bare_dag = BARE_DAG.replace("{n}", str(args.bare_tasks))
    (dags / "drp_campaign.py").write_text((ROOT / "dags" / "drp_campaign.py").read_text()
                                          + bare_dag.replace("{dag_id}", BARE_SAME_FILE))
    (dags / "bench_bare.py").write_text('"""Bench-only."""' + bare_dag.replace("{dag_id}", BARE_OWN_FILE))
    env = {**os.environ, STATE_ENV: str(state), SKY_ENV: str(parquet), "MULTISITE_DRP_CAMPAIGN": str(campaign),
           "MULTISITE_DRP_ALLOWED_ROOTS": f"{real}:{ROOT / 'include' / 'pipelines'}",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "bench" / "campaign_scale_support" / "site"), str(ROOT / "bench"),
                                          os.environ.get("PYTHONPATH", "")])}
    delay = {"adapter": BENCH_ADAPTER, "delay": args.delay, "poll_interval": args.poll}
    for s in cfg.sites:
        env[f"AIRFLOW_CONN_{s.connections.butler.upper()}"] = _conn({"adapter": BENCH_ADAPTER})
        env[f"AIRFLOW_CONN_{s.connections.workflow.upper()}"] = _conn(delay)
        env[f"AIRFLOW_CONN_{s.connections.replica.upper()}"] = _conn({**delay, "delay": args.replica_delay})
    stack = AirflowStack(real / "stack", dags_folder=dags, env=env, settings=STATIC_DAGS)
    samples: dict[str, int] = {}
    triggerer_pids: set[int] = set()
    stop = threading.Event()
    try:
        ep = stack.up(fresh=True)
        print(f"real scheduler: stack up in {stack.last_up['seconds']} s at {ep.url} (PostgreSQL, LocalExecutor)")
        client = ep.client(timeout=300)
        _, pools, _ = convert(yaml.safe_load((ROOT / "airflow_settings.yaml").read_text()))
        for name, pool in pools.items():
            client.ensure_pool(name, pool["slots"], pool["description"], pool["include_deferred"])
        for dag_id in ("drp_campaign", *BARES):
            client.wait_dag(dag_id, timeout=300)
            client.unpause(dag_id)
        procs = {n: psutil.Process(pid) for n, pid in ep.pids.items()}
        cpu0 = {n: sum(p.cpu_times()[:2]) for n, p in procs.items()}

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(psutil.Error):  # the triggerer and its trigger runner
                    trig = procs["triggerer"]
                    triggerer_pids.update([trig.pid, *(c.pid for c in trig.children(recursive=True))])
                for n, p in procs.items():
                    with contextlib.suppress(psutil.Error):
                        samples[n] = max(samples.get(n, 0), p.memory_info().rss)
                        for c in p.children(recursive=True):
                            with contextlib.suppress(psutil.Error):
                                samples["task process"] = max(samples.get("task process", 0), c.memory_info().rss)
                stop.wait(2.0)

        threading.Thread(target=sample, daemon=True).start()
        conf = {"campaign_file": str(campaign), "data_root": str(real / "data"), "generation": 0}
        t0 = time.time()
        run_id = client.trigger("drp_campaign", conf)["dag_run_id"]
        bare_runs, next_bare = {b: [] for b in BARES}, t0
        while True:
            run = client.run("drp_campaign", run_id)
            if run["state"] in ("success", "failed"):
                break
            if time.time() >= next_bare:  # the bare tasks run beside the campaign, under its load, one DAG at a time
                b = BARES[sum(map(len, bare_runs.values())) % len(BARES)]
                bare_runs[b].append(client.trigger(b, {})["dag_run_id"])
                next_bare = time.time() + args.bare_every
            if time.time() - t0 > args.timeout:
                raise RuntimeError(f"drp_campaign run {run_id} still {run['state']} after {args.timeout} s")
            time.sleep(min(10.0, args.bare_every))
        wall = time.time() - t0
        cpu = {n: round(sum(p.cpu_times()[:2]) - cpu0[n], 1) for n, p in procs.items() if p.is_running()}
        for b, runs in bare_runs.items():
            for r in runs:
                client.wait_run(b, r, timeout=600, poll=5)
        tis = client.task_instances("drp_campaign", run_id)
        bare = {b: [t for r in runs for t in client.task_instances(b, r)] for b, runs in bare_runs.items()}
        grid = client.grid_seconds("drp_campaign", run_id)
    finally:
        stop.set()
        stack.down()
    db_bytes = sum(f.stat().st_size for f in (real / "stack" / "pg" / "base").rglob("*") if f.is_file())

    mine = [t for t in tis if t["state"] == "success" and t["task_id"].rsplit(".", 1)[-1] not in WAITING | ONCE]
    ours = [d for t in mine if (d := duration(t)) is not None]
    ours_q = [d for t in mine if (d := duration(t, "queued_when")) is not None]
    bare_s = {b: [d for t in v if t["state"] == "success" and (d := duration(t)) is not None] for b, v in bare.items()}
    bare_q = {b: [d for t in v if t["state"] == "success" and (d := duration(t, "queued_when")) is not None]
              for b, v in bare.items()}
    calls = [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()] \
        if (state / "calls.jsonl").exists() else []
    for c in calls:
        c["triggerer"] = c["pid"] in triggerer_pids
    return {"run_id": run_id, "state": run["state"], "wall_s": wall, "tis": tis, "ours": ours, "bare": bare_s,
            "ours_queued": ours_q, "bare_queued": bare_q,
            "cpu": cpu, "rss": samples, "db_bytes": db_bytes, "grid": grid, "calls": calls, "cfg": cfg,
            "bare_runs": {b: len(v) for b, v in bare_runs.items()}}


def polls_per_interval(calls: list[dict], port: str, interval: float) -> tuple[float, int, int]:
    """The triggerer's status calls of one port per poll interval (over the intervals that had
    any), the most items one call asked about, and the calls in all."""
    mine = [c for c in calls if c["port"] == port and c.get("triggerer")]
    if not mine:
        return 0.0, 0, 0
    buckets = Counter(int(c["t"] // interval) for c in mine)
    return sum(buckets.values()) / len(buckets), max(c["n"] for c in mine), len(mine)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visits", type=int, default=190_000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--max-group-size", type=int, default=200_000)
    ap.add_argument("--min-workflows", type=int, default=150)
    ap.add_argument("--delay", type=float, default=30.0,
                    help="seconds until a bench workflow finishes (longer than a task's scheduling, so waits defer)")
    ap.add_argument("--poll", type=float, default=2.0, help="the triggers' poll interval (s)")
    ap.add_argument("--workdir", default=str(ROOT / "var" / "bench-campaign-scale"))
    ap.add_argument("--real-visits", type=int, default=32_000,
                    help="visits of the sky the real-scheduler run plans (DR1's footprint, fewer visits per tract: "
                         "DR1-sized groups, fewer of them)")
    ap.add_argument("--replica-delay", type=float, default=15.0, help="seconds until a bench rule is OK")
    ap.add_argument("--command-delay", type=float, default=2.0, help="seconds a bench graph build takes")
    ap.add_argument("--bare-tasks", type=int, default=1, help="bare @task instances per bare run")
    ap.add_argument("--bare-every", type=float, default=10.0,
                    help="a bare run every S seconds of the campaign's run, the two bare DAGs in turn")
    ap.add_argument("--timeout", type=float, default=4 * 3600.0)
    ap.add_argument("--no-real", action="store_true", help="skip the real-scheduler run")
    args = ap.parse_args()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)

    from multisite_drp.campaign import synthetic
    from multisite_drp.campaign.config import load_campaign
    from multisite_drp.campaign.dataflow import dataflow_from_mapping
    from multisite_drp.campaign.planner import plan_campaign, plan_groups

    campaign = dr1_campaign(work / "dr1bench.yaml", work / "data", args.max_group_size, args.poll)
    cfg = load_campaign(str(campaign), check_pipeline=False)
    inputs = build_inputs(work, args.visits, args.seed)
    flow = dataflow_from_mapping(cfg, synthetic.DRP_LIKE_DATAFLOW)
    t0 = time.perf_counter()
    plan = plan_campaign(cfg, inputs, dataflow=flow)
    t_plan = time.perf_counter() - t0
    t_group, groups = best_of(3, lambda: plan_groups(cfg, plan.sites, inputs))
    full = Counter((g.step, g.site) for g in groups)
    n_full = sum(full.values())
    print(f"plan (DR1 sky, {cfg.planner.partition_trials} METIS trials): {t_plan:.1f} s; grouping alone "
          f"(plan_groups, best of 3): {t_group:.2f} s")
    print(f"max_group_size {args.max_group_size} quanta-equivalents (a step-1 group <= "
          f"{args.max_group_size // 189} visits of 189 detectors)")
    for s in plan.sites:
        print(f"  {s.name}: {len(s.visits)} visits, {len(s.tracts)} tracts, share {s.share_achieved:.3f}")
    steps = [s.name for s in cfg.steps]
    sites = [s.name for s in cfg.sites]
    biggest = max(groups, key=lambda g: g.weight if g.dimension else 0)
    print(f"DR1 full: {n_full} groups (workflows); largest non-global group {biggest.step}/{biggest.site} "
          f"#{biggest.group} weight {biggest.weight}")
    fraction, scaled = scale_groups(full, args.min_workflows)
    n_scaled = sum(scaled.values())
    print(f"scaled: {n_scaled} groups (workflows), each (step, site) keeping {fraction:.4f} of its groups "
          f"(at least 1); DR1 / scaled = {n_full / n_scaled:.1f}")
    print(f"  {'step':6s} " + " ".join(f"{s:>13s}" for s in sites) + "   (DR1 full -> scaled)")
    for st in steps:
        print(f"  {st:6s} " + " ".join(f"{full.get((st, s), 0):>6d} -> {scaled.get((st, s), 0):<3d}" for s in sites))

    # DAG parse: the DR1 bound, and a bound 100x smaller (100x more groups): same DAG.
    small = dr1_campaign(work / "dr1bench_small_groups.yaml", work / "data", max(1, args.max_group_size // 100))
    parse, tasks = parse_dag(campaign, work / "airflow-home")
    parse_small, tasks_small = parse_dag(small, work / "airflow-home")
    parse_s = parse["warm"]
    same = "identical" if tasks == tasks_small else "DIFFERENT"
    n_mapped = sum(1 for _, m in tasks if m)
    print(f"DAG parse (exec of dags/drp_campaign.py in a fresh process, best of 3; the machine's 2 cores are "
          f"shared): {parse['warm']:.3f} s wall, {parse['warm_cpu']:.3f} s CPU with airflow.sdk already imported "
          f"(as in the dag-processor); {parse['cold']:.3f} s wall, {parse['cold_cpu']:.3f} s CPU including "
          f"airflow.sdk's import. With max_group_size/100: {parse_small['warm']:.3f} s wall, "
          f"{parse_small['warm_cpu']:.3f} s CPU. DAG {len(tasks)} tasks ({n_mapped} mapped over groups), task "
          f"lists {same}: the DAG reads the campaign file, not the plan, so its shape does not depend on the "
          "group count")
    t_scaled, m_scaled = task_instances(tasks, scaled)
    t_full, m_full = task_instances(tasks, full)
    print(f"task instances of one DAG run (counted from the DAG's tasks and the plan's groups): scaled {t_scaled} "
          f"({m_scaled} mapped), DR1 full {t_full} ({m_full} mapped)")

    # Status calls per poll: K groups per site -> K triggers per site in one event loop.
    k_scaled = max(scaled.get((st, s), 0) for st in steps for s in sites)
    k_full = max(full.get((st, s), 0) for st in steps for s in sites)
    results = [status_calls(campaign, work / "data", k, args.delay, args.poll)
               for k in sorted({1, 10, k_scaled, k_full})]
    for r in results:
        print(f"status calls: K={r['k']} groups/site ({r['triggers']} WorkflowTriggers, {r['done']} fired done) "
              f"in {r['wall']:.1f} s: {r['calls']} status calls (SharedPoll.calls {r['shared_poll_calls']}) over "
              f"{r['rounds']} poll intervals -> {r['per_poll']:.2f} per interval; per site {r['per_site']}; "
              f"up to {r['max_refs']} workflows per call")
    scaled_run = next(r for r in results if r["k"] == k_scaled)
    per_poll = scaled_run["per_poll"]
    print(f"  sites {len(sites)}; calls per interval with K={k_scaled} (scaled): {per_poll:.2f}, with K={k_full} "
          f"(DR1's largest step and site): {results[-1]['per_poll']:.2f}; a poll per trigger would make "
          f"{len(sites) * k_scaled} and {len(sites) * k_full} per interval")

    if args.no_real:
        print(f"campaign_scale: workflows={n_scaled} tasks={t_scaled} wall_s=na task_overhead_ratio=na "
              f"scheduler_cpu_s=na parse_s={parse_s:.3f} status_calls_per_poll={per_poll:.2f}")
        return

    # The real scheduler: the product's DAG on a DR1-footprint sky of --real-visits visits.
    shallow = build_inputs(work, args.real_visits, args.seed)
    splan = plan_campaign(cfg, shallow, dataflow=flow)
    sgroups = Counter((g.step, g.site) for g in plan_groups(cfg, splan.sites, shallow))
    t_real, _ = task_instances(tasks, sgroups)
    if sum(sgroups.values()) < args.min_workflows:
        raise SystemExit(f"--real-visits {args.real_visits}: {sum(sgroups.values())} workflows, fewer than "
                         f"--min-workflows {args.min_workflows}; expected more visits")
    print(f"real-scheduler sky: {args.real_visits} visits over DR1's footprint -> {sum(sgroups.values())} groups "
          f"(workflows) of DR1's size, {t_real} task instances expected")
    r = real_run(args, work)
    tis = r["tis"]
    states = Counter(t["state"] for t in tis)
    workflows = sum(1 for t in tis if t["task_id"].endswith(".submit") and t["map_index"] >= 0)

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    ours, bare = r["ours"], r["bare"]
    mean_ours = mean(ours)
    ratio = mean_ours / mean(bare[BARE_SAME_FILE])
    ratio_own = mean_ours / mean(bare[BARE_OWN_FILE])
    by_name: dict[str, list[float]] = {}
    for t in tis:
        if t["state"] == "success" and (d := duration(t)) is not None:
            by_name.setdefault(t["task_id"].rsplit(".", 1)[-1], []).append(d)
    print(f"real scheduler: run {r['run_id']} {r['state']} in {r['wall_s']:.0f} s; {len(tis)} task instances "
          f"{dict(states)}; {workflows} workflows")
    print("  mean task duration (start to end, s) by task: " + ", ".join(
        f"{k} {sum(v) / len(v):.2f} (n={len(v)})" for k, v in sorted(by_name.items())))
    print(f"  our non-waiting tasks: mean {mean_ours:.2f} s over {len(ours)} (Airflow's duration: from the "
          "task's start, recorded as its process is forked, through the DAG file's parse, to its end)")
    for b, what in ((BARE_SAME_FILE, "in the campaign DAG's file (parses it first, as ours do)"),
                    (BARE_OWN_FILE, "alone in a one-task file")):
        print(f"  bare @task {what}: mean {mean(bare[b]):.2f} s over {len(bare[b])} ({r['bare_runs'][b]} runs "
              f"beside the campaign) -> ours / bare = {mean_ours / mean(bare[b]):.2f}")
    print(f"  task_overhead_ratio {ratio:.2f}: our tasks against a bare @task that parses the same file "
          f"({ratio_own:.2f} against one in a file of its own: the difference is the campaign DAG's parse)")
    q_ours, q_bare = r["ours_queued"], r["bare_queued"]
    print(f"  from queued to end (the executor's hand-off and the fork included): ours mean {mean(q_ours):.2f} s, "
          f"bare (same file) {mean(q_bare[BARE_SAME_FILE]):.2f} s, bare (own file) {mean(q_bare[BARE_OWN_FILE]):.2f} s")
    print("  CPU seconds during the run: " + ", ".join(f"{k} {v}" for k, v in r["cpu"].items()))
    print("  peak RSS: " + ", ".join(f"{k} {v / 2**20:.0f} MB" for k, v in r["rss"].items()))
    print(f"  metadata DB (PostgreSQL base/ on disk): {r['db_bytes'] / 2**20:.1f} MB; grid for the run: "
          f"{r['grid']}")
    poll_w, max_w, n_w = polls_per_interval(r["calls"], "workflows", args.poll)
    poll_r, max_r, n_r = polls_per_interval(r["calls"], "replica", args.poll)
    poll_c, max_c, n_c = polls_per_interval(r["calls"], "commands", args.poll)
    print(f"  status calls per {args.poll:.0f} s interval (intervals with any): workflows {poll_w:.2f} ({n_w} calls, "
          f"up to {max_w} workflows each), rules {poll_r:.2f} ({n_r}, up to {max_r}), commands {poll_c:.2f} "
          f"({n_c}, up to {max_c})")
    sched = r["cpu"].get("scheduler", float("nan"))
    print(f"  extrapolated to DR1's {n_full} workflows ({t_full} task instances): at least "
          f"{sched / len(tis) * t_full:.0f} scheduler CPU-s (linear in task instances; the scheduler's loop "
          f"also grows with the instances waiting) and {mean_ours * t_full / 3600:.1f} worker-hours of task "
          f"run time at our tasks' mean (the waits' deferral excluded)")
    print(f"campaign_scale: workflows={workflows} tasks={len(tis)} wall_s={r['wall_s']:.0f} "
          f"task_overhead_ratio={ratio:.2f} scheduler_cpu_s={sched:.0f} parse_s={parse_s:.3f} "
          f"status_calls_per_poll={poll_w:.2f}")


if __name__ == "__main__":
    main()
