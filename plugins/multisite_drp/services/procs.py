"""Detached process groups: how the embedded adapters tell whether their worker still runs.

Embedded workflow runners are started with ``start_new_session=True``, so
each is the leader of its own process group and its pid is the group id.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["group_alive"]


def group_alive(pgid: int | None) -> bool:
    """True while the process group ``pgid`` has a live (non-zombie) leader."""
    if not pgid:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still answers signal 0; look at its state in /proc.
    try:
        return Path(f"/proc/{pgid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
