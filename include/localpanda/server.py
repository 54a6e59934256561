"""The relay: PanDA's ``/relay_idds_command`` on loopback, answered as iDDS would.

PanDA and iDDS cannot run on this machine. This HTTP server stands in for both: it speaks
the wire format that ctrl_bps_panda 30.0.0 (through panda-client's ``idds_api`` and
``Client.call_idds_command``) uses, and its :class:`~localpanda.engine.Engine` runs the
submitted jobs as PanDA's pilots would.

Wire format (what the real client sends, what it accepts)
---------------------------------------------------------
``POST <PANDA_URL_SSL>/relay_idds_command`` (any path ending so). panda-client's
``_HttpClient.post`` with ``compress_body=True`` (ctrl_bps_panda always asks for it) sends
``gzip(json.dumps(data))`` with ``Content-Type: application/json`` and *no*
Content-Encoding header; without compression it sends ``urlencode(data)``. Both are
accepted: the body is gunzipped if it starts with the gzip magic, then parsed as JSON if
it looks like a JSON object, else as a form. ``data`` is ``{"command_name":
"<cmd>[+<iddsServer>]", "args": "<str>", "kwargs": "<str>", "manager": true}`` where
``args``/``kwargs`` are ``idds.common.utils.json_dumps`` strings (absent when empty),
decoded here with ``idds.common.utils.json_loads``, which rebuilds the iDDS objects
(``Workflow``, ``DomaPanDAWork``, conditions) from their ``class``/``module`` records.

The reply is HTTP 200 with ``json_dumps([True, result])`` or ``[False, "error"]``.
panda-client parses it with plain ``json.loads`` (ctrl_bps_panda passes no loader), so
enums reach the caller as ``{"class": "RequestStatus", "module": "idds.common.constants",
"attributes": {"_value_": 3, "_name_": "Finished", "_sort_order_": 3}}`` and datetimes as
``"Mon, 23 Nov 2026 14:12:24 UTC"`` - produced here by ``json_dumps`` of the real values.

Commands (ClientManager names and keywords): ``ping``, ``submit`` (a workflow step upload
returns 0), ``get_requests``, ``get_request_id_by_name``, ``get_contents_output_ext``,
``abort``, ``retry``, ``get_status`` (a text table, as ClientManager returns).

Other endpoints (at the root or under the base path, e.g. ``/server/panda/ping``):
``GET /ping`` (200 "OK": readiness), ``GET /stats`` (relay commands counted by name since
this relay started, requests, running jobs, faults), ``GET /control`` and ``POST
/control`` (JSON) to switch faults on and off:

* ``auth_error: true`` - every relay command answers ``[True, "... Authentication no
  permission ..."]`` (what ctrl_bps_panda's ``get_idds_result`` treats as refused);
* ``fail_jobs: [pattern, ...]`` - attempts of matching jobs exit 1 without running (see
  :func:`localpanda.engine.matches`);
* ``unavailable_for: N`` - the listening socket is closed for N seconds (clients get
  connection refused), then bound again on the same port; jobs keep running;
* ``slow_replies: S`` - S seconds added before every relay command's reply;
* ``kill_job: pattern`` - the next running job that matches is killed (SIGKILL to its
  process group): a failed attempt, retried if attempts remain;
* ``clear: true`` - all faults off (applied first, so ``{"clear": true, ...}`` replaces).
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from localpanda import _procs
from localpanda.engine import Engine

log = logging.getLogger("localpanda.server")

AUTH_ERROR = ("Authentication no permission: the local PanDA relay refuses this identity "
              "(fault auth_error switched on by a test)")
NO_FAULTS: dict[str, Any] = {"auth_error": False, "fail_jobs": [], "unavailable_until": None,
                             "slow_replies": 0.0, "kill_job": None}


def decode_body(raw: bytes, content_type: str = "") -> dict[str, Any]:
    """The form fields of a relay call, however panda-client encoded them."""
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8")
    if "json" in content_type or text.lstrip().startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("relay body is not a JSON object")
        return data
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


def decode_call(data: Mapping[str, Any]) -> tuple[str, str | None, list[Any], dict[str, Any]]:
    """(command, iDDS host or None, args, kwargs) of decoded form fields."""
    from idds.common.utils import json_loads

    name = str(data.get("command_name") or "")
    command, _, host = name.partition("+")
    args = json_loads(data["args"]) if data.get("args") else []
    kwargs = json_loads(data["kwargs"]) if data.get("kwargs") else {}
    return command, host or None, list(args), dict(kwargs)


class Relay:
    """The relay's state: engine, faults, command counters, the HTTP server."""

    def __init__(self, root: Path | str, port: int, *, slots: int = 2, job_env: Mapping[str, str] | None = None,
                 site_locks: Mapping[str, str] | None = None):
        self.root = Path(root).resolve()
        self.port = port
        self.faults: dict[str, Any] = dict(NO_FAULTS)
        self.engine = Engine(self.root, slots=slots, job_env=job_env, site_locks=site_locks, faults=self.faults)
        self.commands: dict[str, int] = {}
        self.stopping = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None
        self._httpd_lock = threading.Lock()
        self.started_at = time.time()
        self.outage_file = self.root / "run" / "outage.json"

    # ------------------------------------------------------------------ commands
    def handle(self, data: Mapping[str, Any]) -> Any:
        """Run one relay command; the ``[status, result]`` pair to send back."""
        command, host, args, kwargs = decode_call(data)
        with self.engine.lock:
            self.commands[command] = self.commands.get(command, 0) + 1
            auth_error = self.faults["auth_error"]
        if auth_error:
            return [True, AUTH_ERROR]
        handler = getattr(self, f"cmd_{command}", None)
        if handler is None:
            return [False, f"localpanda: command {command!r} is not supported by the local PanDA relay"]
        try:
            return [True, handler(*args, _host=host, _data=data, **kwargs)]
        except Exception as exc:  # noqa: BLE001 - becomes iDDS's error reply
            log.warning("command %s failed: %s", command, traceback.format_exc())
            return [False, f"{type(exc).__name__}: {exc}"]

    def cmd_ping(self, **_: Any) -> dict[str, str]:
        return {"Status": "OK"}

    def cmd_submit(self, workflow: Any, username: str | None = None, userdn: str | None = None,
                   use_dataset_name: bool = False, *, _host: str | None = None, _data: Mapping[str, Any]) -> int:
        received = {"command_name": _data.get("command_name"), "args": _data.get("args"),
                    "kwargs": _data.get("kwargs")}
        return self.engine.submit(workflow, received, username=username, idds_host=_host)

    def cmd_get_requests(self, request_id: Any = None, workload_id: Any = None, with_detail: bool = False,
                         with_metadata: bool = False, **_: Any) -> list[dict[str, Any]]:
        return self.engine.get_requests(request_id, workload_id, with_detail, with_metadata)

    def cmd_get_request_id_by_name(self, name: str, **_: Any) -> dict[str, int]:
        return self.engine.request_id_by_name(name)

    def cmd_get_contents_output_ext(self, request_id: Any = None, workload_id: Any = None, transform_id: Any = None,
                                    group_by_jedi_task_id: bool = False, **_: Any) -> dict[str, Any]:
        return self.engine.contents_output_ext(request_id, workload_id, transform_id)

    def cmd_abort(self, request_id: Any = None, workload_id: Any = None, **_: Any) -> list[Any]:
        if request_id is None and workload_id is None:
            return [-1, "Both request_id and workload_id are None. One of them should not be None"]
        return self.engine.abort(request_id, workload_id)

    def cmd_retry(self, request_id: Any = None, workload_id: Any = None, **_: Any) -> list[Any]:
        if request_id is None and workload_id is None:
            return [-1, "Both request_id and workload_id are None. One of them should not be None"]
        return self.engine.retry(request_id, workload_id)

    def cmd_get_status(self, request_id: Any = None, workload_id: Any = None, with_detail: bool = False,
                       with_metadata: bool = False, **_: Any) -> str:
        rows = self.engine.get_requests(request_id, workload_id, with_detail, with_metadata)
        if with_detail:
            lines = ["request_id transform_id transform_workload_id transform_name status[total/processed/processing]"]
            lines += [f"{r['request_id']} {r['transform_id']} {r['transform_workload_id']} {r['transform_name']} "
                      f"{r['transform_status'].name if r['transform_status'] else None}"
                      f"[{r.get('output_total_files')}/{r.get('output_processed_files')}/"
                      f"{r.get('output_processing_files')}]" for r in rows]
        else:
            lines = ["request_id request_workload_id scope:name status errors"]
            lines += [f"{r['request_id']} {r['workload_id']} {r['scope']}:{r['name']} {r['status'].name} "
                      f"{r['errors']}" for r in rows]
        return "\n".join(lines)

    # ------------------------------------------------------------------ faults
    def control(self, body: Mapping[str, Any]) -> dict[str, Any]:
        with self.engine.lock:
            if body.get("clear"):
                self.faults.update(NO_FAULTS)
                self.faults["fail_jobs"] = []
            if "auth_error" in body:
                self.faults["auth_error"] = bool(body["auth_error"])
            if "fail_jobs" in body:
                value = body["fail_jobs"] or []
                self.faults["fail_jobs"] = [value] if isinstance(value, str) else [str(v) for v in value]
            if "slow_replies" in body:
                self.faults["slow_replies"] = float(body["slow_replies"] or 0)
            if "kill_job" in body:
                self.faults["kill_job"] = body["kill_job"] or None
            unavailable = float(body.get("unavailable_for") or 0)
            if unavailable > 0:
                self.faults["unavailable_until"] = time.time() + unavailable
                # LocalPanDA.up() reads this: a relay that is alive but deliberately not
                # listening is reused, not restarted.
                _procs.write_json(self.outage_file, {"until": self.faults["unavailable_until"], "pid": os.getpid()})
            log.info("faults now %s", self.faults)
            faults = self.public_faults()
        self.engine.wake()
        if unavailable > 0:
            threading.Thread(target=self._close_listener, name="localpanda-unavailable", daemon=True).start()
        return faults

    def public_faults(self) -> dict[str, Any]:
        f = dict(self.faults)
        until = f.pop("unavailable_until")
        f["unavailable_for"] = max(0.0, round(until - time.time(), 2)) if until else 0.0
        return f

    def _close_listener(self) -> None:
        time.sleep(0.05)  # let the /control reply leave first
        with self._httpd_lock:
            httpd = self.httpd
        if httpd is not None:
            httpd.shutdown()

    def stats(self) -> dict[str, Any]:
        with self.engine.lock:
            return {"commands": dict(self.commands), "faults": self.public_faults(), "pid": os.getpid(),
                    "started_at": self.started_at, **self.engine.summary()}

    # ------------------------------------------------------------------ serving
    def _bind(self) -> ThreadingHTTPServer:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_class(self))
                httpd.daemon_threads = True
                httpd.block_on_close = False
                return httpd
            except OSError:
                if time.monotonic() > deadline or self.stopping.is_set():
                    raise
                time.sleep(0.1)

    def serve(self) -> None:
        self.outage_file.unlink(missing_ok=True)
        self.engine.start()
        try:
            while not self.stopping.is_set():
                httpd = self._bind()
                with self._httpd_lock:
                    self.httpd = httpd
                log.info("relay listening on http://127.0.0.1:%s (root %s)", self.port, self.root)
                try:
                    httpd.serve_forever(poll_interval=0.05)
                finally:
                    with self._httpd_lock:
                        self.httpd = None
                    httpd.server_close()
                if self.stopping.is_set():
                    break
                until = self.faults.get("unavailable_until") or 0
                log.info("relay unavailable (socket closed) for %.1f s", max(0.0, until - time.time()))
                while not self.stopping.is_set() and time.time() < until:
                    self.stopping.wait(min(0.1, max(0.0, until - time.time())))
                with self.engine.lock:
                    self.faults["unavailable_until"] = None
                self.outage_file.unlink(missing_ok=True)
        finally:
            self.engine.stop()
            log.info("relay stopped")

    def stop(self) -> None:
        self.stopping.set()
        with self._httpd_lock:
            httpd = self.httpd
        if httpd is not None:
            threading.Thread(target=httpd.shutdown, daemon=True).start()


def _handler_class(relay: Relay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "localpanda/1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the relay logs commands itself
            return

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def do_GET(self) -> None:
            leaf = urlsplit(self.path).path.rstrip("/").rsplit("/", 1)[-1]
            if leaf in ("ping", "isAlive"):
                self._send(200, b"OK", "text/plain")
            elif leaf == "stats":
                self._send(200, json.dumps(relay.stats()).encode())
            elif leaf == "control":
                with relay.engine.lock:
                    self._send(200, json.dumps(relay.public_faults()).encode())
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            from idds.common.utils import json_dumps

            path = urlsplit(self.path).path.rstrip("/")
            raw = self._body()
            if path.rsplit("/", 1)[-1] == "control":
                try:
                    body = json.loads(raw or b"{}")
                    self._send(200, json.dumps(relay.control(body)).encode())
                except Exception as exc:  # noqa: BLE001
                    self._send(400, json.dumps({"error": str(exc)}).encode())
                return
            if not path.endswith("/relay_idds_command"):
                self._send(404, b"not found", "text/plain")
                return
            t0 = time.monotonic()
            try:
                data = decode_body(raw, self.headers.get("Content-Type") or "")
                reply = relay.handle(data)
            except Exception as exc:  # noqa: BLE001 - an undecodable call
                log.warning("undecodable relay call: %s", traceback.format_exc())
                reply = [False, f"localpanda: cannot decode the relay call: {type(exc).__name__}: {exc}"]
                data = {}
            slow = float(relay.faults.get("slow_replies") or 0)
            if slow > 0:
                time.sleep(slow)
            body = json_dumps(reply).encode()
            log.info("%s -> %s (%.3f s)", data.get("command_name"), "ok" if reply[0] else reply[1],
                     time.monotonic() - t0)
            self._send(200, body)

    return Handler


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{what}: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def serve_main(argv: list[str] | None = None) -> int:
    """``python -m localpanda serve --root ROOT --port P [--slots N] [--config FILE]
    [--job-env K=V ...] [--site-lock SITE=PATH ...]``; runs in the foreground."""
    parser = argparse.ArgumentParser(prog="python -m localpanda serve")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slots", type=int, default=None)
    parser.add_argument("--config", type=Path, default=None,
                        help="JSON {slots, job_env, site_locks} (written by LocalPanDA.up); flags override it")
    parser.add_argument("--job-env", action="append", metavar="KEY=VALUE")
    parser.add_argument("--site-lock", action="append", metavar="SITE=PATH")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = _procs.read_json(args.config) if args.config else {}
    job_env = {**(config.get("job_env") or {}), **_pairs(args.job_env, "--job-env")}
    site_locks = {**(config.get("site_locks") or {}), **_pairs(args.site_lock, "--site-lock")}
    slots = args.slots or int(config.get("slots") or 2)
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    # One relay per root: two would run the same jobs twice.
    lock_fh = open(root / "relay.lock", "a+")  # noqa: SIM115 - held for the relay's lifetime
    deadline = time.monotonic() + 15
    while True:
        try:
            fcntl.flock(lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                log.error("another relay holds %s", root / "relay.lock")
                return 3
            time.sleep(0.1)
    relay = Relay(root, args.port, slots=slots, job_env=job_env, site_locks=site_locks)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: relay.stop())
    relay.serve()
    return 0
