"""Test-bed-only fault injection: make chosen quanta of the MiniCam pipeline raise.

The environment variable ``MINIDRP_FAIL_QUANTA`` names quanta that must fail, as
``;``-separated entries ``LABEL[:KEY=VALUE[,KEY=VALUE...]]``: a quantum of the task
labelled ``LABEL`` (its label in ``include/pipelines/minidrp.yaml``) whose data ID has
every ``KEY`` equal to ``VALUE`` raises `InjectedFault`. An entry with no keys fails
every quantum of the task. Example::

    MINIDRP_FAIL_QUANTA="isr:exposure=1001,detector=2;calibrate:visit=1003"

It is read when a quantum runs, in the process that runs it (``pipetask run-qbb``
inherits the environment of the workflow that launched it), so a test sets it around a
submission and a restart under the same environment fails the same quanta again.
Honoured by the step 1 tasks (``isr``, ``calibrate``); other tasks gain it with one
call to `raise_if_injected` at the top of their ``runQuantum``. Never set in production:
the orchestrator (``plugins/``) knows nothing of it.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ENV", "InjectedFault", "parse", "raise_if_injected"]

ENV = "MINIDRP_FAIL_QUANTA"


class InjectedFault(RuntimeError):
    """A quantum failed on purpose (``MINIDRP_FAIL_QUANTA``)."""


def parse(text: str) -> list[tuple[str, dict[str, str]]]:
    """``MINIDRP_FAIL_QUANTA``'s value as [(label, {key: value})]; ValueError naming the bad entry."""
    out = []
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        label, _, keys = entry.partition(":")
        match: dict[str, str] = {}
        for item in (k.strip() for k in keys.split(",") if k.strip()):
            key, eq, value = item.partition("=")
            if not eq or not key.strip() or not value.strip():
                raise ValueError(f"${ENV}: entry {entry!r}: {item!r} is not KEY=VALUE; expected "
                                 "LABEL[:KEY=VALUE[,KEY=VALUE...]] entries separated by ';'")
            match[key.strip()] = value.strip()
        if not label.strip():
            raise ValueError(f"${ENV}: entry {entry!r} has no task label; expected LABEL[:KEY=VALUE,...]")
        out.append((label.strip(), match))
    return out


def raise_if_injected(task: Any, data_id: Any) -> None:
    """Raise `InjectedFault` if ``MINIDRP_FAIL_QUANTA`` names this quantum of ``task``."""
    text = os.environ.get(ENV, "")
    if not text:
        return
    label = task.getName()
    values = {k: str(v) for k, v in data_id.mapping.items()}
    for want_label, match in parse(text):
        if want_label == label and all(values.get(k) == v for k, v in match.items()):
            raise InjectedFault(f"{label} {values}: failed on purpose (${ENV}={text!r})")
