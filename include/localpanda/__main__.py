"""``python -m localpanda up|down|status [--root DIR] [--slots N]``."""

from __future__ import annotations

import argparse
import json
import sys

from localpanda.deploy import DEFAULT_ROOT, LocalPanDA


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m localpanda", description=__doc__)
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--root", default=str(DEFAULT_ROOT))
    p.add_argument("--slots", type=int, default=2)
    a = p.parse_args(argv)
    lp = LocalPanDA(a.root)
    if a.action == "up":
        print(lp.up(slots=a.slots))
    elif a.action == "down":
        print("stopped" if lp.down() else "not running")
    else:
        print(json.dumps(lp.status(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
