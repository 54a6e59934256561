"""Orchestration overhead: the same campaign through Airflow, and as a plain sequential script.

Both runs start from freshly built embedded sites (separate directories, each under its own
Rucio scope on the same local Rucio: server, daemons, Replica Monitor) and do the same
work with the same services and the same poll interval:

* **airflow**: ``scripts/run_campaign.py`` (the drp_campaign DAG under ``dag.test()``:
  Airflow's scheduling loop, task start-up, XCom, deferral to the triggers), timed from
  process start to exit;
* **script**: the actions of ``services.actions`` called one after the other, one site and
  one submission group at a time, polling the workflow and replica services at the same
  interval, no Airflow.

Prints one line per run and, last, ``overhead: airflow_s=A script_s=S ratio=R``. R below 1
means running the sites in parallel pays for Airflow's own overhead. Not a test: figures only.

    python bench/orchestration_overhead.py [--root DIR] [--poll SECONDS] [--rucio-root DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "plugins", ROOT / "include", ROOT):
    sys.path.insert(0, str(p))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "include"), str(ROOT)])
CAMPAIGN = ROOT / "include" / "campaigns" / "minidrp_embedded.yaml"


def _wait(predicate, poll: float, what: str, timeout: float = 3600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(what)


def _rules_done(ctx, rules: list[dict]) -> bool:
    from multisite_drp.services.replica.base import RuleRef, replication_progress

    progress = replication_progress(ctx.replica, [RuleRef.from_dict(r) for r in rules])
    if progress.state == "stuck":
        raise RuntimeError(f"stuck: {progress.stuck}")
    return progress.state == "ok"


def _sites(base: Path, label: str) -> tuple[Path, Path]:
    """Fresh sites under a scope of their own, and the campaign file that names it."""
    import uuid

    from localrucio.campaign import campaign_copy
    from minidrp.build import build_sites

    scope = f"bench_{label}_{uuid.uuid4().hex[:6]}"
    build_sites(base / "sites", scope=scope)
    return campaign_copy(base, scope), base / "sites"


def run_script(base: Path, poll: float, rucio_root: Path) -> float:
    """The campaign as a sequential script of the same actions (no Airflow)."""
    from localrucio import LocalRucio
    from localrucio.campaign import connection_infos, prepare, replica_connections, start_monitor
    from multisite_drp.campaign.config import load_campaign
    from multisite_drp.services import actions, factory
    from multisite_drp.services.report import write_report
    from multisite_drp.services.workflow.base import WorkflowRef

    campaign, data_root = _sites(base, "script")
    t0 = time.monotonic()
    cfg = load_campaign(campaign, data_root=data_root)
    lr = LocalRucio(rucio_root)
    lr.up()
    creds = prepare(lr, cfg)
    start_monitor(lr, cfg)
    infos = connection_infos(cfg, replica_connections(lr, cfg, creds, poll_interval=poll))
    extra = {"adapter": "embedded", "processes": 1, "poll_interval": poll}
    ctx = factory.build_context(
        cfg,
        {s.name: factory.workflow_settings(cfg, s.name, factory.ConnectionInfo("bench", extra=extra, where="bench"))
         for s in cfg.sites},
        factory.replica_settings(cfg, infos),
        {s.name: factory.butler_settings(cfg, s.name, {}, "bench") for s in cfg.sites},
        replica_secrets=factory.connection_secrets(infos),
    )
    actions.make_plan(cfg, 0)
    plan = ctx.plan()
    for site in cfg.sites:
        if site.name == cfg.hub.name:
            continue
        actions.distribute_bootstrap(ctx, site.name)
        actions.distribute_raws(ctx, site.name)
        rules = actions.distribution_rules(ctx, site.name)
        _wait(lambda r=rules: _rules_done(ctx, r), poll, "distribution")
        actions.verify_ingest(ctx, rules)
        actions.ensure_input_chain(ctx, site.name)
    for step in cfg.steps:
        for site in plan.sites_for(step.name):
            for group in (g.group for g in plan.groups_for(step.name, site)):  # one after the other
                actions.generate_qg(ctx, step.name, site, group)
                actions.replicate_inputs(ctx, step.name, site, group)
                rules = actions.input_rules(ctx, step.name, site, group)
                _wait(lambda r=rules: _rules_done(ctx, r), poll, "inputs")
                actions.verify_ingest(ctx, rules)
                ref = WorkflowRef.from_dict(actions.submit(ctx, step.name, site, group))
                service = ctx.workflows[site]
                _wait(lambda s=service, r=ref: s.status([r])[r.run_id].terminal, poll, "workflow")
                if not actions.accept(ctx, ref)["accepted"]:
                    raise RuntimeError(f"{ref.name} rejected")
                actions.merge(ctx, step.name, site, group)
                actions.register(ctx, step.name, site, group)
                rules = actions.replicate_outputs(ctx, step.name, site, group)
                _wait(lambda r=rules: _rules_done(ctx, r), poll, "outputs")
                actions.verify_ingest(ctx, rules)
        actions.barrier(ctx, step.name)
    actions.chain_outputs(ctx)
    actions.collect_provenance(ctx)
    report, _ = write_report(ctx)
    elapsed = time.monotonic() - t0
    print(f"script: seconds={elapsed:.1f} quanta={report['totals']['quanta_succeeded']} "
          f"quanta_per_hour={report['rate']['quanta_per_hour']}", flush=True)
    return elapsed


def run_airflow(base: Path, poll: float, rucio_root: Path) -> float:
    campaign, data_root = _sites(base, "airflow")
    airflow_home = base / "home"
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home)}
    # The metadata database is created once, outside the timed run (as on a deployed Airflow).
    airflow_home.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (airflow_home / ".db-migrated").touch()
    t0 = time.monotonic()
    with open(data_root.parent / "airflow_run.log", "w") as log:
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_campaign.py"), "--data-root",
                               str(data_root), "--campaign", str(campaign), "--rucio-root", str(rucio_root),
                               "--poll", str(poll), "--quiet"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    elapsed = time.monotonic() - t0
    if proc.returncode:
        raise SystemExit(f"the Airflow run failed; see {data_root.parent / 'airflow_run.log'}")
    print(f"airflow: seconds={elapsed:.1f} (dag.test, process start to exit)", flush=True)
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", help="scratch directory (default: a temporary one, removed afterwards)")
    p.add_argument("--poll", type=float, default=2.0, help="poll interval of both runs (the embedded default: 2 s)")
    p.add_argument("--rucio-root", default=str(ROOT / "var" / "bench-rucio"), help="the local Rucio's directory")
    args = p.parse_args()
    from localrucio import LocalRucio

    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="orchestration-"))
    rucio_root = Path(args.rucio_root)
    try:
        LocalRucio(rucio_root).up()  # started once, outside both timed runs
        airflow_s = run_airflow(root / "airflow_run", args.poll, rucio_root)
        script_s = run_script(root / "script_run", args.poll, rucio_root)
    finally:
        LocalRucio(rucio_root).down()
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    print(f"overhead: airflow_s={airflow_s:.1f} script_s={script_s:.1f} ratio={airflow_s / script_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
