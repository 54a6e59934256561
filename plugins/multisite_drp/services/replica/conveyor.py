"""Conveyor for the embedded replica service: satisfies one rule, then exits.

``python -m multisite_drp.services.replica.conveyor CATALOGUE RULE_ID``

For every file of the rule's dataset with no replica at the destination RSE it picks
a source RSE that has one, transfers the butler datasets with
``Butler.transfer_from(..., transfer="copy", transfer_dimensions=True,
register_dataset_types=True)`` under the destination's write lock, then checks every
copied file's size and adler32 against the catalogue before recording the replica.
A failure is retried with backoff; after the last attempt the rule goes STUCK with
the error, as Rucio's would.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections import defaultdict

from lsst.daf.butler import DatasetRef
from multisite_drp.services.butler import SiteButler
from multisite_drp.services.fileio import adler32_of
from multisite_drp.services.replica.embedded import Catalogue

MAX_ATTEMPTS = 3


class ChecksumMismatch(RuntimeError):
    pass


def _pending(cat: Catalogue, rule: dict) -> list[dict]:
    with cat.connect() as db:
        return [dict(r) for r in db.execute(
            "SELECT d.* FROM contents c JOIN dids d ON c.scope = d.scope AND c.name = d.name "
            "WHERE c.dataset = ? AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.scope = c.scope "
            "AND r.name = c.name AND r.rse = ?) ORDER BY d.name", (rule["dataset"], rule["rse"]))]


def _sources(cat: Catalogue, files: list[dict], dest_rse: str) -> dict[str, list[dict]]:
    """Group pending files by a source RSE holding them (the first by name, for determinism)."""
    by_source: dict[str, list[dict]] = defaultdict(list)
    with cat.connect() as db:
        for f in files:
            row = db.execute(
                "SELECT rse FROM replicas WHERE scope = ? AND name = ? AND rse != ? AND state = 'A' "
                "ORDER BY rse LIMIT 1", (f["scope"], f["name"], dest_rse)).fetchone()
            if row is None:
                raise RuntimeError(f"no source replica for {f['scope']}:{f['name']}")
            by_source[row["rse"]].append(f)
    return by_source


def satisfy(cat: Catalogue, rule: dict) -> int:
    """Copy, check and ingest every pending file; return bytes moved."""
    dest_site, dest_repo = cat.site_of(rule["rse"])
    dest = SiteButler(dest_site, dest_repo)
    dest_root = dest.datastore_root()
    assert dest_root is not None
    moved = 0
    for src_rse, files in _sources(cat, _pending(cat, rule), rule["rse"]).items():
        src_site, src_repo = cat.site_of(src_rse)
        src = SiteButler(src_site, src_repo, writeable=False)
        refs = [DatasetRef.from_json(f["rubin_sidecar"], universe=src.butler.dimensions) for f in files]
        with dest.write_lock():
            dest.refresh()
            dest.butler.transfer_from(
                src.butler, refs, transfer="copy", skip_missing=False,
                register_dataset_types=True, transfer_dimensions=True,
            )
        now = time.time()
        rows = []
        for f in files:
            path = dest_root / f["name"]
            if not path.is_file():
                raise FileNotFoundError(f"{f['name']} did not arrive at {rule['rse']}")
            size, adler = path.stat().st_size, adler32_of(path)
            if size != f["bytes"] or adler != f["adler32"]:
                raise ChecksumMismatch(f"{f['name']}: expected {f['bytes']} B adler32 {f['adler32']}, "
                                       f"got {size} B adler32 {adler}")
            rows.append((f["scope"], f["name"], rule["rse"], now))
            moved += size
        with cat.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO replicas VALUES (?, ?, ?, 'A', ?)", rows)
            db.execute("UPDATE rules SET bytes = bytes + ?, updated = ? WHERE rule_id = ?",
                       (sum(f["bytes"] for f in files), now, rule["rule_id"]))
    return moved


def main(catalogue: str, rule_id: str) -> int:
    cat = Catalogue(catalogue)
    with cat.connect() as db:
        row = db.execute("SELECT * FROM rules WHERE rule_id = ?", (rule_id,)).fetchone()
    if row is None:
        print(f"no rule {rule_id}", file=sys.stderr)
        return 2
    rule = dict(row)
    if rule["state"] == "OK":
        return 0
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            moved = satisfy(cat, rule)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the rule
            err = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            state = "STUCK" if attempt == MAX_ATTEMPTS else "REPLICATING"
            with cat.transaction() as db:
                db.execute("UPDATE rules SET attempts = attempts + 1, error = ?, state = ?, updated = ? "
                           "WHERE rule_id = ?", (err[:2000], state, time.time(), rule_id))
            if state == "STUCK":
                return 1
            time.sleep(min(2**attempt, 10))
            continue
        with cat.transaction() as db:
            db.execute("UPDATE rules SET state = 'OK', error = '', updated = ? WHERE rule_id = ?",
                       (time.time(), rule_id))
        print(f"rule {rule_id} OK: {moved} bytes copied to {rule['rse']}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
