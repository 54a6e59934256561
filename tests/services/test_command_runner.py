"""The embedded command runner (``services.commands.embedded``): real local processes.

Each test starts real detached subprocesses (small Python one-liners standing in for
pipetask and butler, which behave the same to the runner: an argv, an exit code, a log)
and checks what the port promises: the command runs with its output in its log; a
second ``start`` of the same name finds the first instead of running it again; a
failure comes back with the log's tail; a failed command is replaced by a new attempt;
the same name with another argv is refused; a time limit and a cancel take the whole
process tree down.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from multisite_drp.services.commands.base import (
    CommandConflictError,
    CommandFailedError,
    CommandSpec,
    CommandState,
)
from multisite_drp.services.commands.embedded import EmbeddedCommandService
from multisite_drp.services.middleware import MiddlewareTimeoutError


def _spec(tmp_path: Path, code: str, name: str = "minidrp_step1_usdf_g0_group000_qgraph", **kw) -> CommandSpec:
    return CommandSpec(name=name, site="usdf", kind=name.rsplit("_", 1)[1], argv=(sys.executable, "-c", code),
                       log_path=str(tmp_path / "logs" / f"{name}.log"), **kw)


def test_runs_a_command_and_a_second_start_finds_it(tmp_path: Path) -> None:
    service = EmbeddedCommandService("usdf", tmp_path / "commands")
    counter = tmp_path / "ran"
    code = (f"import time; open({str(counter)!r}, 'a').write('x'); print('building the graph', flush=True); "
            "time.sleep(1.0); print('saved')")
    spec = _spec(tmp_path, code)
    first = service.start(spec)
    assert not first.found and first.attempt == 1
    again = service.start(spec)  # a retried task, while the first still runs
    assert again.found and again.attempt == 1 and again.handle == first.handle
    assert service.status([first])[spec.name] in (CommandState.RUNNING, CommandState.PENDING)
    assert service.wait(first, timeout=60) is CommandState.SUCCEEDED
    result = service.result(first)
    assert result.state is CommandState.SUCCEEDED and result.exit_code == 0
    assert counter.read_text() == "x"  # ran once
    log = Path(spec.log_path).read_text()
    assert f"$ {sys.executable} -c" in log and "building the graph" in log and "saved" in log
    # After success too: found, not run again; run() returns at once.
    assert service.start(spec).found
    assert service.run(spec).state is CommandState.SUCCEEDED
    assert counter.read_text() == "x"
    assert service.find(spec) is not None


def test_failure_reports_the_log_tail_and_a_retry_replaces_it(tmp_path: Path) -> None:
    service = EmbeddedCommandService("usdf", tmp_path / "commands")
    spec = _spec(tmp_path, "import sys; print('\\n'.join(f'line {i}' for i in range(100))); "
                 "print('FATAL: no quanta', file=sys.stderr); sys.exit(3)",
                 name="minidrp_step2_usdf_g0_group001_merge")
    with pytest.raises(CommandFailedError) as info:
        service.run(spec)
    err = info.value
    assert err.returncode == 3 and "FATAL: no quanta" in err.tail and "line 99" in err.tail
    assert "line 10\n" not in err.tail  # a tail, not the whole log
    assert str(spec.log_path) in str(err)
    ref = service.find(spec)
    assert service.status([ref])[spec.name] is CommandState.FAILED
    retry = service.start(spec)  # a retried task: the failed command is replaced, same name
    assert not retry.found and retry.attempt == 2
    assert service.wait(retry, timeout=60) is CommandState.FAILED
    assert (Path(retry.handle) / "result.1.json").exists()


def test_same_name_other_argv_is_refused(tmp_path: Path) -> None:
    service = EmbeddedCommandService("usdf", tmp_path / "commands")
    service.run(_spec(tmp_path, "print(1)"))
    with pytest.raises(CommandConflictError, match="another argv"):
        service.start(_spec(tmp_path, "print(2)"))


def test_time_limit_and_cancel_take_the_tree_down(tmp_path: Path) -> None:
    service = EmbeddedCommandService("usdf", tmp_path / "commands")
    pidfile = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    with pytest.raises(MiddlewareTimeoutError, match="timed out after 1 s"):
        service.run(_spec(tmp_path, code, timeout=1.0))
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 15
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)

    pidfile.unlink()
    spec = _spec(tmp_path, code, name="minidrp_step1_usdf_g0_group002_register")
    ref = service.start(spec)
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    service.cancel(ref)
    assert service.status([ref])[spec.name] is CommandState.FAILED
    assert "cancelled" in service.result(ref).message
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 15
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)


def test_a_credential_in_the_command_env_is_refused_before_it_starts(tmp_path: Path) -> None:
    service = EmbeddedCommandService("usdf", tmp_path / "commands")
    with pytest.raises(ValueError, match="credential"):
        service.start(_spec(tmp_path, "print(1)", env={"RUCIO_PASSWORD": "x"}))
    assert not (tmp_path / "commands" / "minidrp_step1_usdf_g0_group000_qgraph" / "spec.json").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
