"""Embedded replica adapter: a local replica catalogue with Rucio's vocabulary.

The catalogue is one SQLite file (durable truth, outside Airflow) with Rucio's
objects: RSEs, file DIDs with lsst-rucio-register metadata, dataset contents,
replicas and rules. A rule is unique per (dataset, RSE); adding it again returns the
same rule. Transfers are done by a detached "conveyor" process per rule
(``python -m multisite_drp.services.replica.conveyor CATALOGUE RULE_ID``), the way
Rucio's daemons work asynchronously from the client: files are copied and
checksummed (adler32, as Rucio does), then ingested into the destination butler with
their dimension records (``Butler.transfer_from(..., transfer_dimensions=True)``).

A DID's name is the file's path relative to the RSE root (the site's datastore root),
exactly as lsst-rucio-register names it, and its metadata uses that package's
``RubinMeta`` model.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from lsst.daf.butler import DatasetRef
from lsst.rucio.register.rubin_meta import RubinMeta
from multisite_drp.services.butler import SiteButler
from multisite_drp.services.fileio import adler32_of
from multisite_drp.services.procs import group_alive
from multisite_drp.services.replica.base import (
    IngestCheck,
    RegisteredDataset,
    ReplicaError,
    ReplicaService,
    RuleRef,
    RuleState,
    RuleStatus,
)

__all__ = ["Catalogue", "EmbeddedReplicaService"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS rses (rse TEXT PRIMARY KEY, site TEXT UNIQUE NOT NULL, repo TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dids (
    scope TEXT NOT NULL, name TEXT NOT NULL, bytes INTEGER NOT NULL, adler32 TEXT NOT NULL,
    rubin_butler TEXT NOT NULL, rubin_sidecar TEXT NOT NULL, dataset_id TEXT NOT NULL,
    dataset_type TEXT NOT NULL, PRIMARY KEY (scope, name));
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT PRIMARY KEY, site TEXT NOT NULL, created REAL NOT NULL, closed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS contents (
    dataset TEXT NOT NULL, scope TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (dataset, scope, name));
CREATE TABLE IF NOT EXISTS replicas (
    scope TEXT NOT NULL, name TEXT NOT NULL, rse TEXT NOT NULL, state TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (scope, name, rse));
CREATE TABLE IF NOT EXISTS rules (
    rule_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, rse TEXT NOT NULL, state TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, error TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0, pid INTEGER, bytes INTEGER NOT NULL DEFAULT 0,
    UNIQUE (dataset, rse));
"""


class Catalogue:
    """Thin access to the catalogue file; every connection waits for locks instead of failing."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=60000")
        try:
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def rse_of(self, site: str) -> str:
        with self.connect() as db:
            row = db.execute("SELECT rse FROM rses WHERE site = ?", (site,)).fetchone()
        if row is None:
            raise ReplicaError(f"no RSE is registered for site {site!r}")
        return row["rse"]

    def site_of(self, rse: str) -> tuple[str, str]:
        with self.connect() as db:
            row = db.execute("SELECT site, repo FROM rses WHERE rse = ?", (rse,)).fetchone()
        if row is None:
            raise ReplicaError(f"unknown RSE {rse!r}")
        return row["site"], row["repo"]


class EmbeddedReplicaService(ReplicaService):
    """Replica catalogue + conveyor processes over local butler repositories."""

    def __init__(self, catalogue: str | os.PathLike[str], sites: Mapping[str, tuple[str, str]],
                 scope: str = "drp", python: str | None = None) -> None:
        """``sites`` maps site name -> (RSE name, butler repo path)."""
        self.catalogue = Catalogue(catalogue)
        self.scope = scope
        self.python = python or sys.executable
        self._butlers: dict[str, SiteButler] = {}
        with self.catalogue.transaction() as db:
            for site, (rse, repo) in sites.items():
                db.execute("INSERT OR REPLACE INTO rses (rse, site, repo) VALUES (?, ?, ?)", (rse, site, repo))
        self.sites = dict(sites)

    def _butler(self, site: str) -> SiteButler:
        if site not in self._butlers:
            self._butlers[site] = SiteButler(site, self.sites[site][1])
        return self._butlers[site]

    # -- register ------------------------------------------------------------------------------

    def register(self, site: str, dataset: str, refs: Sequence[DatasetRef]) -> RegisteredDataset:
        rse = self.catalogue.rse_of(site)
        sb = self._butler(site)
        root = sb.datastore_root()
        assert root is not None
        root_str = str(root.resolve())
        with self.catalogue.connect() as db:
            known = {
                row["dataset_id"]: (row["name"], row["bytes"])
                for row in db.execute(
                    "SELECT d.dataset_id, d.name, d.bytes FROM dids d JOIN contents c "
                    "ON c.scope = d.scope AND c.name = d.name WHERE c.dataset = ?", (dataset,))
            }
        new_rows = []
        todo = [r for r in refs if str(r.id) not in known]
        uris = sb.butler.get_many_uris(todo) if todo else {}
        for ref in todo:
            primary = uris[ref].primaryURI
            if primary is None:
                raise ReplicaError(f"{dataset}: {ref} at {site} has no single file (disassembled?)")
            path = Path(primary.ospath).resolve()
            name = str(path).removeprefix(root_str).lstrip("/")
            meta = RubinMeta(rubin_butler="data_product", rubin_sidecar=ref.to_json())
            new_rows.append((name, path.stat().st_size, adler32_of(path), meta, ref))
        with self.catalogue.transaction() as db:
            db.execute("INSERT OR IGNORE INTO datasets (name, site, created) VALUES (?, ?, ?)",
                       (dataset, site, time.time()))
            for name, size, adler, meta, ref in new_rows:
                db.execute(
                    "INSERT OR IGNORE INTO dids VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.scope, name, size, adler, meta.rubin_butler, meta.rubin_sidecar, str(ref.id),
                     ref.datasetType.name),
                )
                db.execute("INSERT OR IGNORE INTO contents VALUES (?, ?, ?)", (dataset, self.scope, name))
                db.execute("INSERT OR IGNORE INTO replicas VALUES (?, ?, ?, 'A', ?)",
                           (self.scope, name, rse, time.time()))
            row = db.execute(
                "SELECT COUNT(*) AS n, COALESCE(SUM(d.bytes), 0) AS b FROM contents c JOIN dids d "
                "ON c.scope = d.scope AND c.name = d.name WHERE c.dataset = ?", (dataset,)).fetchone()
        return RegisteredDataset(name=dataset, site=site, files=row["n"], bytes=row["b"], new_files=len(new_rows))

    # -- rules ---------------------------------------------------------------------------------

    def _rule_ref(self, row: sqlite3.Row) -> RuleRef:
        site, _ = self.catalogue.site_of(row["rse"])
        return RuleRef(rule_id=row["rule_id"], dataset=row["dataset"], site=site, rse=row["rse"])

    def find_rule(self, dataset: str, site: str) -> RuleRef | None:
        rse = self.catalogue.rse_of(site)
        with self.catalogue.connect() as db:
            row = db.execute("SELECT * FROM rules WHERE dataset = ? AND rse = ?", (dataset, rse)).fetchone()
        return self._rule_ref(row) if row else None

    def add_rule(self, dataset: str, site: str) -> RuleRef:
        rse = self.catalogue.rse_of(site)
        rule_id = uuid.uuid5(uuid.NAMESPACE_URL, f"rule:{self.scope}:{dataset}@{rse}").hex
        now = time.time()
        with self.catalogue.transaction() as db:
            if db.execute("SELECT 1 FROM datasets WHERE name = ?", (dataset,)).fetchone() is None:
                raise ReplicaError(f"cannot add a rule for {dataset!r}: no such dataset is registered")
            db.execute(
                "INSERT OR IGNORE INTO rules (rule_id, dataset, rse, state, created, updated) "
                "VALUES (?, ?, ?, 'REPLICATING', ?, ?)", (rule_id, dataset, rse, now, now))
            row = db.execute("SELECT * FROM rules WHERE dataset = ? AND rse = ?", (dataset, rse)).fetchone()
        ref = self._rule_ref(row)
        if row["state"] == RuleState.REPLICATING.value and not group_alive(row["pid"]):
            self._spawn_conveyor(ref.rule_id)
        return ref

    def _spawn_conveyor(self, rule_id: str) -> None:
        log_dir = self.catalogue.path.parent / "conveyor-logs"
        log_dir.mkdir(exist_ok=True)
        with open(log_dir / f"{rule_id}.log", "ab") as log:
            proc = subprocess.Popen(
                [self.python, "-m", "multisite_drp.services.replica.conveyor", str(self.catalogue.path), rule_id],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        with self.catalogue.transaction() as db:
            db.execute("UPDATE rules SET pid = ?, updated = ? WHERE rule_id = ?", (proc.pid, time.time(), rule_id))

    def retry(self, rule: RuleRef) -> RuleRef:
        """Re-evaluate a STUCK rule (like ``rucio update-rule --boost-rule``)."""
        with self.catalogue.connect() as db:
            row = db.execute("SELECT pid, state FROM rules WHERE rule_id = ?", (rule.rule_id,)).fetchone()
        # The conveyor that gave up marks the rule STUCK just before it exits: let it go, so
        # the retry starts a fresh one instead of mistaking the leaving one for a live worker.
        deadline = time.monotonic() + 10.0
        while row and row["state"] == RuleState.STUCK.value and group_alive(row["pid"]) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        with self.catalogue.transaction() as db:
            db.execute("UPDATE rules SET state = 'REPLICATING', error = '', attempts = 0, updated = ? "
                       "WHERE rule_id = ? AND state = 'STUCK'", (time.time(), rule.rule_id))
        return self.add_rule(rule.dataset, rule.site)

    def rule_status(self, rules: Sequence[RuleRef]) -> dict[str, RuleStatus]:
        out: dict[str, RuleStatus] = {}
        respawn: list[str] = []
        if not rules:
            return out
        with self.catalogue.connect() as db:
            for ref in rules:
                row = db.execute("SELECT * FROM rules WHERE rule_id = ?", (ref.rule_id,)).fetchone()
                if row is None:
                    out[ref.rule_id] = RuleStatus(ref.rule_id, RuleState.STUCK, error="no such rule")
                    continue
                counts = db.execute(
                    "SELECT COUNT(*) AS total, COUNT(r.rse) AS ok, COALESCE(SUM(d.bytes), 0) AS b "
                    "FROM contents c JOIN dids d ON c.scope = d.scope AND c.name = d.name "
                    "LEFT JOIN replicas r ON r.scope = c.scope AND r.name = c.name AND r.rse = ? "
                    "WHERE c.dataset = ?", (row["rse"], row["dataset"])).fetchone()
                state = RuleState(row["state"])
                error = row["error"]
                if state is RuleState.REPLICATING and not group_alive(row["pid"]):
                    # Rucio's transfer daemons never stop; the embedded conveyor can (killed, or a
                    # race with a retry). Supervise it like a daemon: start a new one. A conveyor
                    # finding the rule already OK exits at once, so this is safe to repeat.
                    respawn.append(ref.rule_id)
                    error = error or "conveyor not running; restarted"
                pending = counts["total"] - counts["ok"]
                out[ref.rule_id] = RuleStatus(
                    rule_id=ref.rule_id, state=state, locks_ok=counts["ok"],
                    locks_replicating=pending if state is RuleState.REPLICATING else 0,
                    locks_stuck=pending if state is RuleState.STUCK else 0,
                    bytes=row["bytes"], error=error, created=row["created"], updated=row["updated"],
                )
        for rule_id in respawn:
            self._spawn_conveyor(rule_id)
        return out

    def dataset_refs(self, dataset: str) -> list[DatasetRef]:
        site = self._dataset_site(dataset)
        universe = self._butler(site).butler.dimensions
        with self.catalogue.connect() as db:
            rows = db.execute(
                "SELECT d.rubin_sidecar FROM contents c JOIN dids d ON c.scope = d.scope AND c.name = d.name "
                "WHERE c.dataset = ? ORDER BY d.name", (dataset,)).fetchall()
        return [DatasetRef.from_json(r["rubin_sidecar"], universe=universe) for r in rows]

    def _dataset_site(self, dataset: str) -> str:
        with self.catalogue.connect() as db:
            row = db.execute("SELECT site FROM datasets WHERE name = ?", (dataset,)).fetchone()
        if row is None:
            raise ReplicaError(f"no such dataset {dataset!r}")
        return row["site"]

    def verify_ingested(self, rule: RuleRef) -> IngestCheck:
        refs = self.dataset_refs(rule.dataset)
        dest = SiteButler(rule.site, self.sites[rule.site][1], writeable=False)
        missing = dest.missing(refs)
        return IngestCheck(dataset=rule.dataset, site=rule.site, expected=len(refs), found=len(refs) - len(missing))

    # -- catalogue views (report, tests) -------------------------------------------------------

    def dataset_summary(self, dataset: str) -> dict[str, int]:
        with self.catalogue.connect() as db:
            row = db.execute(
                "SELECT COUNT(*) AS n, COALESCE(SUM(d.bytes), 0) AS b FROM contents c JOIN dids d "
                "ON c.scope = d.scope AND c.name = d.name WHERE c.dataset = ?", (dataset,)).fetchone()
        return {"files": row["n"], "bytes": row["b"]}

    def list_datasets(self, prefix: str = "") -> list[str]:
        with self.catalogue.connect() as db:
            return [r["name"] for r in db.execute(
                "SELECT name FROM datasets WHERE name LIKE ? ORDER BY name", (prefix + "%",))]

    def list_rules(self) -> list[dict]:
        with self.catalogue.connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM rules ORDER BY created, rule_id")]
