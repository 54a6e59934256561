"""Named crash points: a test hook that ends the process at one of its write sites.

``crashpoint("submit.after_record")`` does nothing unless the environment variable
``MULTISITE_DRP_CRASH_AT`` names that site (a comma-separated list may name several).
When it does, the process ends at once with ``os._exit(137)``, as a SIGKILL or a machine
failure would end it: no ``finally`` block, no ``atexit`` handler, no buffered write
flushed. ``tests/services/test_crash_points.py`` sets the variable in a child process,
runs an action, and then checks that the next ordinary try continues with no manual
clean-up. Unset (always, in production) each call costs one dictionary lookup.

The sites, in the order a step meets them:

* ``plan.after_plan_json``, ``plan.after_bps``, ``plan.before_publish``: the plan
  directory is being written under a temporary name (``campaign.planner``);
* ``submit.after_record``, ``submit.after_launch``: the embedded submission's record is
  written, then its runner started, then its identity recorded
  (``services.workflow.embedded``);
* ``runner.before_merge``, ``runner.after_merge``: the embedded runner's final job
  (``services.workflow.runner``);
* ``merge.after_command``: ``actions.finish_merge`` about to chain the group's RUN (its merge
  command, if one was needed, has ended);
* ``register.before_close``: files attached to a Rucio dataset, not yet closed;
* ``rule.after_add``: a Rucio rule added, not yet looked up again
  (``services.replica.rucio``);
* ``ingest.before_ingest``, ``ingest.after_ingest``: the Replica Monitor's ingest of a
  rule, before the datasets go in and before the rule is remembered as done.

This module imports nothing of the project: every layer may use it.
"""

from __future__ import annotations

import os

__all__ = ["CRASH_ENV", "CRASH_EXIT_CODE", "SITES", "crashpoint"]

CRASH_ENV = "MULTISITE_DRP_CRASH_AT"
CRASH_EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL

SITES = frozenset({
    "plan.after_plan_json", "plan.after_bps", "plan.before_publish",
    "submit.after_record", "submit.after_launch",
    "runner.before_merge", "runner.after_merge",
    "merge.after_command",
    "register.before_close",
    "rule.after_add",
    "ingest.before_ingest", "ingest.after_ingest",
})


def crashpoint(site: str) -> None:
    """End the process now if ``$MULTISITE_DRP_CRASH_AT`` names ``site``; else nothing."""
    if site not in SITES:
        raise ValueError(f"crashpoint: unknown site {site!r}; expected one of {sorted(SITES)}")
    wanted = os.environ.get(CRASH_ENV)
    if wanted and site in (s.strip() for s in wanted.split(",")):
        os.write(2, f"crash point {site}: ending the process (${CRASH_ENV})\n".encode())
        os._exit(CRASH_EXIT_CODE)
