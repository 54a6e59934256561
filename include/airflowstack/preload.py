"""Imports made once in the scheduler and the triggerer, inherited by every task process.

Under the LocalExecutor every task instance is a process forked from an executor worker,
itself forked from the scheduler (``multiprocessing`` with ``fork`` on Linux; the task
supervisor ``os.fork()``s again). A module the scheduler has imported before it starts its
executor is already in the task's ``sys.modules``: the task does not import it again. Our
tasks import the project's operators (the DAG file), the butler, the pipeline middleware and
the Rucio and PanDA clients: about 1.5 s of CPU per task instance when each imports them
afresh (``bench/task_startup.py``), against a DAG parse of about 0.25 s. Preloading them once
is what Celery's worker preload and gunicorn's ``--preload`` do for the same reason.

The triggerer gets the same list (its triggers import the hooks and the ports), the
dag-processor and the API server nothing (they never run a task).

:class:`airflowstack.AirflowStack` writes ``<home>/config/airflow_local_settings.py``, which
Airflow imports in every process at start-up (``airflow.settings.import_local_settings``;
``<AIRFLOW_HOME>/config`` is on ``sys.path``), and which calls :func:`preload` with the
``AIRFLOWSTACK_PRELOAD=1`` (the stack's default; ``AirflowStack(preload=False)`` turns it off). A module that fails to import is logged and skipped: a task that
needs it imports it itself, and fails there with its own error.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Sequence

__all__: list[str] = []  # airflow.settings copies a local-settings module's public names: none

log = logging.getLogger("airflowstack.preload")

#: What the campaign's task processes import, heaviest last (measured by bench/task_startup.py).
MODULES = (
    "multisite_drp.operators.groups",
    "multisite_drp.services.actions",
    "multisite_drp.services.factory",
    "lsst.daf.butler",
    "lsst.pipe.base",
    "lsst.ctrl.bps",
    "lsst.ctrl.bps.panda",
    "rucio.client",
    "lsst.rucio.register.rucio_interface",
)
#: Local-settings file content (written by the stack into ``<home>/config``).
LOCAL_SETTINGS = '''"""Written by airflowstack: preload the campaign's modules (see airflowstack.preload)."""
import os as _os
import sys as _sys

__all__ = []
_COMMAND = _sys.argv[1] if len(_sys.argv) > 1 else ""
if _os.environ.get("AIRFLOWSTACK_PRELOAD") == "1" and _COMMAND in ("scheduler", "triggerer"):
    from airflowstack.preload import preload as _preload

    _preload()
'''


def preload(modules: Sequence[str] = MODULES) -> dict[str, float]:
    """Import ``modules`` (seconds of CPU each; ``-1`` for one that failed)."""
    done: dict[str, float] = {}
    for name in modules:
        c0 = time.process_time()
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a task that needs it reports its own error
            log.warning("preload: %s not imported (%s: %s)", name, type(exc).__name__, str(exc).splitlines()[0][:200])
            done[name] = -1.0
            continue
        done[name] = round(time.process_time() - c0, 3)
    log.info("preloaded for task processes: %s", done)
    return done
