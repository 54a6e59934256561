"""Command line: ``python -m multisite_drp.campaign plan CONFIG --out DIR [--data-root DIR]``.

Plans a campaign (reading the spatial inputs from the hub's butler registry, or from a
parquet dataset with ``--inputs``) and writes the plan, the BPS submit files and the
report into ``--out``. Prints the shares, the quality metric against the two baselines
and the files written. Exit status 2 for bad input, with the message naming it.
"""

from __future__ import annotations

import argparse
import sys

from .config import CampaignConfigError, load_campaign


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multisite_drp.campaign")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="plan a campaign and write plan.json, BPS configs and a report")
    p.add_argument("config", help="campaign YAML")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--data-root", default=None, help="override the campaign's data_root")
    p.add_argument("--inputs", default=None, help="parquet dataset of spatial inputs (default: hub butler)")
    p.add_argument("--method", default=None, choices=["graph", "ra_stripes", "round_robin"])
    p.add_argument("--generation", type=int, default=0)
    p.add_argument("--no-baselines", action="store_true", help="skip the baseline comparison")
    args = parser.parse_args(argv)

    from .dataflow import DataflowError
    from .partition import PartitionError
    from .planner import PlanError, plan_to_directory
    from .spatial import SpatialInputError

    try:
        config = load_campaign(args.config, data_root=args.data_root)
        plan = plan_to_directory(config, args.out, parquet=args.inputs, method=args.method,
                                 generation=args.generation, baselines=not args.no_baselines)
    except (CampaignConfigError, PlanError, PartitionError, SpatialInputError, DataflowError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = plan.metrics
    for s in plan.sites:
        print(f"{s.name}: share {s.share_achieved:.4f} (target {s.share_target:.3f}), {len(s.visits)} visits, "
              f"{len(s.tracts)} tracts, region pieces {s.components}")
    print(f"cross-site bytes {m.cross_site_bytes} share_error {m.share_error:.4f} "
          f"connected {'yes' if m.connected else 'no'}")
    print(f"wrote {args.out}/plan.json, {args.out}/bps/, {args.out}/plan.md, {args.out}/report.json, "
          f"{args.out}/skymap.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
