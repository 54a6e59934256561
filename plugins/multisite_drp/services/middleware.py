"""argv builders for the LSST middleware commands.

Every stack command the orchestrator runs at a site -- building a quantum
graph, pre-exec-init and execution with a quantum-backed butler, merging the
outputs back into the site's butler -- is built here as an argv list (never a
shell string) and run by :func:`run_command`, which keeps the full output in a
log file and raises with its tail on failure. The functions are general
(repository, pipeline, subset, collections, query and paths are arguments) so
the single-site validation of the embedded test bed and the multi-site
campaign use the same code. No Airflow imports: this is the services layer.

Merging outputs: ``butler transfer-from-graph`` (:func:`merge_argv`), what the embedded
runner's final job, ``actions.merge`` and the PanDA workflows' BPS finalJob all run (BPS
v30's finalJob can run ``butler aggregate-graph`` instead). Graph files use the ``.qg``
(predicted quantum graph) format.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from multisite_drp.errors import DRPError
from multisite_drp.services.procs import child_env

__all__ = [
    "MiddlewareCommandError",
    "MiddlewareTimeoutError",
    "butler_executable",
    "collection_chain_argv",
    "merge_argv",
    "merge_bps_command",
    "pipetask_executable",
    "pre_exec_init_qbb_argv",
    "qgraph_argv",
    "register_argv",
    "rucio_register_executable",
    "run_argv",
    "run_command",
    "run_qbb_argv",
    "transfer_from_graph_argv",
]

_LABEL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
LOG_TAIL_LINES = 40


class MiddlewareCommandError(DRPError, RuntimeError):
    """A middleware command exited non-zero; the message carries the argv, log path and log tail."""

    def __init__(self, argv: Sequence[str], returncode: int, log_path: Path, tail: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.log_path = log_path
        self.tail = tail
        super().__init__(
            f"command failed with exit code {returncode}: {' '.join(self.argv)}\n"
            f"log: {log_path}\n--- last {LOG_TAIL_LINES} lines ---\n{tail}"
        )


class MiddlewareTimeoutError(MiddlewareCommandError):
    """A middleware command ran past its limit and was killed with its child processes."""

    def __init__(self, argv: Sequence[str], timeout: float, log_path: Path, tail: str) -> None:
        super().__init__(argv, -signal.SIGKILL, log_path, tail)
        self.timeout = timeout
        self.args = ((
            f"command timed out after {timeout:g} s (limit: the campaign's timeouts.command_seconds) and was "
            f"killed with its child processes: {' '.join(self.argv)}\n"
            f"log: {log_path}\n--- last {LOG_TAIL_LINES} lines ---\n{tail}"
        ),)


#: Seconds a timed-out command's processes get between SIGTERM and SIGKILL.
KILL_GRACE_SECONDS = 10.0


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGTERM ``proc`` and its descendants (run-qbb -j N's workers), SIGKILL what remains."""
    import psutil  # an Airflow dependency, present wherever the services run

    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=KILL_GRACE_SECONDS)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    proc.wait()


def _bin(name: str) -> str:
    """The executable next to the running interpreter (the venv's), else the bare name for PATH lookup."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def pipetask_executable() -> str:
    """Path of ``pipetask`` (override with $MULTISITE_PIPETASK)."""
    return os.environ.get("MULTISITE_PIPETASK", _bin("pipetask"))


def butler_executable() -> str:
    """Path of ``butler`` (override with $MULTISITE_BUTLER)."""
    return os.environ.get("MULTISITE_BUTLER", _bin("butler"))


def _check_collection(name: str, what: str) -> str:
    # Collection names follow the campaign config's pattern (no spaces, commas, '..' or shell
    # characters); imported here, not at module import: the config pulls in pydantic (~0.4 s
    # of CPU), which the command runner's supervisor, running only run_command, does not need.
    from multisite_drp.campaign.config import COLLECTION_NAME

    if not re.fullmatch(COLLECTION_NAME, name):
        raise ValueError(
            f"{what} {name!r} is not a valid collection name (expected {COLLECTION_NAME})"
        )
    return name


def _check_label(name: str, what: str) -> str:
    if not _LABEL_RE.match(name):
        raise ValueError(f"{what} {name!r} is not a valid label (expected {_LABEL_RE.pattern})")
    return name


def _graph_path(path: str | os.PathLike[str]) -> str:
    p = str(path)
    if not p.endswith(".qg"):
        raise ValueError(f"quantum graph path {p!r} must end with '.qg' (the predicted quantum graph format)")
    return p


def _graph_options(repo: str | os.PathLike[str], pipeline: str | os.PathLike[str], inputs: Iterable[str],
                   output_chain: str | None, output_run: str, subset: str | None) -> list[str]:
    """The options a graph is built from (``qgraph`` and ``run`` alike), each name checked:
    ``-b REPO -p PIPELINE[#SUBSET] -i INPUTS [-o CHAIN] --output-run RUN``."""
    input_list = [_check_collection(c, "input collection") for c in inputs]
    if not input_list:
        raise ValueError("a graph needs at least one input collection")
    pipeline_uri = str(pipeline) + (f"#{_check_label(subset, 'subset')}" if subset else "")
    return ["-b", str(repo), "-p", pipeline_uri, "-i", ",".join(input_list),
            *(["-o", _check_collection(output_chain, "output chain")] if output_chain is not None else []),
            "--output-run", _check_collection(output_run, "output run")]


def qgraph_argv(
    repo: str | os.PathLike[str],
    pipeline: str | os.PathLike[str],
    inputs: Iterable[str],
    output_chain: str | None,
    output_run: str,
    qgraph_path: str | os.PathLike[str],
    *,
    subset: str | None = None,
    data_query: str | None = None,
    datastore_records: bool = True,
    config_overrides: Iterable[str] = (),
    data_id_tables: Iterable[str | os.PathLike[str]] = (),
    skip_existing_in: Iterable[str] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    """``pipetask qgraph``: build and save a quantum graph for ``pipeline[#subset]``.

    ``--qgraph-datastore-records`` is on by default: quantum-backed execution
    needs the inputs' datastore records inside the graph.

    ``output_chain`` (``-o``) makes pipetask search that CHAINED collection and require the
    inputs inside it. ``None`` leaves it out: the graph then reads exactly ``inputs`` and
    writes ``output_run``, whatever chain the caller keeps (the campaign's per-step chains
    hold only their RUNs, so a new generation would otherwise be refused).
    """
    argv = [pipetask_executable(), "qgraph", *_graph_options(repo, pipeline, inputs, output_chain, output_run, subset),
            "--save-qgraph", _graph_path(qgraph_path)]
    if datastore_records:
        argv.append("--qgraph-datastore-records")
    if data_query:
        argv += ["-d", data_query]
    for override in config_overrides:
        argv += ["-c", override]
    for table in data_id_tables:
        argv += ["--data-id-table", str(table)]
    for coll in skip_existing_in:
        argv += ["--skip-existing-in", _check_collection(coll, "skip-existing-in collection")]
    argv += list(extra)
    return argv


def run_argv(
    repo: str | os.PathLike[str],
    pipeline: str | os.PathLike[str],
    inputs: Iterable[str],
    output_chain: str | None,
    output_run: str,
    *,
    subset: str | None = None,
    data_query: str | None = None,
    processes: int = 1,
) -> list[str]:
    """``pipetask run`` with a full butler: the graph :func:`qgraph_argv` would build (same
    options), executed and its outputs written to the registry in one process, dataset types
    registered; with ``output_chain``, ``output_run`` is prepended to it. What the embedded
    test bed's single-site validation runs, not the campaign."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    argv = [pipetask_executable(), "run", *_graph_options(repo, pipeline, inputs, output_chain, output_run, subset)]
    if data_query:
        argv += ["-d", data_query]
    return [*argv, "--register-dataset-types", "-j", str(processes)]


def pre_exec_init_qbb_argv(repo: str | os.PathLike[str], qgraph_path: str | os.PathLike[str]) -> list[str]:
    """``pipetask pre-exec-init-qbb``: write init-outputs (configs, schemas, packages) for the graph."""
    return [pipetask_executable(), "pre-exec-init-qbb", str(repo), _graph_path(qgraph_path)]


def run_qbb_argv(
    repo: str | os.PathLike[str],
    qgraph_path: str | os.PathLike[str],
    *,
    processes: int = 1,
    summary_path: str | os.PathLike[str] | None = None,
    node_ids: Iterable[str] = (),
    fail_fast: bool = False,
    no_existing_outputs: bool = False,
) -> list[str]:
    """``pipetask run-qbb``: execute a graph with a quantum-backed butler (no registry writes).

    ``processes > 1`` starts a fresh Python per quantum (spawn; fork is not
    supported, forkserver does not preload the stack): measured ~1.5-3.5 s per
    quantum on a 2-core machine, against ~0.06 s in-process with ``-j 1``. Use
    1 for the MiniCam test bed's millisecond quanta; more only for real work.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    argv = [pipetask_executable(), "run-qbb", str(repo), _graph_path(qgraph_path), "-j", str(processes)]
    if summary_path is not None:
        argv += ["--summary", str(summary_path)]
    ids = list(node_ids)
    if ids:
        argv += ["--qgraph-node-id", ",".join(ids)]
    if fail_fast:
        argv.append("--fail-fast")
    if no_existing_outputs:
        argv.append("--no-existing-outputs")
    return argv


def transfer_from_graph_argv(
    qgraph_path: str | os.PathLike[str],
    repo: str | os.PathLike[str],
    *,
    register_dataset_types: bool = True,
    update_output_chain: bool = True,
    transfer_dimensions: bool = False,
) -> list[str]:
    """``butler transfer-from-graph``: the pre-v30 finalJob merge (copies outputs found on disk)."""
    argv = [butler_executable(), "transfer-from-graph", _graph_path(qgraph_path), str(repo)]
    if register_dataset_types:
        argv.append("--register-dataset-types")
    if update_output_chain:
        argv.append("--update-output-chain")
    argv.append("--transfer-dimensions" if transfer_dimensions else "--no-transfer-dimensions")
    return argv


#: The site merge: ``transfer_from_graph_argv`` with these options, for the local argv and
#: the BPS finalJob command alike. Dimension records are not transferred from the graph (a
#: quantum-backed butler cannot carry visit_definition & co.); ``actions.replicate_inputs``
#: puts them in the site registry before the workflow is submitted. The output chain is not
#: updated: the graph's input collections include other sites' RUNs, which a remote site's
#: registry does not have; ``actions.merge`` chains the output RUN itself.
_MERGE = {"register_dataset_types": True, "update_output_chain": False, "transfer_dimensions": False}


def merge_argv(repo: str | os.PathLike[str], qgraph: str | os.PathLike[str]) -> list[str]:
    """The final job of a site workflow: merge the graph's outputs into the site butler
    (``butler transfer-from-graph``), as the embedded runner and ``actions.merge`` run it."""
    return transfer_from_graph_argv(qgraph, repo, **_MERGE)


def merge_bps_command() -> str:
    """The same merge as a BPS ``finalJob.command1`` template (BPS fills the braces; the
    edge node expands ``${DAF_BUTLER_DIR}``): what a PanDA workflow's final job runs."""
    options = transfer_from_graph_argv("graph.qg", "repo", **_MERGE)[4:]  # after butler, verb, graph, repo
    return ("${DAF_BUTLER_DIR}/bin/butler {finalPreCmdOpts} transfer-from-graph "
            "{fileDistributionEndPoint}{qgraphFile} {butlerConfig} " + " ".join(options))


def collection_chain_argv(
    repo: str | os.PathLike[str], parent: str, children: Iterable[str], *, mode: str = "prepend"
) -> list[str]:
    """``butler collection-chain``: redefine/extend/prepend a CHAINED collection."""
    if mode not in {"redefine", "extend", "prepend", "remove", "pop"}:
        raise ValueError(f"unknown collection-chain mode {mode!r}")
    kids = [_check_collection(c, "child collection") for c in children]
    return [
        butler_executable(),
        "collection-chain",
        "--mode",
        mode,
        str(repo),
        _check_collection(parent, "parent"),
        *kids,
    ]


def rucio_register_executable() -> str:
    """Path of lsst-rucio-register's ``rucio-register`` (override with $MULTISITE_RUCIO_REGISTER)."""
    return os.environ.get("MULTISITE_RUCIO_REGISTER", _bin("rucio-register"))


def register_argv(repo: str | os.PathLike[str], dataset: str, run: str,
                  config_path: str | os.PathLike[str], dataset_types: Iterable[str] = ("*",)) -> list[str]:
    """``rucio-register data-products``: register every dataset of ``run`` in the site's
    butler as replicas at its RSE, attached to the Rucio dataset ``dataset`` (the
    registration step as a command, e.g. in a pod; ``config_path`` is lsst-rucio-register's
    YAML naming the RSE, scope, rse_root and dtn_url, no secret: the Rucio identity comes
    from ``RUCIO_CONFIG``, a file)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,249}", dataset):
        raise ValueError(f"rucio dataset {dataset!r} is not a valid DID name")
    types = list(dataset_types)
    if not types or any(not re.fullmatch(r"[A-Za-z*][A-Za-z0-9_*]*", t) for t in types):
        raise ValueError(f"dataset types {types!r}: expected one or more names or globs")
    return [rucio_register_executable(), "data-products", "--repo", str(repo), "--rucio-dataset", dataset,
            "--rucio-register-config", str(config_path), "--collections", _check_collection(run, "run"),
            *(a for t in types for a in ("--dataset-type", t))]


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<could not read log: {exc}>"
    return "\n".join(lines[-n:])


def run_command(
    argv: Sequence[str],
    log_path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell), stdout+stderr appended to ``log_path``; raise on non-zero exit.

    The child sees the allow-listed part of this process's environment
    (:func:`multisite_drp.services.procs.child_env`: PATH, the virtualenv, the stack's
    and PanDA's variables, never a credential such as ``AIRFLOW_CONN_*``) with ``env``
    on top. Raises `MiddlewareCommandError` with the log's last lines on failure.
    ``timeout`` (seconds; None: no limit): past it the command and every process it
    started are killed and `MiddlewareTimeoutError` names the command and the limit.
    """
    if isinstance(argv, str) or not argv:
        raise TypeError("argv must be a non-empty sequence of strings, not a shell string")
    argv = [str(a) for a in argv]
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = child_env(env)
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(argv)}\n")
        fh.flush()
        child = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, text=True)
        try:
            returncode = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(child)
            fh.write(f"\n*** killed after {timeout:g} s (timeouts.command_seconds) ***\n")
            fh.flush()
            raise MiddlewareTimeoutError(argv, float(timeout), log, _tail(log)) from None
        except BaseException:  # interrupted (the task killed): take the command down with us
            _kill_tree(child)
            raise
    if returncode != 0:
        raise MiddlewareCommandError(argv, returncode, log, _tail(log))
    return subprocess.CompletedProcess(argv, returncode)
