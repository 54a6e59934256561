"""Crash points: the worker killed at each write site, and the next ordinary try continues.

Each action runs once in a child Python process with ``MULTISITE_DRP_CRASH_AT`` naming a
write site (``multisite_drp.crashpoints``): the child ends there with ``os._exit(137)``,
as a SIGKILL would end it (no ``finally``, no flush). Then the action runs again here,
normally, with no clean-up in between, and the test checks the real outcome: the plan
directory complete and identical to an uninterrupted plan, one runner per attempt, the
butler holding every predicted output once, the Rucio dataset closed with every file,
one rule, every dataset ingested once at the destination.

One set of sites for the module (on the session's local Rucio, no Replica Monitor
daemon: the monitor runs here, one pass at a time, so it can be crashed too); the tests
run in file order and each builds on the one before (plan, then step1 at the hub, then
its outputs' registration, then the bootstrap to FrDF and its ingest).

The unit tests at the end (liveness, lock and command limits, the on_kill policy, the
monitor's bounded refusals) need no Rucio unless they say so.

Run as a script, this file is the child: ``python test_crash_points.py SETUP ACTION [ARGS...]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from multisite_drp.campaign import names
from multisite_drp.campaign.plan import COMPLETE_FILE, CampaignPlan, IncompletePlanError, plan_complete
from multisite_drp.crashpoints import CRASH_ENV
from multisite_drp.services import actions
from multisite_drp.services.butler import SiteButler, site_write_lock
from multisite_drp.services.fileio import LockTimeoutError, atomic_write_json, read_json
from multisite_drp.services.middleware import MiddlewareTimeoutError, run_command
from multisite_drp.services.procs import Liveness, identity, process_start, runner_liveness
from multisite_drp.services.replica.base import RuleRef, RuleState
from multisite_drp.services.replica.monitor import ReplicaMonitor
from multisite_drp.services.workflow.base import WmsStates, WorkflowError, WorkflowRef, WorkflowSpec
from multisite_drp.services.workflow.embedded import EmbeddedWorkflowService
from multisite_drp.triggers.site import ReplicationTrigger, WorkflowTrigger

from tests.conftest import wait_until

HERE = Path(__file__).resolve()
CAMPAIGN = HERE.parents[2] / "include" / "campaigns" / "minidrp_embedded.yaml"
CRASHED = 137


# -- the child --------------------------------------------------------------------------------


def _context(setup: dict):
    """The campaign context the DAG's tasks would build (embedded workflows, Rucio, butlers)."""
    from multisite_drp.campaign.config import load_campaign
    from multisite_drp.services import factory

    cfg = load_campaign(setup["campaign_file"], data_root=setup["data_root"])
    repos = {s.name: cfg.repo_of(s) for s in cfg.sites}
    # The smallest step: step1 on one visit (the plan decides the real restriction).
    actions.data_query = lambda c, step, site, group: setup["query"]
    return actions.CampaignContext(
        config=cfg,
        workflows={s: EmbeddedWorkflowService(s, processes=1) for s in repos},
        replica=factory.replica_service(setup["settings"], setup["secrets"]),
        butlers={s: SiteButler(s, repo) for s, repo in repos.items()},
    )


def _child(setup_path: str, action: str, *args: str) -> None:
    ctx = _context(json.loads(Path(setup_path).read_text()))
    if action == "make_plan":
        result = actions.make_plan(ctx.config, 0)
    else:
        result = getattr(actions, action)(ctx, *(int(a) if a.isdigit() else a for a in args))  # a group is an int
    print(json.dumps(result, default=str))


# -- the crash points (one set of sites on the local Rucio) -----------------------------------


@pytest.fixture(scope="module")
def env(rucio_campaign_factory):
    return rucio_campaign_factory("crash", monitor=False)


@pytest.fixture(scope="module")
def setup(env) -> Path:
    """What a child needs to build the context, in a 0600 file (it holds the sites' passwords)."""
    hub = SiteButler("usdf", env.cfg.repo_of("usdf")).butler
    visit = min(r.id for r in hub.query_dimension_records("visit", explain=False))
    path = env.base / "crash-setup.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"campaign_file": str(env.campaign_file), "data_root": str(env.data_root),
                   "settings": env.settings, "secrets": env.secrets,
                   "query": f"instrument = 'MiniCam' AND visit = {visit}"}, fh)
    return path


@pytest.fixture()
def ctx(setup: Path):
    saved = actions.data_query
    context = _context(json.loads(setup.read_text()))
    yield context
    actions.data_query = saved


def _crash(setup: Path, site: str, action: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``action`` in a child that dies at ``site``; assert that it did."""
    # The child environment of the embedded runner is an allow-list: name the hook in it.
    env = {**os.environ, CRASH_ENV: site, "MULTISITE_DRP_CHILD_ENV": CRASH_ENV}
    proc = subprocess.run([sys.executable, str(HERE), str(setup), action, *args], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == CRASHED, f"{action} at {site}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert f"crash point {site.split(',')[0]}" in proc.stderr
    return proc


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.server
def test_plan_directory_is_whole_or_absent(env, setup: Path, tmp_path: Path) -> None:
    from multisite_drp.campaign.planner import plan_to_directory

    cfg = env.cfg
    out = names.plan_dir(cfg, 0)
    for site in ("plan.after_bps", "plan.before_publish"):
        _crash(setup, site, "make_plan")
        assert not out.exists(), f"{site}: a reader would see a partial plan"
        # Only the crashed writer's hidden partial directory (an earlier one is removed).
        assert [p.name.startswith(f".{out.name}.partial-") for p in out.parent.iterdir()] == [True]
    # A directory cut short by a writer that wrote in place: no marker, no plan.
    (partial,) = out.parent.glob(f".{out.name}.partial-*")
    out.mkdir()
    shutil.copy(partial / "plan.json", out / "plan.json")
    with pytest.raises(IncompletePlanError, match="no COMPLETE marker"):
        CampaignPlan.load(out)

    actions.make_plan(cfg, 0)  # the next try, in this process, with no clean-up
    assert plan_complete(out) and sorted(p.name for p in out.parent.iterdir()) == [out.name]
    reference = plan_to_directory(cfg, tmp_path / "uninterrupted", generation=0)
    got, want = _tree(out), _tree(tmp_path / "uninterrupted")
    assert sorted(got) == sorted(want) and {"plan.json", COMPLETE_FILE, "plan.md", "report.json"} <= set(got)
    assert any(k.startswith("bps/step1/usdf/") for k in got)
    assert got == want
    assert CampaignPlan.load(out) == reference
    assert actions.make_plan(cfg, 0)["plan_dir"] == str(out) and _tree(out) == got  # a rerun keeps it


def _runner_starts(submit_dir: Path) -> list[str]:
    log = submit_dir / "runner.log"
    return [ln for ln in log.read_text().splitlines() if ln.startswith("runner started:")] if log.exists() else []


@pytest.mark.server
def test_submit_and_merge_resume_after_a_crash(ctx, setup: Path) -> None:
    qg = actions.generate_qg(ctx, "step1", "usdf", 0)
    assert qg["quanta"] == 2 * 4  # (isr, calibrate) x 1 visit x 4 detectors
    spec = actions.workflow_spec(ctx, "step1", "usdf", 0)
    sdir, service = Path(spec.submit_dir), ctx.workflows["usdf"]
    ref = WorkflowRef(run_id=spec.name, name=spec.name, site="usdf", submit_dir=str(sdir))

    # 1. Killed after writing the record, before starting the runner: a complete record.
    _crash(setup, "submit.after_record", "submit", "step1", "usdf", "0")
    state = read_json(sdir / "state.json")
    assert (state["name"], state["phase"], state["attempt"]) == (spec.name, "starting", 1) and "pgid" not in state
    assert service.find(spec) == ref and _runner_starts(sdir) == []
    st = service.status([ref])[ref.run_id]
    assert st.state is WmsStates.FAILED and "before its runner ran" in st.message

    # 2. The next try resumes it, and is killed after starting the runner, before recording it;
    #    that runner in turn dies before its final job (its merge).
    _crash(setup, "submit.after_launch,runner.before_merge", "submit", "step1", "usdf", "0")
    # A try right now finds the running (unrecorded) runner through its lock: no second one.
    assert actions.submit(ctx, "step1", "usdf", 0) == {**ref.to_dict(), "submission": "found"}
    dead = wait_until(lambda: (s := service.status([ref])[ref.run_id]).terminal and s, timeout=300)
    assert dead.state is WmsStates.FAILED and "phase merge" in dead.message, dead
    assert len(_runner_starts(sdir)) == 1 and dead.attempt == 1 and not dead.merged

    # 3. The merge the workflow did not make holds the butler's write lock itself, for its
    #    life (so the task that starts it may defer): started while another writer holds the
    #    lock, it waits, and the outputs stay as they were until that writer is done.
    import time

    from multisite_drp.services.butler import WRITE_LOCK_FILE, local_root
    from multisite_drp.services.commands.base import CommandState

    repo = ctx.config.repo_of("usdf")
    command, again = actions.merge_command(ctx, "step1", "usdf", 0)
    assert again and command.lock == str(local_root(repo) / WRITE_LOCK_FILE)
    usdf, predicted = ctx.butlers["usdf"], actions.read_graph(spec.qgraph).predicted_outputs
    with site_write_lock(repo, 30):
        merging = ctx.commands["usdf"].begin(command, again=again)
        time.sleep(3)
        assert ctx.commands["usdf"].status([merging])[merging.name] is CommandState.RUNNING
        usdf.refresh()
        assert usdf.count(["pvi"], spec.output_run)["pvi"] < predicted["pvi"]
    assert ctx.commands["usdf"].wait(merging, timeout=300) is CommandState.SUCCEEDED
    assert actions.merge_command(ctx, "step1", "usdf", 0) is None  # merged: nothing to run

    #    The merge task: killed after its merge, before the output chain.
    _crash(setup, "merge.after_command", "merge", "step1", "usdf", "0")
    merged = actions.merge(ctx, "step1", "usdf", 0)
    assert merged["counts"] == merged["predicted"] and merged["counts"]["pvi"] == 4
    assert spec.output_run in usdf.butler.collections.get_info(names.output_chain(ctx.config, "step1", "usdf")).children

    # 4. The submit task's retry restarts the failed workflow (attempt 2): run-qbb skips every
    #    quantum, the final job merges again over outputs that are there: nothing doubles.
    restarted = actions.submit(ctx, "step1", "usdf", 0)
    assert (restarted["submission"], restarted["previous_run_id"], restarted["previous_state"]) == \
        ("restarted", ref.run_id, "FAILED")
    done = wait_until(lambda: (s := service.status([ref])[ref.run_id]).terminal and s, timeout=300)
    assert done.state is WmsStates.SUCCEEDED and done.attempt == 2 and done.merged, done
    assert len(_runner_starts(sdir)) == 2
    assert actions.accept(ctx, ref)["accepted"]
    usdf.refresh()
    assert usdf.count(merged["predicted"], spec.output_run) == merged["predicted"]


@pytest.mark.server
def test_register_resumes_after_a_crash(ctx, env, setup: Path) -> None:
    cfg, scope = ctx.config, env.cfg.replication.scope
    run = names.output_run(cfg, "step1", "usdf", 0, 0)
    usdf = ctx.butlers["usdf"]
    in_run = sum(usdf.count(usdf.dataset_types_in(run), run).values())
    assert in_run > 0, "needs the step1 outputs of the test before"
    dataset = names.rucio_dataset(cfg, "step1", "usdf", "outputs", 0, 0)

    _crash(setup, "register.before_close", "register", "step1", "usdf", "0")
    assert env.root_client.get_did(scope, dataset)["open"] is True  # every file attached, not closed
    reg = actions.register(ctx, "step1", "usdf", 0)
    assert reg["files"] == in_run and reg["new_files"] == 0
    assert env.root_client.get_did(scope, dataset)["open"] is False
    assert len(list(env.root_client.list_files(scope, dataset))) == in_run


def _monitor(env, state_dir: Path, crash: str | None = None) -> subprocess.CompletedProcess:
    """One pass of the Replica Monitor for FrDF, as its daemon runs it (root's Rucio identity)."""
    run_env = {**os.environ, **env.lr.client_env()}
    run_env.pop(CRASH_ENV, None)
    if crash:
        run_env[CRASH_ENV] = crash
    argv = [sys.executable, "-m", "multisite_drp.services.replica.monitor", "--scope", env.cfg.replication.scope,
            "--site", f"FRDF_LOCAL_DISK={env.cfg.repo_of('frdf')}", "--state-dir", str(state_dir), "--once"]
    proc = subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == (CRASHED if crash else 0), f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.server
def test_distribution_and_ingest_resume_after_a_crash(ctx, env, setup: Path) -> None:
    scope = env.cfg.replication.scope
    dataset = names.rucio_dataset(ctx.config, "bootstrap", "frdf", "inputs", 0)

    # Registration killed before the close, then the next try killed after adding the rule.
    _crash(setup, "register.before_close", "distribute_bootstrap", "frdf")
    _crash(setup, "rule.after_add", "distribute_bootstrap", "frdf")
    rule = RuleRef.from_dict(actions.distribute_bootstrap(ctx, "frdf"))
    assert [r["id"] for r in env.root_client.list_did_rules(scope, dataset)] == [rule.rule_id]  # one rule
    assert env.root_client.get_did(scope, dataset)["open"] is False
    assert actions.distribute_bootstrap(ctx, "frdf") == rule.to_dict()
    wait_until(lambda: ctx.replica.rule_status([rule])[rule.rule_id].state is RuleState.OK, timeout=180)

    expected = ctx.replica.verify_ingested(rule).expected
    assert expected > 0
    state_dir = env.base / "monitor"
    _monitor(env, state_dir, crash="ingest.before_ingest")  # records and types in, no dataset yet
    assert ctx.replica.verify_ingested(rule).found == 0
    _monitor(env, state_dir, crash="ingest.after_ingest")  # datasets in, the rule not remembered as done
    assert ctx.replica.verify_ingested(rule).found == expected
    (line,) = [json.loads(ln) for ln in _monitor(env, state_dir).stdout.splitlines() if ln.startswith("{")]
    assert (line["ingested"], line["already"], line["failed"]) == (0, expected, {})
    assert _monitor(env, state_dir).stdout.strip() == ""  # remembered now: nothing to do
    # Each dataset once at FrDF: the registry holds exactly the rule's dataset IDs of each type.
    frdf = SiteButler("frdf", env.cfg.repo_of("frdf"))
    refs = ctx.replica.dataset_refs(dataset)
    for dtype in {r.datasetType.name for r in refs}:
        want = sorted(str(r.id) for r in refs if r.datasetType.name == dtype)
        have = sorted(str(r.id) for r in frdf.refs(dtype, sorted({r.run for r in refs if r.datasetType.name == dtype}))
                      if str(r.id) in set(want))
        assert have == want, dtype


@pytest.mark.server
def test_monitor_gives_up_after_bounded_refusals_until_the_file_changes(ctx, env) -> None:
    scope, replica = env.cfg.replication.scope, ctx.replica
    refs = ctx.butlers["usdf"].refs("bias", env.cfg.input_collections)[:2]
    replica.register("usdf", "Dataset/crash/refused", refs)
    rule = replica.add_rule("Dataset/crash/refused", "ukdf")
    wait_until(lambda: replica.rule_status([rule])[rule.rule_id].state is RuleState.OK, timeout=180)
    root = SiteButler("ukdf", env.cfg.repo_of("ukdf")).datastore_root()
    name = min(f["name"] for f in env.root_client.list_files(scope, "Dataset/crash/refused"))
    good = (root / name).read_bytes()
    (root / name).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # corrupted at the destination, same size
    monitor = ReplicaMonitor(env.root_client, scope, "UKDF_LOCAL_DISK", env.cfg.repo_of("ukdf"), env.base / "mon-b",
                             retry_seconds=0.0, max_refusals=3)
    for attempt in (1, 2, 3):  # refused before any ingest: the checksum is checked first
        (report,) = monitor.poll()
        assert list(report.failed) == [name] and "adler32" in report.failed[name], attempt
        assert report.ingested == (1 if attempt == 1 else 0)
    assert monitor.given_up() == {rule.rule_id: 3}
    assert monitor.poll() == [] and monitor.poll() == []  # given up: no checksum while the file is unchanged
    assert replica.verify_ingested(rule).found == 1
    (root / name).write_bytes(good)  # repaired (a new modification time): examined again
    st = (root / name).stat()
    os.utime(root / name, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    (report,) = monitor.poll()
    assert (report.ingested, report.failed) == (1, {}) and monitor.given_up() == {}
    assert replica.verify_ingested(rule).complete


def _campaign_copy(dest: Path, source: Path, **changes) -> Path:
    doc = yaml.safe_load(source.read_text())
    doc["pipeline"] = str((source.parent / doc["pipeline"]).resolve())
    doc.update(changes)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def _rebuilt(trigger):
    from airflow.sdk._shared.module_loading import import_string

    classpath, kwargs = trigger.serialize()
    return import_string(classpath)(**json.loads(json.dumps(kwargs)))


@pytest.mark.server
def test_replication_on_kill_leaves_or_deletes_the_rules_by_policy(ctx, env, monkeypatch) -> None:
    scope, replica = env.cfg.replication.scope, ctx.replica
    replica.register("usdf", "Dataset/crash/onkill", ctx.butlers["usdf"].refs("flat", env.cfg.input_collections)[:1])
    rule = replica.add_rule("Dataset/crash/onkill", "ukdf")
    for key, value in env.connection_env().items():
        monkeypatch.setenv(key, value)
    for policy, deleted in (("leave", False), ("cancel", True)):
        campaign = _campaign_copy(env.base / f"onkill-{policy}" / "campaign.yaml", env.campaign_file,
                                  on_kill={"replication": policy})
        params = {"campaign_file": str(campaign), "data_root": str(env.data_root), "sites": [], "generation": 0}
        trigger = ReplicationTrigger(params=params, conn_ids=[s.connections.replica for s in env.cfg.sites],
                                     rules=[rule.to_dict()], poll_interval=0.5, label="t")
        asyncio.run(_rebuilt(trigger).on_kill())
        # Rucio deletes softly: the rule expires within the hour, then the judge-cleaner removes it.
        (info,) = env.root_client.list_did_rules(scope, "Dataset/crash/onkill")
        assert (info["id"], info["expires_at"] is not None) == (rule.rule_id, deleted), policy
    # The replicate task run again keeps that rule (no second rule, no expiry).
    assert replica.add_rule("Dataset/crash/onkill", "ukdf") == rule
    (info,) = env.root_client.list_did_rules(scope, "Dataset/crash/onkill")
    assert (info["id"], info["expires_at"]) == (rule.rule_id, None)


# -- liveness, limits and the workflow on_kill policy (no Rucio) -----------------------------


def _stand_in_runner() -> subprocess.Popen:
    """A real detached process group standing in for a runner (a sleep)."""
    return subprocess.Popen(["sleep", "120"], start_new_session=True)


def test_runner_liveness_is_host_pid_and_start_time() -> None:
    proc = _stand_in_runner()
    try:
        record = identity(proc.pid)
        assert record["start"] is not None and runner_liveness(record) is Liveness.alive
        # The same pid with another start time is another process: the recorded one is dead.
        assert runner_liveness({**record, "start": str(int(record["start"]) - 1)}) is Liveness.dead
        assert runner_liveness({**record, "host": "another-host"}) is Liveness.other_host
    finally:
        proc.kill()
        proc.wait()
    assert runner_liveness(record) is Liveness.dead and process_start(proc.pid) is None


def _spec(tmp_path: Path) -> WorkflowSpec:
    graph = tmp_path / "g.qg"
    graph.write_bytes(b"")
    return WorkflowSpec(name="w_step1_usdf_g0", site="usdf", qgraph=str(graph), butler_repo=str(tmp_path),
                        output_run="A/b", submit_dir=str(tmp_path / "submit"))


def test_a_runner_recorded_on_another_host_is_not_assumed_dead(tmp_path: Path) -> None:
    spec, service = _spec(tmp_path), EmbeddedWorkflowService("usdf")
    ref = WorkflowRef(run_id=spec.name, name=spec.name, site="usdf", submit_dir=spec.submit_dir)
    state = Path(spec.submit_dir) / "state.json"
    atomic_write_json(state, {"name": spec.name, "site": "usdf", "submit_dir": spec.submit_dir, "state": "RUNNING",
                              "phase": "run-qbb", "attempt": 1, "pgid": os.getpid(), "host": "another-host",
                              "start": "1"})
    st = service.status([ref])[ref.run_id]
    assert st.state is WmsStates.UNKNOWN and not st.terminal and "another-host" in st.message
    assert service.submit(spec) == ref  # submitted: found, nothing started
    for call in (service.restart, service.cancel):
        with pytest.raises(WorkflowError, match="recorded on host 'another-host'"):
            call(ref)
    atomic_write_json(state, {"phase": "starting"}, merge=True)  # even a record not known to have started
    with pytest.raises(WorkflowError, match="recorded on host 'another-host'"):
        service.submit(spec)
    assert not (Path(spec.submit_dir) / "runner.log").exists() and read_json(state)["state"] == "RUNNING"


def _holder(path: Path) -> subprocess.Popen:
    """Another process holding an flock on ``path`` until killed."""
    code = ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_waits_end_with_an_error_naming_the_lock_and_the_limit(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    service = EmbeddedWorkflowService("usdf", timeouts={"submit_lock_seconds": 0.3})
    Path(spec.submit_dir).mkdir()
    holder = _holder(Path(spec.submit_dir) / "submit.lock")
    try:
        with pytest.raises(LockTimeoutError, match=r"submit\.lock: the submit lock of workflow w_step1_usdf_g0 "
                           r"\(limit: the campaign's timeouts\.submit_lock_seconds\) still held .* after 0\.3 s"):
            service.submit(spec)
    finally:
        holder.kill()
        holder.wait()
    repo = tmp_path / "repo"
    repo.mkdir()
    holder = _holder(repo / ".multisite-drp-write.lock")
    try:
        with pytest.raises(LockTimeoutError, match=rf"the write lock of butler {repo} .*timeouts\.lock_seconds.* "
                           r"after 0\.2 s"), site_write_lock(str(repo), 0.2):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_command_past_its_limit_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    with pytest.raises(MiddlewareTimeoutError, match=r"timed out after 0\.5 s \(limit: the campaign's "
                       r"timeouts\.command_seconds\) .*: bash -c"):
        run_command(["bash", "-c", f"sleep 120 & echo $! > {pid_file}; wait"], tmp_path / "cmd.log", timeout=0.5)
    grandchild = int(pid_file.read_text())
    wait_until(lambda: process_start(grandchild) is None, timeout=30, interval=0.1)
    assert "killed after 0.5 s" in (tmp_path / "cmd.log").read_text()


@pytest.mark.parametrize("policy", ["cancel", "leave"])
def test_workflow_on_kill_cancels_or_leaves_by_policy(policy: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DRP_USDF_WORKFLOW",
                       json.dumps({"conn_type": "generic", "extra": {"adapter": "embedded", "poll_interval": 0.1}}))
    campaign = _campaign_copy(tmp_path / "campaign.yaml", CAMPAIGN, on_kill={"workflows": policy})
    sdir = tmp_path / "submit"
    proc = _stand_in_runner()
    try:
        atomic_write_json(sdir / "state.json", {"name": "w", "site": "usdf", "submit_dir": str(sdir),
                                                "state": "RUNNING", "phase": "run-qbb", "attempt": 1,
                                                **identity(proc.pid)})
        params = {"campaign_file": str(campaign), "data_root": str(tmp_path), "sites": [], "generation": 0}
        trigger = WorkflowTrigger(params=params, conn_ids=["drp_usdf_workflow"], site="usdf",
                                  refs=[{"run_id": "w", "name": "w", "site": "usdf", "submit_dir": str(sdir)}],
                                  poll_interval=0.1, label="t")
        asyncio.run(_rebuilt(trigger).on_kill())
        if policy == "cancel":
            assert proc.wait(timeout=10) == -15 and read_json(sdir / "state.json")["state"] == "DELETED"
        else:
            assert proc.poll() is None and read_json(sdir / "state.json")["state"] == "RUNNING"
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    _child(*sys.argv[1:])
