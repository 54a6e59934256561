"""Start, stop and drive the local PanDA relay (standard library only).

PanDA and iDDS cannot run on this machine. :class:`LocalPanDA` starts the relay that stands
in for them (``python -m localpanda serve``, see :mod:`localpanda.server`) as a detached
process under one root directory (``var/panda`` by default):

* ``state.json`` - port, relay pid and kernel start time, the configuration it runs with;
* ``config.json`` (0600) - slots, extra job environment, site locks, read by the relay;
* ``logs/relay.log`` - the relay's log;
* ``requests/``, ``steps/``, ``counters.json``, ``executions.jsonl`` - the relay's own
  state (see :mod:`localpanda.engine`); kept across restarts.

``up()`` is idempotent: a relay that runs (pid + start time) and answers ``/ping`` with the
same configuration is reused; otherwise it is (re)started, on the recorded port if that is
free (a relay that is alive but deliberately not listening - fault ``unavailable_for`` -
is reused too). Arguments left ``None`` keep what the last ``up()`` recorded, so ``up()``
after a crash brings back the same relay. ``down()`` stops it by pid and process group; the relay
kills its running jobs, and ``down()`` kills any job process group still alive. Concurrent
calls on one root are serialised by a file lock.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localpanda import _procs

INCLUDE = Path(__file__).resolve().parents[1]
REPO = INCLUDE.parent
DEFAULT_ROOT = REPO / "var" / "panda"
DEFAULT_SLOTS = 2
BASE_PATH = "/server/panda"


class LocalPanDA:
    """The local PanDA relay rooted at ``root`` (see the module docstring)."""

    def __init__(self, root: Path | str = DEFAULT_ROOT):
        self.root = Path(root).resolve()
        self._lock = _procs.FileLock(self.root / "run" / "lock")

    # ------------------------------------------------------------------ paths
    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / "relay.log"

    @property
    def executions_file(self) -> Path:
        return self.root / "executions.jsonl"

    # ------------------------------------------------------------------ lifecycle
    def up(self, port: int | None = None, slots: int | None = None, job_env: Mapping[str, str] | None = None,
           site_locks: Mapping[str, str | os.PathLike[str]] | None = None, timeout: float = 60.0) -> str:
        """Start the relay (or reuse the running one); returns its URL (see :meth:`url`).

        ``slots``: jobs run in parallel (default 2). ``job_env``: extra environment of every
        job (e.g. ``CTRL_MPEXEC_DIR``, ``PATH``). ``site_locks``: ``{computeSite: path}``;
        the final job of a request at that computeSite runs holding an exclusive flock on
        the path (a directory means its ``.multisite-drp-write.lock``, the file
        ``multisite_drp.services.butler.site_write_lock`` uses). ``None`` keeps the
        recorded value. A running relay with another configuration, or on another port than
        ``port``, is restarted (requests survive; its running jobs are re-queued). ``timeout``:
        seconds to wait for a new relay's ``/ping``.
        """
        with self._lock.hold():
            state = self._state()
            recorded = state.get("config") or {}
            config = {
                "slots": int(slots if slots is not None else recorded.get("slots") or DEFAULT_SLOTS),
                "job_env": {str(k): str(v) for k, v in
                            (job_env if job_env is not None else recorded.get("job_env") or {}).items()},
                "site_locks": {str(k): str(Path(v).resolve()) for k, v in
                               (site_locks if site_locks is not None else recorded.get("site_locks") or {}).items()},
            }
            if state.get("pid"):  # a relay recorded by the earlier single-file localpanda.relay
                _procs.terminate({"pid": state.pop("pid"), "start": state.pop("start", None)}, timeout=15)
                state.pop("conf", None)
            rec = state.get("relay")
            same_port = port is None or port == state.get("port")
            if _procs.alive(rec) and same_port and config == recorded and (
                    self._ping(state.get("port"), 5.0) or self._in_outage(rec)):
                return self.url()
            _procs.terminate(rec, timeout=15)
            self._kill_orphan_jobs()
            state.pop("relay", None)
            state["port"] = _procs.free_port(port or state.get("port"))
            state["config"] = config
            self._save_state(state)
            _procs.write_json(self.config_file, config, private=True)
            from multisite_drp.services.procs import child_env

            env = child_env()  # no Airflow connection or other credential reaches the relay or its jobs
            env["PYTHONPATH"] = os.pathsep.join([str(INCLUDE), *[p for p in env.get("PYTHONPATH", "").split(
                os.pathsep) if p and p != str(INCLUDE)]])
            argv = [sys.executable, "-m", "localpanda", "serve", "--root", str(self.root),
                    "--port", str(state["port"]), "--config", str(self.config_file)]
            rec = _procs.spawn(argv, env=env, log=self.log_file, cwd=self.root)
            state["relay"] = rec
            self._save_state(state)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._ping(state["port"], 1.0):
                    return self.url()
                if not _procs.alive(rec):
                    break
                time.sleep(0.05)
            _procs.terminate(rec)
            state.pop("relay", None)
            self._save_state(state)
            raise RuntimeError(f"the local PanDA relay did not answer /ping on port {state['port']}:\n"
                               f"{_procs.tail(self.log_file)}")

    def down(self, timeout: float = 15.0) -> bool:
        """Stop the relay and its jobs; idempotent. True if the relay was running.

        SIGTERM to the relay's process group (it kills its jobs), SIGKILL after ``timeout``;
        then any job process group still recorded as running is killed.
        """
        if not self.root.exists():
            return False
        with self._lock.hold():
            state = self._state()
            stopped = _procs.terminate(state.pop("relay", None), timeout=timeout)
            if state.get("pid"):  # recorded by the earlier single-file localpanda.relay
                stopped = _procs.terminate({"pid": state.pop("pid"), "start": state.pop("start", None)},
                                           timeout=timeout) or stopped
            self._kill_orphan_jobs()
            self._save_state(state)
        return stopped

    def status(self) -> dict[str, Any]:
        """What runs: pid, port, URL, ping, configuration, requests by status."""
        state = self._state()
        rec = state.get("relay") or {}
        running = _procs.alive(rec)
        port = state.get("port")
        requests: dict[str, int] = {}
        for meta in self._request_metas():
            requests[meta["status"]] = requests.get(meta["status"], 0) + 1
        config = state.get("config") or {}
        return {"root": str(self.root), "url": self.url() if port else None, "port": port,
                "pid": rec.get("pid"), "running": running, "ping": bool(running and self._ping(port)),
                "slots": config.get("slots"), "site_locks": config.get("site_locks") or {},
                "job_env_keys": sorted((config.get("job_env") or {}).keys()), "requests": requests,
                "log": str(self.log_file)}

    # ------------------------------------------------------------------ client side
    def url(self) -> str:
        """``http://127.0.0.1:PORT/server/panda``: PANDA_URL and PANDA_URL_SSL for clients."""
        port = self._state().get("port")
        if not port:
            raise RuntimeError(f"no relay recorded under {self.root}: call up() first")
        return f"http://127.0.0.1:{port}{BASE_PATH}"

    def client_env(self) -> dict[str, str]:
        """Environment for a panda-client / ctrl_bps_panda process talking to this relay.

        Set it before ``pandaclient.Client`` is imported: that module reads
        ``PANDA_URL_SSL`` into its global ``baseURLSSL`` and, without
        ``PANDA_BEHIND_REAL_LB``, resolves the PanDA cache host at import.
        ``X509_USER_PROXY=/dev/null``: no grid proxy here, and none is needed (plain http).
        """
        url = self.url()
        return {"PANDA_URL": url, "PANDA_URL_SSL": url, "PANDA_BEHIND_REAL_LB": "1", "X509_USER_PROXY": "/dev/null"}

    def control(self, **faults: Any) -> dict[str, Any]:
        """Switch faults on (``auth_error``, ``fail_jobs``, ``unavailable_for``,
        ``slow_replies``, ``kill_job``, ``clear``); returns the relay's faults.

        With ``unavailable_for`` this returns once the relay refuses connections.
        """
        reply = self._http("POST", "/control", faults)
        if float(faults.get("unavailable_for") or 0) > 0:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self._ping(self._state().get("port"), 0.5):
                time.sleep(0.02)
        return reply

    def clear_faults(self) -> dict[str, Any]:
        return self.control(clear=True)

    def stats(self) -> dict[str, Any]:
        """``{"commands": {name: count}, ...}`` since the relay started."""
        return self._http("GET", "/stats")

    def executions(self) -> list[dict[str, Any]]:
        """Every ended job attempt (executions.jsonl), oldest first."""
        try:
            lines = self.executions_file.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for i, line in enumerate(lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                if i != len(lines) - 1:  # only the last line may be caught half-written
                    raise
        return out

    def request(self, request_id: int | str) -> dict[str, Any]:
        """The relay's record of one request as on disk: request.json plus ``jobs``."""
        d = self.root / "requests" / str(int(request_id))
        meta = _procs.read_json(d / "request.json")
        if not meta:
            raise KeyError(f"no request {request_id} under {self.root}")
        meta["jobs"] = _procs.read_json(d / "jobs.json").get("tasks") or []
        return meta

    # ------------------------------------------------------------------ internals
    def _state(self) -> dict[str, Any]:
        return _procs.read_json(self.state_file)

    def _save_state(self, state: dict[str, Any]) -> None:
        _procs.write_json(self.state_file, state)

    def _request_metas(self) -> list[dict[str, Any]]:
        d = self.root / "requests"
        if not d.is_dir():
            return []
        metas = []
        for p in sorted(d.iterdir()):
            meta = _procs.read_json(p / "request.json")
            if meta:
                metas.append(meta)
        return metas

    def _in_outage(self, rec: Mapping[str, Any]) -> bool:
        """Is the running relay deliberately not listening (fault ``unavailable_for``)?"""
        outage = _procs.read_json(self.root / "run" / "outage.json")
        return outage.get("pid") == rec.get("pid") and float(outage.get("until") or 0) > time.time()

    def _kill_orphan_jobs(self) -> int:
        """Kill job process groups recorded as running (a relay that died leaves them)."""
        killed = 0
        d = self.root / "requests"
        if not d.is_dir():
            return 0
        for p in d.iterdir():
            for task_jobs in _procs.read_json(p / "jobs.json").get("tasks") or []:
                for job in task_jobs:
                    if job.get("state") == "running" and _procs.kill_group({"pid": job.get("pid"),
                                                                            "start": job.get("pstart")}):
                        killed += 1
        return killed

    def _ping(self, port: int | None, timeout: float = 2.0) -> bool:
        if not port:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _http(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        port = self._state().get("port")
        if not port:
            raise RuntimeError(f"no relay recorded under {self.root}: call up() first")
        data = json.dumps(dict(body)).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())


__all__ = ["DEFAULT_ROOT", "LocalPanDA"]
