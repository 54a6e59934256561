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


# --- MiniCam embedded test bed (include/minidrp) -------------------------------------
# Session-scoped: the three site repos are built once (a few seconds) and the nine-step
# single-site validation runs once (about two minutes of real pipetask/butler commands).
import sys as _sys  # noqa: E402

import pytest  # noqa: E402

for _p in _paths:
    if _p not in _sys.path:
        _sys.path.insert(0, _p)


@pytest.fixture(scope="session")
def minidrp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding freshly built usdf/, frdf/ and ukdf/ MiniCam repositories (default seed)."""
    from minidrp.build import build_sites

    root = tmp_path_factory.mktemp("minidrp_sites")
    build_sites(root)
    return root


@pytest.fixture(scope="session")
def minidrp_validation(minidrp_root: Path) -> dict:
    """Report of `minidrp.validate.validate` run once at usdf (compared with golden_counts.json)."""
    from minidrp.validate import validate

    return validate(minidrp_root)
