"""The Rucio daemons of the local deployment, as one supervised process.

Run by :class:`localrucio.LocalRucio` from the server virtualenv::

    RUCIO_CONFIG=<root>/etc/rucio.cfg PYTHONPATH=<repo>/include \\
        .venv-rucio/bin/python -m localrucio.daemons --root <root> --token <token>

It loops until stopped. Each iteration runs one pass of each daemon Rucio needs for
replication rules, through Rucio's own daemon functions and machinery
(``rucio.daemons.common.run_daemon`` / the daemons' ``once`` mode, heartbeats included)
with ``partition_wait_time=0`` instead of the CLI's fixed 1-10 s wait per run:

1. judge-injector   (rules added with ``asynchronous=True``)
2. judge-evaluator  (files attached to a dataset after its rule exists get their locks)
3. judge-repairer   (STUCK rules; see below)
4. conveyor-submitter (``transfertools=['local']``: :mod:`localrucio.transfertool`)
5. conveyor-poller  (``older_than=0``: the CLI default only polls transfers older than 60 s)
6. conveyor-finisher (DONE -> replica AVAILABLE, lock OK, rule OK; FAILED -> retry or STUCK)

then sleeps ``--interval`` seconds (0.5 by default). Between iterations one cheap query
(:func:`make_probe`) checks whether there is anything to do (a transfer request, a DID
to re-evaluate, a rule to inject, a STUCK rule due for repair); when there is not, the
passes are skipped (but still run every ``--full-every`` s, 10 by default), so an idle
deployment costs little CPU. An exception in one pass is logged
and the loop goes on; while the database is unreachable every pass fails, and the loop
backs off to at most 5 s between iterations and resumes by itself when it is back (the
REST server is not used at all). The process exits on SIGTERM/SIGINT, and by itself
when the deployment that started it no longer names it (``down()``, a newer start, or
the root directory removed). Lock-contention pauses that Rucio's judge passes impose on
a DID or rule (10-40 min in production) are capped at 2 s here.

Failure, STUCK and repair, as Rucio 41.5.1 does it (read from rucio/core/request.py,
daemons/conveyor/finisher.py, core/lock.py, core/rule.py, core/rule_grouping.py, and
measured with this loop; the figures are from tests/localrucio):

* A FAILED transfer is re-submitted automatically by the conveyor-finisher:
  ``request.should_retry_request`` re-queues it while ``retry_count < 3`` (hard-coded;
  no configuration option, and the transfertool has no say). A rule's first request
  starts with no retry count, so a file gets 4 attempts; after the 4th failure the
  finisher marks the destination replica UNAVAILABLE and ``lock.failed_transfer`` puts
  the lock, and with it the rule, in STUCK with the transfer error as ``rule.error``.
  With this loop that takes about one iteration per attempt: a rule whose source file
  is missing is STUCK about 3 s after it was added (measured 2-4 s). If the file
  reappears before the 4th attempt, the rule simply reaches OK.
* The judge-repairer does NOT retry a STUCK lock promptly by itself: ``repair_rule``
  only re-queues a STUCK lock when ``rule_grouping.__is_retry_required`` says so, i.e.
  when the lock was last updated more than 2 h ago (4, 6, 8 h on later days; always for
  activity ``DebugJudge``). ``update_replication_rule(rule_id, {"state": "STUCK"})``
  does not change that (it only moves REPLICATING locks to STUCK and sets stuck_at).
* The call to make once the source is back is::

      RuleClient.update_replication_rule(rule_id, {"boost_rule": True})

  (``rucio rule update --boost-rule``). It moves ``updated_at`` of the rule and of its
  STUCK locks one day back, so the next repairer pass selects the rule and re-queues
  each STUCK lock (lock REPLICATING, destination replica COPYING, a new request with
  ``retry_count=1``, so 3 more attempts). The same rule, no second rule, reaches OK.
  Measured: OK about 1 s after the boost. Permission: root, or an account with the
  ``admin`` attribute (``ensure_sites`` gives it to the ``drp_<site>`` accounts).
* Repairer arguments used here: ``delta=--repair-delta`` (30 s): a STUCK rule is
  re-examined once it has been untouched that long; a boosted rule (``updated_at`` a
  day old) in the very next pass. The CLI's ``--run-once`` uses delta=-1 (every STUCK
  rule on every run), the long-running daemon 1800 s.
* A rule stays STUCK (it is never failed for good) until 14 days after ``stuck_at``,
  when the repairer SUSPENDs it.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("localrucio.daemons")

PAUSE_CAP = datetime.timedelta(seconds=2)
MAX_BACKOFF = 5.0


class _Stop:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.rucio_events: list[threading.Event] = []

    def __call__(self, signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping after the current pass", signum)
        self.event.set()
        for ev in self.rucio_events:
            ev.set()


def _cap_pauses(paused: dict[Any, datetime.datetime]) -> None:
    # Rucio keeps these as naive UTC datetimes.
    limit = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + PAUSE_CAP
    for key, until in list(paused.items()):
        if until > limit:
            paused[key] = limit


def build_passes(repair_delta: int) -> tuple[list[tuple[str, Callable[[], None]]], list[threading.Event]]:
    """The ordered (name, callable) passes of one iteration, and Rucio's stop events."""
    from rucio.daemons.common import run_daemon
    from rucio.daemons.conveyor import finisher, poller, submitter
    from rucio.daemons.judge import evaluator, injector, repairer

    from localrucio.transfertool import TOOL_NAME

    paused_injector: dict[Any, datetime.datetime] = {}
    paused_dids: dict[Any, datetime.datetime] = {}
    paused_rules: dict[Any, datetime.datetime] = {}

    def judge(module: Any, paused: dict, **kwargs: Any) -> Callable[[], None]:
        run_once = functools.partial(module.run_once, **kwargs)

        def _pass() -> None:
            try:
                run_daemon(once=True, graceful_stop=module.graceful_stop, executable=module.DAEMON_NAME,
                           partition_wait_time=0, sleep_time=60, run_once_fnc=run_once)
            finally:
                _cap_pauses(paused)

        return _pass

    passes = [
        ("judge-injector", judge(injector, paused_injector, paused_rules=paused_injector)),
        ("judge-evaluator", judge(evaluator, paused_dids, paused_dids=paused_dids, did_limit=1000)),
        ("judge-repairer", judge(repairer, paused_rules, paused_rules=paused_rules, delta=repair_delta)),
        ("conveyor-submitter", functools.partial(
            submitter.submitter, once=True, partition_wait_time=0, transfertools=[TOOL_NAME],
            filter_transfertool=None, bulk=1000, sleep_time=60)),
        ("conveyor-poller", functools.partial(
            poller.poller, once=True, partition_wait_time=0, transfertool=TOOL_NAME,
            filter_transfertool=None, older_than=0, db_bulk=1000, sleep_time=60)),
        ("conveyor-finisher", functools.partial(
            finisher.finisher, once=True, partition_wait_time=0, db_bulk=1000, sleep_time=60)),
    ]
    events = [injector.graceful_stop, evaluator.graceful_stop, repairer.graceful_stop,
              submitter.GRACEFUL_STOP, poller.GRACEFUL_STOP, finisher.GRACEFUL_STOP]
    return passes, events


def make_probe(repair_delta: int) -> Callable[[], bool]:
    """A cheap 'is there anything for the passes to do?' query.

    True if a transfer request exists (finished ones are archived out of the table), a
    DID awaits re-evaluation, a rule awaits injection, or a STUCK rule is due for the
    repairer. An idle iteration then costs one query instead of six daemon passes.
    """
    from rucio.db.sqla import models
    from rucio.db.sqla.constants import RuleState
    from rucio.db.sqla.session import read_session
    from sqlalchemy import and_, select

    @read_session
    def probe(*, session: Any = None) -> bool:
        due = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(seconds=repair_delta)
        rule = models.ReplicationRule
        for stmt in (
            select(models.Request.id).limit(1),
            select(models.UpdatedDID.id).limit(1),
            select(rule.id).where(rule.state == RuleState.INJECT).limit(1),
            select(rule.id).where(and_(rule.state == RuleState.STUCK, rule.updated_at < due)).limit(1),
        ):
            if session.execute(stmt).first() is not None:
                return True
        return False

    return probe


def _still_owner(root: Path, token: str) -> bool:
    """False once the deployment's state no longer names this process."""
    if not root.is_dir():
        return False
    try:
        state = json.loads((root / "state.json").read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True  # unreadable for a moment: decide next time
    return (state.get("daemons") or {}).get("token") == token


def _write_status(path: Path, status: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(status, indent=1, default=str))
    os.replace(tmp, path)


_DB_DOWN_HINTS = ("connection refused", "connection failed", "server closed the connection",
                  "could not connect", "terminating connection", "connection is closed")


def _looks_like_db_down(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "operationalerror" in text or any(hint in text for hint in _DB_DOWN_HINTS)


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:300]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrucio.daemons", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="deployment root (state.json, run/)")
    parser.add_argument("--token", required=True, help="identifies this process in the deployment state")
    parser.add_argument("--interval", type=float, default=0.5, help="sleep between iterations (s)")
    parser.add_argument("--full-every", type=float, default=10.0,
                        help="run every pass at least this often (s) even when the probe finds nothing")
    parser.add_argument("--repair-delta", type=int, default=30,
                        help="judge-repairer: re-examine a STUCK rule untouched this long (s)")
    args = parser.parse_args(argv)

    level = os.environ.get("LOCALRUCIO_DAEMONS_LOGLEVEL", "WARNING").upper()
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    if not os.environ.get("RUCIO_CONFIG"):
        log.error("RUCIO_CONFIG (the server configuration) is not set")
        return 2

    root: Path = args.root.resolve()
    run_dir = root / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    status_path = run_dir / "daemons-status.json"

    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    from localrucio.transfertool import register

    register(run_dir / "transfers")
    passes, events = build_passes(args.repair_delta)
    probe = make_probe(args.repair_delta)
    stop.rucio_events.extend(events)
    log.info("started: pid %d, %d passes, interval %.2fs", os.getpid(), len(passes), args.interval)

    status: dict[str, Any] = {"pid": os.getpid(), "token": args.token, "started_at": time.time(),
                              "iteration": 0, "idle_skips": 0, "errors_total": 0, "passes": {}}
    backoff = 0.0
    last_full = 0.0
    while not stop.event.is_set():
        if not _still_owner(root, args.token):
            log.info("the deployment no longer names this process: exiting")
            break
        t_iter = time.monotonic()
        if status["iteration"] and not backoff and t_iter - last_full < args.full_every:
            try:
                busy = probe()
            except Exception:  # noqa: BLE001 - let the passes meet (and report) the problem
                busy = True
            if not busy:
                status["idle_skips"] += 1
                stop.event.wait(args.interval)
                continue
        last_full = t_iter
        failed = 0
        db_down = False
        for name, fn in passes:
            if stop.event.is_set():
                break
            t0 = time.monotonic()
            try:
                fn()
                status["passes"][name] = {"seconds": round(time.monotonic() - t0, 3), "ok": True}
            except Exception as exc:
                failed += 1
                db_down = db_down or _looks_like_db_down(exc)
                status["errors_total"] += 1
                status["passes"][name] = {"seconds": round(time.monotonic() - t0, 3), "ok": False,
                                          "error": _short(exc), "at": time.time()}
                if backoff == 0.0:
                    log.warning("%s pass failed: %s", name, _short(exc), exc_info=level == "DEBUG")
        status["iteration"] += 1
        status["last_iteration_seconds"] = round(time.monotonic() - t_iter, 3)
        status["last_iteration_at"] = time.time()
        status["failed_passes_last_iteration"] = failed
        try:
            _write_status(status_path, status)
        except OSError:
            pass
        if db_down:
            if backoff < MAX_BACKOFF and backoff * 2 >= MAX_BACKOFF:
                log.warning("database unreachable; retrying every %.0fs", MAX_BACKOFF)
            backoff = min(MAX_BACKOFF, max(1.0, backoff * 2))
        elif backoff:
            log.info("database reachable again")
            backoff = 0.0
        stop.event.wait(max(args.interval, backoff))
    log.info("stopped after %d iterations", status["iteration"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
