"""Submit-to-finished time of one workflow: the embedded adapter against the PanDA adapter.

The same step (step1 at the hub, whose butler holds every input; ``--visits`` visits, 8
quanta each) runs once through each adapter, in a generation of its own:

* ``embedded``: the detached local runner (pre-exec-init, one ``run-qbb -j 1``, merge);
* ``panda``: BPS transform and prepare, ``PanDAService.submit`` to the local PanDA relay
  (``include/localpanda``, the stand-in for PanDA and iDDS), whose pilots run the jobs
  through ctrl_bps_panda's edge-node decoder: pipetaskInit, the clustered step jobs, the
  final merge job. Clustering is the campaign's ``planner.cluster_by`` (``--cluster``:
  ``task`` = one job per task, the MiniCam test bed's setting; ``visit`` = a Data
  Facility's default, one job per visit).

Both are polled every 0.5 s. Prints per adapter ``submit_s`` (the submit call),
``finished_s`` (submit to terminal), the job count, and the PanDA overhead:

    workflow_overhead: adapter=panda cluster=task quanta=16 jobs=3 submit_s=5.1 finished_s=21.0
    workflow_overhead: panda_minus_embedded_s=9.8 ratio=1.9

    .venv/bin/python bench/workflow_overhead.py [--visits 2] [--cluster task|visit]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "plugins", ROOT / "include", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "include"), str(ROOT)])
os.environ.setdefault("PANDA_BEHIND_REAL_LB", "1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visits", type=int, default=2)
    ap.add_argument("--cluster", choices=["task", "visit"], default="task")
    args = ap.parse_args(argv)

    import yaml
    from localpanda import LocalPanDA
    from localpanda.campaign import job_env
    from minidrp.build import build_sites
    from multisite_drp.campaign.config import load_campaign
    from multisite_drp.services import actions, factory
    from multisite_drp.services.butler import SiteButler

    base = Path(tempfile.mkdtemp(prefix="bench-workflow-", dir=ROOT / "var"))
    build_sites(base / "sites", scope="minidrp")
    doc = yaml.safe_load((ROOT / "include" / "campaigns" / "minidrp_embedded.yaml").read_text())
    doc["pipeline"] = str(ROOT / "include" / "pipelines" / "minidrp.yaml")
    if args.cluster == "visit":
        doc["planner"].pop("cluster_by")
    for s in doc["sites"]:
        if s["name"] == "usdf":
            s["compute_site"] = "SLAC"
    (base / "campaign.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_campaign(base / "campaign.yaml", data_root=base / "sites")
    relay = LocalPanDA(base / "relay")
    url = relay.up(slots=2, job_env=job_env())
    services = {
        "embedded": factory.workflow_service({"adapter": "embedded", "site": "usdf", "processes": 1}),
        "panda": factory.workflow_service(factory.workflow_settings(cfg, "usdf", factory.ConnectionInfo(
            "bench", host=url, extra={"adapter": "panda", "number_of_retries": 1}, where="bench"))),
    }
    butler = SiteButler("usdf", cfg.repo_of("usdf"))
    ids = sorted(r.id for r in butler.butler.query_dimension_records("visit", explain=False))[:args.visits]
    actions.data_query = lambda c, step, site, group: (  # the bench pins its visits
        f"instrument = 'MiniCam' AND visit IN ({', '.join(map(str, ids))})")
    results = {}
    try:
        for gen, (name, service) in enumerate(services.items(), start=1):
            ctx = actions.CampaignContext(config=cfg, workflows={"usdf": service}, replica=None,
                                          butlers={"usdf": butler}, generation=gen)
            actions.make_plan(cfg, gen)
            qg = actions.generate_qg(ctx, "step1", "usdf", 0)
            spec = actions.workflow_spec(ctx, "step1", "usdf", 0)
            t0 = time.monotonic()
            ref = service.submit(spec)
            t_submit = time.monotonic() - t0
            while not (st := service.status([ref])[ref.run_id]).terminal:
                time.sleep(0.5)
            t_done = time.monotonic() - t0
            jobs = len([e for e in relay.executions() if str(e["request_id"]) == ref.run_id]) \
                if name == "panda" else 1
            results[name] = t_done
            print(f"workflow_overhead: adapter={name} cluster={args.cluster} quanta={qg['quanta']} jobs={jobs} "
                  f"state={st.state.name} submit_s={t_submit:.1f} finished_s={t_done:.1f}", flush=True)
    finally:
        relay.down()
    print(f"workflow_overhead: panda_minus_embedded_s={results['panda'] - results['embedded']:.1f} "
          f"ratio={results['panda'] / results['embedded']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
