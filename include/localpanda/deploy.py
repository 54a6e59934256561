"""Start, find and stop the local PanDA relay (see :mod:`localpanda.relay`).

``LocalPanDA(root).up()`` starts ``python -m localpanda.relay`` as a detached process in its
own process group on a free loopback port (or finds the one already running: pid, kernel
start time and ``/ping``), and records it in ``<root>/state.json``. ``down()`` stops it by
that pid; the relay kills its running jobs as it goes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO / "var" / "panda"


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class LocalPanDA:
    """One relay under ``root``: its state, its pilots' working directories, its log."""

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_ROOT) -> None:
        self.root = Path(root)

    # -- state -------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def _alive(self, st: dict[str, Any]) -> bool:
        pid = st.get("pid")
        return bool(pid) and _start_time(int(pid)) == st.get("start") and self._ping(st.get("port"))

    @staticmethod
    def _ping(port: int | None) -> bool:
        if not port:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server/panda/ping", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def url(self) -> str:
        """The PanDA server base URL to give a connection (``PANDA_URL_SSL``)."""
        port = self._state().get("port")
        if not port:
            raise RuntimeError(f"no local PanDA relay recorded under {self.root}; call up() first")
        return f"http://127.0.0.1:{port}/server/panda"

    def status(self) -> dict[str, Any]:
        st = self._state()
        return {**st, "running": self._alive(st)} if st else {"running": False}

    # -- lifecycle ---------------------------------------------------------------------------

    def up(self, port: int | None = None, slots: int = 2, job_env: dict[str, str] | None = None,
           site_locks: dict[str, str] | None = None, timeout: float = 30.0) -> str:
        """Start the relay (or find it running, with the same settings); return its URL."""
        from localpanda.relay import free_port

        st = self._state()
        conf = {"job_env": job_env or {}, "site_locks": site_locks or {}, "slots": slots}
        if self._alive(st) and st.get("conf") == conf:
            return self.url()
        if self._alive(st):
            self.down()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "config.json").write_text(json.dumps(conf, indent=1))
        port = port or free_port()
        log = open(self.root / "relay.log", "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, "PANDA_BEHIND_REAL_LB": "1", "PYTHONUNBUFFERED": "1"}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "localpanda.relay", "--root", str(self.root), "--port", str(port),
                 "--slots", str(slots), "--config", str(self.root / "config.json")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ping(port):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"the local PanDA relay exited at start; see {self.root / 'relay.log'}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"the local PanDA relay did not answer in {timeout} s; see {self.root / 'relay.log'}")
        (self.root / "state.json").write_text(json.dumps(
            {"pid": proc.pid, "start": _start_time(proc.pid), "port": port, "conf": conf}, indent=1))
        return self.url()

    def down(self, timeout: float = 15.0) -> bool:
        """Stop the recorded relay (SIGTERM to its group, SIGKILL after ``timeout``)."""
        st = self._state()
        pid = st.get("pid")
        if not pid or _start_time(int(pid)) != st.get("start"):
            return False
        try:
            os.killpg(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _start_time(int(pid)) == st.get("start"):
            with_child = Path(f"/proc/{pid}/stat")
            if with_child.exists() and with_child.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.1)
        else:
            if _start_time(int(pid)) == st.get("start"):
                os.killpg(int(pid), signal.SIGKILL)
        try:
            os.waitpid(int(pid), os.WNOHANG)
        except ChildProcessError:
            pass
        return True

    # -- test controls -----------------------------------------------------------------------

    def _http(self, path: str, body: dict | None = None) -> Any:
        port = self._state()["port"]
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{port}/server/panda/{path}", data=data,
                                     method="POST" if data is not None else "GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def control(self, **faults: Any) -> dict:
        """Switch fault modes on: auth_error, fail_jobs, unavailable_for, slow_replies, kill_job."""
        return self._http("control", faults)

    def clear_faults(self) -> dict:
        return self._http("control", {"clear": True})

    def stats(self) -> dict:
        return self._http("stats")

    def executions(self) -> list[dict]:
        """Every job attempt the relay's pilots ran (one record each)."""
        path = self.root / "executions.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
