"""CLI: python -m localpanda up|down|status|serve [--root DIR] ..."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from localpanda.deploy import DEFAULT_ROOT, LocalPanDA


def _pairs(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        from localpanda.server import serve_main

        return serve_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m localpanda",
        description="The local PanDA relay: stands in for PanDA and iDDS, which cannot run on this machine.")
    parser.add_argument("command", choices=["up", "down", "status", "serve"],
                        help="serve: run the relay in the foreground (what up starts)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"relay root (default {DEFAULT_ROOT})")
    parser.add_argument("--port", type=int, default=None, help="up: port (default: as recorded, else free)")
    parser.add_argument("--slots", type=int, default=None, help="up: parallel jobs (default: as recorded, else 2)")
    parser.add_argument("--job-env", action="append", metavar="KEY=VALUE", help="up: extra job environment")
    parser.add_argument("--site-lock", action="append", metavar="SITE=PATH",
                        help="up: final jobs at computeSite SITE hold an exclusive flock on PATH")
    args = parser.parse_args(argv)
    lp = LocalPanDA(args.root)
    if args.command == "up":
        url = lp.up(port=args.port, slots=args.slots, job_env=_pairs(args.job_env),
                    site_locks=_pairs(args.site_lock))
        st = lp.status()
        print(f"local PanDA relay at {url} (pid {st['pid']}, {st['slots']} slots, root {lp.root})")
        print(" ".join(f"{k}={v}" for k, v in lp.client_env().items()))
    elif args.command == "down":
        print("stopped" if lp.down() else "nothing was running")
    else:
        print(json.dumps(lp.status(), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
