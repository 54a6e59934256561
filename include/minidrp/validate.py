"""Single-site validation: run the nine steps at usdf with the real middleware, count outputs.

For each step, one ``pipetask run`` with a full butler: the step's graph is built,
executed and its outputs written to the registry in one process, and the step's RUN is
prepended to the output chain. The argv is `multisite_drp.services.middleware.run_argv`,
built from the same options as the graph build the orchestrator runs at the hub. The campaign itself executes quantum-backed (``pre-exec-init-qbb``, ``run-qbb``,
``transfer-from-graph``) at three sites: two execution paths that must give the same
outputs (the golden counts and digests below).

Golden counts (``golden_counts.json``): for each step, the number of datasets
of each *science* output type in that step's RUN. Bookkeeping datasets
(``*_metadata``, ``*_log``, ``*_config``, ``packages``) are excluded from the
step entries; the ``*_metadata`` counts are recorded separately under
``_quanta`` because each successful quantum writes exactly one, so they are the
per-task quantum counts.

Golden digests (``golden_digests.json``): a fingerprint per science output type over
every dataset's content in data-ID order (:func:`content_digests`): a sha256 of all but
the float values, and the float values' moments, equal within :data:`FLOAT_RTOL` (the
same code rounds differently on another CPU: numpy's AVX-512 and AVX2 paths change the
last bits). Every run of the test bed must reproduce them, the single-site validation
and the three-site campaign alike (:func:`digest_mismatches`): that is what shows the
outputs are deterministic and that splitting the work among sites changes nothing in them.

Execution uses ``-j 1`` by default: measured on this 2-core machine,
``-j 2`` (spawn or forkserver) starts a fresh Python per quantum and costs
~1.5-3.5 s each, while in-process execution costs ~0.06 s per quantum.

Re-running is safe: a step whose RUN already exists is skipped. (A step interrupted
mid-run leaves its RUN behind: remove the validation chain's RUNs, or build fresh sites.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .constants import DATA_QUERY, DEFAULTS_CHAIN, HUB_SITE, STEPS

PACKAGE_DIR = Path(__file__).resolve().parent
INCLUDE_DIR = PACKAGE_DIR.parent
REPO_ROOT = INCLUDE_DIR.parent
PLUGINS_DIR = REPO_ROOT / "plugins"
PIPELINE_PATH = INCLUDE_DIR / "pipelines" / "minidrp.yaml"
GOLDEN_PATH = PACKAGE_DIR / "golden_counts.json"
GOLDEN_DIGESTS_PATH = PACKAGE_DIR / "golden_digests.json"
VALIDATION_CHAIN = "MiniCam/runs/validate"
BOOKKEEPING_SUFFIXES = ("_metadata", "_log", "_config")
BOOKKEEPING_NAMES = ("packages",)


def _middleware() -> Any:
    """Import the services module, making sure ``plugins/`` is importable."""
    if str(PLUGINS_DIR) not in sys.path:
        sys.path.insert(0, str(PLUGINS_DIR))
    from multisite_drp.services import middleware

    return middleware


def stack_env() -> dict[str, str]:
    """Environment additions for stack subprocesses: tasks import ``minidrp`` from include/."""
    parts = [str(INCLUDE_DIR), str(PLUGINS_DIR)]
    existing = os.environ.get("PYTHONPATH")
    if existing:
        parts.append(existing)
    return {"PYTHONPATH": os.pathsep.join(parts)}


def is_bookkeeping(dataset_type: str) -> bool:
    """True for metadata/log/config/packages datasets written by the middleware itself."""
    return dataset_type in BOOKKEEPING_NAMES or dataset_type.endswith(BOOKKEEPING_SUFFIXES)


@dataclass
class StepResult:
    """What one step did: timings (s), quanta per task, science dataset counts, skipped flag."""

    step: str
    output_run: str
    skipped: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    quanta: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def wall(self) -> float:
        """Total wall time of the step's commands."""
        return sum(self.timings.values())


def count_run(repo: str | os.PathLike[str], run: str) -> tuple[dict[str, int], dict[str, int]]:
    """(science counts, quanta per task) of the datasets in one RUN collection."""
    from lsst.daf.butler import Butler

    with Butler.from_config(str(repo)) as butler:
        info = butler.collections.get_info(run, include_summary=True)
        counts: dict[str, int] = {}
        quanta: dict[str, int] = {}
        for dt in sorted(info.dataset_types):
            n = len(butler.query_datasets(dt, collections=run, find_first=False, explain=False, limit=None))
            if dt.endswith("_metadata"):
                quanta[dt.removesuffix("_metadata")] = n
            if not is_bookkeeping(dt) and n:
                counts[dt] = n
    return counts, quanta


#: Float moments within this relative tolerance (of the sum of absolute values) are equal.
#: The same code on another CPU rounds differently: numpy's SIMD paths (AVX-512 against
#: AVX2, measured here) change the last bits of sums, medians and fits, so float values are
#: compared as moments, never bit for bit; everything else is hashed exactly.
FLOAT_RTOL = 1e-6
_WEIGHTS = 97  # positional weights 1..97 make the weighted moment see a reordering


class _Fingerprint:
    """One dataset type's content: an exact hash of everything that is not a float value
    (data IDs, shapes, dtypes, column names, integers, strings, where the NaNs are), and
    float moments (count, sum, sum of absolute values, a positionally weighted sum)."""

    def __init__(self) -> None:
        self.exact = hashlib.sha256()
        self.n = 0
        self.sum = self.sumabs = self.weighted = 0.0

    def floats(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        finite = np.isfinite(x)
        self.exact.update(np.packbits(finite).tobytes())
        self.exact.update(np.signbit(x[~finite]).tobytes() + np.isnan(x[~finite]).tobytes())
        v = x[finite]
        w = (np.arange(self.n, self.n + len(v)) % _WEIGHTS + 1).astype(np.float64)
        self.n += len(v)
        self.sum += float(v.sum())
        self.sumabs += float(np.abs(v).sum())
        self.weighted += float((v * w).sum())

    def add(self, value: Any, path: str = "") -> None:
        from astropy.table import Table

        if isinstance(value, Table):
            for name in value.colnames:
                self.add(np.asarray(value[name]), f"{path}.{name}")
        elif isinstance(value, np.ndarray):
            self.exact.update(f"{path}:{value.dtype.str}:{value.shape}".encode())
            if value.dtype.kind == "f":
                self.floats(value)
            elif value.dtype.kind == "O":
                for i, item in enumerate(value.ravel().tolist()):
                    self.add(item, f"{path}[{i}]")
            else:
                self.exact.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, dict):
            for k in sorted(value, key=str):
                self.add(value[k], f"{path}.{k}")
        elif isinstance(value, list | tuple):
            self.exact.update(f"{path}:list{len(value)}".encode())
            for i, item in enumerate(value):
                self.add(item, f"{path}[{i}]")
        elif isinstance(value, float | np.floating):
            self.exact.update(f"{path}:float".encode())
            self.floats(np.array([value]))
        else:
            self.exact.update(f"{path}={json.dumps(value, sort_keys=True, default=str)}".encode())

    def result(self) -> dict[str, Any]:
        return {"exact": self.exact.hexdigest(), "floats": [self.n, self.sum, self.sumabs, self.weighted]}


def content_digests(
    repo: str | os.PathLike[str], collection: str, dataset_types: list[str]
) -> dict[str, dict[str, Any]]:
    """Per dataset type, the fingerprint of every dataset's content in data-ID order
    (:class:`_Fingerprint`: exact but for float values, which are moments); compare two
    with :func:`digest_mismatches`."""
    from lsst.daf.butler import Butler

    digests = {}
    with Butler.from_config(str(repo)) as butler:
        for dt in dataset_types:
            refs = butler.query_datasets(dt, collections=collection, explain=False, limit=None)
            fp = _Fingerprint()
            for ref in sorted(refs, key=lambda r: str(r.dataId.required)):
                fp.exact.update(str(ref.dataId.required).encode())
                fp.add(butler.get(ref))
            digests[dt] = fp.result()
    return digests


def digest_mismatches(got: dict[str, Any], golden: dict[str, Any], rtol: float = FLOAT_RTOL) -> list[str]:
    """What differs between two sets of fingerprints: a missing type, an exact part, the
    float count, or a float moment beyond ``rtol`` times the golden sum of absolute values."""
    out = []
    for dt in sorted(set(got) | set(golden)):
        a, b = got.get(dt), golden.get(dt)
        if a is None or b is None:
            out.append(f"{dt}: {'missing' if a is None else 'not in the golden digests'}")
            continue
        if not isinstance(b, dict) or a["exact"] != b["exact"]:
            out.append(f"{dt}: content differs (exact part: ids, shapes, integers, strings, NaNs)")
            continue
        (n, *moments), (gn, *golden_moments) = a["floats"], b["floats"]
        scale = max(abs(golden_moments[1]), 1e-300)
        worst = max((abs(x - y) / scale for x, y in zip(moments, golden_moments, strict=True)), default=0.0)
        if n != gn or worst > rtol:
            out.append(f"{dt}: float values differ (count {n} against {gn}; moments off by {worst:.2e} of their "
                       f"scale, tolerance {rtol:g})")
    return out


def _run_exists(repo: Path, run: str) -> bool:
    from lsst.daf.butler import Butler, MissingCollectionError

    with Butler.from_config(str(repo)) as butler:
        try:
            butler.collections.get_info(run)
            return True
        except MissingCollectionError:
            return False


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def run_step(
    repo: Path,
    step: str,
    *,
    output_chain: str,
    work_dir: Path,
    inputs: tuple[str, ...] = (DEFAULTS_CHAIN,),
    data_query: str = DATA_QUERY,
    pipeline: Path = PIPELINE_PATH,
    processes: int = 1,
) -> StepResult:
    """Run one pipeline step at one repository (``pipetask run``); a step whose RUN exists is skipped."""
    mw = _middleware()
    run = f"{output_chain}/{step}"
    result = StepResult(step=step, output_run=run)
    if _run_exists(repo, run):
        result.skipped = True
    else:
        argv = mw.run_argv(repo, pipeline, inputs, output_chain, run, subset=step, data_query=data_query,
                           processes=processes)
        t0 = time.perf_counter()
        mw.run_command(argv, work_dir / "logs" / f"{step}-run.log", env=stack_env())
        result.timings["run"] = round(time.perf_counter() - t0, 2)
    result.counts, result.quanta = count_run(repo, run)
    return result


def validate(
    root: str | os.PathLike[str],
    *,
    write_golden: bool = False,
    output_chain: str = VALIDATION_CHAIN,
    work_dir: str | os.PathLike[str] | None = None,
    processes: int = 1,
    golden_path: Path = GOLDEN_PATH,
) -> dict[str, Any]:
    """Run all nine steps at the hub of ``root``; compare with (or write) the golden counts.

    Returns a report dict (timings, quanta, counts, mismatches) and writes it
    to ``WORK/report.json``. Count mismatches do not raise; they are listed in
    ``report["mismatches"]`` (the CLI exits 1 on any). A failing command raises
    `multisite_drp.services.middleware.MiddlewareCommandError` with its log tail.
    """
    repo = Path(root).absolute() / HUB_SITE
    if not (repo / "butler.yaml").exists():
        raise FileNotFoundError(
            f"{repo} is not a butler repository; run `python -m minidrp build --root {root}` first"
        )
    work = Path(work_dir) if work_dir else Path(root).absolute() / "validate" / _safe(output_chain)
    t_start = time.perf_counter()
    results = []
    for step in STEPS:
        res = run_step(repo, step, output_chain=output_chain, work_dir=work, processes=processes)
        results.append(res)
        status = "skipped (already merged)" if res.skipped else f"{res.wall:.1f} s {res.timings}"
        print(f"[minidrp validate] {step}: {status}; quanta {res.quanta}; outputs {res.counts}", flush=True)
    total = round(time.perf_counter() - t_start, 2)
    counts = {r.step: r.counts for r in results}
    quanta = {r.step: r.quanta for r in results}
    report: dict[str, Any] = {
        "repo": str(repo),
        "output_chain": output_chain,
        "total_wall_s": total,
        "steps": [asdict(r) | {"wall_s": round(r.wall, 2)} for r in results],
        "counts": counts,
        "quanta": quanta,
        "mismatches": [],
    }
    science_types = sorted({dt for step_counts in counts.values() for dt in step_counts})
    report["digests"] = content_digests(repo, output_chain, science_types)
    digests_path = golden_path.with_name(GOLDEN_DIGESTS_PATH.name)
    if write_golden:
        golden = {**counts, "_quanta": quanta, "_about": _ABOUT}
        golden_path.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
        digests_path.write_text(json.dumps(report["digests"], indent=2, sort_keys=True) + "\n")
        print(f"[minidrp validate] wrote {golden_path} and {digests_path}")
    else:
        report["mismatches"] = compare_with_golden(counts, quanta, golden_path)
        if digests_path.exists():
            golden_digests = json.loads(digests_path.read_text())
            report["mismatches"] += [f"{m} ({digests_path.name})" for m in digest_mismatches(
                report["digests"], {dt: golden_digests.get(dt) for dt in science_types})]
    (work / "report.json").parent.mkdir(parents=True, exist_ok=True)
    (work / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    print(f"[minidrp validate] total {total:.1f} s; mismatches: {report['mismatches'] or 'none'}")
    return report


_ABOUT = (
    "Dataset counts per step (the step's RUN collection) of science outputs only; *_metadata, *_log, "
    "*_config and packages are excluded. _quanta holds quanta per task (= *_metadata counts). "
    "Written by `python -m minidrp validate --write-golden` (with golden_digests.json)."
)


def load_golden(path: Path = GOLDEN_PATH) -> dict[str, Any]:
    """The recorded golden counts."""
    return json.loads(Path(path).read_text())


def compare_with_golden(
    counts: dict[str, dict[str, int]], quanta: dict[str, dict[str, int]], path: Path = GOLDEN_PATH
) -> list[str]:
    """Human-readable differences between measured and golden counts (empty when equal)."""
    golden = load_golden(path)
    problems = []
    for step in STEPS:
        if golden.get(step) != counts.get(step):
            problems.append(f"{step}: outputs {counts.get(step)} != golden {golden.get(step)}")
        if golden.get("_quanta", {}).get(step) != quanta.get(step):
            problems.append(
                f"{step}: quanta {quanta.get(step)} != golden {golden.get('_quanta', {}).get(step)}"
            )
    return problems
