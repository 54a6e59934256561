"""Replication through a real local Rucio: N butler datasets from one RSE to another.

For N in (1, 100, 2000) (``--files``), on the project's local Rucio (``include/localrucio``:
PostgreSQL, the server, the judge and conveyor daemons with the local-copy transfertool
in FTS's place, and the Replica Monitor daemon):

1. N small datasets are put into a source butler (a ``htm7``-keyed type: sky pixels need
   no dimension records, so any N is cheap to make);
2. the Rucio adapter registers them (lsst-rucio-register: adler32, replicas, dataset,
   attach, close) and adds one rule to the destination RSE;
3. the rule is polled with the adapter's batch ``rule_status`` until OK: ``rule_ok_s``
   (from the rule's creation), and the Rucio API calls of one poll: ``calls_per_poll``;
4. the destination butler is asked until it holds all N: ``ingest_s`` (from OK).

Prints one line per N, then the largest N's line last:
``replication: files=N rule_ok_s=A ingest_s=B calls_per_poll=C``.

    .venv/bin/python bench/replication.py [--files 1,100,2000] [--root var/bench-rucio]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "plugins", ROOT / "include", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "include"), str(ROOT)])

DATASET_TYPE = "benchBlob"


def make_repo(path: Path, scope: str):
    from lsst.daf.butler import Butler, Config, DatasetType

    Butler.makeRepo(str(path), config=Config({"datastore": {"root": f"<butlerRoot>/{scope}"}}),
                    forceConfigRoot=False)
    butler = Butler.from_config(str(path), writeable=True)
    butler.registry.registerDatasetType(DatasetType(DATASET_TYPE, ["htm7"], "StructuredDataDict",
                                                    universe=butler.dimensions))
    return butler


def wait(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"not done in {timeout} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="1,100,2000")
    ap.add_argument("--root", default=str(ROOT / "var" / "bench-rucio"))
    ap.add_argument("--keep", action="store_true", help="leave the local Rucio running")
    args = ap.parse_args(argv)

    from localrucio import LocalRucio, SiteSpec
    from multisite_drp.services.butler import SiteButler
    from multisite_drp.services.replica.base import RuleState
    from multisite_drp.services.replica.rucio import RucioCredentials, RucioReplicaService, RucioSite

    lr = LocalRucio(Path(args.root))
    t0 = time.monotonic()
    ep = lr.up()
    print(f"local Rucio up in {time.monotonic() - t0:.1f} s at {ep.url}", flush=True)
    work = Path(args.root) / "bench-data"
    scope = f"bench_{uuid.uuid4().hex[:8]}"
    repos = {site: work / scope / site for site in ("src", "dst")}
    butlers = {site: make_repo(path, scope) for site, path in repos.items()}
    specs = [SiteSpec(site=f"bench{site}", rse=f"BENCH_{site.upper()}_DISK", rse_root=path, butler_repo=path)
             for site, path in repos.items()]
    creds = lr.ensure_sites(scope, specs)
    sites = {s.site: RucioSite(site=s.site, rse=s.rse, repo=str(s.butler_repo), rucio_host=ep.url, auth_host=ep.url,
                               account=creds[s.site]["account"], username=creds[s.site]["username"]) for s in specs}
    service = RucioReplicaService(scope=scope, sites=sites, campaign="bench", activity="Production Output",
                                  credentials={k: RucioCredentials(v["password"]) for k, v in creds.items()},
                                  hub="benchsrc")
    from multisite_drp.services.procs import child_env

    env = child_env({**lr.client_env(), "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    lr.start_process("bench-replica-monitor",
                     [sys.executable, "-m", "multisite_drp.services.replica.monitor", "--scope", scope, "--discover",
                      "--interval", "0.5", "--state-dir", str(Path(args.root) / "monitor")], env=env, inherit=False)
    lines = []
    try:
        for n in [int(x) for x in args.files.split(",")]:
            run = f"bench/n{n}"
            t = time.monotonic()
            butlers["src"].collections.register(run)
            refs = [butlers["src"].put({"i": i, "n": n}, DATASET_TYPE, htm7=131_072 + i, run=run) for i in range(n)]
            t_put = time.monotonic() - t
            dataset = f"Dataset/bench/n{n}"
            t = time.monotonic()
            service.register("benchsrc", dataset, refs)
            t_reg = time.monotonic() - t
            rule = service.add_rule(dataset, "benchdst")
            t_rule = time.monotonic()
            before = sum(service.calls.values())
            service.rule_status([rule])
            calls = sum(service.calls.values()) - before
            wait(lambda r=rule: service.rule_status([r])[r.rule_id].state is RuleState.OK, timeout=1800)
            t_ok = time.monotonic()
            dest = SiteButler("benchdst", str(repos["dst"]), writeable=False)
            wait(lambda d=dest, x=refs: (d.refresh() or True) and not d.missing(x), timeout=1800, interval=0.2)
            t_ingest = time.monotonic()
            print(f"  n={n}: put {t_put:.1f} s, register {t_reg:.1f} s ({n / max(t_reg, 1e-9):.0f} files/s), "
                  f"rule to OK {t_ok - t_rule:.1f} s, OK to ingested {t_ingest - t_ok:.1f} s", flush=True)
            lines.append(f"replication: files={n} rule_ok_s={t_ok - t_rule:.2f} ingest_s={t_ingest - t_ok:.2f} "
                         f"calls_per_poll={calls}")
    finally:
        lr.stop_process("bench-replica-monitor")
        if not args.keep:
            lr.down()
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
