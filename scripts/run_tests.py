"""Run the test suite as two pytest sessions side by side (what ``make test`` does).

The end-to-end campaign module (``tests/dags/test_campaign_e2e.py``) is one long chain of
waits on subprocesses (the DAG run, the reruns); the rest of the suite fits beside it on
a two-core machine. Each session gets its own local Rucio root, Airflow home and pytest
base temp (outside var/, which is an allowed root by default and tests place data outside
the roots on purpose), so neither stops, locks or cleans up the other's. Their output is prefixed
(``[campaign]``, ``[rest]``) and kept in ``var/test-logs/``; the exit status is non-zero
if either session fails. Arguments are passed to both sessions.

The campaign session is one chain of waits whose every link is a process start, a graph
build or a job: its length is set by how soon each link gets a CPU. The rest of the suite
is many independent tests that can take whatever CPU is left. So the rest session (and
everything it starts: its Rucio, its Airflow stacks, its pipetask runs) runs at a lower
priority (``NICE``). Measured on two cores: the campaign session took 1052 s alone
and 1355 s beside the rest at equal priority (the rest: 854 s alone, 1281 s beside it).

Linux shares the CPU equally between autogroups (one per session, ``setsid``) whatever
their processes' nice, and the servers both sessions start (PostgreSQL, Rucio, Airflow,
the detached workflow runners) are sessions of their own: with autogrouping on, the nice
reached pytest alone and changed nothing (1306 s). Where it may (root), the runner turns
autogrouping off for the run (``kernel.sched_autogroup_enabled``) and puts it back after.
"""

from __future__ import annotations

import contextlib
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
#: How much lower the rest session's CPU priority is (``nice``); the campaign session's is unchanged.
NICE = {"campaign": 0, "rest": 5}


def _pump(name: str, proc: subprocess.Popen, log: Path, lock: threading.Lock) -> None:
    with open(log, "w") as fh:
        for line in proc.stdout:  # type: ignore[union-attr]
            fh.write(line)
            fh.flush()
            with lock:
                sys.stdout.write(f"[{name}] {line}")
                sys.stdout.flush()


AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


@contextlib.contextmanager
def _nice_applies():
    """Autogrouping off while the sessions run, if it is on and this process may turn it off."""
    try:
        before = AUTOGROUP.read_text().strip()
        if before != "0":
            AUTOGROUP.write_text("0")
    except OSError as exc:
        print(f"run_tests: CPU autogrouping stays as it is ({exc}); the sessions share the CPU equally", flush=True)
        yield
        return
    if before != "0":
        print("run_tests: CPU autogrouping off for the run, so that the rest session's nice applies", flush=True)
    try:
        yield
    finally:
        if before != "0":
            with contextlib.suppress(OSError):
                AUTOGROUP.write_text(before)


def main(argv: list[str]) -> int:
    with _nice_applies():
        return _main(argv)


def _main(argv: list[str]) -> int:
    logs = ROOT / "var" / "test-logs"
    logs.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    procs, pumps, t0 = {}, [], time.monotonic()
    for name, selection in SESSIONS.items():
        env = {**os.environ,
               "MULTISITE_DRP_RUCIO_TEST_ROOT": str(ROOT / "var" / f"rucio-test-{name}"),
               "AIRFLOW_HOME": str(ROOT / "var" / f"airflow-test-{name}")}
        argv_ = [*(["nice", "-n", str(NICE[name])] if NICE[name] else []), sys.executable, "-m", "pytest", "-q", "--durations=15",
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
