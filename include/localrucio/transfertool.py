"""A local-copy Rucio transfertool: the stand-in for FTS in the local deployment.

Rucio hands transfers to an external transfer service; at the Data Facilities that is
FTS, which cannot run here. This class is the only piece of the local deployment that
replaces a part of Rucio's own machinery: everything else (server, judge, conveyor
submitter/poller/finisher, rules, locks, retries, messages) is Rucio 41.5.1 unchanged.

It is registered under the name ``local`` in
``rucio.core.transfer.TRANSFERTOOL_CLASSES_BY_NAME`` by the daemons process
(:mod:`localrucio.daemons`) before the conveyor runs, and only ever runs inside the
server virtualenv (it imports the ``rucio`` server package).

What it does, per transfer, inside ``submit`` (the submitter's call):

* source and destination PFNs are ``file://`` URLs (posix protocol); their paths are used;
* the source is copied to a temporary file next to the destination (parent directories
  are created), then the temporary file's size and adler32 (and md5 when the request
  carries only md5) are compared with the values the request expects, as FTS does; only a
  verified file is renamed onto the destination path, so the destination never holds a
  partial or corrupt copy;
* the outcome (DONE, or FAILED with a reason such as a missing source file or a checksum
  mismatch) is written to a small JSON job file; ``submit`` never raises for a failed copy.

``bulk_query`` (the poller's call) reads those job files back and reports each request
DONE or FAILED. A job file that has disappeared is reported as lost (``None``), which
Rucio handles like an FTS job it can no longer find. The finisher then does what it does
with FTS results: a DONE request makes the destination replica AVAILABLE and the lock OK;
a FAILED one is re-queued by Rucio itself (``request.should_retry_request``: up to 3
retries) before the lock and the rule go STUCK.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rucio.core.request import get_transfer_error
from rucio.db.sqla.constants import RequestState
from rucio.transfertool.transfertool import TransferStatusReport, Transfertool, TransferToolBuilder

from localrucio.localcopy import copy_verified, url_path

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from rucio.core.request import DirectTransfer
    from rucio.db.sqla.session import Session

TOOL_NAME = "local"
EXTERNAL_HOST = "localrucio-copy"
JOB_DIR_ENV = "LOCALRUCIO_TRANSFER_DIR"
_JOB_TTL_SECONDS = 7 * 24 * 3600


def _utc(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) if ts else None


class LocalCopyTransferStatusReport(TransferStatusReport):
    """The status of one request of one local-copy job, in the shape the poller expects."""

    supported_db_fields: ClassVar[list[str]] = ["state", "external_id", "started_at", "transferred_at", "err_msg"]

    def __init__(self, request_id: str, external_id: str, result: dict[str, Any]):
        super().__init__(request_id)
        self._external_id = external_id
        self._result = result
        # `reason` is read when the monitor message is built; always defined.
        self.reason: str | None = result.get("reason")
        self.state = None
        self.external_id = None
        self.started_at = None
        self.transferred_at = None
        self.err_msg = None

    def initialize(self, session: Session, logger=logging.log) -> None:
        new_state = RequestState.DONE if self._result.get("state") == "DONE" else RequestState.FAILED
        request = self.request(session)
        if not request:
            logger(logging.WARNING, "%s: no request with this id in the database; skipping", self.request_id)
            return
        if request["external_id"] != self._external_id:
            logger(logging.WARNING, "%s: request belongs to job %s, not %s; not updating",
                   self.request_id, request["external_id"], self._external_id)
            return
        if request["state"] == new_state:
            return
        self.state = new_state
        self.external_id = self._external_id
        for field in ("started_at", "transferred_at"):
            value = self._result.get(field)
            if value:
                setattr(self, field, _parse_utc(value))
        if new_state == RequestState.FAILED:
            self.err_msg = get_transfer_error(new_state, self.reason)

    def get_monitor_msg_fields(self, session: Session, logger=logging.log) -> dict[str, Any]:
        self.ensure_initialized(session, logger)
        return {
            "transfer_link": None,
            "reason": self.reason,
            "src-url": self._result.get("src_url"),
            "dst-url": self._result.get("dst_url"),
            "src-rse": self._result.get("src_rse"),
            "dst-rse": self._result.get("dst_rse"),
            "started_at": self.started_at,
            "transferred_at": self.transferred_at,
        }

    def __str__(self) -> str:
        return f"local-copy {self._external_id} request {self.request_id}"


def _parse_utc(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")


class LocalCopyTransfertool(Transfertool):
    """Copies files between ``file://`` RSEs on this machine (stands in for FTS, see module doc)."""

    external_name = TOOL_NAME
    required_rse_attrs = ()
    supported_schemes: ClassVar[set[str]] = {"file"}
    #: Where job files go; set by :func:`register` in the daemons process.
    job_dir: Path | None = None

    def __init__(self, external_host: str = EXTERNAL_HOST, logger=logging.log, **_kwargs: Any):
        super().__init__(external_host or EXTERNAL_HOST, logger)

    @classmethod
    def _jobs(cls) -> Path:
        job_dir = cls.job_dir or (Path(os.environ[JOB_DIR_ENV]) if os.environ.get(JOB_DIR_ENV) else None)
        if job_dir is None:
            raise RuntimeError(f"local transfertool has no job directory (register() or ${JOB_DIR_ENV})")
        job_dir.mkdir(parents=True, exist_ok=True)
        return job_dir

    @classmethod
    def submission_builder_for_path(cls, transfer_path: list[DirectTransfer], logger=logging.log):
        hop = transfer_path[0]
        if not cls.can_perform_transfer(hop.src.rse, hop.dst.rse):
            return [], None
        return [hop], TransferToolBuilder(cls, external_host=EXTERNAL_HOST)

    def group_into_submit_jobs(self, transfer_paths: Iterable[list[DirectTransfer]]) -> list[dict[str, Any]]:
        hops = [hop for path in transfer_paths for hop in path]
        return [{"transfers": hops[i:i + 100], "job_params": {}} for i in range(0, len(hops), 100)]

    def submit(self, transfers: Iterable[DirectTransfer], job_params: dict[str, str],
               timeout: int | None = None) -> str:
        job_dir = self._jobs()
        external_id = f"local-{uuid.uuid4().hex}"
        results: dict[str, dict[str, Any]] = {}
        for transfer in transfers:
            rws = transfer.rws
            started = time.time()
            src_url = dst_url = None
            try:
                src_url = transfer.source_url(transfer.src)
                dst_url = transfer.dest_url
                ok, reason = copy_verified(url_path(src_url), url_path(dst_url),
                                           rws.byte_count, rws.adler32, rws.md5)
            except Exception as exc:  # noqa: BLE001 - report, never crash the submitter
                ok, reason = False, f"TRANSFER {type(exc).__name__}: {exc}"
            results[rws.request_id] = {
                "state": "DONE" if ok else "FAILED",
                "reason": reason,
                "src_url": src_url,
                "dst_url": dst_url,
                "src_rse": transfer.src.rse.name,
                "dst_rse": transfer.dst.rse.name,
                "started_at": _utc(started),
                "transferred_at": _utc(time.time()),
            }
            self.logger(logging.INFO if ok else logging.WARNING, "local copy %s:%s %s -> %s: %s%s",
                        rws.scope, rws.name, transfer.src.rse.name, transfer.dst.rse.name,
                        "DONE" if ok else "FAILED", f" ({reason})" if reason else "")
        tmp = job_dir / f".{external_id}.json.tmp"
        tmp.write_text(json.dumps(results))
        os.replace(tmp, job_dir / f"{external_id}.json")
        self._prune(job_dir)
        return external_id

    @staticmethod
    def _prune(job_dir: Path) -> None:
        cutoff = time.time() - _JOB_TTL_SECONDS
        try:
            for old in job_dir.glob("local-*.json"):
                if old.stat().st_mtime < cutoff:
                    old.unlink(missing_ok=True)
        except OSError:
            pass

    def bulk_query(self, requests_by_eid: Mapping[str, Mapping[str, Any]],
                   timeout: int | None = None) -> dict[str, Any]:
        job_dir = self._jobs()
        response: dict[str, Any] = {}
        for external_id, requests in requests_by_eid.items():
            try:
                results = json.loads((job_dir / f"{external_id}.json").read_text())
            except FileNotFoundError:
                response[external_id] = None  # lost, as an FTS job that no longer exists
                continue
            except (OSError, ValueError) as exc:
                response[external_id] = exc
                continue
            response[external_id] = {
                request_id: LocalCopyTransferStatusReport(request_id, external_id, results[request_id])
                for request_id in requests
                if request_id in results
            }
        return response

    def cancel(self, transfer_ids: Sequence[str], timeout: int | None = None) -> bool:
        return True  # copies complete inside submit(); nothing is ever in flight

    def update_priority(self, transfer_id: str, priority: int, timeout: int | None = None) -> bool:
        return True


def register(job_dir: Path) -> None:
    """Make the conveyor able to use this tool as ``local`` (call before the conveyor runs)."""
    from rucio.core import transfer as transfer_core

    LocalCopyTransfertool.job_dir = Path(job_dir)
    transfer_core.TRANSFERTOOL_CLASSES_BY_NAME[TOOL_NAME] = LocalCopyTransfertool
