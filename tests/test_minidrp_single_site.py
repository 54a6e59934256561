"""The nine-step MiniCam pipeline at one site (usdf) with the real middleware.

Most real thing here: one `pipetask run` per step as a subprocess (argv list) against a
real butler repository; the PipelineTasks are real lsst.pipe.base tasks. No mocks. The
argv builders (`multisite_drp.services.middleware`, the module the orchestrator uses at
every site) are checked below.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from lsst.daf.butler import Butler
from minidrp import constants
from minidrp.instrument import INSTRUMENT_ZEROPOINT
from minidrp.survey import make_survey
from minidrp.validate import (
    GOLDEN_DIGESTS_PATH,
    GOLDEN_PATH,
    VALIDATION_CHAIN,
    digest_mismatches,
    load_golden,
    validate,
)
from multisite_drp.services import middleware as mw


def test_golden_counts_reproduced(minidrp_validation: dict) -> None:
    golden = load_golden()
    assert minidrp_validation["mismatches"] == []
    for step in constants.STEPS:
        assert minidrp_validation["counts"][step] == golden[step], step
        assert minidrp_validation["quanta"][step] == golden["_quanta"][step], step
        assert set(golden[step]) == set(constants.STEP_OUTPUTS[step]), (
            f"{step} outputs drifted from constants"
        )


def test_every_step_ran_and_was_timed(minidrp_validation: dict) -> None:
    """Every step ran, with its commands' times recorded. (How long it took is a figure for
    the notes, not an assertion: on two shared cores it swung from 140 s to 310 s.)"""
    steps = minidrp_validation["steps"]
    assert [s["step"] for s in steps] == list(constants.STEPS)
    assert not any(s["skipped"] for s in steps)
    assert minidrp_validation["total_wall_s"] > 0
    assert all(set(s["timings"]) == {"run"} and s["timings"]["run"] > 0 for s in steps)


def test_output_chain_holds_every_step(minidrp_validation: dict, minidrp_root: Path) -> None:
    with Butler.from_config(str(minidrp_root / "usdf")) as butler:
        chain = list(butler.collections.get_info(VALIDATION_CHAIN).children)
    runs = [f"{VALIDATION_CHAIN}/{s}" for s in reversed(constants.STEPS)]
    assert chain[: len(runs)] == runs
    assert chain[len(runs) :] == [
        constants.RAW_RUN,
        constants.CALIB_RUN,
        constants.REFCAT_RUN,
        constants.SKYMAP_RUN,
    ]


def test_science_is_sane(minidrp_validation: dict, minidrp_root: Path) -> None:
    """Global calibration recovers each visit's simulated extinction (to the box-aperture loss)."""
    truth = {v.id: INSTRUMENT_ZEROPOINT[v.band] - v.extinction for v in make_survey()}
    with Butler.from_config(str(minidrp_root / "usdf"), collections=VALIDATION_CHAIN) as butler:
        offsets = [
            butler.get(ref)["zero_point"] - truth[int(ref.dataId["visit"])]
            for ref in butler.query_datasets("zeroPoint")
        ]
        summary = butler.get(
            "surveySummary", instrument=constants.INSTRUMENT_NAME, skymap=constants.SKYMAP_NAME
        )
    assert len(offsets) == len(truth)
    mean = sum(offsets) / len(offsets)
    assert -0.05 < mean < 0.0  # a 5x5 box misses ~2.5% of a sigma=1 px Gaussian
    assert max(abs(o - mean) for o in offsets) < 0.03
    assert list(summary["band"]) == ["g", "r", "i"]
    assert all(n > 100 for n in summary["n_objects"])
    assert all(math.isfinite(x) and abs(x) < 0.1 for x in summary["median_dmag"])


def test_outputs_match_the_golden_digests(minidrp_validation: dict) -> None:
    """Every science output's content is what the committed digests say: the test bed is
    deterministic across runs and machines (float values within ``FLOAT_RTOL``: another
    CPU's SIMD paths round differently; all else exactly). The three-site campaign is held
    to the same digests in tests/dags/test_campaign_e2e.py."""
    golden = json.loads(GOLDEN_DIGESTS_PATH.read_text())
    science = {dt for step in constants.STEPS for dt in constants.STEP_OUTPUTS[step]}
    assert set(golden) == science
    assert digest_mismatches(minidrp_validation["digests"], golden) == []


def test_validate_rerun_skips_merged_steps(minidrp_validation: dict, minidrp_root: Path) -> None:
    """Look before you act: a second validate over the same chain finds every step merged."""
    report = validate(minidrp_root)
    assert all(s["skipped"] for s in report["steps"])
    assert report["counts"] == minidrp_validation["counts"]


# --- argv builders and the runner (no repository needed) ------------------------------


def test_argv_builders_make_lists_with_real_flags(tmp_path: Path) -> None:
    qg = tmp_path / "g.qg"
    argv = mw.qgraph_argv(
        "/repo",
        "/p.yaml",
        ["MiniCam/defaults"],
        "out/chain",
        "out/chain/step1",
        qg,
        subset="step1",
        data_query=constants.DATA_QUERY,
    )
    assert argv[1:8] == ["qgraph", "-b", "/repo", "-p", "/p.yaml#step1", "-i", "MiniCam/defaults"]
    assert "--qgraph-datastore-records" in argv and argv[argv.index("--save-qgraph") + 1] == str(qg)
    assert argv[argv.index("-d") + 1] == constants.DATA_QUERY  # one argv element, no shell quoting
    assert mw.pre_exec_init_qbb_argv("/repo", qg)[1:] == ["pre-exec-init-qbb", "/repo", str(qg)]
    assert mw.run_qbb_argv("/repo", qg, processes=2)[1:] == ["run-qbb", "/repo", str(qg), "-j", "2"]
    run = mw.run_argv("/repo", "/p.yaml", ["MiniCam/defaults"], "out", "out/run", subset="step1",
                      data_query=constants.DATA_QUERY)
    assert run[1:8] == ["run", *argv[2:8]]  # the graph build's own options
    assert run[run.index("-d") + 1] == constants.DATA_QUERY and "--save-qgraph" not in run
    assert run[-3:] == ["--register-dataset-types", "-j", "1"]
    assert "--update-output-chain" in mw.transfer_from_graph_argv(qg, "/repo")


@pytest.mark.parametrize("bad", ["a b", "x;rm", "a,b", "", "/abs", "a//b", "$(x)"])
def test_argv_builders_reject_bad_collection_names(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        mw.qgraph_argv("/repo", "/p.yaml", [bad], "out", "out/run", tmp_path / "g.qg")


def test_graph_paths_must_be_qg(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=".qg"):
        mw.run_qbb_argv("/repo", tmp_path / "g.qgraph")


def test_run_command_raises_with_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "fail.log"
    code = "import sys; print('line one'); print('the real reason', file=sys.stderr); sys.exit(3)"
    with pytest.raises(mw.MiddlewareCommandError) as info:
        mw.run_command([sys.executable, "-c", code], log)
    assert info.value.returncode == 3
    assert "the real reason" in str(info.value) and str(log) in str(info.value)
    with pytest.raises(TypeError):
        mw.run_command("echo hi", log)  # type: ignore[arg-type]
    ok = mw.run_command(
        [sys.executable, "-c", "import os; print(os.environ['MW_TEST'])"], log, env={"MW_TEST": "42"}
    )
    assert ok.returncode == 0 and log.read_text().rstrip().endswith("42")


def test_golden_file_is_committed() -> None:
    assert GOLDEN_PATH.is_file()
