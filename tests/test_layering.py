"""The import contract of pyproject.toml (``[tool.importlinter]``): it holds on the code, and
it breaks, naming the right contract, when a module crosses a layer.

Both run ``lint-imports`` as ``make lint`` and ``make test`` do. The breaking cases run it on
a copy of ``plugins/`` (and the pyproject) under a temporary folder with one violating
import added, lazy ones inside a function included: import-linter reads them all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS = {c["id"]: c["name"] for c in
             tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}


def _lint(cwd: Path, plugins: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), str(ROOT / "include"), str(cwd)])}
    proc = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def _broken(output: str) -> set[str]:
    """The ids of the contracts the report calls BROKEN (names may wrap across lines)."""
    flat = " ".join(output.split())
    return {cid for cid, name in CONTRACTS.items() if f"{' '.join(name.split())} BROKEN" in flat}


def test_the_import_contract_holds() -> None:
    code, out = _lint(ROOT, ROOT / "plugins")
    assert code == 0, out
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in out, out
    assert set(CONTRACTS) == {"no-airflow-below-glue", "campaign-below-services", "services-below-glue",
                              "no-test-bed-in-plugins", "layers"}


# (file under plugins/, code appended to it, the contracts it must break, a line the report shows)
VIOLATIONS = {
    "none": ("multisite_drp/services/_probe.py", "import json\n", set(), None),
    "services import Airflow lazily": (
        "multisite_drp/services/_probe.py",
        "def hook():\n    from airflow.sdk import BaseHook\n\n    return BaseHook\n",
        {"no-airflow-below-glue"}, "multisite_drp.services._probe -> airflow"),
    "sensors import operators (the old skip_reason tangle)": (
        "multisite_drp/sensors/drp.py",
        ("\n\ndef _reason():\n    from multisite_drp.operators.drp import CampaignActionOperator\n\n"
         "    return CampaignActionOperator\n"),
        {"layers"}, "multisite_drp.sensors.drp -> multisite_drp.operators.drp"),
    "campaign imports services": (
        "multisite_drp/campaign/_probe.py",
        "def actions():\n    from multisite_drp.services import actions\n\n    return actions\n",
        {"campaign-below-services", "layers"}, "multisite_drp.campaign._probe -> multisite_drp.services.actions"),
    "services import a hook (and through it Airflow)": (
        "multisite_drp/services/_probe.py", "from multisite_drp.hooks.campaign import CampaignHook\n",
        {"services-below-glue", "layers", "no-airflow-below-glue"}, "multisite_drp.services._probe -> multisite_drp.hooks.campaign"),
    "errors imports the campaign": (
        "multisite_drp/errors.py", "\nfrom multisite_drp.campaign import names  # noqa: E402\n",
        {"layers"}, "multisite_drp.errors -> multisite_drp.campaign.names"),
    "the Airflow plugin imports the test bed": (
        "drp_plugin.py", "\n\ndef _sites():\n    import minidrp.build\n\n    return minidrp.build\n",
        {"no-test-bed-in-plugins"}, "plugins.drp_plugin -> minidrp.build"),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_the_contract_breaks_on_a_violation(tmp_path: Path, case: str) -> None:
    where, code_added, expected, shown = VIOLATIONS[case]
    plugins = tmp_path / "plugins"
    shutil.copytree(ROOT / "plugins", plugins, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = plugins / where
    target.write_text((target.read_text() if target.exists() else "") + textwrap.dedent(code_added))
    code, out = _lint(tmp_path, plugins)
    assert _broken(out) == expected, out
    assert code == (1 if expected else 0), out
    if shown:
        assert shown in out, out
