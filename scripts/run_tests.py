"""Run the test suite as two pytest sessions side by side (what ``make test`` does).

The end-to-end campaign module (``tests/dags/test_campaign_e2e.py``) is one long chain of
waits on subprocesses (the DAG run, the reruns); the rest of the suite fits beside it on
a two-core machine. Each session gets its own local Rucio root, Airflow home and pytest
base temp (outside var/, which is an allowed root by default and tests place data outside
the roots on purpose), so neither stops, locks or cleans up the other's. Their output is prefixed
(``[campaign]``, ``[rest]``) and kept in ``var/test-logs/``; the exit status is non-zero
if either session fails. Arguments are passed to both sessions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
E2E = "tests/dags/test_campaign_e2e.py"
SESSIONS = {
    "campaign": [E2E],
    "rest": ["tests", f"--ignore={E2E}"],
}


def _pump(name: str, proc: subprocess.Popen, log: Path, lock: threading.Lock) -> None:
    with open(log, "w") as fh:
        for line in proc.stdout:  # type: ignore[union-attr]
            fh.write(line)
            fh.flush()
            with lock:
                sys.stdout.write(f"[{name}] {line}")
                sys.stdout.flush()


def main(argv: list[str]) -> int:
    logs = ROOT / "var" / "test-logs"
    logs.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    procs, pumps, t0 = {}, [], time.monotonic()
    for name, selection in SESSIONS.items():
        env = {**os.environ,
               "MULTISITE_DRP_RUCIO_TEST_ROOT": str(ROOT / "var" / f"rucio-test-{name}"),
               "AIRFLOW_HOME": str(ROOT / "var" / f"airflow-test-{name}")}
        argv_ = [sys.executable, "-m", "pytest", "-q", "--durations=15",
                 f"--basetemp={Path(tempfile.gettempdir()) / f'multisite-drp-pytest-{name}'}", *selection, *argv]
        procs[name] = subprocess.Popen(argv_, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, bufsize=1)
        pump = threading.Thread(target=_pump, args=(name, procs[name], logs / f"{name}.log", lock), daemon=True)
        pump.start()
        pumps.append(pump)
    codes = {}
    for name, proc in procs.items():
        codes[name] = proc.wait()
        print(f"[{name}] pytest exited {codes[name]} after {time.monotonic() - t0:.0f} s", flush=True)
    for pump in pumps:
        pump.join(10)
    print(f"test sessions: {codes}; wall {time.monotonic() - t0:.0f} s; logs in {logs}", flush=True)
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
