"""A local PanDA relay that stands in for PanDA and iDDS, which cannot run on this machine.

It is an HTTP server on loopback that speaks PanDA's ``/relay_idds_command`` exactly as
ctrl_bps_panda 30.0.0 calls it (through panda-client and the iDDS client classes), and it
also plays PanDA's pilots: it runs the submitted jobs here, in dependency order, with
retries, the final job after the others (even after failures), and faults that tests can
switch on at runtime. Nothing of PanDA or iDDS is running; only the client side is real.

    from localpanda import LocalPanDA
    lp = LocalPanDA(ROOT / "var" / "panda")
    url = lp.up(slots=2, job_env={"CTRL_MPEXEC_DIR": ...}, site_locks={"SLAC": repo_dir})
    os.environ.update(lp.client_env())   # PANDA_URL, PANDA_URL_SSL, ... before pandaclient's import
    lp.control(fail_jobs=["_903342"]); lp.clear_faults()
    lp.executions(); lp.stats(); lp.down()

CLI: ``python -m localpanda up|down|status|serve [--root var/panda]``.
See :mod:`localpanda.deploy` (start/stop), :mod:`localpanda.server` (wire format, faults),
:mod:`localpanda.engine` (requests, jobs, the pilot's role), :mod:`localpanda.pilot`.
This package imports only the standard library at import time; the relay process also
uses the iDDS client classes (to decode what ctrl_bps_panda sends).
"""

from localpanda.deploy import DEFAULT_ROOT, LocalPanDA

__all__ = ["DEFAULT_ROOT", "LocalPanDA"]
