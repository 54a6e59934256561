"""Small BPS workflows for the local PanDA relay tests, built the way ctrl_bps_panda builds them.

A ctrl_bps ``GenericWorkflow`` (jobs, dependencies, a final job, an input file) goes through
``PandaBpsWmsWorkflow.from_generic_workflow`` - ctrl_bps_panda's own ``add_idds_work`` /
``add_final_idds_work`` / ``_make_doma_work`` / ``add_decoder_prefix`` - into an iDDS
``Workflow`` of ``DomaPanDAWork`` with the final work behind an ``AndCondition``, and is
submitted with ``PanDAService.submit`` exactly as ``bps submit`` does.

Each label's command is ``/bin/bash <label>.sh <FILE:cfgfile> {qgraphNodeId}``: every job of
a PanDA task shares its task's executable (the first job's command line), so the jobs tell
themselves apart only by the lazy ``{qgraphNodeId}`` that travels in their pseudo input name
(``<job>+qgraphNodeId:<value>+qgraphId:``) and is put back by the edge-node decoder. The
final job's pseudo input name is ``pure_pseudoinput+qgraphNodeId:+qgraphId:``: its
qgraphNodeId is empty, and the shell drops an empty argument, so it goes last.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REAL_RUNNER = "cd ${PILOT_HOME}; python -m lsst.ctrl.bps.panda.edgenode.cmd_line_decoder _cmd_line_"
QUICK_RUNNER = f"cd ${{PILOT_HOME}}; python3 {HERE / 'quick_decoder.py'} _cmd_line_"


@dataclass
class Submitted:
    service: Any  # lsst.ctrl.bps.panda.PanDAService
    workflow: Any  # PandaBpsWmsWorkflow
    config: Any  # BpsConfig
    name: str
    marker: Path

    @property
    def request_id(self) -> int:
        return int(self.workflow.run_id)

    def lines(self) -> list[str]:
        return self.marker.read_text().splitlines() if self.marker.exists() else []


def build_and_submit(base: Path, name: str, jobs: Sequence[tuple[str, str, Sequence[str]]],
                     scripts: Mapping[str, str], *, real_decoder: bool = False, site: str = "SITE_A",
                     attempts: int = 1, extra_config: Mapping[str, Any] | None = None) -> Submitted:
    """Build ``jobs`` ((job name, label, parent names)) plus a finalJob and submit them.

    ``scripts``: label -> bash script body (``$NAME`` is the job's qgraphNodeId, i.e. its job
    name, empty for the final job; ``$FILE`` the distributed input file's name; ``$MARKER``
    a file shared by the workflow's jobs). A label without a script appends ``$NAME`` to
    ``$MARKER``; the final job's default appends ``final``.
    """
    from lsst.ctrl.bps import (
        BpsConfig,
        GenericWorkflow,
        GenericWorkflowExec,
        GenericWorkflowFile,
        GenericWorkflowJob,
    )
    from lsst.ctrl.bps.panda import PandaBpsWmsWorkflow, PanDAService

    root = base / name
    (root / "scripts").mkdir(parents=True, exist_ok=True)
    (root / "submit").mkdir(exist_ok=True)
    marker = root / "marker.txt"
    payload = root / "payload.txt"
    payload.write_text(f"payload of {name}\n")
    config = BpsConfig({
        "computeSite": site, "runnerCommand": REAL_RUNNER if real_decoder else QUICK_RUNNER,
        "fileDistributionEndPoint": f"{(root / 'dist').as_uri()}/", "submitPath": str(root / "submit"),
        "finalJob": {"processingType": None}, **(extra_config or {}),
    })
    gw = GenericWorkflow(name)
    cfgfile = GenericWorkflowFile("cfgfile", src_uri=str(payload), wms_transfer=True, job_access_remote=False)

    def job(job_name: str, label: str) -> Any:
        body = scripts.get(label) or ('echo final >> "$MARKER"' if label == "finalJob" else 'echo "$NAME" >> "$MARKER"')
        script = root / "scripts" / f"{label}.sh"
        script.write_text(f'MARKER={marker}\nFILE="$1"\nNAME="$2"\n{body}\n')
        gwjob = GenericWorkflowJob(job_name, label)
        gwjob.executable = GenericWorkflowExec(label, src_uri="/bin/bash", transfer_executable=False)
        gwjob.arguments = f"{script} <FILE:cfgfile> {{qgraphNodeId}}"
        gwjob.cmdvals = {"qgraphNodeId": job_name, "qgraphId": "g0"}
        gwjob.number_of_retries = attempts
        return gwjob

    for job_name, label, parents in jobs:
        gw.add_job(job(job_name, label), parent_names=list(parents) or None)
        gw.add_job_inputs(job_name, cfgfile)
    gw.add_final(job("finalJob", "finalJob"))
    gw.add_job_inputs("finalJob", cfgfile)
    workflow = PandaBpsWmsWorkflow.from_generic_workflow(config, gw, str(root / "submit"), "PanDAService")
    service = PanDAService(config)
    service.submit(workflow)
    return Submitted(service, workflow, config, name, marker)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def environ_for(env: Mapping[str, str]) -> dict[str, str | None]:
    """Set ``env`` in os.environ; returns what to restore."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    return saved
