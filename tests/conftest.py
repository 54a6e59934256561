"""Shared test set-up.

Child processes (pipetask, butler, the embedded workflow runner and replica conveyor)
import the project's packages too, so the project directories go on PYTHONPATH for
them as well as on sys.path for the test process. pandaclient resolves a host at
import time; keep it on loopback.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_paths = [str(ROOT / "plugins"), str(ROOT / "include"), str(ROOT)]
_existing = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in _paths]
os.environ["PYTHONPATH"] = os.pathsep.join(_paths + _existing)
os.environ.setdefault("PANDA_BEHIND_REAL_LB", "1")
os.environ.setdefault("PANDA_URL", "http://127.0.0.1:25080/server/panda")
os.environ.setdefault("PANDA_URL_SSL", "http://127.0.0.1:25080/server/panda")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# Tests never touch a developer's Airflow home.
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / "var" / "airflow-test"))
