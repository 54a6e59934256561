"""The Replica Monitor: ingests what Rucio delivered to a site's RSE into the site's butler.

DMTN-213 gives this job to a per-site "Replica Monitor" (at Rubin: ctrl_ingestd, which
needs Kafka and is not on PyPI). This is our own, driven by Rucio's catalogue:

1. ask Rucio for the campaign scope's rules that are OK (one list call per pass for every
   RSE the daemon serves). The daemon lists them all once every ``FULL_LIST_SECONDS``
   (60 s) and in between only those updated since the newest ``updated_at`` it has seen
   (Rucio's own clock, less ``OVERLAP_SECONDS``): a pass costs the same at the campaign's
   first rule and at its ten-thousandth (see :class:`OkRules`);
2. for each rule not yet ingested, list its dataset's files with their lsst-rucio-register
   metadata (``rubin_butler``, ``rubin_sidecar``: the DatasetRef as JSON, with its
   data ID's dimension records);
3. check every arrived file's size and adler32 against Rucio's before it is ingested;
   a mismatch is recorded as a failure and the file is left alone;
4. ingest in place (the file already lies in the datastore, at its DID name below the
   datastore root): dimension records first, then dataset types and RUN collections,
   then the datasets with their original IDs, under the site's write lock;
5. remember the rule as done (a small SQLite file in the state directory), so the next
   pass costs one list call.

Refusals are bounded. A rule with a refused file (or whose ingest raised) is examined
again after ``retry_seconds`` (60 s; the daemon finds it again at its next full listing),
then twice as long after each further refusal (at
most 6 h); after ``max_refusals`` (5) refused passes the monitor gives up on it, says so
once at ERROR level with the reasons, and examines it again only when a refused file
changes on disk (its size or modification time: a stat, no checksum). One bad rule never
stops the others: each rule's ingest is tried on its own. Transfers themselves are
Rucio's to retry: the conveyor re-submits a failed transfer 3 times (4 attempts), then
the lock and the rule go STUCK with the transfer error, which the DAG's wait reports.

It is idempotent: a dataset the registry already has is skipped, so a crash at any point
is mended by the next pass. The DAG never trusts the monitor: ``verify_ingested`` asks
the butler. In production a site may run ctrl_ingestd instead.

``python -m multisite_drp.services.replica.monitor --scope S --site NAME=RSE=REPO [...]``
runs the loop for one or more sites with the process's Rucio identity (``RUCIO_CONFIG``).
``--discover`` serves every RSE that carries a ``butler_repo`` attribute (the embedded
sites, where the local Rucio deployment sets it).

No Airflow imports.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from multisite_drp.crashpoints import crashpoint
from multisite_drp.services.fileio import adler32_of

__all__ = ["IngestReport", "OkRules", "ReplicaMonitor", "main"]

log = logging.getLogger("multisite_drp.replica_monitor")

INGESTIBLE = ("data_product", "raw_file")
#: Seconds between two looks for RSEs that carry a ``butler_repo`` attribute (``--discover``).
DISCOVER_SECONDS = 30.0
#: Seconds between two full listings of the scope's OK rules by the daemon (:class:`OkRules`).
FULL_LIST_SECONDS = 60.0
#: How far before the newest ``updated_at`` seen an incremental listing starts: rules
#: updated by a daemon whose clock lags, or committed after that listing, are still found.
OVERLAP_SECONDS = 60.0
#: Rucio's date format in filters and listings (RFC 1123, UTC).
RUCIO_DATE_FORMAT = "%a, %d %b %Y %H:%M:%S UTC"
#: Seconds before a rule with a refused file (size or checksum) is examined again; the
#: delay doubles with each further refusal, up to MAX_RETRY_SECONDS.
RETRY_FAILED_SECONDS = 60.0
MAX_RETRY_SECONDS = 6 * 3600.0
#: Refused passes of one rule after which the monitor gives up on it until a refused file changes.
MAX_REFUSALS = 5
SCHEMA = """
CREATE TABLE IF NOT EXISTS done (rse TEXT NOT NULL, rule_id TEXT NOT NULL, dataset TEXT NOT NULL,
    files INTEGER NOT NULL, ingested INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY (rse, rule_id));
CREATE TABLE IF NOT EXISTS failures (rse TEXT NOT NULL, scope TEXT NOT NULL, name TEXT NOT NULL,
    dataset TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (rse, scope, name));
CREATE TABLE IF NOT EXISTS refusals (rse TEXT NOT NULL, rule_id TEXT NOT NULL, dataset TEXT NOT NULL,
    attempts INTEGER NOT NULL, last_at REAL NOT NULL, files TEXT NOT NULL, signature TEXT NOT NULL,
    PRIMARY KEY (rse, rule_id));
"""
#: The DID name under which a rule whose ingest raised is recorded in ``failures``.
RULE_ERROR = "<ingest error>"


@dataclasses.dataclass
class IngestReport:
    """What one pass over one rule did."""

    rule_id: str
    dataset: str
    files: int = 0
    ingested: int = 0
    already: int = 0
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # DID name -> reason
    skipped: int = 0  # not butler datasets (e.g. dimension files)


class ReplicaMonitor:
    """Ingests the arrivals at one RSE into one butler repository."""

    def __init__(self, client: Any, scope: str, rse: str, repo: str, state_dir: str | Path, *,
                 retry_seconds: float = RETRY_FAILED_SECONDS, max_refusals: int = MAX_REFUSALS,
                 lock_timeout: float | None = None) -> None:
        from multisite_drp.services.butler import DEFAULT_LOCK_SECONDS, SiteButler

        self.client = client
        self.scope = scope
        self.rse = rse
        self.retry_seconds = retry_seconds
        self.max_refusals = max_refusals
        self.site = SiteButler(rse, repo, lock_timeout=DEFAULT_LOCK_SECONDS if lock_timeout is None else lock_timeout)
        self.state = Path(state_dir) / f"replica-monitor-{rse}.sqlite"
        self.state.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.state, timeout=60, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    def failures(self) -> dict[str, str]:
        """Files the monitor refused or could not ingest: DID name -> reason."""
        with self._db() as db:
            return {r["name"]: r["reason"] for r in db.execute("SELECT name, reason FROM failures WHERE rse = ?",
                                                                (self.rse,))}

    # -- one pass ------------------------------------------------------------------------------

    def poll(self, rules: list[dict[str, Any]] | None = None) -> list[IngestReport]:
        """Ingest every OK rule's files not ingested yet; one list call when nothing is new.

        ``rules``: the scope's OK rules, if the caller listed them already (one call for
        every RSE it serves); else this RSE's are listed here.
        """
        if rules is None:
            rules = list_ok_rules(self.client, self.scope, self.rse)
        rules = [r for r in rules if r["rse_expression"] == self.rse]
        with self._db() as db:
            done = {r["rule_id"] for r in db.execute("SELECT rule_id FROM done WHERE rse = ?", (self.rse,))}
            refused = {r["rule_id"]: r for r in db.execute("SELECT * FROM refusals WHERE rse = ?", (self.rse,))}
        reports = []
        for rule in rules:
            if rule["id"] in done or rule.get("did_type") not in (None, "DATASET", "CONTAINER"):
                continue
            if rule["id"] in refused and not self._due(refused[rule["id"]]):
                continue
            try:
                report = self.ingest_rule(rule["id"], rule["name"])
            except Exception as exc:  # noqa: BLE001 - one rule's trouble must not stop the others
                log.warning("%s: ingest of rule %s (%s) failed: %s", self.rse, rule["id"], rule["name"], exc)
                report = IngestReport(rule_id=rule["id"], dataset=rule["name"],
                                      failed={RULE_ERROR: f"{type(exc).__name__}: {exc}"})
                self._record(report)
            reports.append(report)
            if not report.failed:
                with self._db() as db:
                    db.execute("INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?, ?, ?)",
                               (self.rse, rule["id"], rule["name"], report.files, report.ingested, time.time()))
        return reports

    # -- bounded retries of refused rules ------------------------------------------------------

    def _signature(self, files: list[str]) -> str:
        """What a stat says of the refused files (size, mtime): changes when a file is replaced."""
        root = self.site.datastore_root() if files and files != [RULE_ERROR] else None
        parts = []
        for name in files:
            try:
                st = (root / name).stat() if root is not None and name != RULE_ERROR else None
            except OSError:
                st = None
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}" if st else f"{name}:-")
        return "|".join(parts)

    def _due(self, row: sqlite3.Row) -> bool:
        """Whether a refused rule is examined in this pass (bounded back-off, then only on change)."""
        if row["attempts"] >= self.max_refusals:
            return self._signature(json.loads(row["files"])) != row["signature"]
        delay = min(self.retry_seconds * 2 ** (row["attempts"] - 1), MAX_RETRY_SECONDS)
        return time.time() - row["last_at"] >= delay

    def given_up(self) -> dict[str, int]:
        """Rules the monitor gave up on (until a refused file changes): rule_id -> refused passes."""
        with self._db() as db:
            return {r["rule_id"]: r["attempts"] for r in db.execute(
                "SELECT rule_id, attempts FROM refusals WHERE rse = ? AND attempts >= ?", (self.rse, self.max_refusals))}

    def ingest_rule(self, rule_id: str, dataset: str) -> IngestReport:
        from lsst.daf.butler import DatasetRef, FileDataset
        from lsst.resources import ResourcePath

        report = IngestReport(rule_id=rule_id, dataset=dataset)
        files = {f["name"]: f for f in self.client.list_files(self.scope, dataset)}
        report.files = len(files)
        if not files:
            return report
        metas = {}
        names = sorted(files)
        for i in range(0, len(names), 1000):
            for m in self.client.get_metadata_bulk([{"scope": self.scope, "name": n} for n in names[i: i + 1000]],
                                                   plugin="JSON"):
                metas[m["name"]] = m
        self.site.refresh()
        butler = self.site.butler
        root = self.site.datastore_root()
        if root is None:
            raise RuntimeError(f"{self.rse}: the butler datastore of {self.site.repo} is not a local directory")
        todo: list[tuple[Path, DatasetRef]] = []
        for name in names:
            meta = metas.get(name, {})
            if meta.get("rubin_butler") not in INGESTIBLE or not meta.get("rubin_sidecar"):
                report.skipped += 1
                continue
            ref = DatasetRef.from_json(meta["rubin_sidecar"], universe=butler.dimensions)
            if butler.get_dataset(ref.id) is not None:
                report.already += 1
                continue
            path = root / name
            reason = _check_file(path, files[name])
            if reason:
                report.failed[name] = reason
                continue
            todo.append((path, ref))
        if todo:
            with self.site.write_lock():
                self.site.refresh()
                todo = [(p, r) for p, r in todo if butler.get_dataset(r.id) is None]
                _insert_records(butler, [r for _, r in todo])
                for dataset_type in {r.datasetType.name: r.datasetType for _, r in todo}.values():
                    butler.registry.registerDatasetType(dataset_type)
                for run in sorted({r.run for _, r in todo}):
                    butler.registry.registerRun(run)
                crashpoint("ingest.before_ingest")
                butler.ingest(*[FileDataset(path=ResourcePath(str(p)), refs=[r]) for p, r in todo], transfer=None)
                crashpoint("ingest.after_ingest")
            report.ingested = len(todo)
        self._record(report)
        log.info("%s: rule %s (%s): %d files, %d ingested, %d already there, %d failed", self.rse, rule_id, dataset,
                 report.files, report.ingested, report.already, len(report.failed))
        return report

    def _record(self, report: IngestReport) -> None:
        """Keep this pass's refusals and count the refused passes of the rule; a clean pass
        clears the dataset's earlier ones."""
        files = sorted(report.failed)
        signature = self._signature(files) if files else ""
        with self._db() as db:
            db.execute("BEGIN")
            db.execute("DELETE FROM failures WHERE rse = ? AND dataset = ?", (self.rse, report.dataset))
            for name, reason in report.failed.items():
                db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?)",
                           (self.rse, self.scope, name, report.dataset, reason[:2000], time.time()))
            if not files:
                db.execute("DELETE FROM refusals WHERE rse = ? AND rule_id = ?", (self.rse, report.rule_id))
                db.execute("COMMIT")
                return
            row = db.execute("SELECT attempts FROM refusals WHERE rse = ? AND rule_id = ?",
                             (self.rse, report.rule_id)).fetchone()
            attempts = (row["attempts"] if row else 0) + 1
            db.execute("INSERT OR REPLACE INTO refusals VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (self.rse, report.rule_id, report.dataset, attempts, time.time(), json.dumps(files), signature))
            db.execute("COMMIT")
        if attempts == self.max_refusals:
            log.error("%s: rule %s (%s) refused %d times; giving up on it until a refused file changes: %s",
                      self.rse, report.rule_id, report.dataset, attempts,
                      "; ".join(f"{k}: {v}" for k, v in sorted(report.failed.items())[:10]))


def list_ok_rules(client: Any, scope: str, rse: str | None = None,
                  updated_after: datetime | None = None) -> list[dict[str, Any]]:
    """The scope's OK rules (at one RSE, or at every RSE; only those updated at or after
    ``updated_after``, a naive UTC time, if given): one call."""
    filters: dict[str, Any] = {"scope": scope, "state": "O"}  # RuleState.OK is stored as "O"
    if rse is not None:
        filters["rse_expression"] = rse
    if updated_after is not None:
        filters["updated_after"] = updated_after.strftime(RUCIO_DATE_FORMAT)
    return list(client.list_replication_rules(filters))


def _updated_at(rule: dict[str, Any]) -> datetime | None:
    value = rule.get("updated_at")
    if isinstance(value, str):  # rucio-clients parses dates; a raw listing keeps the string
        try:
            value = datetime.strptime(value, RUCIO_DATE_FORMAT)
        except ValueError:
            return None
    return value if isinstance(value, datetime) else None


class OkRules:
    """The daemon's view of the scope's OK rules, listed incrementally.

    The first listing and one every ``full_seconds`` ask for every OK rule of the scope.
    The listings in between ask only for rules updated at or after the newest
    ``updated_at`` seen so far less ``overlap_seconds``. The mark comes from Rucio's own
    rows, never from this machine's clock; a rule turning OK gets a new ``updated_at``.
    The overlap covers a rule stamped by a daemon whose clock lags, or committed just
    after a listing; the full listings are the backstop for anything else, and the passes
    where refused rules due for another try come round again. Without this, every pass
    listed every OK rule of the campaign: ~30 kB per call after the embedded campaign's 35
    rules; with 1001 OK rules on the local Rucio a full listing costs the server 72 ms of
    CPU and an incremental one 4 ms, and a campaign has thousands.
    """

    def __init__(self, client: Any, scope: str, *, full_seconds: float = FULL_LIST_SECONDS,
                 overlap_seconds: float = OVERLAP_SECONDS) -> None:
        self.client = client
        self.scope = scope
        self.full_seconds = full_seconds
        self.overlap = timedelta(seconds=overlap_seconds)
        self.mark: datetime | None = None  # the newest updated_at seen (naive UTC)
        self.full_at: float | None = None  # time.monotonic() of the last full listing
        self.last_was_full = False

    def list(self, now: float | None = None) -> list[dict[str, Any]]:
        """One listing: every OK rule when a full one is due, else the recently updated ones."""
        now = time.monotonic() if now is None else now
        full = self.mark is None or self.full_at is None or now - self.full_at >= self.full_seconds
        rules = list_ok_rules(self.client, self.scope,
                              updated_after=None if full else self.mark - self.overlap)
        if full:
            self.full_at = now
        self.last_was_full = full
        newest = max((t for t in map(_updated_at, rules) if t is not None), default=None)
        if newest is not None and (self.mark is None or newest > self.mark):
            self.mark = newest
        return rules


def _check_file(path: Path, did: dict[str, Any]) -> str:
    """Why ``path`` must not be ingested as ``did`` (size or adler32 differ), or ''."""
    if not path.is_file():
        return f"not at {path}"
    size = path.stat().st_size
    if did.get("bytes") is not None and size != int(did["bytes"]):
        return f"size {size} differs from Rucio's {did['bytes']}"
    if did.get("adler32"):
        adler = adler32_of(path)
        if adler != did["adler32"]:
            return f"adler32 {adler} differs from Rucio's {did['adler32']}"
    return ""


def _insert_records(butler: Any, refs: Sequence[Any]) -> None:
    """The dimension records carried by the sidecars, in dependency order (skip existing)."""
    by_element: dict[str, dict[Any, Any]] = {}
    for ref in refs:
        if not ref.dataId.hasRecords():
            continue
        for element in ref.dataId.dimensions.elements:
            record = ref.dataId.records[element]
            if record is not None:
                by_element.setdefault(element, {})[record.dataId.required_values] = record
    universe = butler.dimensions
    for element in universe.sorted(by_element):
        name = element if isinstance(element, str) else element.name
        if not universe[name].has_own_table:
            continue
        butler.registry.insertDimensionData(name, *by_element[element].values(), skip_existing=True)


# -- the daemon --------------------------------------------------------------------------------


def _discover(client: Any) -> list[tuple[str, str]]:
    out = []
    for rse in client.list_rses():
        attrs = client.list_rse_attributes(rse["rse"])
        if attrs.get("butler_repo"):
            out.append((rse["rse"], str(attrs["butler_repo"])))
    return sorted(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m multisite_drp.services.replica.monitor", description=__doc__.split("\n")[0])
    p.add_argument("--scope", required=True, help="the campaign's Rucio scope")
    p.add_argument("--site", action="append", default=[], metavar="RSE=REPO", help="an RSE and its butler repo")
    p.add_argument("--discover", action="store_true", help="serve every RSE with a 'butler_repo' attribute")
    p.add_argument("--state-dir", required=True, help="where the monitor remembers what it ingested")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between passes")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--retry-seconds", type=float, default=RETRY_FAILED_SECONDS,
                   help="seconds before a rule with a refused file is examined again (doubling each time)")
    p.add_argument("--max-refusals", type=int, default=MAX_REFUSALS,
                   help="refused passes after which a rule is given up until a refused file changes")
    p.add_argument("--lock-timeout", type=float, default=None,
                   help="longest wait (s) for a site butler's write lock (default: the campaign default, 3600)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from rucio.client import Client

    client = Client()
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    monitors: dict[str, ReplicaMonitor] = {}
    ok_rules = OkRules(client, args.scope)
    discovered_at = -1e9
    while not stop["now"]:
        try:
            if time.monotonic() - discovered_at > DISCOVER_SECONDS:  # RSEs change rarely: look now and then
                pairs = [tuple(s.split("=", 1)) for s in args.site]
                if args.discover:
                    pairs += _discover(client)
                for rse, repo in pairs:
                    if rse not in monitors or monitors[rse].site.repo != repo:
                        monitors[rse] = ReplicaMonitor(client, args.scope, rse, repo, args.state_dir,
                                                       retry_seconds=args.retry_seconds,
                                                       max_refusals=args.max_refusals, lock_timeout=args.lock_timeout)
                        ok_rules.full_at = None  # a site served anew: its rules OK before now too
                discovered_at = time.monotonic()
            rules = ok_rules.list()  # one call per pass, whatever the number of RSEs
            for mon in monitors.values():
                for report in mon.poll(rules):
                    print(json.dumps(dataclasses.asdict(report)), flush=True)
        except Exception:
            log.exception("replica monitor pass failed; retrying in %.1f s", args.interval)
        if args.once:
            break
        time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
