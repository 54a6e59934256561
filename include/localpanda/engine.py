"""What PanDA and iDDS would do with a submitted workflow, done on this machine.

PanDA and iDDS cannot run here; the relay (:mod:`localpanda.server`) hands every decoded
command to the :class:`Engine`, which keeps the requests, their transforms (PanDA tasks)
and jobs, and runs the jobs itself as PanDA's pilots would.

Model
-----
* A submitted iDDS ``Workflow`` becomes a *request*. Each ``DomaPanDAWork`` becomes a
  *task* (iDDS transform / PanDA task) whose jobs are the entries of its
  ``dependency_map``: ``{"name": pseudo_input_name, "dependencies": [{"task": work_name,
  "inputname": job_name}, ...]}``. Works that are the ``true_works`` (or ``false_works``)
  of a condition (ctrl_bps_panda's finalJob, attached by an ``AndCondition`` of the sink
  works' ``is_terminated``) are *conditional*: their transform is created only when the
  condition fires, i.e. when the works it names have terminated - successfully or not.
  Until then iDDS has no transform for them, and neither do the detail rows here.
* A job is ``new`` (waiting or ready), ``running``, ``finished``, ``failed`` (attempts
  exhausted), ``missing`` (a dependency failed for good, so it never runs) or
  ``cancelled``. A job is ready when every dependency is ``finished``. Each attempt runs
  ``bash -c <work.executable with ${IN/L} replaced by the job name>`` through
  :mod:`localpanda.pilot`, in a fresh working directory (``PILOT_HOME`` and cwd), output
  to a per-attempt log, in its own process group, at most ``slots`` at a time. A job is
  tried at most ``work.maxAttempt`` times (ctrl_bps_panda sets it from
  ``numberOfRetries``, default 3; DomaPanDAWork's own default is 5).
* Request status: New -> Transforming -> Finished (every job finished) / SubFinished (some
  finished, some not) / Failed (none finished) / Cancelled. Transforms likewise.
* ``retry`` re-queues the failed, missing and cancelled jobs with a fresh attempt budget
  and gates the conditional (final) tasks again, so the final job runs once more at the
  end; finished jobs are not rerun. ``abort`` kills the running jobs (SIGKILL to their
  process groups) and cancels the rest.

On disk (``<root>``), written atomically: ``requests/<id>/workflow.json`` (the submit
command as received: the ``args``/``kwargs`` strings), ``requests/<id>/request.json``
(request and tasks), ``requests/<id>/jobs.json`` (the jobs table: state, attempts, exit
code, start/end, pid), ``requests/<id>/work/`` (working directories) and
``requests/<id>/logs/`` (one log and one exit-code file per attempt), ``steps/`` (workflow
steps uploaded before a big workflow), ``counters.json`` and the append-only
``executions.jsonl`` (one line per ended attempt). A restarted relay reloads everything;
a job recorded as running is killed if its process group still lives and re-queued as a
new attempt (``"interrupted": true`` in executions.jsonl; an interrupted attempt does not
count against ``maxAttempt``), unless it ended while the relay was down and its pilot left
an exit code, which is then taken as the attempt's result.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localpanda import _procs

log = logging.getLogger("localpanda.engine")

PILOT = Path(__file__).with_name("pilot.py")
#: The lock file name of ``multisite_drp.services.butler.site_write_lock`` in a repository.
SITE_LOCK_NAME = ".multisite-drp-write.lock"

TERMINAL_JOB = frozenset({"finished", "failed", "missing", "cancelled"})
TERMINAL_TASK = frozenset({"Finished", "SubFinished", "Failed", "Cancelled", "Expired"})
TERMINAL_REQUEST = TERMINAL_TASK
BAD_JOB = frozenset({"failed", "missing", "cancelled"})

_PREDICATES: dict[str, frozenset[str]] = {
    "is_terminated": TERMINAL_TASK,
    "is_finished": frozenset({"Finished"}),
    "is_subfinished": frozenset({"SubFinished"}),
    "is_failed": frozenset({"Failed"}),
    "is_expired": frozenset({"Expired"}),
    "is_cancelled": frozenset({"Cancelled"}),
}


def task_label(task_name: str) -> str:
    """The BPS label of a task name ``<wf>_NN_<label>_NN``.

    ctrl_bps_panda's ``extract_taskname`` (what follows the last ``_<digits>_``) followed
    by ``aggregate_by_basename``'s removal of the chunk suffix; re-implemented here so the
    relay does not import the LSST stack.
    """
    s = task_name.strip().strip("'\"")
    matches = re.findall(r"_(\d+)_", s)
    if matches:
        last = matches[-1]
        s = s[s.rfind(f"_{last}_") + len(last) + 2:]
    return re.sub(r"_\d+$", "", s)


def matches(patterns: Iterable[str] | str | None, job: Mapping[str, Any], task: Mapping[str, Any]) -> bool:
    """Does a fault pattern name this job?

    A pattern with glob characters (``*?[``) is matched (fnmatch) against the job name, the
    task label and the task name; otherwise it matches if it is a substring of the job
    name, or equals the label or the task name.
    """
    if not patterns:
        return False
    if isinstance(patterns, str):
        patterns = [patterns]
    name, label, tname = job["name"], task["label"], task["task_name"]
    for pat in patterns:
        if not pat:
            continue
        if any(c in pat for c in "*?["):
            if any(fnmatch.fnmatchcase(s, pat) for s in (name, label, tname)):
                return True
        elif pat in name or pat == label or pat == tname:
            return True
    return False


def _utc(ts: float | None) -> datetime | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


# ---------------------------------------------------------------------------- workflow parsing
def _dependency_map(work: Any, step_data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A work's dependency map, wherever the client put it.

    Small workflows carry it in the work (possibly zipped: ``idds_zip:...``); a workflow
    split into steps (``Workflow.split_workflow_to_steps``) carries
    ``{"idds_dependency_map_file": "IDDS_WORKFLOW_ADDITIONAL_STORAGE/<work name>"}`` and the
    maps came before it in the step uploads.
    """
    raw = getattr(work, "_dependency_map", None)
    if isinstance(raw, str):
        raw = work.unzip_data(raw)
    if isinstance(raw, dict) and raw.get("idds_dependency_map_file"):
        ref = str(raw["idds_dependency_map_file"])
        key = os.path.basename(ref)
        if key in step_data:
            data = step_data[key]
        elif os.path.isfile(ref):
            data = json.loads(Path(ref).read_text())
        else:
            raise ValueError(f"work {work.get_work_name()}: dependency map {ref} was not uploaded "
                             "in a workflow step before the workflow")
        if isinstance(data, str):
            data = work.unzip_data(data)
        raw = data
    return list(raw or [])


def _collection(coll: Any) -> dict[str, Any]:
    if coll is None:
        return {"scope": None, "name": None}
    if isinstance(coll, Mapping):
        return {"scope": coll.get("scope"), "name": coll.get("name")}
    return {"scope": getattr(coll, "scope", None), "name": getattr(coll, "name", None)}


def describe_workflow(wf: Any, step_data: Mapping[str, Any]) -> dict[str, Any]:
    """The tasks, jobs and conditions of a received iDDS Workflow (plain data)."""
    from idds.workflowv2.workflow import CompositeCondition, ConditionOperator

    base = getattr(wf, "template", wf)
    works = dict(getattr(base, "works", {}) or {})
    tasks: list[dict[str, Any]] = []
    jobs: list[list[dict[str, Any]]] = []
    by_name: dict[str, int] = {}
    for work in works.values():
        work_name = work.get_work_name()
        if work_name in by_name:
            raise ValueError(f"two works named {work_name!r}")
        task_name = getattr(work, "task_name", None) or work_name
        try:
            in_coll = _collection(work.get_primary_input_collection())
        except Exception:  # noqa: BLE001 - informative only
            in_coll = _collection(None)
        try:
            outs = work.get_output_collections()
            out_coll = _collection(outs[0] if outs else None)
        except Exception:  # noqa: BLE001
            out_coll = _collection(None)
        by_name[work_name] = len(tasks)
        tasks.append({
            "index": len(tasks), "work_name": work_name, "task_name": task_name, "label": task_label(task_name),
            "site": getattr(work, "task_site", None) or work.get_site(),
            "queue": getattr(work, "task_queue", None), "cloud": getattr(work, "task_cloud", None),
            "maxattempt": int(getattr(work, "maxAttempt", None) or 5),
            "executable": work.executable, "in_coll": in_coll, "out_coll": out_coll,
            "conditional": False, "created": False, "gated": False,
            "transform_id": None, "workload_id": None, "status": None, "created_at": None,
        })
        task_jobs = []
        for item in _dependency_map(work, step_data):
            task_jobs.append({"name": item["name"], "order_id": item.get("order_id"),
                              "deps": [[d["task"], d["inputname"]] for d in item.get("dependencies") or []]})
        jobs.append(task_jobs)

    def work_ref(w: Any) -> str:
        name = w.get_work_name()
        if name not in by_name:
            raise ValueError(f"condition names work {name!r}, which is not in the workflow")
        return name

    def tree(cond: Any) -> dict[str, Any]:
        items = []
        for c in cond.conditions:
            owner = getattr(c, "__self__", None)
            if owner is None:
                raise ValueError(f"condition item {c!r} is not a method of a work or condition")
            if isinstance(owner, CompositeCondition):
                items.append({"cond": tree(owner), "method": c.__name__})
            else:
                items.append({"task": work_ref(owner), "method": c.__name__})

        def branch(ws: Iterable[Any]) -> list[Any]:
            return [{"tree": tree(w)} if isinstance(w, CompositeCondition) else work_ref(w) for w in ws or []]

        op = "or" if getattr(cond, "operator", None) == ConditionOperator.Or else "and"
        return {"op": op, "items": items, "true": branch(cond.true_works), "false": branch(cond.false_works)}

    conditions = [tree(c) for c in (getattr(base, "conditions", {}) or {}).values()]

    def mark(branch: list[Any]) -> None:
        for entry in branch:
            if isinstance(entry, str):
                tasks[by_name[entry]]["conditional"] = True
            else:
                mark(entry["tree"]["true"])
                mark(entry["tree"]["false"])

    for c in conditions:
        mark(c["true"])
        mark(c["false"])

    known = {(t["work_name"], j["name"]) for t, tj in zip(tasks, jobs) for j in tj}
    for t, tj in zip(tasks, jobs):
        seen = set()
        for j in tj:
            if j["name"] in seen:
                raise ValueError(f"task {t['task_name']}: two jobs named {j['name']!r}")
            seen.add(j["name"])
            for dep in j["deps"]:
                if tuple(dep) not in known:
                    raise ValueError(f"task {t['task_name']} job {j['name']!r} depends on {dep[1]!r} of "
                                     f"{dep[0]!r}, which is not a job of the workflow")
    return {"name": getattr(wf, "name", None), "internal_id": wf.get_internal_id(),
            "username": getattr(wf, "username", None), "userdn": getattr(wf, "userdn", None),
            "tasks": tasks, "jobs": jobs, "conditions": conditions}


# ---------------------------------------------------------------------------- requests
class Request:
    """One request in memory: ``meta`` (request.json), ``jobs`` (jobs.json), an index."""

    def __init__(self, dirpath: Path, meta: dict[str, Any], jobs: list[list[dict[str, Any]]]):
        self.dir = dirpath
        self.meta = meta
        self.jobs = jobs
        self.dirty = True
        self.index: dict[tuple[str, str], tuple[int, int]] = {}
        self.task_by_work: dict[str, int] = {}
        for ti, task in enumerate(meta["tasks"]):
            self.task_by_work[task["work_name"]] = ti
            for ji, job in enumerate(jobs[ti]):
                self.index[(task["work_name"], job["name"])] = (ti, ji)

    @property
    def id(self) -> int:
        return int(self.meta["request_id"])

    @property
    def status(self) -> str:
        return self.meta["status"]

    def set_status(self, status: str) -> None:
        if self.meta["status"] != status:
            log.info("request %s: %s -> %s", self.id, self.meta["status"], status)
            self.meta["status"] = status
            self.meta["updated_at"] = time.time()
            self.dirty = True

    def save(self) -> None:
        _procs.write_json(self.dir / "jobs.json", {"tasks": self.jobs})
        _procs.write_json(self.dir / "request.json", self.meta)
        self.dirty = False


class Engine:
    """Requests and their jobs under ``root``; a scheduler thread runs the jobs.

    ``faults`` is the relay's live fault dict (``fail_jobs``, ``kill_job``), read and
    written under :attr:`lock`.
    """

    def __init__(self, root: Path | str, *, slots: int = 2, job_env: Mapping[str, str] | None = None,
                 site_locks: Mapping[str, str] | None = None, faults: dict[str, Any] | None = None,
                 tick: float = 0.1):
        self.root = Path(root).resolve()
        self.slots = max(1, int(slots))
        self.job_env = {str(k): str(v) for k, v in (job_env or {}).items()}
        self.site_locks = {str(k): self._lock_file(v) for k, v in (site_locks or {}).items()}
        self.faults = faults if faults is not None else {}
        self.tick_seconds = tick
        self.lock = threading.RLock()
        self.requests: dict[int, Request] = {}
        self.procs: dict[tuple[int, int, int], subprocess.Popen] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.requests_dir = self.root / "requests"
        self.steps_dir = self.root / "steps"
        self.executions_file = self.root / "executions.jsonl"
        self.counters_file = self.root / "counters.json"

    @staticmethod
    def _lock_file(path: str | os.PathLike[str]) -> str:
        """A lock file path; a directory (a butler repository) means its site_write_lock file."""
        p = Path(path)
        return str(p / SITE_LOCK_NAME if p.is_dir() else p)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self._load()
        self._thread = threading.Thread(target=self._run, name="localpanda-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling and kill the running jobs (they stay ``running`` in the table,
        so the next start re-queues them)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self.lock:
            for key, proc in list(self.procs.items()):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for key, proc in list(self.procs.items()):
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            self.procs.clear()
            self._flush()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:
                log.exception("scheduler tick failed")
            self._wake.wait(self.tick_seconds)
            self._wake.clear()

    # ------------------------------------------------------------------ persistence
    def _next(self, counter: str) -> int:
        counters = _procs.read_json(self.counters_file)
        value = int(counters.get(counter, 0)) + 1
        counters[counter] = value
        _procs.write_json(self.counters_file, counters)
        return value

    def _flush(self) -> None:
        for req in self.requests.values():
            if req.dirty:
                req.save()

    def _load(self) -> None:
        if not self.requests_dir.is_dir():
            return
        for d in sorted((p for p in self.requests_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
            meta = _procs.read_json(d / "request.json")
            if not meta:
                continue
            jobs = _procs.read_json(d / "jobs.json").get("tasks") or [[] for _ in meta["tasks"]]
            req = Request(d, meta, jobs)
            self.requests[req.id] = req
            for ti, task_jobs in enumerate(req.jobs):
                for ji, job in enumerate(task_jobs):
                    if job["state"] == "running":
                        self._recover(req, ti, ji)
        self._flush()
        log.info("loaded %d request(s) from %s", len(self.requests), self.requests_dir)

    def _recover(self, req: Request, ti: int, ji: int) -> None:
        """A job recorded as running by a relay that is gone."""
        job = req.jobs[ti][ji]
        rec = {"pid": job.get("pid"), "start": job.get("pstart")}
        if _procs.kill_group(rec):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _procs.group_members(int(rec["pid"])):
                time.sleep(0.05)
            log.info("request %s: killed job %s (attempt %s) left running by the previous relay",
                     req.id, job["name"], job["attempt"])
        exit_file = Path(job.get("exit_file") or "/nonexistent")
        try:
            code = int(exit_file.read_text().strip())
        except (OSError, ValueError):
            code = None
        if code is None:
            self._end_attempt(req, ti, ji, None, interrupted=True)
        else:
            self._end_attempt(req, ti, ji, code, recovered=True)

    def _append_execution(self, record: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True) + "\n"
        fd = os.open(self.executions_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ commands
    def store_step(self, wf: Any) -> int:
        """A workflow step upload: keep its dependency maps for the workflow that follows."""
        data = wf.workflow_data
        if isinstance(data, str):
            data = getattr(wf, "template", wf).unzip_data(data)
        if not isinstance(data, dict):
            raise TypeError(f"workflow step {wf.step_name!r} carries no workflow data")
        path = self.steps_dir / f"{wf.get_internal_id()}.json"
        with self.lock:
            stored = _procs.read_json(path)
            stored.update(data)
            _procs.write_json(path, stored)
        log.info("stored workflow step %s of workflow %s", wf.step_name, wf.get_internal_id())
        return 0

    def submit(self, wf: Any, received: Mapping[str, Any], username: str | None = None,
               idds_host: str | None = None) -> int:
        if getattr(wf, "is_workflow_step", False):
            return self.store_step(wf)
        step_data = _procs.read_json(self.steps_dir / f"{wf.get_internal_id()}.json")
        desc = describe_workflow(wf, step_data)
        with self.lock:
            rid = self._next("request_id")
            now = time.time()
            d = self.requests_dir / str(rid)
            d.mkdir(parents=True, exist_ok=True)
            _procs.write_json(d / "workflow.json", dict(received))
            for task in desc["tasks"]:
                if not task["conditional"]:
                    self._create_task(task, now)
            jobs = [[{**j, "state": "new", "attempt": 0, "tries": 0, "exit_code": None, "panda_id": None,
                      "started": None, "finished": None, "pid": None, "pstart": None,
                      "workdir": None, "log": None, "exit_file": None}
                     for j in task_jobs] for task_jobs in desc["jobs"]]
            meta = {
                "request_id": rid, "name": desc["name"] or f"localpanda_request_{rid}", "scope": "workflow",
                "requester": "panda", "username": username or desc["username"] or "localpanda",
                "userdn": desc["userdn"], "internal_id": desc["internal_id"], "idds_host": idds_host,
                "site": next((t["site"] for t in desc["tasks"] if t["site"]), None),
                "status": "New", "created_at": now, "updated_at": now, "errors": None,
                "tasks": desc["tasks"], "conditions": desc["conditions"],
                "n_base_conditions": len(desc["conditions"]), "fired": [],
            }
            req = Request(d, meta, jobs)
            self.requests[rid] = req
            req.save()
        log.info("request %s submitted: %s, %d task(s), %d job(s)", rid, meta["name"], len(desc["tasks"]),
                 sum(len(j) for j in jobs))
        self.wake()
        return rid

    def _create_task(self, task: dict[str, Any], now: float) -> None:
        if task["transform_id"] is None:
            task["transform_id"] = self._next("transform_id")
            task["workload_id"] = self._next("workload_id") + 100000  # PanDA jediTaskIDs look large
            task["created_at"] = now
        task["created"] = True
        task["gated"] = False
        task["status"] = "Transforming"

    def _find(self, request_id: Any = None, workload_id: Any = None) -> list[Request]:
        reqs = sorted(self.requests.values(), key=lambda r: r.id)
        if request_id not in (None, "", "null"):
            reqs = [r for r in reqs if r.id == int(request_id)]
        if workload_id not in (None, "", "null"):
            wid = int(workload_id)
            reqs = [r for r in reqs if any(t["workload_id"] == wid for t in r.meta["tasks"])]
        return reqs

    def request_id_by_name(self, name: str) -> dict[str, int]:
        """``{name: request_id}`` of the newest request of that name, ``{}`` if none."""
        with self.lock:
            ids = [r.id for r in self.requests.values() if r.meta["name"] == name]
        return {name: max(ids)} if ids else {}

    def get_requests(self, request_id: Any = None, workload_id: Any = None, with_detail: bool = False,
                     with_metadata: bool = False) -> list[dict[str, Any]]:
        from idds.common.constants import (
            RequestLocking,
            RequestStatus,
            RequestType,
            TransformStatus,
            TransformType,
        )

        rows: list[dict[str, Any]] = []
        with self.lock:
            for req in self._find(request_id, workload_id):
                m = req.meta
                row = {
                    "request_id": req.id, "scope": m["scope"], "name": m["name"], "requester": m["requester"],
                    "request_type": RequestType.Workflow, "username": m["username"], "userdn": m["userdn"],
                    "transform_tag": "workflow", "workload_id": None, "priority": 0,
                    "status": RequestStatus[m["status"]], "substatus": None, "locking": RequestLocking.Idle,
                    "site": m["site"], "created_at": _utc(m["created_at"]), "updated_at": _utc(m["updated_at"]),
                    "accessed_at": _utc(m["updated_at"]), "errors": m["errors"],
                }
                if with_metadata:
                    row["request_metadata"] = {"workload_id": None, "internal_id": m["internal_id"]}
                if not with_detail:
                    rows.append(row)
                    continue
                tasks = [t for t in m["tasks"] if t["created"]]
                if not tasks:  # the outer join's row with no transform
                    rows.append({**row, "transform_id": None, "transform_workload_id": None,
                                 "transform_status": None, "transform_name": None})
                    continue
                for task in sorted(tasks, key=lambda t: t["transform_id"]):
                    rows.append({**row, **self._task_counts(req, task),
                                 "transform_id": task["transform_id"], "transform_type": TransformType.Processing,
                                 "transform_workload_id": task["workload_id"],
                                 "transform_status": TransformStatus[task["status"]],
                                 "transform_name": task["task_name"],
                                 "transform_created_at": _utc(task["created_at"]),
                                 "input_coll_scope": task["in_coll"]["scope"],
                                 "input_coll_name": task["in_coll"]["name"],
                                 "output_coll_scope": task["out_coll"]["scope"],
                                 "output_coll_name": task["out_coll"]["name"]})
        return rows

    def _ready(self, req: Request, job: Mapping[str, Any]) -> bool:
        for work_name, inputname in job["deps"]:
            ti, ji = req.index[(work_name, inputname)]
            if req.jobs[ti][ji]["state"] != "finished":
                return False
        return True

    def _task_counts(self, req: Request, task: Mapping[str, Any]) -> dict[str, int]:
        """iDDS's per-transform file counters, as ctrl_bps_panda's report() reads them.

        report(): RUNNING = processing + (output_new - input_new); UNREADY = the rest. So
        ``output_new_files`` counts every job not yet started and ``input_new_files`` those
        whose inputs are not yet available (waiting on dependencies, or a gated final job).
        """
        jobs = req.jobs[task["index"]]
        states = Counter(j["state"] for j in jobs)
        waiting = sum(1 for j in jobs if j["state"] == "new" and (task["gated"] or not self._ready(req, j)))
        return {
            "input_total_files": len(jobs), "input_processed_files": states["finished"],
            "input_new_files": waiting,
            "output_total_files": len(jobs), "output_processed_files": states["finished"],
            "output_failed_files": states["failed"], "output_missing_files": states["missing"],
            "output_processing_files": states["running"], "output_new_files": states["new"],
        }

    def contents_output_ext(self, request_id: Any = None, workload_id: Any = None,
                            transform_id: Any = None) -> dict[str, list[dict[str, Any]]]:
        """``{"<workload_id>": [one dict per job: panda_id, job_status, trans_exit_code, ...]}``."""
        from idds.common.constants import ContentStatus

        status_of = {"new": ContentStatus.New, "running": ContentStatus.Processing,
                     "finished": ContentStatus.Available, "failed": ContentStatus.FinalFailed,
                     "missing": ContentStatus.Missing, "cancelled": ContentStatus.Cancelled}
        out: dict[str, list[dict[str, Any]]] = {}
        with self.lock:
            for req in self._find(request_id):
                for task in req.meta["tasks"]:
                    if not task["created"]:
                        continue
                    if workload_id not in (None, "", "null") and task["workload_id"] != int(workload_id):
                        continue
                    if transform_id not in (None, "", "null") and task["transform_id"] != int(transform_id):
                        continue
                    rows = []
                    for ji, job in enumerate(req.jobs[task["index"]]):
                        ran = job["attempt"] > 0
                        rows.append({
                            "content_id": task["transform_id"] * 1_000_000 + ji + 1, "request_id": req.id,
                            "transform_id": task["transform_id"], "workload_id": task["workload_id"],
                            "map_id": ji + 1, "name": job["name"], "status": status_of[job["state"]],
                            "panda_id": job["panda_id"] if ran else None, "job_name": job["name"],
                            "job_status": job["state"] if ran else None,
                            "attempt_nr": job["attempt"], "max_attempt": task["maxattempt"],
                            "trans_exit_code": job["exit_code"] if ran else None,
                            "exe_error_code": job["exit_code"] if ran else None,
                            "start_time": _utc(job["started"]), "end_time": _utc(job["finished"]),
                            "computing_site": task["site"], "jedi_task_id": task["workload_id"],
                        })
                    out[str(task["workload_id"])] = rows
        return out

    def abort(self, request_id: Any = None, workload_id: Any = None) -> list[Any]:
        with self.lock:
            reqs = self._find(request_id, workload_id)
            if not reqs:
                return [-1, "No matching requests"]
            for req in reqs:
                if req.status in TERMINAL_REQUEST:
                    continue
                for key in [k for k in self.procs if k[0] == req.id]:
                    proc = self.procs.pop(key)
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    try:
                        rc = proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:  # pragma: no cover
                        rc = -9
                    self._end_attempt(req, key[1], key[2], 128 - rc if rc < 0 else rc, cancelled=True)
                for task_jobs in req.jobs:
                    for job in task_jobs:
                        if job["state"] == "new":
                            job["state"] = "cancelled"
                for task in req.meta["tasks"]:
                    if task["created"] and task["status"] not in TERMINAL_TASK:
                        task["status"] = "Cancelled"
                req.set_status("Cancelled")
                req.dirty = True
                req.save()
        self.wake()
        return [0, "Command registered successfully"]

    def retry(self, request_id: Any = None, workload_id: Any = None) -> list[Any]:
        with self.lock:
            reqs = self._find(request_id, workload_id)
            if not reqs:
                return [-1, "No matching requests"]
            for req in reqs:
                requeued = 0
                for task in req.meta["tasks"]:
                    if task["conditional"]:
                        continue
                    for job in req.jobs[task["index"]]:
                        if job["state"] in BAD_JOB:
                            job.update(state="new", tries=0)
                            requeued += 1
                if not requeued and req.status not in ("Cancelled", "Failed", "SubFinished"):
                    continue
                # The final (conditional) tasks run again once the others have terminated.
                for task in req.meta["tasks"]:
                    if not task["conditional"]:
                        if task["created"]:
                            task["status"] = "Transforming"
                        continue
                    for job in req.jobs[task["index"]]:
                        if job["state"] != "running":
                            job.update(state="new", tries=0)
                    if task["created"]:
                        task["gated"] = True
                        task["status"] = "Transforming"
                del req.meta["conditions"][req.meta["n_base_conditions"]:]
                req.meta["fired"] = []
                log.info("request %s: retry re-queued %d job(s)", req.id, requeued)
                req.set_status("Transforming")
                req.dirty = True
                req.save()
        self.wake()
        return [0, "Command registered successfully"]

    # ------------------------------------------------------------------ scheduling
    def _tick(self) -> None:
        with self.lock:
            self._reap()
            self._kill_fault()
            for req in sorted(self.requests.values(), key=lambda r: r.id):
                if req.status == "New":
                    req.set_status("Transforming")
                if req.status == "Transforming":
                    self._advance(req)
            self._schedule()
            self._flush()

    def _reap(self) -> None:
        for key, proc in list(self.procs.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del self.procs[key]
            rid, ti, ji = key
            req = self.requests[rid]
            job = req.jobs[ti][ji]
            code = 128 - rc if rc < 0 else rc
            try:
                code = int(Path(job["exit_file"]).read_text().strip())
            except (OSError, ValueError, TypeError):
                pass
            self._end_attempt(req, ti, ji, code)

    def _kill_fault(self) -> None:
        pattern = self.faults.get("kill_job")
        if not pattern:
            return
        for (rid, ti, ji), proc in self.procs.items():
            req = self.requests[rid]
            job, task = req.jobs[ti][ji], req.meta["tasks"][ti]
            if matches(pattern, job, task):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                job["fault"] = "kill_job"
                self.faults["kill_job"] = None
                log.info("fault kill_job: killed request %s job %s (attempt %s)", rid, job["name"], job["attempt"])
                return

    def _advance(self, req: Request) -> None:
        tasks = req.meta["tasks"]
        changed = True
        while changed:
            changed = False
            # Jobs whose dependency failed for good never run.
            for task in tasks:
                for job in req.jobs[task["index"]]:
                    if job["state"] != "new":
                        continue
                    for work_name, inputname in job["deps"]:
                        ti, ji = req.index[(work_name, inputname)]
                        if req.jobs[ti][ji]["state"] in BAD_JOB:
                            job["state"] = "missing"
                            req.dirty = changed = True
                            break
            for task in tasks:
                if task["created"]:
                    status = self._task_status(req, task)
                    if status != task["status"]:
                        task["status"] = status
                        req.dirty = changed = True
            if self._fire_conditions(req):
                changed = True
        busy = any(j["state"] in ("new", "running") for t in tasks if t["created"] for j in req.jobs[t["index"]])
        if busy:
            return
        created = [t for t in tasks if t["created"]]
        all_jobs = [j for t in created for j in req.jobs[t["index"]]]
        if all(t["status"] == "Finished" for t in created):
            req.set_status("Finished")
        elif any(j["state"] == "finished" for j in all_jobs):
            req.set_status("SubFinished")
        else:
            req.set_status("Failed")

    def _task_status(self, req: Request, task: Mapping[str, Any]) -> str:
        jobs = req.jobs[task["index"]]
        states = Counter(j["state"] for j in jobs)
        if states["new"] or states["running"]:
            return "Transforming"
        if states["finished"] == len(jobs):
            return "Finished"
        return "SubFinished" if states["finished"] else "Failed"

    def _cond_value(self, req: Request, tree: Mapping[str, Any]) -> tuple[bool, bool]:
        """(value, decided): decided once every work the condition names has terminated."""
        values, decided = [], True
        for item in tree["items"]:
            if "task" in item:
                task = req.meta["tasks"][req.task_by_work[item["task"]]]
                status = task["status"] if task["created"] and not task["gated"] else None
                wanted = _PREDICATES.get(item["method"], TERMINAL_TASK)
                values.append(status in wanted)
                decided = decided and status in TERMINAL_TASK
            else:
                value, sub_decided = self._cond_value(req, item["cond"])
                values.append(not value if item["method"] == "is_condition_false" else value)
                decided = decided and sub_decided
        value = any(values) if tree["op"] == "or" else all(values)
        return value, decided

    def _fire_conditions(self, req: Request) -> bool:
        fired_any = False
        conditions = req.meta["conditions"]
        i = 0
        while i < len(conditions):
            if i not in req.meta["fired"]:
                value, decided = self._cond_value(req, conditions[i])
                if value or decided:
                    req.meta["fired"].append(i)
                    for entry in conditions[i]["true" if value else "false"]:
                        if isinstance(entry, str):
                            task = req.meta["tasks"][req.task_by_work[entry]]
                            self._create_task(task, time.time())
                            log.info("request %s: condition fired, task %s created", req.id, task["task_name"])
                        else:
                            conditions.append(entry["tree"])
                    req.dirty = fired_any = True
            i += 1
        return fired_any

    def _schedule(self) -> None:
        running = len(self.procs)
        for req in sorted(self.requests.values(), key=lambda r: r.id):
            if req.status != "Transforming":
                continue
            for task in req.meta["tasks"]:
                if not task["created"] or task["gated"]:
                    continue
                for ji, job in enumerate(req.jobs[task["index"]]):
                    if running >= self.slots:
                        return
                    if job["state"] == "new" and self._ready(req, job) and self._start(req, task["index"], ji):
                        running += 1

    def _job_env(self, req: Request, task: Mapping[str, Any], job: Mapping[str, Any], workdir: Path) -> dict[str, str]:
        from multisite_drp.services.procs import child_env

        env = child_env()  # the allow-listed environment: a batch node has no Airflow credential
        # The pilot's "container": the Python environment the relay runs in, and
        # panda-client importable without resolving the PanDA cache host (the edge-node
        # decoder imports lsst.ctrl.bps.panda.utils, hence pandaclient).
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env.setdefault("PANDA_BEHIND_REAL_LB", "1")
        env.update(self.job_env)
        env.update({
            "PILOT_HOME": str(workdir), "PANDAID": str(job["panda_id"]),
            "PanDA_TaskID": str(task["workload_id"]), "PANDA_RESOURCE": str(task["site"] or ""),
            "LOCALPANDA_REQUEST_ID": str(req.id), "LOCALPANDA_TASK": task["task_name"],
            "LOCALPANDA_LABEL": task["label"], "LOCALPANDA_JOB": job["name"],
            "LOCALPANDA_ATTEMPT": str(job["attempt"]),
        })
        return env

    def _start(self, req: Request, ti: int, ji: int) -> bool:
        """Start one attempt; False if it ended at once (a ``fail_jobs`` fault)."""
        task, job = req.meta["tasks"][ti], req.jobs[ti][ji]
        job["attempt"] += 1
        job["tries"] += 1
        job["panda_id"] = self._next("panda_id")
        job.pop("fault", None)
        tag = f"t{ti:02d}_{task['label']}"
        workdir = req.dir / "work" / tag / f"j{ji:04d}.a{job['attempt']}"
        logfile = req.dir / "logs" / tag / f"j{ji:04d}.a{job['attempt']}.log"
        exit_file = logfile.with_suffix(".exit")
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        logfile.parent.mkdir(parents=True, exist_ok=True)
        exit_file.unlink(missing_ok=True)
        now = time.time()
        job.update(state="running", started=now, finished=None, exit_code=None, workdir=str(workdir),
                   log=str(logfile), exit_file=str(exit_file))
        req.dirty = True
        if matches(self.faults.get("fail_jobs"), job, task):
            logfile.write_text(f"localpanda: fault fail_jobs matches {job['name']!r}: exit 1 without running\n")
            log.info("fault fail_jobs: request %s job %s attempt %s fails", req.id, job["name"], job["attempt"])
            self._end_attempt(req, ti, ji, 1, fault="fail_jobs")
            return False
        command = task["executable"].replace("${IN/L}", job["name"])
        argv = [sys.executable, "-I", str(PILOT), "--exit-file", str(exit_file)]
        is_final = task["conditional"] or task["label"] == "finalJob"
        if is_final and task["site"] in self.site_locks:
            argv += ["--lock", self.site_locks[task["site"]]]
        argv += ["--", command]
        with open(logfile, "ab") as out:
            out.write(f"localpanda pilot: request {req.id} task {task['task_name']} job {job['name']} "
                      f"attempt {job['attempt']} PandaID {job['panda_id']}\n"
                      f"localpanda pilot: PILOT_HOME={workdir}\nlocalpanda pilot: bash -c {command}\n".encode())
            out.flush()
            proc = subprocess.Popen(argv, cwd=str(workdir), env=self._job_env(req, task, job, workdir),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        job["pid"] = proc.pid
        job["pstart"] = _procs.start_time(proc.pid)
        self.procs[(req.id, ti, ji)] = proc
        log.info("request %s: started %s job %s attempt %s (pid %s)", req.id, task["label"], job["name"],
                 job["attempt"], proc.pid)
        req.save()  # the pid is on disk before anything else can happen
        return True

    def _end_attempt(self, req: Request, ti: int, ji: int, code: int | None, *, fault: str | None = None,
                     interrupted: bool = False, cancelled: bool = False, recovered: bool = False) -> None:
        task, job = req.meta["tasks"][ti], req.jobs[ti][ji]
        now = time.time()
        fault = fault or job.pop("fault", None)
        if cancelled:
            state = "cancelled"
        elif interrupted:
            state = "new"
            job["tries"] = max(0, job["tries"] - 1)
        elif code == 0:
            state = "finished"
        elif job["tries"] < task["maxattempt"]:
            state = "new"
        else:
            state = "failed"
        self._append_execution({
            "request_id": req.id, "request_name": req.meta["name"], "task": task["task_name"],
            "label": task["label"], "job": job["name"], "job_index": ji, "attempt": job["attempt"],
            "panda_id": job["panda_id"], "exit_code": code, "started": job["started"], "finished": now,
            "status": "interrupted" if interrupted else ("cancelled" if cancelled else
                                                          ("finished" if code == 0 else "failed")),
            "fault": fault, "interrupted": interrupted, "cancelled": cancelled, "recovered": recovered,
            "site": task["site"], "log": job["log"], "workdir": job["workdir"],
        })
        job.update(state=state, exit_code=code, finished=now, pid=None, pstart=None)
        log.info("request %s: %s job %s attempt %s ended (exit %s) -> %s%s", req.id, task["label"], job["name"],
                 job["attempt"], code, state, f" [{fault}]" if fault else "")
        req.dirty = True
        self._wake.set()

    # ------------------------------------------------------------------ introspection
    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": {str(r.id): r.status for r in self.requests.values()},
                    "running_jobs": len(self.procs), "slots": self.slots}
