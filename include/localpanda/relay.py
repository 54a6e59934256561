"""The local PanDA relay: a stand-in for PanDA and iDDS, which cannot run on this machine.

It is *not* PanDA. It speaks the one endpoint ctrl_bps_panda 30.0.0 talks to,
``POST {PANDA_URL_SSL}/relay_idds_command`` (gzip-compressed JSON body; ``args`` and
``kwargs`` are ``idds.common.utils.json_dumps`` strings; the reply is JSON ``[true,
result]`` or ``[false, "error"]``, enums encoded as iDDS encodes them), and it does what
PanDA's pilots would do with a submitted iDDS workflow: it runs each job's command (the
DomaPanDAWork ``executable`` with ``${IN/L}`` replaced by the job's pseudo-input name, so
ctrl_bps_panda's own edge-node decoder ``cmd_line_decoder`` runs it) in a fresh
``PILOT_HOME``, in dependency order, at most ``slots`` at a time, retrying a failed job up
to the work's ``maxAttempt``; the final work runs once every other job is done or failed
(BPS's finalJob), holding the site's ``db_limit`` lock if one is configured.

Commands: ``ping``, ``submit`` (a workflow step upload returns 0), ``get_requests`` (with
or without detail), ``get_request_id_by_name``, ``get_contents_output_ext``, ``abort``,
``retry`` (only failed and missing jobs run again, then the final job).

State lives on disk under the root (``requests/<id>/state.json``, written atomically;
``executions.jsonl`` one line per job attempt), so a restarted relay loses nothing: jobs
that were running are killed (by process group) and queued again.

Fault modes for tests (``POST /control``): ``auth_error`` (every command answers
``[true, "... Authentication no permission ..."]``), ``fail_jobs`` (substrings of job
names whose every attempt exits 1), ``unavailable_for`` (seconds the listening socket is
closed: connection refused, jobs keep running), ``slow_replies`` (seconds added to every
reply), ``kill_job`` (SIGKILL the next running job whose name contains it), ``clear``.
``GET /ping``, ``GET /stats`` (commands served, by name).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fcntl
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DONE = ("finished", "failed", "missing", "cancelled")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _atomic_write(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class Relay:
    """The requests, their jobs, and the pilot loop that runs them."""

    def __init__(self, root: Path, slots: int = 2, job_env: dict[str, str] | None = None,
                 site_locks: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.slots = max(1, int(slots))
        self.job_env = dict(job_env or {})
        self.site_locks = dict(site_locks or {})
        self.lock = threading.RLock()
        self.requests: dict[int, dict] = {}
        self.faults: dict[str, Any] = {}
        self.stats: dict[str, int] = {}
        self.running: dict[tuple[int, int, str], dict] = {}  # (request, task index, job) -> proc info
        self.stop = threading.Event()
        (self.root / "requests").mkdir(parents=True, exist_ok=True)
        self._load()

    # -- persistence ---------------------------------------------------------------------

    def _load(self) -> None:
        for d in sorted((self.root / "requests").iterdir()):
            state = d / "state.json"
            if not state.exists():
                continue
            req = json.loads(state.read_text())
            for task in req["tasks"]:
                for job in task["jobs"].values():
                    if job["state"] == "running":  # the relay died under it: kill and queue again
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(int(job.get("pgid") or 0) or -1, signal.SIGKILL)
                        job["state"] = "new"
            self.requests[req["request_id"]] = req
            self._save(req)

    def _save(self, req: dict) -> None:
        req["updated_at"] = _now()
        d = self.root / "requests" / str(req["request_id"])
        d.mkdir(parents=True, exist_ok=True)
        _atomic_write(d / "state.json", req)

    # -- commands ------------------------------------------------------------------------

    def command(self, name: str, args: list, kwargs: dict) -> Any:
        fn = getattr(self, "cmd_" + name, None)
        if fn is None:
            raise ValueError(f"the local PanDA relay does not implement iDDS command {name!r}")
        return fn(*args, **kwargs)

    def cmd_ping(self) -> dict:
        return {"Status": "OK"}

    def cmd_submit(self, workflow, username=None, userdn=None, use_dataset_name=False) -> int:
        if getattr(workflow, "is_workflow_step", False):
            return 0
        tasks = []
        works = workflow.get_all_works()
        for work in works:
            from lsst.ctrl.bps.panda.utils import extract_taskname

            label = re.sub(r"_\d+$", "", extract_taskname(work.task_name))  # without the chunk number
            final = "_finalJob_" in work.task_name
            jobs = {}
            for dep in work.dependency_map:
                jname = dep["name"].split("+", 1)[0]
                jobs[jname] = {"input": dep["name"], "deps": [[d["task"], d["inputname"].split("+", 1)[0]]
                                                              for d in dep.get("dependencies", [])],
                               "state": "new", "attempts": 0, "exit_code": None}
            tasks.append({"transform_id": 0, "workload_id": 0, "name": work.task_name, "label": label,
                          "site": work.task_site, "executable": work.executable, "final": final,
                          "maxattempt": int(getattr(work, "maxAttempt", 5) or 5), "jobs": jobs})
        with self.lock:
            rid = max(self.requests, default=0) + 1
            for i, t in enumerate(tasks):
                t["transform_id"] = rid * 100 + i + 1
                t["workload_id"] = rid * 1000 + i + 1
            req = {"request_id": rid, "name": workflow.name, "username": username or "localpanda",
                   "status": "Transforming", "created_at": _now(), "tasks": tasks, "retries": 0}
            self.requests[rid] = req
            self._save(req)
        return rid

    def _rows(self, req: dict, detail: bool) -> list[dict]:
        from idds.common.constants import RequestStatus

        head = {"request_id": req["request_id"], "name": req["name"], "username": req["username"],
                "status": RequestStatus[req["status"]], "created_at": req["created_at"],
                "updated_at": req.get("updated_at"), "workload_id": None, "request_type": None}
        if not detail:
            return [head]
        rows = []
        for t in req["tasks"]:
            states = [j["state"] for j in t["jobs"].values()]
            n = len(states)
            ok, bad, missing = states.count("finished"), states.count("failed"), states.count("missing")
            running, new = states.count("running"), states.count("new")
            if all(s in DONE for s in states):
                tstatus = "Finished" if ok == n else ("Failed" if ok == 0 else "SubFinished")
                if req["status"] == "Cancelled":
                    tstatus = "Cancelled"
            else:
                tstatus = "Transforming"
            rows.append({**head, "transform_id": t["transform_id"], "transform_workload_id": t["workload_id"],
                         "transform_name": t["name"], "transform_status": RequestStatus[tstatus],
                         "output_total_files": n, "output_processed_files": ok, "output_failed_files": bad,
                         "output_missing_files": missing, "output_processing_files": running,
                         "output_new_files": new, "input_new_files": new,
                         "output_coll_scope": "pseudo_dataset", "output_coll_name": t["name"]})
        return rows

    def cmd_get_requests(self, request_id=None, workload_id=None, with_detail=False, with_metadata=False, **_):
        with self.lock:
            reqs = [self.requests[int(request_id)]] if request_id is not None and int(request_id) in self.requests \
                else ([] if request_id is not None else list(self.requests.values()))
            return [row for r in reqs for row in self._rows(r, bool(with_detail))]

    def cmd_get_status(self, request_id=None, workload_id=None, with_detail=False, with_metadata=False):
        rows = self.cmd_get_requests(request_id, workload_id, with_detail)
        return "\n".join(f"{r['request_id']} {r['name']} {r['status'].name}" for r in rows)

    def cmd_get_request_id_by_name(self, name: str) -> dict:
        with self.lock:
            ids = [rid for rid, r in self.requests.items() if r["name"] == name]
        return {name: max(ids)} if ids else {}

    def cmd_get_contents_output_ext(self, request_id=None, workload_id=None, transform_id=None,
                                    group_by_jedi_task_id=False) -> dict:
        with self.lock:
            req = self.requests[int(request_id)]
            task = next(t for t in req["tasks"] if t["workload_id"] == int(workload_id))
            return {str(workload_id): [{"name": j, "trans_exit_code": v["exit_code"]} for j, v in task["jobs"].items()]}

    def cmd_abort(self, request_id=None, workload_id=None):
        with self.lock:
            req = self.requests[int(request_id)]
            if req["status"] in ("Finished", "SubFinished", "Failed", "Cancelled"):
                return [0, "Request is already terminated"]
            for (rid, ti, jname), info in list(self.running.items()):
                if rid == req["request_id"]:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(info["proc"].pid, signal.SIGKILL)
            for t in req["tasks"]:
                for j in t["jobs"].values():
                    if j["state"] in ("new", "running"):
                        j["state"] = "cancelled"
            req["status"] = "Cancelled"
            self._save(req)
        return [0, "Command registered successfully"]

    def cmd_retry(self, request_id=None, workload_id=None):
        with self.lock:
            req = self.requests[int(request_id)]
            if req["status"] not in ("SubFinished", "Failed", "Cancelled"):
                return [0, f"Request status {req['status']} cannot be retried"]
            for t in req["tasks"]:
                for j in t["jobs"].values():
                    if j["state"] in ("failed", "missing", "cancelled") or t["final"]:
                        j["state"], j["attempts"] = "new", 0
            req["status"] = "Transforming"
            req["retries"] += 1
            self._save(req)
        return [0, "Command registered successfully"]

    # -- the pilots ------------------------------------------------------------------------

    def _log_execution(self, rec: dict) -> None:
        with open(self.root / "executions.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    def _job_ready(self, req: dict, task: dict, job: dict) -> str | None:
        """'run', 'missing' or None (wait)."""
        if task["final"]:
            others = [j for t in req["tasks"] if not t["final"] for j in t["jobs"].values()]
            return "run" if all(j["state"] in DONE for j in others) else None
        by_name = {t["name"]: t for t in req["tasks"]}
        states = [by_name[tn]["jobs"][jn]["state"] for tn, jn in job["deps"] if tn in by_name]
        if any(s in ("failed", "missing", "cancelled") for s in states):
            return "missing"
        return "run" if all(s == "finished" for s in states) else None

    def _launch(self, req: dict, ti: int, jname: str) -> None:
        task = req["tasks"][ti]
        job = task["jobs"][jname]
        lock_fh = None
        if task["final"] and task["site"] in self.site_locks:
            lock_fh = open(self.site_locks[task["site"]], "a+")  # noqa: SIM115 - held while the job runs
            try:
                fcntl.flock(lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock_fh.close()
                return  # another writer has the site's database: try at the next pass
        job["attempts"] += 1
        home = self.root / "requests" / str(req["request_id"]) / "pilots" / f"{jname}.{job['attempts']}"
        home.mkdir(parents=True, exist_ok=True)
        cmd = task["executable"].replace("${IN/L}", job["input"])
        failing = any(p in jname for p in self.faults.get("fail_jobs") or [])
        if failing:
            cmd = "echo 'localpanda: fault fail_jobs'; exit 1"
        env = {**os.environ, **self.job_env, "PILOT_HOME": str(home)}
        with open(home / "pilot.log", "ab") as log:
            proc = subprocess.Popen(["bash", "-c", cmd], cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        job["state"], job["pgid"] = "running", proc.pid
        self.running[(req["request_id"], ti, jname)] = {"proc": proc, "started": time.time(), "lock": lock_fh}
        self._save(req)

    def _reap(self) -> None:
        for key, info in list(self.running.items()):
            code = info["proc"].poll()
            if code is None:
                pattern = self.faults.get("kill_job")
                if pattern and pattern in key[2]:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(info["proc"].pid, signal.SIGKILL)
                    self.faults.pop("kill_job", None)
                continue
            del self.running[key]
            if info["lock"] is not None:
                info["lock"].close()
            rid, ti, jname = key
            req = self.requests[rid]
            task = req["tasks"][ti]
            job = task["jobs"][jname]
            self._log_execution({"request_id": rid, "request": req["name"], "task": task["name"],
                                 "label": task["label"], "job": jname, "attempt": job["attempts"],
                                 "exit_code": code, "started": info["started"], "finished": time.time()})
            if job["state"] == "cancelled":
                continue
            job["exit_code"] = code
            if code == 0:
                job["state"] = "finished"
            elif job["attempts"] < task["maxattempt"]:
                job["state"] = "new"
            else:
                job["state"] = "failed"
            self._save(req)

    def _finish(self, req: dict) -> None:
        jobs = [j for t in req["tasks"] for j in t["jobs"].values()]
        if req["status"] != "Transforming" or not all(j["state"] in DONE for j in jobs):
            return
        work = [j for t in req["tasks"] if not t["final"] for j in t["jobs"].values()]
        ok = sum(j["state"] == "finished" for j in work)
        all_ok = all(j["state"] == "finished" for j in jobs)
        req["status"] = "Finished" if all_ok else ("Failed" if ok == 0 else "SubFinished")
        self._save(req)

    def pilot_loop(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                self._reap()
                for req in self.requests.values():
                    if req["status"] != "Transforming":
                        continue
                    for ti, task in enumerate(req["tasks"]):
                        for jname, job in task["jobs"].items():
                            if job["state"] != "new":
                                continue
                            verdict = self._job_ready(req, task, job)
                            if verdict == "missing":
                                job["state"] = "missing"
                                self._save(req)
                            elif verdict == "run" and len(self.running) < self.slots:
                                self._launch(req, ti, jname)
                    self._finish(req)
            self.stop.wait(0.2)

    def kill_all(self) -> None:
        with self.lock:
            for info in self.running.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(info["proc"].pid, signal.SIGKILL)


def _reply(ok: bool, result: Any) -> bytes:
    from idds.common.utils import json_dumps

    return json_dumps([ok, result]).encode()


def make_handler(relay: Relay, server_ref: dict):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args) -> None:  # quiet: one line per command in the relay's log instead
            pass

        def _send(self, body: bytes, code: int = 200, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/ping"):
                return self._send(b'{"Status": "OK"}')
            if self.path.rstrip("/").endswith("/stats"):
                with relay.lock:
                    body = json.dumps({"commands": dict(relay.stats), "faults": relay.faults,
                                       "running": len(relay.running)})
                return self._send(body.encode())
            return self._send(b"not found", 404, "text/plain")

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/").endswith("/control"):
                faults = json.loads(raw or b"{}")
                with relay.lock:
                    if faults.pop("clear", False):
                        relay.faults.clear()
                    relay.faults.update(faults)
                self._send(json.dumps(relay.faults).encode())
                if faults.get("unavailable_for"):
                    threading.Thread(target=server_ref["outage"], args=(float(faults["unavailable_for"]),),
                                     daemon=True).start()
                return None
            if not self.path.rstrip("/").endswith("/relay_idds_command"):
                return self._send(b"not found", 404, "text/plain")
            from idds.common.utils import json_loads

            body = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
            data = json.loads(body)
            name = data["command_name"].split("+", 1)[0]
            with relay.lock:
                relay.stats[name] = relay.stats.get(name, 0) + 1
                faults = dict(relay.faults)
            if faults.get("slow_replies"):
                time.sleep(float(faults["slow_replies"]))
            if faults.get("auth_error"):
                return self._send(_reply(True, "Authentication no permission for this user (localpanda fault)"))
            args = json_loads(data["args"]) if data.get("args") else []
            kwargs = json_loads(data["kwargs"]) if data.get("kwargs") else {}
            try:
                result = relay.command(name, list(args), dict(kwargs))
            except Exception as exc:  # noqa: BLE001 - iDDS answers errors as [false, message]
                return self._send(_reply(False, f"{type(exc).__name__}: {exc}"))
            print(f"{_now()} {name} {json.dumps(kwargs, default=str)[:200]}", flush=True)
            return self._send(_reply(True, result))

    return Handler


def serve(root: Path, port: int, slots: int, job_env: dict, site_locks: dict) -> None:
    relay = Relay(root, slots=slots, job_env=job_env, site_locks=site_locks)
    state: dict[str, Any] = {}

    def start_server() -> ThreadingHTTPServer:
        ThreadingHTTPServer.allow_reuse_address = True
        srv = ThreadingHTTPServer(("127.0.0.1", port), make_handler(relay, state))
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return srv

    def outage(seconds: float) -> None:
        srv = state["server"]
        srv.shutdown()
        srv.server_close()
        print(f"{_now()} fault: unavailable for {seconds:.0f} s", flush=True)
        time.sleep(seconds)
        with relay.lock:
            relay.faults.pop("unavailable_for", None)
        for _ in range(100):
            try:
                state["server"] = start_server()
                break
            except OSError:
                time.sleep(0.1)
        print(f"{_now()} back after the outage", flush=True)

    state["outage"] = outage
    state["server"] = start_server()

    def _stop(signum, frame) -> None:
        relay.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"{_now()} local PanDA relay (a stand-in for PanDA and iDDS) on 127.0.0.1:{port}, root {root}, "
          f"{slots} slots", flush=True)
    try:
        relay.pilot_loop()
    finally:
        relay.kill_all()
        state["server"].shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m localpanda.relay")
    p.add_argument("--root", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--config", help="JSON with job_env and site_locks")
    a = p.parse_args(argv)
    conf = json.loads(Path(a.config).read_text()) if a.config else {}
    os.environ.setdefault("PANDA_BEHIND_REAL_LB", "1")
    serve(Path(a.root), a.port, a.slots, conf.get("job_env") or {}, conf.get("site_locks") or {})
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
