"""The workflow port's states mirror ctrl_bps's ``WmsStates``, and the port loads no middleware.

``services.workflow.base`` defines ``WmsStates`` itself (importing ``lsst.ctrl.bps`` would load
``lsst.daf.butler``, ``lsst.pipe.base`` and networkx into every task); these tests hold it to
ctrl_bps's enum, so a ctrl_bps upgrade that adds, drops or renumbers a state fails here.
"""

from __future__ import annotations

import subprocess
import sys

from multisite_drp.services.workflow.base import WmsStates


def test_states_are_ctrl_bps_states_member_for_member() -> None:
    from lsst.ctrl.bps import WmsStates as BpsStates

    assert {m.name: m.value for m in WmsStates} == {m.name: m.value for m in BpsStates}


def test_light_service_modules_import_no_middleware() -> None:
    """The ports' modules, imported in a fresh interpreter, leave the LSST middleware,
    rucio-clients and panda-client unloaded (they are imported where they are used)."""
    code = (
        "import sys\n"
        "import multisite_drp.services.workflow.base, multisite_drp.services.workflow.embedded\n"
        "import multisite_drp.services.workflow.panda, multisite_drp.services.replica.rucio\n"
        "import multisite_drp.services.butler, multisite_drp.services.factory, multisite_drp.hooks.campaign\n"
        "heavy = ('lsst.daf.butler', 'lsst.pipe.base', 'lsst.ctrl.bps', 'rucio.client', 'pandaclient', 'numpy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
