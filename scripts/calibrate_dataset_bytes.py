"""Calibrate a campaign's ``planner.dataset_bytes`` on the real files at its hub.

Usage::

    .venv/bin/python scripts/calibrate_dataset_bytes.py --campaign include/campaigns/minidrp_embedded.yaml \\
        --data-root var/demo/sites [--collections MiniCam/runs/DRP] [--sample 200] [--write FILE]

Measures every dataset type found in the collections at the campaign's hub (default: the
campaign's output chain and its input collections; bookkeeping types left out), prints a
table of datasets, files measured, mean bytes and the campaign's current estimate with the
ratio, and then the ``planner.dataset_bytes`` block to paste into the campaign file. The
block is checked against the campaign schema first. ``--write FILE`` writes the block as
YAML to FILE too (never the campaign file itself: it is the operator's, with comments).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "plugins", ROOT / "include", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def main(argv: list[str] | None = None) -> int:
    import yaml
    from multisite_drp.campaign import names
    from multisite_drp.campaign.config import CampaignConfig, load_campaign
    from multisite_drp.services.butler import SiteButler
    from multisite_drp.services.calibrate import measure_dataset_bytes

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--campaign", required=True)
    p.add_argument("--data-root")
    p.add_argument("--collections", nargs="+", help="default: the campaign's output chain and input collections")
    p.add_argument("--sample", type=int, default=None, help="measure at most this many datasets per type")
    p.add_argument("--write", help="also write the planner.dataset_bytes block here (YAML)")
    args = p.parse_args(argv)

    cfg = load_campaign(args.campaign, data_root=args.data_root, check_pipeline=False)
    hub = SiteButler(cfg.hub.name, cfg.repo_of(cfg.hub))
    collections = args.collections or [c for c in [names.campaign_chain(cfg), *cfg.input_collections]
                                       if hub.collection_exists(c)]
    if not collections:
        print(f"no collection to measure at {cfg.hub.name} ({cfg.repo_of(cfg.hub)}); expected the campaign's output "
              "chain (run the campaign first) or --collections", file=sys.stderr)
        return 2
    measured = measure_dataset_bytes(hub, collections, sample=args.sample)
    current = cfg.planner.dataset_bytes
    print(f"{'dataset type':28s} {'datasets':>9s} {'measured':>9s} {'mean bytes':>12s} {'estimate':>12s} {'ratio':>7s}")
    for name, m in measured.items():
        est = current.get(name, cfg.planner.default_dataset_bytes)
        print(f"{name:28s} {m['datasets']:9d} {m['measured']:9d} {m['mean']:12,d} {est:12,d} "
              f"{m['mean'] / est:7.2f}{'' if name in current else ' (default)'}")
    block = {"planner": {"dataset_bytes": {name: max(int(m["mean"]), 1) for name, m in measured.items()}}}
    data = cfg.model_dump()
    data["planner"]["dataset_bytes"] = block["planner"]["dataset_bytes"]
    CampaignConfig.model_validate({**data, "source_path": cfg.source_path})  # the block fits the schema
    text = yaml.safe_dump(block, sort_keys=True)
    print(f"\n# measured at {cfg.hub.name} in {', '.join(collections)}\n{text}", end="")
    if args.write:
        Path(args.write).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
