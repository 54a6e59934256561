"""Wire a campaign's PanDA sites to the local relay (what ``scripts/run_campaign.py`` and the
tests use): workflow connections whose host is ``local-panda`` get the relay's URL.

The relay's pilots run jobs with the project's virtualenv first on PATH and the stack's
directories set as EUPS would set them (``CTRL_MPEXEC_DIR``, ``DAF_BUTLER_DIR``: the venv),
and each PanDA site's final job holds that site's butler write lock (BPS's ``db_limit``; the
embedded registries are SQLite, one writer at a time).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from localpanda.deploy import LocalPanDA

LOCAL_PANDA_HOST = "local-panda"
#: services.butler.site_write_lock's file, relative to a local repository.
WRITE_LOCK = ".multisite-drp-write.lock"


def job_env() -> dict[str, str]:
    """What a pilot's job needs to find the stack and the project's tasks."""
    venv_bin = Path(sys.executable).parent
    prefix = str(venv_bin.parent)
    return {"PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "CTRL_MPEXEC_DIR": prefix, "DAF_BUTLER_DIR": prefix,
            "PANDA_BEHIND_REAL_LB": "1"}


def fill_local_connections(conns: dict[str, dict[str, Any]], cfg, root: Path, slots: int = 2) -> dict[str, dict]:
    """The campaign's workflow connections on host ``local-panda``, pointed at the relay under
    ``root`` (started, or found running). Returns conn_id -> filled connection."""
    local = {s.connections.workflow: s for s in cfg.sites
             if conns.get(s.connections.workflow, {}).get("host") == LOCAL_PANDA_HOST}
    if not local:
        return {}
    locks = {s.compute_site: str(Path(cfg.repo_of(s)) / WRITE_LOCK) for s in local.values()}
    url = LocalPanDA(root).up(slots=slots, job_env=job_env(), site_locks=locks)
    return {cid: {**conns[cid], "host": url} for cid in local}
