"""CLI: python -m localrucio up|down|status [--root DIR] [--reset]."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from localrucio.deploy import DEFAULT_ROOT, LocalRucio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrucio", description="The local Rucio deployment.")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"deployment root (default {DEFAULT_ROOT})")
    parser.add_argument("--reset", action="store_true", help="up: empty the database (re-bootstrap) first")
    args = parser.parse_args(argv)
    lr = LocalRucio(args.root)
    if args.command == "up":
        ep = lr.up(reset=args.reset)
        info = lr.last_up
        how = "reused the running deployment" if info["reused"] else (
            "cold start" if info["cold"] else "started " + ", ".join(info["steps"]))
        print(f"Rucio at {ep.url}  account {ep.account}, username {ep.username} "
              f"(password in {lr.secrets_file})")
        print(f"client config: {ep.client_config}")
        steps = " ".join(f"{k}={v:.1f}s" for k, v in info["steps"].items())
        print(f"up in {info['seconds']:.1f}s ({how}{'; ' + steps if steps else ''})")
    elif args.command == "down":
        stopped = lr.down()
        running = [name for name, was in stopped.items() if was]
        print("stopped: " + (", ".join(running) if running else "nothing was running"))
    else:
        print(json.dumps(lr.status(), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
