"""Bench-only stand-ins for the outside systems of a DR1-shaped DAG run (``bench/campaign_scale.py``, its real-scheduler part).

Nothing here is offered to users, and nothing in ``plugins/`` knows these names. They exist
so that the product's own DAG, operators, actions, triggers, planner and report can run at
DR1's shape on one 2-core machine, under the real scheduler, triggerer and executor. Each
stands in for one port, and does nothing but keep the records the product asks for:

* :class:`BenchCatalogButler` (the butler port, ``services.butler.SiteButler``'s surface):
  a catalogue of the synthetic sky that holds one stand-in dataset per raw visit and a few
  calibrations; its chains and RUNs are JSON files. It holds no outputs (the workflow
  stand-in says its final job merged, so the product runs no merge command).
* :class:`BenchDelayReplicaService` (the replica port): datasets and rules are JSON files; a
  rule is OK ``delay`` seconds after it was added; every ingest check is complete.
* :class:`BenchDelayCommandService` (the command-runner port): a command succeeds ``delay``
  seconds after it started; a graph build writes a stand-in graph (JSON: the group's visits
  or tracts from its ``-d`` query; one task with 189 quanta per visit or 100 per tract, and
  a summary task with one quantum per visit or tract).
* :func:`read_standin_graph` replaces ``services.qgraph.read_graph`` for those files, and
  :func:`load_standin_sky` replaces ``campaign.planner.load_inputs`` (the hub registry's
  visits, detectors and tracts) with the bench's synthetic sky (a parquet).
* ``BenchDelayWorkflowService`` (``campaign_scale_support``) is the workflow port's.

:func:`install` puts them in place in the current process by patching the factory's
functions. ``site/sitecustomize.py`` calls it in every Python process of the bench's
Airflow stack (scheduler, triggerer, task processes), lazily: when the product's factory,
graph reader or planner module is first imported, and only when
``MULTISITE_DRP_BENCH_STANDINS`` names the bench's state directory.

Every status call of the stand-ins (workflows, rules, commands) is appended to
``<state>/calls.jsonl`` (time, port, site, items asked, pid): the bench counts the
triggerer's per poll interval (a task's own calls, a submit finding its workflow or the
policy's report, are not polls).
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from multisite_drp.services.commands.base import CommandRef, CommandResult, CommandService, CommandState
from multisite_drp.services.replica.base import (
    IngestCheck,
    RegisteredDataset,
    ReplicaService,
    RuleRef,
    RuleState,
    RuleStatus,
)

from campaign_scale_support import BENCH_ADAPTER as ADAPTER
from campaign_scale_support import STATE_ENV

SKY_ENV = "MULTISITE_DRP_BENCH_SKY"
STANDIN_GRAPH = "bench-standin-graph"
DETECTORS, PATCHES = 189, 100
RAW_RUN = "LSSTCam/raw/all"
INPUTS = {"LSSTCam/defaults": ["LSSTCam/raw/all", "LSSTCam/calib", "refcats", "skymaps"]}
CALIBS = {"LSSTCam/calib": ["bias", "flat"], "refcats": ["refcat"], "skymaps": ["skyMap"]}


def state_dir() -> Path:
    return Path(os.environ[STATE_ENV])


def _key(*parts: str) -> str:
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:20]


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data))
    tmp.rename(path)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def record_call(port: str, site: str, n: int) -> None:
    """One status call of a stand-in, appended to ``calls.jsonl`` (one short line, atomic)."""
    line = json.dumps({"t": round(time.time(), 3), "port": port, "site": site, "n": n, "pid": os.getpid()})
    with open(state_dir() / "calls.jsonl", "a") as fh:
        fh.write(line + "\n")


# -- datasets and graphs --------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRef:
    """A stand-in dataset: what the product reads of a ``DatasetRef`` (id, run, type, data ID)."""

    id: str
    run: str
    type_name: str
    data_id: tuple[tuple[str, int], ...] = ()

    @property
    def datasetType(self):
        return SimpleNamespace(name=self.type_name)

    @property
    def dataId(self):
        return SimpleNamespace(required=dict(self.data_id), required_values=tuple(v for _, v in self.data_id))


def _ids(query: str) -> tuple[str, list[int]]:
    m = re.search(r"\b(visit|exposure|tract) IN \(([^)]*)\)", query or "")
    if not m:
        return "", []
    return m.group(1), [int(x) for x in m.group(2).split(",") if x.strip()]


def _argv_value(argv: Sequence[str], flag: str) -> str | None:
    argv = list(argv)
    return argv[argv.index(flag) + 1] if flag in argv else None


def write_standin_graph(argv: Sequence[str]) -> None:
    """What a ``pipetask qgraph`` argv would build, as a stand-in graph: the group's ids from
    ``-d``, its step's tasks from the pipeline subset (``-p ...#stepN``)."""
    out = Path(_argv_value(argv, "--save-qgraph"))
    step = (_argv_value(argv, "-p") or "#").rsplit("#", 1)[-1]
    dim, ids = _ids(_argv_value(argv, "-d") or "")
    per = DETECTORS if dim in ("visit", "exposure") else PATCHES if dim == "tract" else 1
    n = max(1, len(ids)) * per
    tasks = {f"{step}_task": n, f"{step}_summary": max(1, len(ids))}
    inputs = [f"{step}_input:{i}" for i in ids] or [f"{step}_input:all"]
    _write(out, {"format": STANDIN_GRAPH, "step": step, "dimension": dim, "ids": ids, "quanta_by_task": tasks,
                 "predicted_outputs": {f"{step}_output": n, f"{step}_summary": max(1, len(ids))},
                 "inputs": inputs, "run": _argv_value(argv, "--output-run")})


def read_standin_graph(path):
    """``services.qgraph.read_graph`` for stand-in graphs (the real reader for anything else)."""
    from multisite_drp.services import qgraph

    data = _read(Path(path))
    if not isinstance(data, dict) or data.get("format") != STANDIN_GRAPH:
        return qgraph._bench_real_read_graph(path)
    refs = [BenchRef(i, "bench/inputs", i.split(":")[0]) for i in data["inputs"]]
    visits = set(data["ids"]) if data["dimension"] in ("visit", "exposure") else set()
    return qgraph.GraphContents(path=Path(path), n_quanta=sum(data["quanta_by_task"].values()),
                                quanta_by_task=data["quanta_by_task"], overall_inputs=refs,
                                predicted_outputs=data["predicted_outputs"], visits=visits)


def load_standin_sky(config, parquet: str | None = None, where: str | None = None):
    """``campaign.planner.load_inputs``: the hub registry's sky is the bench's synthetic parquet."""
    from multisite_drp.campaign.spatial import from_parquet

    return from_parquet(parquet or os.environ[SKY_ENV])


# -- the butler port ------------------------------------------------------------------------------


class BenchCatalogButler:
    """Stand-in for ``services.butler.SiteButler`` (see the module docstring)."""

    def __init__(self, site: str, hub: bool) -> None:
        self.site, self.hub = site, hub
        self.root = state_dir() / "butler" / site

    def refresh(self) -> None:
        return None

    @contextlib.contextmanager
    def write_lock(self):
        with _locked(self.root / "lock"):
            yield

    def _chains(self) -> dict[str, list[str]]:
        return _read(self.root / "chains.json") or {}

    def _runs(self) -> list[str]:
        return _read(self.root / "runs.json") or []

    def collection_exists(self, name: str) -> bool:
        return name in INPUTS or name in CALIBS or name == RAW_RUN or name in self._chains() or name in self._runs()

    def flatten(self, collections: str | Sequence[str]) -> list[str]:
        names = [collections] if isinstance(collections, str) else list(collections)
        out: list[str] = []
        for n in names:
            out += INPUTS.get(n, [n])
        return out

    def chain_children(self, name: str) -> list[str] | None:
        return list(INPUTS[name]) if name in INPUTS else self._chains().get(name)

    def runs_matching(self, pattern: str) -> list[str]:
        return [r for r in self._runs() if fnmatch.fnmatchcase(r, pattern)]

    def dataset_types_in(self, collection: str) -> list[str]:
        if collection == RAW_RUN:
            return ["raw"]
        return list(CALIBS.get(collection, []))

    def refs(self, dataset_type: str, collections: str | Sequence[str], where: str = "",
             find_first: bool = False) -> list[BenchRef]:
        if dataset_type == "raw":
            _, ids = _ids(where)
            return [BenchRef(f"raw:{v}", RAW_RUN, "raw", (("exposure", v),)) for v in ids]
        for coll, types in CALIBS.items():
            if dataset_type in types:
                return [BenchRef(f"{dataset_type}:{d}", coll, dataset_type, (("detector", d),)) for d in range(DETECTORS)]
        return []

    def count(self, dataset_types: Iterable[str], collections: str | Sequence[str], where: str = "") -> dict[str, int]:
        return {t: 0 for t in dataset_types}

    def missing(self, refs: Iterable[BenchRef]) -> list[BenchRef]:
        return [] if self.hub else list(refs)

    def ensure_chain(self, chain: str, children: Sequence[str]) -> None:
        with self.write_lock():
            chains, runs = self._chains(), self._runs()
            current = chains.get(chain, [])
            chains[chain] = list(children) + [c for c in current if c not in children]
            runs += [c for c in children if "/g" in c and c not in runs and c not in chains]
            _write(self.root / "chains.json", chains)
            _write(self.root / "runs.json", runs)

    def sync_visit_records(self, source, visits: Iterable[int], instrument: str) -> int:
        return 0

    def datastore_root(self) -> Path | None:
        return None


# -- the replica port -----------------------------------------------------------------------------


class BenchDelayReplicaService(ReplicaService):
    """Stand-in for the Rucio adapter (see the module docstring)."""

    def __init__(self, settings: dict) -> None:
        self.delay, self.scope = float(settings["delay"]), settings["scope"]
        self.rses = {s: v["rse"] for s, v in settings["sites"].items()}
        self.root = state_dir() / "replica"

    def _dataset(self, name: str) -> Path:
        return self.root / "datasets" / f"{_key(name)}.json"

    def _rule(self, dataset: str, site: str) -> Path:
        return self.root / "rules" / f"{_key(dataset, site)}.json"

    def register(self, site: str, dataset: str, refs):
        with _locked(self.root / "lock"):
            old = _read(self._dataset(dataset)) or {"name": dataset, "site": site, "files": []}
            ids = sorted(set(old["files"]) | {str(r.id) for r in refs})
            new = len(ids) - len(old["files"])
            if new:
                _write(self._dataset(dataset), {**old, "files": ids})
        return RegisteredDataset(name=dataset, site=site, files=len(ids), bytes=40_000 * len(ids), new_files=new)

    def _ref(self, data: dict):
        return RuleRef(rule_id=data["rule_id"], dataset=data["dataset"], site=data["site"], rse=data["rse"])

    def add_rule(self, dataset: str, site: str):
        with _locked(self.root / "lock"):
            data = _read(self._rule(dataset, site))
            if data is None:
                data = {"rule_id": _key(dataset, site, "rule"), "dataset": dataset, "site": site,
                        "rse": self.rses[site], "created": time.time(), "ok_at": time.time() + self.delay}
                _write(self._rule(dataset, site), data)
        return self._ref(data)

    def find_rule(self, dataset: str, site: str):
        data = _read(self._rule(dataset, site))
        return self._ref(data) if data else None

    def rule_status(self, rules):
        record_call("replica", "all", len(rules))
        now, out = time.time(), {}
        for r in rules:
            data = _read(self._rule(r.dataset, r.site)) or {}
            ok = now >= data.get("ok_at", now)
            out[r.rule_id] = RuleStatus(rule_id=r.rule_id, state=RuleState.OK if ok else RuleState.REPLICATING,
                                        locks_ok=1 if ok else 0, locks_replicating=0 if ok else 1,
                                        created=data.get("created"), updated=data.get("ok_at"))
        return out

    def dataset_refs(self, dataset: str):
        data = _read(self._dataset(dataset)) or {"files": []}
        return [BenchRef(i, "bench", i.split(":")[0]) for i in data["files"]]

    def verify_ingested(self, rule):
        n = len((_read(self._dataset(rule.dataset)) or {"files": []})["files"])
        return IngestCheck(dataset=rule.dataset, site=rule.site, expected=n, found=n)

    def delete_rule(self, rule) -> None:
        self._rule(rule.dataset, rule.site).unlink(missing_ok=True)


# -- the command-runner port ----------------------------------------------------------------------


class BenchDelayCommandService(CommandService):
    """Stand-in for a site's command runner (see the module docstring)."""

    wait_interval = 0.2

    def __init__(self, site: str, delay: float) -> None:
        self.site, self.delay = site, float(delay)
        self.root = state_dir() / "commands" / site

    def _path(self, name: str) -> Path:
        return self.root / f"{_key(name)}.json"

    def _cref(self, data: dict, found: bool):
        return CommandRef(name=data["name"], site=self.site, kind=data["kind"], handle=str(self._path(data["name"])),
                          log_path=data["log_path"], attempt=data["attempt"], found=found)

    def find(self, spec):
        data = _read(self._path(spec.name))
        return self._cref(data, True) if data else None

    def start(self, spec):
        with _locked(self.root / "lock"):
            data = _read(self._path(spec.name))
            if data and not data.get("discarded"):
                return self._cref(data, True)
            attempt = (data or {}).get("attempt", 0) + 1
            if spec.kind == "qgraph":
                write_standin_graph(spec.argv)
            data = {"name": spec.name, "kind": spec.kind, "log_path": spec.log_path, "attempt": attempt,
                    "done_at": time.time() + self.delay}
            _write(self._path(spec.name), data)
        return self._cref(data, False)

    def status(self, refs):
        record_call("commands", self.site, len(refs))
        now, out = time.time(), {}
        for r in refs:
            data = _read(self._path(r.name))
            out[r.name] = (CommandState.MISSING if not data or data.get("discarded") else
                           CommandState.SUCCEEDED if now >= data["done_at"] else CommandState.RUNNING)
        return out

    def result(self, ref):
        state = self.status([ref])[ref.name]
        return CommandResult(state=state, exit_code=0 if state is CommandState.SUCCEEDED else None, message="bench stand-in")

    def cancel(self, ref) -> None:
        return None

    def discard(self, ref) -> None:
        data = _read(self._path(ref.name))
        if data:
            _write(self._path(ref.name), {**data, "discarded": True})


# -- installing them ------------------------------------------------------------------------------


def _settings() -> dict:
    return _read(state_dir() / "settings.json") or {}


def patch_factory(factory) -> None:
    """Connections whose extra says ``adapter: bench_delay`` build the stand-ins (the workflow
    one through :func:`campaign_scale_support.install_bench_adapter`, as the bench's
    in-process part does); every site's command runner is the stand-in (the campaign names no
    commands connection)."""
    from campaign_scale_support import install_bench_adapter

    if getattr(factory, "_bench_standins", False):
        return
    factory._bench_standins = True
    install_bench_adapter()
    conf = _settings()
    real = {n: getattr(factory, n) for n in ("replica_settings", "replica_service", "butler_settings",
                                              "butler_service")}
    factory.DEFAULT_POLL_SECONDS[ADAPTER] = float(conf.get("poll", 2.0))

    def replica_settings(config, conns):
        hub = conns[config.hub.name]
        if hub.extra.get("adapter") != ADAPTER:
            return real["replica_settings"](config, conns)
        return {"adapter": ADAPTER, "campaign": config.name, "hub": config.hub.name,
                "scope": config.replication.scope, "delay": float(hub.extra.get("delay", 5.0)),
                "poll_interval": factory.poll_seconds(hub.extra, ADAPTER, hub.where),
                "sites": {s.name: {"rse": s.rse} for s in config.sites}, "webui_url": None}

    def replica_service(settings, secrets=None):
        if settings["adapter"] != ADAPTER:
            return real["replica_service"](settings, secrets)
        return BenchDelayReplicaService(settings)

    def butler_settings(config, site, extra, where):
        if extra.get("adapter") != ADAPTER:
            return real["butler_settings"](config, site, extra, where)
        return {"adapter": ADAPTER, "site": site, "repo": config.repo_of(site), "hub": site == config.hub.name}

    def butler_service(settings, lock_timeout=None):
        if settings["adapter"] != ADAPTER:
            return real["butler_service"](settings, lock_timeout)
        return BenchCatalogButler(settings["site"], settings["hub"])

    def command_service(settings):
        return BenchDelayCommandService(settings["site"], float(conf.get("command_delay", 1.0)))

    factory.replica_settings, factory.replica_service = replica_settings, replica_service
    factory.butler_settings, factory.butler_service = butler_settings, butler_service
    factory.command_service = command_service


def patch_qgraph(qgraph) -> None:
    if not hasattr(qgraph, "_bench_real_read_graph"):
        qgraph._bench_real_read_graph = qgraph.read_graph
        qgraph.read_graph = read_standin_graph


def patch_planner(planner) -> None:
    planner.load_inputs = load_standin_sky


PATCHES_BY_MODULE = {
    "multisite_drp.services.factory": patch_factory,
    "multisite_drp.services.qgraph": patch_qgraph,
    "multisite_drp.campaign.planner": patch_planner,
}
