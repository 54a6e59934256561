"""The local PanDA relay (include/localpanda), driven by the real ctrl_bps_panda client code.

PanDA and iDDS cannot run on this machine. ``localpanda`` stands in for them: a loopback
HTTP server that speaks ``/relay_idds_command`` as ctrl_bps_panda 30.0.0 calls it and runs
the submitted jobs itself, as PanDA's pilots would. These tests build workflows with
ctrl_bps's GenericWorkflow and ctrl_bps_panda's own conversion to iDDS (DomaPanDAWork, the
final work behind an AndCondition, ``add_decoder_prefix``), submit them with
``PanDAService.submit`` and follow them with ``get_status``/``report``/``cancel``/``restart``
and ``get_idds_client`` - the same calls ``bps`` makes - and check what really happened:
marker files written by the jobs, the relay's executions.jsonl, processes gone.

One test runs the jobs through ctrl_bps_panda's real edge-node decoder
(``lsst.ctrl.bps.panda.edgenode.cmd_line_decoder``); it costs ~3 s per job here (it imports
lsst.daf.butler), so the others use ``quick_decoder.py``, which takes the same arguments.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_until
from tests.localpanda._bps import build_and_submit, pid_alive
from tests.localpanda.conftest import LOCK_SITE

pytestmark = pytest.mark.server


def _state(sub):
    from lsst.ctrl.bps import WmsStates

    state, _ = sub.service.get_status(str(sub.request_id))
    return None if state is WmsStates.RUNNING else state


def _wait_terminal(sub, timeout: float = 60.0):
    return wait_until(lambda: _state(sub), timeout=timeout, interval=0.1)


def _runs(relay, sub) -> dict[str, list[dict]]:
    """Executions of this request by job (the job's name without its pseudo-file suffix)."""
    by_job: dict[str, list[dict]] = defaultdict(list)
    for e in relay.executions():
        if e["request_id"] == sub.request_id:
            by_job[e["label"] if e["label"] == "finalJob" else e["job"].split("+")[0]].append(e)
    return dict(by_job)


def _job(relay, sub, name: str) -> dict:
    rec = relay.request(sub.request_id)
    for task_jobs in rec["jobs"]:
        for job in task_jobs:
            if job["name"].split("+")[0] == name or (name == "finalJob" and job["name"].startswith("pure_pseudo")):
                return job
    raise KeyError(name)


def test_real_decoder_runs_jobs_in_dependency_order(relay, work) -> None:
    from lsst.ctrl.bps import WmsStates
    from lsst.ctrl.bps.panda.utils import get_idds_client

    scripts = {"a": 'echo "$NAME $PILOT_HOME $PWD $LOCALPANDA_TEST_ENV" >> "$MARKER"; cat "$FILE"',
               "b": 'echo "$NAME" >> "$MARKER"; cat "$FILE"',
               "finalJob": 'echo final >> "$MARKER"; cat "$FILE"'}
    sub = build_and_submit(work, "wfreal", [("a_1", "a", []), ("b_1", "b", ["a_1"])], scripts, real_decoder=True)
    assert _wait_terminal(sub, timeout=120) is WmsStates.SUCCEEDED
    lines = sub.lines()
    name, pilot_home, cwd, job_env = lines[0].split()
    assert name == "a_1" and pilot_home == cwd and job_env == "from-job-env"
    assert lines[1:] == ["b_1", "final"]  # dependency order, final last
    runs = _runs(relay, sub)
    assert sorted(runs) == ["a_1", "b_1", "finalJob"]
    assert all(len(r) == 1 and r[0]["exit_code"] == 0 and r[0]["attempt"] == 1 for r in runs.values())
    assert runs["a_1"][0]["workdir"] == pilot_home  # a fresh working directory per job
    for (run,) in runs.values():
        # The decoder fetched the distributed file into PILOT_HOME and the job read it there.
        assert (Path(run["workdir"]) / "payload.txt").is_file()
        assert "payload of wfreal" in Path(run["log"]).read_text()
    assert runs["finalJob"][0]["started"] >= max(r[0]["finished"] for k, r in runs.items() if k != "finalJob")

    reports, _ = sub.service.report(str(sub.request_id))
    (rep,) = reports
    assert (rep.state, rep.total_number_jobs, rep.run) == (WmsStates.SUCCEEDED, 3, "wfreal")
    assert rep.job_state_counts[WmsStates.SUCCEEDED] == 3
    assert rep.run_summary == "a:1;b:1;finalJob:1"
    assert sub.service.list_submitted_jobs(wms_id=sub.request_id) == [sub.request_id]
    client = get_idds_client(sub.config)
    assert client.get_request_id_by_name(name="wfreal") == (0, [True, {"wfreal": sub.request_id}])
    assert client.get_request_id_by_name(name="no-such-request") == (0, [True, {}])


def test_failed_job_final_runs_anyway_and_retry_reruns_only_failed(relay, work) -> None:
    from lsst.ctrl.bps import WmsStates
    from lsst.ctrl.bps.panda.utils import get_idds_client

    relay.control(fail_jobs=["a_2"])
    jobs = [("a_1", "a", []), ("a_2", "a", []), ("b_1", "b", ["a_1"]), ("b_2", "b", ["a_2"])]
    sub = build_and_submit(work, "wffail", jobs, {}, attempts=2)
    assert _wait_terminal(sub) is WmsStates.FAILED  # SubFinished: get_status says FAILED
    rows = get_idds_client(sub.config).get_requests(request_id=sub.request_id, with_detail=False)[1][1]
    assert rows[0]["status"]["attributes"]["_name_"] == "SubFinished"
    runs = _runs(relay, sub)
    assert [(e["attempt"], e["exit_code"], e["fault"]) for e in runs["a_2"]] == [(1, 1, "fail_jobs"), (2, 1, "fail_jobs")]
    assert "b_2" not in runs  # its input failed for good: missing, never run
    assert all(len(runs[j]) == 1 for j in ("a_1", "b_1", "finalJob"))
    others = [e for k, r in runs.items() if k != "finalJob" for e in r]
    assert runs["finalJob"][0]["started"] >= max(e["finished"] for e in others)  # after everything, failures too
    assert sub.lines()[-1] == "final" and "b_2" not in sub.lines()

    reports, _ = sub.service.report(str(sub.request_id), return_exit_codes=True)
    (rep,) = reports
    assert rep.state is WmsStates.SUCCEEDED  # report() maps SubFinished to SUCCEEDED, with the counts
    assert rep.total_number_jobs == 5
    assert (rep.job_state_counts[WmsStates.SUCCEEDED], rep.job_state_counts[WmsStates.FAILED],
            rep.job_state_counts[WmsStates.PRUNED]) == (3, 1, 1)
    assert rep.job_summary["a"][WmsStates.FAILED] == 1 and rep.job_summary["b"][WmsStates.PRUNED] == 1
    assert rep.exit_code_summary["a"] == [1]

    relay.clear_faults()
    before = len(relay.executions())
    wms_id, _, message = sub.service.restart(str(sub.request_id))
    assert wms_id == str(sub.request_id) and "Command registered" in message
    assert _wait_terminal(sub) is WmsStates.SUCCEEDED
    rerun = sorted(e["label"] if e["label"] == "finalJob" else e["job"].split("+")[0]
                   for e in relay.executions()[before:] if e["request_id"] == sub.request_id)
    assert rerun == ["a_2", "b_2", "finalJob"]  # finished jobs are not rerun; the final job runs again
    lines = sub.lines()
    assert lines.count("a_1") == lines.count("b_1") == 1 and lines.count("final") == 2 and lines[-1] == "final"
    (rep,), _ = sub.service.report(str(sub.request_id))
    assert rep.job_state_counts[WmsStates.SUCCEEDED] == 5


def test_cancel_kills_the_running_job(relay, work) -> None:
    from lsst.ctrl.bps import WmsStates

    sub = build_and_submit(work, "wfcancel", [("s_1", "s", []), ("t_1", "t", ["s_1"])],
                           {"s": 'echo $$ > "$MARKER.pid"; exec sleep 60'})
    pidfile = Path(f"{sub.marker}.pid")
    pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=20, interval=0.05))
    assert pid_alive(pid)
    ok, message = sub.service.cancel(str(sub.request_id))
    assert ok and "Command registered" in message
    wait_until(lambda: not pid_alive(pid), timeout=5, interval=0.05)
    assert sub.service.get_status(str(sub.request_id))[0] is WmsStates.DELETED
    (rep,), _ = sub.service.report(str(sub.request_id))
    assert rep.state is WmsStates.DELETED
    rec = relay.request(sub.request_id)
    assert rec["status"] == "Cancelled"
    assert [j["state"] for tj in rec["jobs"] for j in tj] == ["cancelled"] * 3
    assert [t["created"] for t in rec["tasks"]] == [True, True, False]  # the final task never came
    time.sleep(0.5)
    runs = _runs(relay, sub)
    assert list(runs) == ["s_1"] and runs["s_1"][0]["cancelled"] and runs["s_1"][0]["exit_code"] == 137


def test_relay_restart_resumes_and_reruns_only_the_interrupted_job(relay, work) -> None:
    from lsst.ctrl.bps import WmsStates

    scripts = {
        "slow": 'echo "$NAME start" >> "$MARKER"; if [ ! -e "$MARKER.once" ]; then touch "$MARKER.once"; '
                'echo $$ > "$MARKER.slowpid"; sleep 60; fi; echo "$NAME done" >> "$MARKER"',
        "short": 'echo "$NAME start" >> "$MARKER"; sleep 1.5; echo "$NAME done" >> "$MARKER"',
    }
    jobs = [("x_1", "x", []), ("slow_1", "slow", ["x_1"]), ("short_1", "short", ["x_1"])]
    sub = build_and_submit(work, "wfrestart", jobs, scripts)
    slowpid = Path(f"{sub.marker}.slowpid")
    wait_until(lambda: slowpid.exists() and slowpid.read_text().strip() and "short_1 start" in sub.lines(),
               timeout=20, interval=0.05)
    slow_pid = int(slowpid.read_text())
    url, old = relay.url(), relay.status()["pid"]
    os.kill(old, signal.SIGKILL)  # the relay dies; its jobs (own sessions) go on
    wait_until(lambda: not relay.status()["running"], timeout=5, interval=0.05)
    assert pid_alive(slow_pid)
    # The short job ends while no relay runs; its pilot leaves the exit code.
    exit_file = Path(_job(relay, sub, "short_1")["exit_file"])
    wait_until(exit_file.exists, timeout=10, interval=0.05)
    assert relay.up() == url and relay.status()["pid"] != old  # same port, new relay
    wait_until(lambda: not pid_alive(slow_pid), timeout=10, interval=0.05)  # killed, by process group
    assert _wait_terminal(sub) is WmsStates.SUCCEEDED
    runs = _runs(relay, sub)
    assert [e["status"] for e in runs["slow_1"]] == ["interrupted", "finished"]
    assert [e["attempt"] for e in runs["slow_1"]] == [1, 2]
    assert [(e["status"], e["recovered"]) for e in runs["short_1"]] == [("finished", True)]
    assert len(runs["x_1"]) == len(runs["finalJob"]) == 1
    lines = sub.lines()
    assert (lines.count("x_1"), lines.count("short_1 start"), lines.count("slow_1 start"),
            lines.count("slow_1 done"), lines.count("final")) == (1, 1, 2, 1, 1)


def test_final_job_holds_the_site_write_lock(relay, work) -> None:
    """BPS's finalJob has ``concurrencyLimit: db_limit``; here the final job of a request at a
    computeSite in ``site_locks`` holds the same flock as ``site_write_lock``."""
    from lsst.ctrl.bps import WmsStates
    from multisite_drp.services.butler import site_write_lock

    final = 'touch "$MARKER.final-started"; sleep 0.5; echo final >> "$MARKER"'
    with site_write_lock(str(relay.lock_repo)):
        locked = build_and_submit(work, "wflock", [("p_1", "p", [])], {"finalJob": final}, site=LOCK_SITE)
        free = build_and_submit(work, "wfnolock", [("q_1", "q", [])], {"finalJob": final}, site="SITE_A")
        assert _wait_terminal(free) is WmsStates.SUCCEEDED  # another site's final job does not wait
        wait_until(lambda: _job(relay, locked, "finalJob")["state"] == "running", timeout=10, interval=0.05)
        time.sleep(0.5)
        assert locked.lines() == ["p_1"] and not Path(f"{locked.marker}.final-started").exists()
        log = Path(_job(relay, locked, "finalJob")["log"])
        assert "waiting for the site lock" in log.read_text() and "holding" not in log.read_text()
    # Released: the final job takes the lock; ours waits for it in turn.
    wait_until(Path(f"{locked.marker}.final-started").exists, timeout=10, interval=0.02)
    with site_write_lock(str(relay.lock_repo)):
        assert locked.lines() == ["p_1", "final"]
    assert _wait_terminal(locked) is WmsStates.SUCCEEDED
    assert "holding the site lock" in log.read_text()


def test_auth_error_fault(relay) -> None:
    from lsst.ctrl.bps import BpsConfig, WmsStates
    from lsst.ctrl.bps.panda import PanDAService
    from lsst.ctrl.bps.panda.utils import get_idds_client

    config = BpsConfig({})
    service = PanDAService(config)
    assert service.ping() == (0, None)
    relay.control(auth_error=True)
    ret = get_idds_client(config).ping()
    assert ret[0] == 0 and ret[1][0] is True and "Authentication no permission" in ret[1][1]
    assert service.ping()[0] == -1
    assert service.get_status("1")[0] is WmsStates.UNKNOWN
    relay.clear_faults()
    assert service.ping() == (0, None)


def test_slow_replies_and_unavailable_relay(relay, work) -> None:
    from lsst.ctrl.bps import WmsStates
    from lsst.ctrl.bps.panda.utils import get_idds_client

    client = get_idds_client({})
    relay.control(slow_replies=0.6)
    t0 = time.monotonic()
    assert client.ping() == (0, [True, {"Status": "OK"}])
    assert time.monotonic() - t0 >= 0.6
    relay.control(slow_replies=0)

    sub = build_and_submit(work, "wfoutage", [("o_1", "o", [])],
                           {"o": 'echo "$NAME start" >> "$MARKER"; sleep 0.7; echo "$NAME done" >> "$MARKER"'})
    wait_until(lambda: "o_1 start" in sub.lines(), timeout=20, interval=0.05)
    t0, pid = time.monotonic(), relay.status()["pid"]
    relay.control(unavailable_for=3)
    ret = client.ping()
    assert ret[0] == 255 and "connect" in str(ret[1]).lower()  # connection refused
    assert sub.service.ping()[0] == -1
    assert relay.up() == relay.url() and relay.status()["pid"] == pid  # alive, deliberately away: reused
    wait_until(lambda: "o_1 done" in sub.lines(), timeout=5, interval=0.05)  # jobs keep running
    assert time.monotonic() - t0 < 2.5 and client.ping()[0] == 255
    wait_until(lambda: client.ping()[0] == 0, timeout=10, interval=0.1)
    assert time.monotonic() - t0 >= 2.8
    assert _wait_terminal(sub) is WmsStates.SUCCEEDED


def test_kill_job_fault_is_a_failed_attempt_then_retried(relay, work) -> None:
    from lsst.ctrl.bps import WmsStates

    relay.control(kill_job="k_1")
    sub = build_and_submit(work, "wfkill", [("k_1", "k", [])],
                           {"k": 'echo "$NAME start" >> "$MARKER"; sleep 1; echo "$NAME done" >> "$MARKER"'}, attempts=2)
    assert _wait_terminal(sub) is WmsStates.SUCCEEDED
    runs = _runs(relay, sub)
    assert [(e["attempt"], e["exit_code"], e["fault"]) for e in runs["k_1"]] == [(1, 137, "kill_job"), (2, 0, None)]
    assert sub.lines().count("k_1 done") == 1
    assert relay.control()["kill_job"] is None  # one-shot


def test_wire_format_steps_and_command_counts(relay, work) -> None:
    from idds.common.utils import json_dumps
    from lsst.ctrl.bps import WmsStates
    from lsst.ctrl.bps.panda.utils import get_idds_client

    submits = relay.stats()["commands"].get("submit", 0)
    # A small maxRequestLength makes PanDAService.submit upload the dependency maps as
    # workflow steps first (each answered 0), then the workflow that refers to them.
    sub = build_and_submit(work, "wfsteps", [("v_1", "v", []), ("w_1", "w", ["v_1"])], {},
                           extra_config={"maxRequestLength": 600})
    assert _wait_terminal(sub) is WmsStates.SUCCEEDED
    assert sub.lines() == ["v_1", "w_1", "final"]
    n_submits = relay.stats()["commands"]["submit"] - submits
    steps = json.loads((relay.root / "steps" / f"{sub.workflow.idds_client_workflow.get_internal_id()}.json").read_text())
    assert n_submits >= 2 and sorted(steps) == sorted(w.get_work_name() for w in
                                                      sub.workflow.idds_client_workflow.template.works.values())

    before = relay.stats()["commands"]
    for _ in range(3):
        sub.service.get_status(str(sub.request_id))
    after = relay.stats()["commands"]
    assert after["get_requests"] - before["get_requests"] == 3

    client = get_idds_client(sub.config)
    status, (ok, rows) = client.get_requests(request_id=sub.request_id, with_detail=False)
    assert status == 0 and ok and rows[0]["status"] == {
        "class": "RequestStatus", "module": "idds.common.constants",
        "attributes": {"_value_": 3, "_name_": "Finished", "_sort_order_": 3}}
    status, (ok, detail) = client.get_requests(request_id=sub.request_id, with_detail=True)
    assert [r["transform_name"] for r in detail] == ["wfsteps_01_v_01", "wfsteps_02_w_01", "wfsteps_03_finalJob_01"]
    assert detail[0]["transform_status"]["attributes"]["_name_"] == "Finished"
    assert (detail[0]["output_total_files"], detail[0]["output_processed_files"]) == (1, 1)
    wid = detail[0]["transform_workload_id"]
    status, (ok, contents) = client.get_contents_output_ext(request_id=sub.request_id, workload_id=wid)
    assert list(contents) == [str(wid)] and [c["trans_exit_code"] for c in contents[str(wid)]] == [0]
    assert sub.request_id in [r["request_id"] for r in client.get_requests()[1][1]]  # no id: every request
    status, (ok, table) = client.get_status(request_id=sub.request_id)  # ClientManager's text table
    assert ok and "workflow:wfsteps Finished" in table

    # panda-client without compression sends a url-encoded form; the relay takes that too.
    import pandaclient.Client as pc

    assert pc.call_idds_command("ping", dumper=json_dumps, compress=False, manager=True) == \
        (0, [True, {"Status": "OK"}])
    unknown = client.no_such_command(request_id=1)
    assert unknown[0] == 0 and unknown[1][0] is False and "not supported" in unknown[1][1]
    with urllib.request.urlopen(f"{relay.url()}/ping", timeout=5) as resp:
        assert resp.status == 200


def test_up_is_idempotent_and_cli_status(relay) -> None:
    pid = relay.status()["pid"]
    assert relay.up() == relay.url() and relay.status()["pid"] == pid
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "localpanda", "status", "--root", str(relay.root)],
                         capture_output=True, text=True, env=env, timeout=30, check=True)
    status = json.loads(out.stdout)
    assert status["running"] and status["ping"] and status["pid"] == pid and status["url"] == relay.url()
    assert status["site_locks"] == {LOCK_SITE: str(Path(relay.lock_repo).resolve())}
