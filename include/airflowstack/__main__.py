"""``python -m airflowstack up|down|status --root DIR [--dags-folder D]``.

``up`` prints the API server's URL, the user name and the file holding the password (never
the password); the processes keep running until ``down``. The processes get the caller's
environment as described in :mod:`airflowstack.stack`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from airflowstack.stack import REPO, AirflowStack


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m airflowstack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("up", "down", "status"))
    p.add_argument("--root", default=str(REPO / "var" / "airflow" / "stack"), help="the stack's directory")
    p.add_argument("--dags-folder", help="default: the project's dags/")
    args = p.parse_args(argv)
    stack = AirflowStack(Path(args.root), dags_folder=args.dags_folder)
    if args.command == "up":
        ep = stack.up()
        print(f"Airflow at {ep.url} (user {ep.username}, password in {ep.password_file}); "
              f"up in {stack.last_up['seconds']} s {stack.last_up['steps'] or '(already running)'}")
    elif args.command == "down":
        print(json.dumps(stack.down()))
    else:
        print(json.dumps(stack.status(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
