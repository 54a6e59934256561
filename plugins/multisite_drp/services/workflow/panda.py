"""PanDA workflow adapter: a site's QuantumGraph submitted through BPS with ctrl_bps_panda.

What a Data Facility runs is what ``bps submit`` runs, through BPS's own Python API:
the planner's per-site submit YAML for the step (``WorkflowSpec.bps_config``) is
included by a small overlay written in the submit directory (``bps_submit.yaml``) that
adds what belongs to the deployment rather than to the plan:

* ``qgraphFile``: the graph built at the hub, so BPS does not build another;
* the final job's merge command (``services.middleware.merge_bps_command``);
* the site connection's ``runnerCommand``, ``fileDistributionEndPoint``,
  ``requestMemory``, ``numberOfRetries``, ``iddsServer``.

Then ``lsst.ctrl.bps.drivers.prepare_driver`` (init, acquire, cluster, transform, the
PanDA ``prepare``) and ``PanDAService.submit``. The request name is ``uniqProcName``,
the deterministic workflow name; the request id is kept in ``panda.json`` beside the
submission. ``find`` reads that record, and when a worker died between submitting and
recording, asks iDDS for the name (``get_request_id_by_name``, the one lookup by name
iDDS's ClientManager offers; ``get_requests`` takes only ids) so a retried task never
submits twice.

Status comes from ``get_requests(request_id, with_detail=True)``: one call per
workflow per poll (iDDS takes one request id per call; a site has one workflow per step
in flight until submission groups arrive). States map to ``WmsStates`` in one place,
:data:`IDDS_STATES`. ctrl_bps_panda maps SubFinished two ways (``report``: SUCCEEDED,
``get_status``: FAILED); here it is FAILED *with its counts*, and the campaign's
``failed_quanta_threshold`` (``actions.accept``) decides. Quantum counts are the jobs'
counts weighed by their quanta per job, taken from the GenericWorkflow at submission.

``cancel`` is iDDS ``abort``; ``restart`` is iDDS ``retry`` (only what failed runs
again, as ``bps restart``); ``rescue`` submits the same graph under a new name
(``<name>_rescueN``), whose jobs skip quanta whose outputs exist.

Credentials: the site connection's password is an OIDC ID token and its extras the VO
(``auth_vo``) and optionally the auth config directory (``config_root``). They reach
panda-client through its own environment variables (``PANDA_AUTH=oidc``,
``PANDA_AUTH_VO``, ``PANDA_AUTH_ID_TOKEN``, ``PANDA_CONFIG_ROOT``) and the PanDA URL
through its module globals, set for the duration of one call under a process-wide lock
and restored after, so no other site's call and nothing after it sees them. The token
is never logged or written. "Authentication no permission" inside a success reply is a
:class:`PanDAAuthError`, not a success.

No Airflow imports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from multisite_drp.errors import InputError, TransientError
from multisite_drp.services import middleware
from multisite_drp.services.fileio import atomic_write_json, read_json
from multisite_drp.services.procs import is_secret_name, is_secret_value
from multisite_drp.services.workflow.base import (
    TERMINAL_STATES,
    WmsStates,
    WorkflowError,
    WorkflowRef,
    WorkflowService,
    WorkflowSpec,
    WorkflowStatus,
)

log = logging.getLogger(__name__)

__all__ = ["IDDS_STATES", "PanDAAuthError", "PanDARequestMissingError", "PanDASite", "PanDAUnavailableError",
           "PanDAWorkflowService"]

RECORD = "panda.json"
OVERLAY = "bps_submit.yaml"
#: The BPS default runner command of an edge node that has the stack on its PATH
#: (a Data Facility's connection gives its own, e.g. its container invocation).
DEFAULT_RUNNER = "cd ${PILOT_HOME}; python3 -m lsst.ctrl.bps.panda.edgenode.cmd_line_decoder _cmd_line_"

#: iDDS request status -> WmsStates: the one place where they are mapped. SubFinished is
#: FAILED here with its counts; the partial-success policy decides whether it is accepted.
IDDS_STATES: dict[str, WmsStates] = {
    "New": WmsStates.PENDING, "Ready": WmsStates.PENDING, "Building": WmsStates.PENDING,
    "Built": WmsStates.PENDING, "Throttling": WmsStates.PENDING, "ToResume": WmsStates.PENDING,
    "Resuming": WmsStates.PENDING,
    "Transforming": WmsStates.RUNNING, "Extend": WmsStates.RUNNING, "ToFinish": WmsStates.RUNNING,
    "ToForceFinish": WmsStates.RUNNING, "Terminating": WmsStates.RUNNING, "ToClose": WmsStates.RUNNING,
    "ToCancel": WmsStates.RUNNING, "Cancelling": WmsStates.RUNNING, "ToExpire": WmsStates.RUNNING,
    "Expiring": WmsStates.RUNNING,
    "Finished": WmsStates.SUCCEEDED,
    "SubFinished": WmsStates.FAILED, "Failed": WmsStates.FAILED, "Expired": WmsStates.FAILED,
    "Cancelled": WmsStates.DELETED,
    "ToSuspend": WmsStates.HELD, "Suspending": WmsStates.HELD, "Suspended": WmsStates.HELD,
}
#: Task labels of the jobs that are not quanta.
NON_QUANTUM_LABELS = ("pipetaskInit", "finalJob")

_ENV_LOCK = threading.RLock()
_ENV_KEYS = ("PANDA_URL", "PANDA_URL_SSL", "PANDA_BEHIND_REAL_LB", "PANDA_AUTH", "PANDA_AUTH_VO",
             "PANDA_AUTH_ID_TOKEN", "PANDA_CONFIG_ROOT", "PANDA_VERIFY_HOST", "X509_USER_PROXY",
             "CTRL_MPEXEC_DIR", "DAF_BUTLER_DIR")


class PanDAAuthError(WorkflowError, InputError):
    """PanDA refused the site's credentials (also when the refusal arrives inside a success)."""


class PanDARequestMissingError(WorkflowError, InputError):
    """PanDA has no request under the id recorded for the workflow (another server?)."""


class PanDAUnavailableError(WorkflowError, TransientError):
    """The PanDA relay did not answer (connection refused, timeout, HTTP error): try later."""


@dataclasses.dataclass(frozen=True)
class PanDASite:
    """One site's PanDA settings, from its workflow connection and the campaign (no secret)."""

    site: str
    url: str  # PanDA server base, e.g. https://pandaserver-doma.cern.ch:25443/server/panda
    conn_id: str = ""
    vo: str | None = None  # PANDA_AUTH_VO, with a token
    config_root: str | None = None  # PANDA_CONFIG_ROOT (panda-client's auth config and token cache)
    idds_server: str | None = None
    monitor_url: str | None = None  # PanDA monitor base, for the task's link
    runner_command: str = DEFAULT_RUNNER
    file_distribution: str | None = None  # fileDistributionEndPoint base (+ <name>/); default <submit dir>/dist
    request_memory: int | None = None
    number_of_retries: int | None = None
    queue: str | None = None
    verify_host: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PanDASite:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def _record(ref_or_spec) -> Path:
    return Path(ref_or_spec.submit_dir) / RECORD


def monitor_link(monitor_url: str | None, request_id: str | int) -> str | None:
    """The PanDA monitor's page of an iDDS request."""
    if not monitor_url:
        return None
    return f"{monitor_url.rstrip('/')}/idds/wfprogress/?requestid={int(request_id)}"


class PanDAWorkflowService(WorkflowService):
    """Submits and follows one site's workflows through ctrl_bps / ctrl_bps_panda."""

    def __init__(self, site: PanDASite, token: str | None = None) -> None:
        self.settings = site
        self.site = site.site
        self._token = token
        self.calls: dict[str, int] = {}

    def __repr__(self) -> str:  # never the token
        return f"PanDAWorkflowService(site={self.site!r}, url={self.settings.url!r})"

    # -- panda-client environment, for one call at a time ----------------------------------

    @contextlib.contextmanager
    def _client_env(self, with_token: bool = True) -> Iterator[None]:
        """panda-client's environment for one call. ``with_token`` False for BPS's prepare
        stages: ``init_submission`` dumps the whole environment into the submit directory
        (``<name>.env.info.yaml``) and the update-graph-run command inherits it, so neither
        the token nor any other credential of this process (``AIRFLOW_CONN_*``, a
        ``*PASSWORD*`` or ``*SECRET*`` variable, a password in a URL: ``services.procs``'
        rules) is in ``os.environ`` then; they are put back after."""
        s = self.settings
        with _ENV_LOCK:
            saved = {k: os.environ.get(k) for k in _ENV_KEYS}
            # Set before the first import: pandaclient.Client resolves hosts at import time
            # unless PANDA_BEHIND_REAL_LB is set, and reads its URLs into module globals.
            os.environ.update(PANDA_URL=s.url, PANDA_URL_SSL=s.url, PANDA_BEHIND_REAL_LB="1")
            try:
                import pandaclient.Client as pc
            except BaseException:
                _restore(saved)
                raise
            saved_urls = (pc.baseURL, pc.baseURLSSL)
            try:
                for k in ("PANDA_AUTH", "PANDA_AUTH_VO", "PANDA_AUTH_ID_TOKEN", "PANDA_CONFIG_ROOT"):
                    os.environ.pop(k, None)
                if not with_token:
                    for k in [k for k, v in os.environ.items() if is_secret_name(k) or is_secret_value(v)]:
                        saved.setdefault(k, os.environ.pop(k))
                if self._token and with_token:
                    os.environ.update(PANDA_AUTH="oidc", PANDA_AUTH_VO=s.vo or "", PANDA_AUTH_ID_TOKEN=self._token)
                if s.config_root:
                    os.environ["PANDA_CONFIG_ROOT"] = s.config_root
                if not s.verify_host:
                    os.environ["PANDA_VERIFY_HOST"] = "off"
                if not (self._token and with_token) and not saved.get("X509_USER_PROXY"):
                    os.environ["X509_USER_PROXY"] = "/dev/null"  # no grid proxy here: say so, quietly
                pc.baseURL = pc.baseURLSSL = s.url
                # BPS runs ``${CTRL_MPEXEC_DIR}/bin/pipetask`` at submission (update-graph-run);
                # EUPS sets it in a stack environment, a pip-installed stack does not.
                for key, exe in (("CTRL_MPEXEC_DIR", middleware.pipetask_executable()),
                                 ("DAF_BUTLER_DIR", middleware.butler_executable())):
                    if key not in os.environ and Path(exe).is_file():
                        os.environ[key] = str(Path(exe).resolve().parent.parent)
                yield
            finally:
                pc.baseURL, pc.baseURLSSL = saved_urls
                _restore(saved)

    def _idds(self):
        from lsst.ctrl.bps.panda.utils import get_idds_client

        return get_idds_client({"iddsServer": self.settings.idds_server} if self.settings.idds_server else {})

    def _call(self, command: str, what: str, **kwargs: Any) -> Any:
        """One relay call; the iDDS result, or a classified error."""

        self.calls[command] = self.calls.get(command, 0) + 1
        with self._client_env():
            ret = getattr(self._idds(), command)(**kwargs)
        return self._result(ret, what)

    def _result(self, ret: Any, what: str) -> Any:
        from lsst.ctrl.bps.panda.utils import get_idds_result

        where = f"{self.site} (connection {self.settings.conn_id or '?'}, {self.settings.url})"
        if isinstance(ret, list | tuple) and len(ret) == 2 and isinstance(ret[1], list | tuple) and ret[1] \
                and isinstance(ret[1][-1], str) and "Authentication no permission" in ret[1][-1]:
            raise PanDAAuthError(f"{what}: PanDA at {where} refused the credentials ({ret[1][-1][:200]}); "
                                 "renew the OIDC token in the connection's password field")
        if not isinstance(ret, list | tuple) or ret[0] != 0:
            raise PanDAUnavailableError(f"{what}: the PanDA relay at {where} did not answer: {str(ret)[:300]}")
        ok, result, error = get_idds_result(ret)
        if not ok:
            raise WorkflowError(f"{what}: iDDS at {where} returned an error: {str(error)[:300]}")
        return result

    # -- records ----------------------------------------------------------------------------

    def _ref(self, spec_or_ref, record: Mapping[str, Any]) -> WorkflowRef:
        last = record["submissions"][-1]
        return WorkflowRef(run_id=str(last["request_id"]), name=last["name"], site=self.site,
                           submit_dir=str(spec_or_ref.submit_dir))

    def find(self, spec: WorkflowSpec) -> WorkflowRef | None:
        record = read_json(_record(spec))
        if record and record.get("submissions"):
            return self._ref(spec, record)
        # No record: perhaps a worker died between submitting and writing it. Ask iDDS.
        found = self._call("get_request_id_by_name", f"{spec.name}: find", name=spec.name) or {}
        request_id = found.get(spec.name) if isinstance(found, dict) else None
        if request_id is None:
            return None
        log.warning("%s: request %s found in iDDS by name with no local record; recording it", spec.name, request_id)
        record = self._write_record(spec, spec.name, int(request_id), recovered=True)
        return self._ref(spec, record)

    def _write_record(self, spec, name: str, request_id: int, **extra: Any) -> dict:
        path = _record(spec)
        record = read_json(path) or {"spec": {"name": spec.name, "site": self.site}, "submissions": []}
        record["submissions"].append({"name": name, "request_id": request_id, "submitted": time.time(),
                                      "monitor": monitor_link(self.settings.monitor_url, request_id), **extra})
        atomic_write_json(path, record)
        return record

    # -- submission -------------------------------------------------------------------------

    def overlay(self, spec: WorkflowSpec, name: str | None = None, graph: Path | None = None) -> Path:
        """Write the submit overlay: the planner's YAML plus the deployment's settings."""
        if not spec.bps_config or not Path(spec.bps_config).is_file():
            raise WorkflowError(f"{spec.name}: no BPS submit YAML from the planner ({spec.bps_config!r}); "
                                "re-run the plan task, or check the step has one submission group at this site")
        planned = yaml.safe_load(Path(spec.bps_config).read_text()) or {}
        planned_run = (planned.get("payload") or {}).get("outputRun")
        if planned_run != spec.output_run:
            raise WorkflowError(f"{spec.bps_config}: payload.outputRun is {planned_run!r}; the DAG's output RUN "
                                f"for {spec.name} is {spec.output_run!r} (re-run the plan task)")
        s = self.settings
        sdir = Path(spec.submit_dir)
        sdir.mkdir(parents=True, exist_ok=True)
        # One distribution folder per submission: a rescue must not collide with the first.
        dist = f"{(s.file_distribution or (sdir / 'dist').as_uri()).rstrip('/')}/{name or spec.name}/"
        doc: dict[str, Any] = {
            "includeConfigs": [str(Path(spec.bps_config).resolve())],
            "qgraphFile": str(Path(graph or spec.qgraph).resolve()),
            "submitPath": str(self.bps_dir(spec, name or spec.name)),
            "uniqProcName": name or spec.name,
            "runnerCommand": s.runner_command,
            "fileDistributionEndPoint": dist,
            "finalJob": {"command1": middleware.merge_bps_command()},
        }
        if s.idds_server:
            doc["iddsServer"] = s.idds_server
        if s.request_memory:
            doc["requestMemory"] = s.request_memory
        if s.number_of_retries is not None:
            doc["numberOfRetries"] = s.number_of_retries
        if s.queue:
            doc["queue"] = s.queue
        if graph is not None:
            # A rescue reruns the graph its first submission ran: BPS's update-graph-run would
            # give every output a new dataset ID, and the merge would then clash with the
            # outputs the first submission already merged into the same RUN.
            doc["updateQuantumGraph"] = "/bin/true"
        path = sdir / (OVERLAY if name in (None, spec.name) else f"bps_submit.{name}.yaml")
        path.write_text(f"# Submitted by multisite-drp's PanDA adapter for {spec.name} at {self.site}.\n"
                        + yaml.safe_dump(doc, sort_keys=False, width=10**9))
        return path

    @staticmethod
    def bps_dir(spec: WorkflowSpec, name: str) -> Path:
        """BPS's own submit directory of one submission (BPS insists on creating it)."""
        return Path(spec.submit_dir) / "bps" / name

    def _prepare_and_submit(self, spec: WorkflowSpec, name: str, graph: Path | None = None) -> tuple[int, dict]:
        from lsst.ctrl.bps.drivers import transform_driver
        from lsst.ctrl.bps.prepare import prepare
        from lsst.ctrl.bps.submit import submit

        path = self.overlay(spec, name, graph)
        partial = self.bps_dir(spec, name)
        if partial.exists():  # an earlier try died before submitting (iDDS has no such name): start over
            shutil.rmtree(partial)
        with self._client_env(with_token=False):
            # prepare_driver's stages, kept apart to read the jobs' quanta off the GenericWorkflow.
            config, generic = transform_driver(str(path))
            workflow = prepare(config, generic, config[".bps_defined.submitPath"])
            jobs = _quanta_per_job(generic)
        with self._client_env():
            self.calls["submit"] = self.calls.get("submit", 0) + 1
            try:
                submit(config, workflow)
            except RuntimeError as exc:
                text = str(exc)
                if "Authentication no permission" in text:
                    raise PanDAAuthError(f"{name}: PanDA at {self.site} ({self.settings.url}) refused the "
                                         "credentials; renew the OIDC token in the connection") from None
                if "PanDA relay service returns errors" in text:
                    raise PanDAUnavailableError(f"{name}: the PanDA relay at {self.settings.url} did not answer: "
                                                f"{text[:300]}") from None
                raise WorkflowError(f"{name}: submission to PanDA at {self.site} failed: {text[:300]}") from None
        if not workflow.run_id:
            raise WorkflowError(f"{name}: PanDA returned no request id")
        return int(workflow.run_id), jobs

    def submit(self, spec: WorkflowSpec) -> WorkflowRef:
        existing = self.find(spec)
        if existing is not None:
            return existing
        if not Path(spec.qgraph).is_file():
            raise WorkflowError(f"{spec.name}: quantum graph {spec.qgraph} does not exist")
        request_id, jobs = self._prepare_and_submit(spec, spec.name)
        log.info("%s: submitted to PanDA at %s as request %s", spec.name, self.site, request_id)
        return self._ref(spec, self._write_record(spec, spec.name, request_id, jobs=jobs))

    def rescue(self, spec: WorkflowSpec) -> WorkflowRef:
        """A new submission under ``<name>_rescueN`` of the graph the first submission ran
        (same output dataset IDs): ``run-qbb`` skips quanta whose outputs exist, so only what
        is missing runs, and the merge adds to the same RUN. Idempotent by name."""
        record = read_json(_record(spec)) or {}
        subs = record.get("submissions") or []
        if not subs:
            raise WorkflowError(f"{spec.name}: nothing to rescue, no submission recorded in {spec.submit_dir}")
        n = sum(1 for s in subs if s.get("rescue")) + 1
        name = f"{spec.name}_rescue{n}"
        # The graph the first submission ran (BPS's copy, its output IDs updated for the RUN).
        graph = self.bps_dir(spec, subs[0]["name"]) / Path(spec.qgraph).name
        if not graph.is_file():
            raise WorkflowError(f"{spec.name}: the first submission's graph {graph} is gone; cannot rescue")
        found = self._call("get_request_id_by_name", f"{name}: find", name=name) or {}
        if isinstance(found, dict) and found.get(name) is not None:
            request_id, jobs = int(found[name]), {}
        else:
            request_id, jobs = self._prepare_and_submit(spec, name, graph=graph)
        return self._ref(spec, self._write_record(spec, name, request_id, jobs=jobs, rescue=n))

    # -- status -----------------------------------------------------------------------------

    def _status_one(self, ref: WorkflowRef) -> WorkflowStatus:
        rows = self._call("get_requests", f"{ref.name}: status", request_id=int(ref.run_id), with_detail=True)
        if not rows:
            raise PanDARequestMissingError(
                f"{ref.name}: PanDA at {self.settings.url} (connection {self.settings.conn_id or '?'}) has no "
                f"request {ref.run_id}, which {_record(ref)} records; was the connection pointed at another "
                "PanDA server? Point it back, or move the record aside to submit again")
        record = read_json(_record(ref)) or {}
        sub = next((s for s in reversed(record.get("submissions") or [])
                    if str(s.get("request_id")) == str(ref.run_id)), {})
        attempt = 1 + int(record.get("restarts", {}).get(str(ref.run_id), 0))
        return workflow_status(ref, rows, sub.get("jobs") or {}, attempt)

    def status(self, refs: Sequence[WorkflowRef]) -> dict[str, WorkflowStatus]:
        return {ref.run_id: self._status_one(ref) for ref in refs}

    def cancel(self, ref: WorkflowRef) -> None:
        st = self._status_one(ref)
        if st.terminal:
            return
        self._call("abort", f"{ref.name}: cancel", request_id=int(ref.run_id))
        log.info("%s: PanDA request %s aborted", ref.name, ref.run_id)

    def restart(self, ref: WorkflowRef) -> WorkflowRef:
        """iDDS ``retry``: only the failed jobs (and those they blocked) run again, then the
        final job; the request and its name stay the same."""
        st = self._status_one(ref)
        if not st.terminal or st.state is WmsStates.SUCCEEDED:
            return ref
        self._call("retry", f"{ref.name}: restart", request_id=int(ref.run_id))
        path = _record(ref)
        record = read_json(path) or {}
        restarts = record.setdefault("restarts", {})
        restarts[str(ref.run_id)] = int(restarts.get(str(ref.run_id), 0)) + 1
        atomic_write_json(path, record)
        return ref

    def monitor_url(self, ref: WorkflowRef) -> str | None:
        return monitor_link(self.settings.monitor_url, ref.run_id)


def _restore(saved: Mapping[str, str | None]) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _quanta_per_job(generic) -> dict[str, list[int]]:
    """task label (the PanDA task's: the cluster label) -> [jobs, quanta], from the GenericWorkflow."""
    out: dict[str, list[int]] = {}
    for name in generic:
        job = generic.get_job(name)
        label = job.label
        n = sum((job.quanta_counts or {}).values()) or 1
        entry = out.setdefault(label, [0, 0])
        entry[0] += 1
        entry[1] += n
    return out


def _name(enum_value: Any) -> str:
    if isinstance(enum_value, Mapping):
        return str((enum_value.get("attributes") or {}).get("_name_", ""))
    return str(getattr(enum_value, "name", enum_value))


def _label(transform_name: str) -> str:
    """The BPS job label of a PanDA task (``<wf>_NN_<label>_NN``), without its chunk number
    (ctrl_bps_panda's ``extract_taskname`` keeps it; its report strips it afterwards)."""
    from lsst.ctrl.bps.panda.utils import extract_taskname

    return re.sub(r"_\d+$", "", extract_taskname(transform_name or ""))


def workflow_status(ref: WorkflowRef, rows: list[Mapping[str, Any]], jobs: Mapping[str, list[int]],
                    attempt: int = 1) -> WorkflowStatus:
    """A ``WorkflowStatus`` from iDDS detail rows (one per transform).

    Job counters per task are weighed by the task's quanta per job (from the submission);
    the final job's task tells whether the outputs were merged.
    """
    head = rows[0]
    request_state = _name(head.get("status"))
    state = IDDS_STATES.get(request_state, WmsStates.UNKNOWN)
    total = ok = failed = blocked = 0
    merged = False
    messages = []
    for row in rows:
        if row.get("transform_id") is None:
            continue
        label = _label(row.get("transform_name", ""))
        tstate = _name(row.get("transform_status"))
        n_total = int(row.get("output_total_files") or 0)
        n_ok = int(row.get("output_processed_files") or 0)
        n_failed = int(row.get("output_failed_files") or 0)
        n_missing = int(row.get("output_missing_files") or 0)
        if label == "finalJob":
            merged = tstate == "Finished" or (n_total > 0 and n_ok == n_total)
            if n_failed:
                messages.append("final job (merge) failed")
            continue
        if label in NON_QUANTUM_LABELS:
            if n_failed:
                messages.append(f"{label} failed")
            continue
        njobs, nquanta = (jobs.get(label) or [n_total, n_total])
        per_job = nquanta / njobs if njobs else 1.0
        total += round(n_total * per_job)
        ok += round(n_ok * per_job)
        failed += round(n_failed * per_job)
        blocked += round(n_missing * per_job)
        if n_failed:
            messages.append(f"{label}: {n_failed} of {n_total} jobs failed")
    terminal = state in TERMINAL_STATES  # quanta not run by the end are blocked; till then, to come
    return WorkflowStatus(
        run_id=ref.run_id, state=state, quanta_total=total, quanta_succeeded=ok, quanta_failed=failed,
        quanta_blocked=max(blocked, total - ok - failed) if terminal else 0, attempt=attempt,
        started=_epoch(head.get("created_at")), finished=_epoch(head.get("updated_at")) if terminal else None,
        merged=merged, message=f"iDDS {request_state}" + (": " + "; ".join(messages) if messages else ""),
    )


def _epoch(value: Any) -> float | None:
    """Seconds since the epoch of an iDDS time (its REST format, ``idds.common.utils``'
    ``str_to_date``; UTC), or of a number."""
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    from datetime import UTC

    from idds.common.utils import str_to_date

    try:
        return str_to_date(str(value).strip()).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
