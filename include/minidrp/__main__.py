"""Command line: ``python -m minidrp build --root DIR`` and ``python -m minidrp validate --root DIR``."""

from __future__ import annotations

import argparse
import sys

from .constants import DEFAULT_SEED


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the sub-command; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m minidrp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the usdf, frdf and ukdf butler repositories under --root")
    b.add_argument("--root", required=True, help="directory that will hold usdf/, frdf/, ukdf/")
    b.add_argument("--seed", type=int, default=DEFAULT_SEED)
    b.add_argument("--holds-all-raws", action="append", default=[], metavar="SITE",
                   help="a remote site that holds every raw too (a campaign's sites[].holds_all_raws); repeatable")
    v = sub.add_parser("validate", help="run all nine steps at usdf and check the golden counts")
    v.add_argument("--root", required=True, help="a root made by `build`")
    v.add_argument("--write-golden", action="store_true", help="record the counts as the new golden values")
    v.add_argument(
        "--output-chain", default=None, help="output CHAINED collection (default MiniCam/runs/validate)"
    )
    v.add_argument("--work-dir", default=None, help="where graphs and logs go (default ROOT/validate/CHAIN)")
    v.add_argument(
        "-j",
        "--processes",
        type=int,
        default=1,
        help="run-qbb processes (1 is fastest for these tiny quanta)",
    )
    args = parser.parse_args(argv)

    if args.command == "build":
        from .build import BuildError, build_sites

        try:
            build_sites(args.root, seed=args.seed, holds_all_raws=args.holds_all_raws)
        except BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    from .validate import VALIDATION_CHAIN, validate

    report = validate(
        args.root,
        write_golden=args.write_golden,
        output_chain=args.output_chain or VALIDATION_CHAIN,
        work_dir=args.work_dir,
        processes=args.processes,
    )
    return 1 if report["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
