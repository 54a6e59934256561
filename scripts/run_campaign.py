"""Run the drp_campaign DAG once, through Airflow, on this machine (``dag.test()``).

What ``make demo``, the end-to-end tests and ``bench/orchestration_overhead`` use:

* the connections come from airflow_settings.yaml as ``AIRFLOW_CONN_*`` variables
  (already-set variables win), so nothing has to be imported into the database first;
* replica connections whose host is ``local-rucio`` point at the project's local Rucio
  (``include/localrucio``, under ``--rucio-root``): it is started (or found running), the
  campaign's RSEs, accounts and scope are made, the Replica Monitor is started, and the
  connections get the server's URL and each site's own login and password;
* workflow connections whose host is ``local-panda`` point at the local PanDA relay
  (``include/localpanda``, under ``--panda-root``), the stand-in for PanDA and iDDS that
  cannot run here: those sites' workflows go through ctrl_bps_panda's real submission;
* the metadata database under ``$AIRFLOW_HOME`` is created on first use;
* the embedded sites are built under ``--data-root`` if they are not there yet;
* the DAG runs in this process with Airflow's own scheduling loop (``dag.test``):
  dependencies, trigger rules, retries, XCom, deferral to the real triggers (run inline);
* the campaign report is printed, and the exit status is the DAG run's.

``--logical-date`` reuses a run: Airflow clears it and runs it again (what "Clear" on a
whole DAG run does in the UI). ``--only REGEX`` then runs just the matching tasks and
marks the others successful, like clearing those tasks alone.

``--scheduler real`` runs the same DAG run under real Airflow processes instead of
``dag.test``: the stack of ``include/airflowstack`` (PostgreSQL 15 metadata database,
scheduler with the LocalExecutor, triggerer, dag-processor, API server on loopback) under
``--stack-root`` (default ``$AIRFLOW_HOME/stack``), started with this script's environment
(the connections, the allowed roots). The run is triggered through the REST API as the UI
does (the pools of airflow_settings.yaml made first, the DAG unpaused), followed to the end,
and summarised from the API's task instances, in the same JSON as ``dag.test``'s. There,
``--logical-date`` of an existing run clears it through ``clearTaskInstances`` (all its
tasks, or with ``--only`` just the matching ones: the others keep their state). The stack is
stopped at the end unless ``--keep-stack``; ``--up-only`` brings it up and exits (``make up``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = ROOT / "include" / "campaigns" / "minidrp_embedded.yaml"
DAG_ID = "drp_campaign"


def _environment(args: argparse.Namespace) -> dict:
    import yaml

    from scripts.load_airflow_settings import connection_env

    os.environ.setdefault("AIRFLOW_HOME", str(ROOT / "var" / "airflow"))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    paths = [str(ROOT / "plugins"), str(ROOT / "include"), str(ROOT)]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())
    env = connection_env(settings)
    for key, value in env.items():
        if args.poll is not None or args.processes is not None:
            conn = json.loads(value)
            extra = conn.setdefault("extra", {})
            if args.poll is not None and key.endswith(("_WORKFLOW", "_REPLICA")):
                extra["poll_interval"] = args.poll
            if args.processes is not None and key.endswith("_WORKFLOW") and extra.get("adapter") == "embedded":
                extra["processes"] = args.processes
            value = json.dumps(conn, sort_keys=True)
        os.environ.setdefault(key, value)
    return env


def _local_services(args: argparse.Namespace, cfg) -> None:
    """Point replica connections on host ``local-rucio`` at the local Rucio, and workflow
    connections on host ``local-panda`` at the local PanDA relay (the stand-in for PanDA and
    iDDS, whose pilots run the jobs on this machine); each is started if needed."""
    from localpanda.campaign import fill_local_connections as fill_panda
    from localrucio.campaign import fill_local_connections as fill_rucio

    for label, port, fill, root, extra in (
        ("Rucio", "replica", fill_rucio, args.rucio_root, (args.poll,)),
        ("PanDA relay", "workflow", fill_panda, args.panda_root, ()),
    ):
        ids = [getattr(s.connections, port) for s in cfg.sites]
        conns = {cid: json.loads(os.environ.get(f"AIRFLOW_CONN_{cid.upper()}", "{}")) for cid in ids}
        t0 = time.monotonic()
        filled = fill(conns, cfg, Path(root), *extra)
        for cid, conn in filled.items():
            os.environ[f"AIRFLOW_CONN_{cid.upper()}"] = json.dumps(conn, sort_keys=True)
        if filled:
            print(f"local {label} at {next(iter(filled.values()))['host']} for {sorted(filled)} ready in "
                  f"{time.monotonic() - t0:.1f} s (scope {cfg.replication.scope}, root {root})", flush=True)


def _conn_extras(items: list[str]) -> None:
    """``--conn-extra CONN_ID:KEY=VALUE``: set one extra field of an ``AIRFLOW_CONN_*`` connection."""
    for item in items:
        conn_id, sep, rest = item.partition(":")
        key, eq, value = rest.partition("=")
        var = f"AIRFLOW_CONN_{conn_id.upper()}"
        if not (sep and eq and key) or var not in os.environ:
            raise SystemExit(f"--conn-extra {item!r}: expected CONN_ID:KEY=VALUE naming a known connection")
        conn = json.loads(os.environ[var])
        conn.setdefault("extra", {})[key] = value
        os.environ[var] = json.dumps(conn, sort_keys=True)


#: The tasks whose extra links ``--links`` records (first group of each chain, and the distribution).
LINKED = ("submit", "wait_workflow", "replicate_inputs", "wait_inputs", "register", "replicate_outputs",
          "wait_outputs", "bootstrap", "raws", "wait_ingested", "plan_campaign")


def _migrate() -> None:
    home = Path(os.environ["AIRFLOW_HOME"])
    stamp = home / ".db-migrated"
    if stamp.exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], check=True,
                   stdout=subprocess.DEVNULL)
    stamp.touch()


def _conf(args: argparse.Namespace) -> dict:
    conf: dict = {"data_root": str(Path(args.data_root).resolve()), "generation": args.generation}
    if args.campaign:
        conf["campaign_file"] = str(Path(args.campaign).resolve())
    if args.steps:
        conf["steps"] = args.steps.split(",")
    if args.sites:
        conf["sites"] = args.sites.split(",")
    if args.dry_run:
        conf["dry_run"] = True
    return conf


def _allowed_roots(args: argparse.Namespace) -> None:
    """Declare, as a deployment would, the roots the DAG's Params may name: the ones already
    declared in $MULTISITE_DRP_ALLOWED_ROOTS (or the hook's defaults), plus this run's data
    root and its campaign file's directory (a campaign copy may live in a scratch folder)."""
    from multisite_drp.campaign.paths import ALLOWED_ROOTS_ENV
    from multisite_drp.hooks.campaign import DEFAULT_ROOTS

    roots = [r for r in os.environ.get(ALLOWED_ROOTS_ENV, "").split(os.pathsep) if r] or [str(r) for r in DEFAULT_ROOTS]
    roots.append(str(Path(args.data_root).resolve()))
    if args.campaign:
        roots.append(str(Path(args.campaign).resolve().parent))
    os.environ[ALLOWED_ROOTS_ENV] = os.pathsep.join(dict.fromkeys(roots))


def run(args: argparse.Namespace) -> int:
    _environment(args)
    _allowed_roots(args)
    data_root = Path(args.data_root).resolve()
    conf = _conf(args)
    from multisite_drp.campaign.config import load_campaign

    # The run's campaign (its selected sites), loaded once for the set-up and the report.
    cfg = load_campaign(conf.get("campaign_file", CAMPAIGN), data_root=data_root, check_pipeline=False,
                        sites=conf.get("sites") or [])
    if not (data_root / "usdf" / "butler.yaml").exists():
        from minidrp.build import build_sites

        shape = cfg if not conf.get("sites") else load_campaign(conf.get("campaign_file", CAMPAIGN),
                                                                  data_root=data_root, check_pipeline=False)
        print(f"building the embedded sites under {data_root}", flush=True)
        build_sites(data_root, scope=shape.replication.scope,
                    holds_all_raws=[s.name for s in shape.sites if s.holds_all_raws])
    _local_services(args, cfg)
    _conn_extras(args.conn_extra)
    if args.scheduler == "real":
        return _run_real(args, conf, cfg)
    _migrate()

    from airflow import settings as af_settings
    from airflow.dag_processing.dagbag import DagBag

    af_settings.configure_orm()
    bag = DagBag(dag_folder=str(ROOT / "dags" / "drp_campaign.py"))
    if bag.import_errors:
        print(json.dumps(bag.import_errors, indent=1), file=sys.stderr)
        return 2
    dag = bag.dags["drp_campaign"]
    logical = _logical(args)
    mark = None
    if args.only:
        mark = f"(?!(?:{args.only})$).*"
    print(f"drp_campaign: logical_date={logical.isoformat()} conf={json.dumps(conf)}", flush=True)
    t0 = time.monotonic()
    dr = dag.test(logical_date=logical, run_conf=conf, mark_success_pattern=mark)
    elapsed = time.monotonic() - t0
    states: dict[str, int] = {}
    tasks = []
    for ti in dr.get_task_instances():
        states[str(ti.state)] = states.get(str(ti.state), 0) + 1
        tasks.append({"task_id": ti.task_id, "map_index": ti.map_index, "state": str(ti.state),
                      "try_number": ti.try_number,
                      "start": ti.start_date.timestamp() if ti.start_date else None,
                      "end": ti.end_date.timestamp() if ti.end_date else None})
    # Airflow's own clock for each task: an account of the run independent of the report's.
    summary = {"run_id": dr.run_id, "logical_date": logical.isoformat(), "state": str(dr.state),
               "seconds": round(elapsed, 1), "task_states": states, "tasks": tasks, "scheduler": "dagtest"}
    return _finish(args, cfg, summary)


def _stack(args: argparse.Namespace):
    from airflowstack import AirflowStack
    from airflowstack.stack import STATIC_DAGS

    return AirflowStack(Path(args.stack_root or Path(os.environ["AIRFLOW_HOME"]) / "stack"),
                        settings=STATIC_DAGS if args.static_dags else None)


def _run_real(args: argparse.Namespace, conf: dict, cfg) -> int:
    """The run under the real scheduler, through the REST API (see the module docstring)."""
    import re

    import yaml
    from airflowstack.client import RunStalled, parse_time

    from scripts.load_airflow_settings import convert

    stack = _stack(args)
    try:
        ep = stack.up(fresh=args.fresh_stack)
        print(f"Airflow (real scheduler, LocalExecutor, PostgreSQL) at {ep.url}: user {ep.username}, password in "
              f"{ep.password_file}; up in {stack.last_up['seconds']} s {stack.last_up['steps'] or '(running)'}",
              flush=True)
        client = ep.client()
        _, pools, _ = convert(yaml.safe_load((ROOT / "airflow_settings.yaml").read_text()))
        for name, pool in pools.items():
            client.ensure_pool(name, pool["slots"], pool["description"], pool["include_deferred"])
        t = time.monotonic()
        client.wait_dag(DAG_ID, timeout=300)
        parsed_s = time.monotonic() - t
        client.unpause(DAG_ID)
        if args.up_only:
            print(f"{DAG_ID} parsed and unpaused; trigger it at {ep.url}/dags/{DAG_ID}", flush=True)
            return 0
        logical = _logical(args)
        print(f"{DAG_ID}: logical_date={logical.isoformat()} conf={json.dumps(conf)} (real scheduler)", flush=True)
        t0, trigger_at = time.monotonic(), time.time()
        existing = client.find_run(DAG_ID, logical) if args.logical_date else None
        if existing is not None:
            run_id = existing["dag_run_id"]
            task_ids = None
            if args.only:  # matched against task_id, and task_id[map_index] for a mapped task's instances
                task_ids = []
                for ti in client.task_instances(DAG_ID, run_id):
                    mapped = ti["map_index"] >= 0
                    label = f"{ti['task_id']}[{ti['map_index']}]" if mapped else ti["task_id"]
                    if re.fullmatch(args.only, label) or (not mapped and re.fullmatch(args.only, ti["task_id"])):
                        task_ids.append([ti["task_id"], ti["map_index"]] if mapped else ti["task_id"])
            cleared = client.clear(DAG_ID, run_id, task_ids=task_ids, only_failed=False)
            print(f"{DAG_ID}: cleared {len(cleared)} task instances of {run_id}", flush=True)
        else:
            run_id = client.trigger(DAG_ID, conf, logical_date=logical)["dag_run_id"]
        seen: dict[tuple, str] = {}
        first_running: list[float] = []

        def progress(run: dict, tis: list[dict]) -> None:
            for ti in tis:
                key, state = (ti["task_id"], ti["map_index"], ti["try_number"]), ti["state"]
                if seen.get(key) != state and state in ("running", "failed", "up_for_retry", "deferred"):
                    label = ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
                    print(f"  {state} {label}" + (f" (try {ti['try_number']})" if ti["try_number"] > 1 else ""),
                          flush=True)
                    if state == "running" and not first_running:
                        first_running.append(time.time() - trigger_at)
                seen[key] = state

        gave_up = None
        try:
            # The run every 5 s, its task instances (5 pages of 100 at the campaign's size) every
            # 20 s: at 2 s and 10 s this watching cost the API server ~135 s over the suite's main run.
            run = client.wait_run(DAG_ID, run_id, timeout=args.timeout, poll=5.0, ti_poll=20.0, progress=progress,
                                  stall_after=args.stall_after)
        except RunStalled as exc:
            run, gave_up = exc.run, str(exc)
            print(f"{DAG_ID}: gave up: {gave_up}", flush=True)
        elapsed = time.monotonic() - t0
        tis = client.task_instances(DAG_ID, run_id)
        grid = client.grid_seconds(DAG_ID, run_id)
        links, page = {}, None
        if args.links:
            for ti in tis:
                if ti["task_id"].rsplit(".", 1)[-1] in LINKED and ti["map_index"] in (-1, 0):
                    label = ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
                    links[label] = client.links(DAG_ID, run_id, ti["task_id"], ti["map_index"])
            page = _campaign_page(client, run_id, Path(args.json_out).parent if args.json_out else None,
                                  browser=ep if args.browser else None)
    finally:
        if not (args.keep_stack or args.up_only):
            stack.down()
    states: dict[str, int] = {}
    tasks = []
    for ti in tis:
        states[str(ti["state"])] = states.get(str(ti["state"]), 0) + 1
        tasks.append({"task_id": ti["task_id"], "map_index": ti["map_index"], "state": str(ti["state"]),
                      "try_number": ti["try_number"], "start": parse_time(ti.get("start_date")),
                      "end": parse_time(ti.get("end_date"))})
    starts = [t["start"] for t in tasks if t["start"] and t["start"] >= trigger_at]  # (a cleared run keeps the rest)
    summary = {"run_id": run_id, "logical_date": logical.isoformat(), "state": str(run["state"]),
               "seconds": round(elapsed, 1), "task_states": states, "tasks": tasks, "scheduler": "real",
               "stack_up_s": stack.last_up.get("seconds"), "dag_parsed_s": round(parsed_s, 1),
               "first_task_s": round(min(starts) - trigger_at, 1) if starts else None,
               "first_running_seen_s": round(first_running[0], 1) if first_running else None,
               "grid_s": grid, "gave_up": gave_up, "links": links, "campaign_page": page}
    return _finish(args, cfg, summary)


def _logical(args: argparse.Namespace) -> datetime:
    logical = (datetime.fromisoformat(args.logical_date) if args.logical_date
               else datetime.now(UTC).replace(microsecond=0))
    return logical if logical.tzinfo else logical.replace(tzinfo=UTC)


def _campaign_page(client, run_id: str, out: Path | None, browser=None) -> dict:
    """The "DRP campaign" page of the run, fetched as the UI would (the token in its
    cookie) and refused without one: statuses, and the page and its map written beside
    the summary (``campaign_page.html``, ``campaign_map.png``). With ``browser`` (the
    stack's endpoint), also as an operator sees it: a headless Chromium logs in through
    the UI and opens the run's tab (``airflowstack.browser``; ``campaign_ui.png``)."""
    q = {"dag_id": DAG_ID, "run_id": run_id}
    page = client.page("/drp-campaign/run", auth="cookie", **q)
    png = client.page("/drp-campaign/map.png", **q)
    found = {"status": page.status_code, "map_status": png.status_code, "map_type": png.headers.get("content-type"),
             "index_status": client.page("/drp-campaign/", auth="cookie").status_code,
             "anonymous_status": client.page("/drp-campaign/run", auth=None, **q).status_code,
             "anonymous_map_status": client.page("/drp-campaign/map.png", auth=None, **q).status_code,
             "plugin": next((p for p in client.get("/api/v2/plugins", limit=100)["plugins"]
                             if p["name"] == "multisite_drp"), None)}
    if out is not None:
        (out / "campaign_page.html").write_text(page.text)
        (out / "campaign_map.png").write_bytes(png.content)
        found["html"], found["png"] = str(out / "campaign_page.html"), str(out / "campaign_map.png")
    if browser is not None:
        import dataclasses

        from airflowstack.browser import campaign_view

        try:
            view = campaign_view(browser.url, browser.username, browser.password, DAG_ID, run_id,
                                 (out or Path.cwd()) / "campaign_ui.png")
            found["browser"] = {**dataclasses.asdict(view), "screenshot": str(view.screenshot)}
        except Exception as exc:  # noqa: BLE001 - recorded for the test; the run's summary is still written
            found["browser"] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"campaign page in the browser: {found['browser']['error']}", flush=True)
        found["views"] = _dag_views(client, browser, run_id, out or Path.cwd())
    return found


def _dag_views(client, browser, run_id: str, out: Path) -> dict:
    """The big DAG as an operator sees it in the browser (``airflowstack.browser.dag_views``):
    the run's grid and graph, ``step1.frdf.submit``'s groups by label, and the trigger form
    refusing a relative campaign file; with the number of runs before and after that try."""
    import dataclasses

    from airflowstack.browser import dag_views

    def runs() -> int:
        return client.get(f"/api/v2/dags/{DAG_ID}/dagRuns", limit=1)["total_entries"]

    try:
        before = runs()
        views = dag_views(browser.url, browser.username, browser.password, DAG_ID, run_id, "step1.frdf.submit",
                          out / "ui")
        return {**dataclasses.asdict(views), "runs_before": before, "runs_after": runs()}
    except Exception as exc:  # noqa: BLE001 - recorded for the test; the run's summary is still written
        print(f"DAG views in the browser: {type(exc).__name__}: {exc}", flush=True)
        return {"error": f"{type(exc).__name__}: {exc}"}


def _finish(args: argparse.Namespace, cfg, summary: dict) -> int:
    """Write the summary, print the report and the closing line; the exit status is the run's."""
    from multisite_drp.campaign import names

    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=1))
    report = names.report_dir(cfg, args.generation) / "report.md"
    if report.exists() and not args.quiet:
        print(f"=== campaign report: {report} ===")
        print(report.read_text())
    print(f"{DAG_ID} run {summary['run_id']}: {summary['state']} in {summary['seconds']:.1f} s; "
          f"tasks {summary['task_states']}", flush=True)
    return 0 if summary["state"] == "success" else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(ROOT / "var" / "embedded"), help="where the embedded sites live")
    p.add_argument("--campaign", help="campaign file (default: the DAG's)")
    p.add_argument("--steps", help="comma-separated steps (default: all)")
    p.add_argument("--sites", help="comma-separated sites (default: all)")
    p.add_argument("--generation", type=int, default=0)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--logical-date", help="ISO date of an earlier run to clear and run again")
    p.add_argument("--only", help="regex of task ids to run; the others are marked successful (dag.test) or keep "
                                  "their state (real scheduler: there it is matched against task_id[map_index] for "
                                  "a mapped task's instances, so one group's tasks can be cleared alone)")
    p.add_argument("--poll", type=float, help="override the connections' poll_interval (seconds)")
    p.add_argument("--processes", type=int, help="override the workflow connections' processes")
    p.add_argument("--conn-extra", action="append", default=[], metavar="CONN_ID:KEY=VALUE",
                   help="set one extra field of a connection (repeatable), after the local services filled them "
                        "in, e.g. drp_usdf_replica:webui_url=https://rucio-ui.example.org")
    p.add_argument("--links", action="store_true",
                   help="with --scheduler real: record in the summary the extra links (as the UI shows them) of "
                        "every task instance of the first group of each chain and of the distribution")
    p.add_argument("--browser", action="store_true",
                   help="with --links: also open the run's DRP campaign tab in the UI with a headless Chromium "
                        "(logged in through the login form) and record what it shows, with a screenshot")
    p.add_argument("--json-out", help="write the run's summary (state, seconds, task states) here")
    p.add_argument("--rucio-root", default=str(ROOT / "var" / "rucio"),
                   help="the local Rucio deployment's directory (for replica connections on host local-rucio)")
    p.add_argument("--panda-root", default=str(ROOT / "var" / "panda"),
                   help="the local PanDA relay's directory (for workflow connections on host local-panda)")
    p.add_argument("--quiet", action="store_true", help="do not print the report")
    p.add_argument("--scheduler", choices=("dagtest", "real"), default="dagtest",
                   help="dagtest: dag.test() in this process; real: the airflowstack processes, through the REST API")
    p.add_argument("--stack-root", help="with --scheduler real: the stack's directory (default $AIRFLOW_HOME/stack)")
    p.add_argument("--keep-stack", action="store_true", help="with --scheduler real: leave the stack running")
    p.add_argument("--static-dags", action="store_true",
                   help="with --scheduler real: the DAG files will not change while the stack runs, so a known "
                        "file is re-parsed hourly, not every 30 s (airflowstack.stack.STATIC_DAGS; the tests)")
    p.add_argument("--fresh-stack", action="store_true",
                   help="with --scheduler real: start from an empty metadata database (no earlier run left queued)")
    p.add_argument("--up-only", action="store_true",
                   help="with --scheduler real: bring the stack up with the DAG unpaused, trigger nothing, leave it running")
    p.add_argument("--timeout", type=float, default=3600.0, help="with --scheduler real: seconds to wait for the run")
    p.add_argument("--stall-after", type=float, default=180.0,
                   help="with --scheduler real: give up on a running run whose task instances have all been "
                        "inactive (none scheduled, queued, running, deferred or awaiting a retry) this long")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
